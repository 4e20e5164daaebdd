"""The shared LightningModule: one GPT-2 backbone, an optimizer from the config, task hooks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from datamodules.errors import DataFormatError

from ..model import GPT2, GPT2Config
from ..model.checkpoint import CheckpointError
from ..optim import AdamW
from ..regularization import SMART


# The task's best checkpoint, one per run: best-<epoch>-<step>.ckpt (`ptl_gpt2.earlier_runs` finds it).
BEST_CHECKPOINT = "best-{epoch}-{step}"


class OptionError(ValueError):
    """A task option whose value the task refuses; the message starts with its config key (`model.<option>`)."""


class GPT2Task(L.LightningModule):
    """Base of every task: builds the backbone and the optimizer, trains on `task_loss`.

    A task says what it predicts by overriding `task_outputs` (the tensor a loss and SMART compare:
    class logits, verbaliser logits or per-token LM logits) and `task_loss`.

    Args:
        preset: GPT-2 size to build (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, `tiny`); its
            weights are random unless `pretrained` is given.
        pretrained: directory or file of a Hugging Face GPT-2 checkpoint (or a hub name when online);
            the architecture then comes from its config.json and `preset` is ignored.
        dropout: if set, overrides the embedding, attention and residual dropout of the backbone.
        activation_checkpointing: recompute block activations in backward to save memory.
        optimizer: builds the optimizer from the trainable (name, parameter) pairs, e.g.
            `{class_path: ptl_gpt2.optim.AdamW, init_args: {lr: 1e-5}}`.
        lr_scheduler: optional; stepped every optimizer step (`interval: step`).
        monitor_patience: stop early when the dev metric has not improved for this many validations.
        compile: compile the backbone's transformer (embeddings, blocks, final norm; the LM head
            stays eager) with `torch.compile` when the model is configured: `true`, or
            a dict of `torch.compile` options (`{mode: max-autotune}`). Worth it on a GPU for long
            runs; the first step pays the compilation (over a minute for the tiny model on 2 CPU cores).
        smart: SMART adversarial regularisation (`{class_path: ptl_gpt2.regularization.SMART}`);
            it switches the task to manual optimisation, so gradient accumulation and clipping are
            SMART's options, not the Trainer's. See docs/smart.md.
    """

    monitor: str = "val/loss"  # the dev metric that picks the best checkpoint
    monitor_mode: str = "min"

    def __init__(
        self,
        preset: str = "gpt2",
        pretrained: str | None = None,
        dropout: float | None = None,
        activation_checkpointing: bool = False,
        optimizer: OptimizerCallable = AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        monitor_patience: int | None = None,
        compile: bool | dict[str, Any] = False,
        smart: SMART | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "smart"])  # hparams stay plain
        self.model = build_backbone(preset, pretrained, dropout, activation_checkpointing)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.monitor_patience = monitor_patience
        self.compile_options = {} if compile is True else compile
        self.smart = smart
        if smart is not None:
            self.automatic_optimization = False

    def configure_model(self) -> None:
        # Module.compile compiles in place, so state-dict keys (and checkpoints) stay the same. The
        # transformer, not the whole GPT2: classification, cloze and the fused LM loss call
        # `model.transformer` directly and would skip a compiled `GPT2.__call__`.
        if self.compile_options is not False and not getattr(self, "_compiled", False):
            self.model.transformer.compile(**self.compile_options)
            self._compiled = True

    # --- what each task defines -------------------------------------------------------------
    def task_outputs(self, batch: dict[str, Any], inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def task_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's training loss; a task may override it to skip building `task_outputs`."""
        return self.task_loss(self.task_outputs(batch), batch)

    # --- training -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.smart is not None:
            return self.smart.training_step(self, batch, batch_idx)
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def configure_optimizers(self) -> Any:
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("no parameter requires grad: the backbone is frozen and nothing else is trainable")
        optimizer = self.optimizer(trainable)
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        if hasattr(scheduler, "set_total_steps"):  # schedules whose length comes from the Trainer
            steps = self.trainer.estimated_stepping_batches
            if self.smart is not None:  # manual optimisation: SMART accumulates, so fewer optimizer steps
                steps = self.smart.total_optimizer_steps(self.trainer)
            scheduler.set_total_steps(steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def unscorable_split(self, stage: str, missing: str) -> DataFormatError:
        """The error for `validate`/`test` on a split without `missing` (labels, gold text), naming its
        file and option when the DataModule says (`test` on a CS224N test-student file)."""
        datamodule = getattr(self._trainer, "datamodule", None)  # None outside a Trainer or without a DataModule
        option = getattr(datamodule, "split_options", {}).get(stage)  # "test" -> "test_file"
        name = getattr(datamodule, option, None) if option else None
        file = datamodule.path(name) if isinstance(name, (str, Path)) else None
        split = f"the {stage} split" + (f" (data.init_args.{option})" if option else "")
        return DataFormatError(f"{split} has no {missing}, so it cannot be scored; `predict` writes its predictions", file=file)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("state_dict") or {}
        # SMART's slow copy of the weights (`smart._extra_state`) only serves resuming SMART training:
        # without it a SMART-trained checkpoint loads into the plain recipe (validate, test, predict).
        if self.smart is None:
            for key in [k for k in saved if k.startswith("smart.")]:
                del saved[key]
        self._loading_peft = checkpoint.get("peft")  # for `load_state_dict`'s error, which comes next

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """`nn.Module.load_state_dict`, but a checkpoint that does not fit raises one `CheckpointError`
        naming the file, the missing / extra / reshaped weights and the likely cause, where torch lists
        every key. The comparison is torch's own, after the modules' key hooks (quantised layers
        rename theirs)."""
        peft, self._loading_peft = getattr(self, "_loading_peft", None), None
        try:
            result = super().load_state_dict(state_dict, strict=False, assign=assign)
        except RuntimeError as err:  # shape mismatches raise even when not strict
            reshaped = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
            if not reshaped:
                raise
            raise self._misfit([], [], reshaped, peft) from err
        if strict and (result.missing_keys or result.unexpected_keys):
            raise self._misfit(result.missing_keys, result.unexpected_keys, [], peft)
        return result

    def _misfit(self, missing: list[str], unexpected: list[str], reshaped: list[str], peft: dict | None) -> CheckpointError:
        problems = [f"{what} {len(keys)} (e.g. {keys[0]})" for keys, what in (
            (missing, "lacks weights of this model:"), (unexpected, "has weights this model has no place for:"),
            (reshaped, "has weights of another shape:"),
        ) if keys]  # fmt: skip
        if peft and unexpected:
            hint = (f"it was saved by a run with the {peft.get('method')} callback (options {peft.get('config')}): "
                    f"add it, --trainer.callbacks+=ptl_gpt2.peft.{peft.get('method')} with the same options")
        elif missing and not peft and any(".lora_" in k or "adapter" in k or "prefix" in k for k in missing):
            hint = "it was saved by a run without this run's PEFT callback: drop the callback, or give a checkpoint of a run with it"
        else:
            hint = "it was saved by a run of another task, preset or option (num_classes, architecture)"
        trainer = self._trainer  # None in `load_from_checkpoint`
        where = f"{trainer.ckpt_path}: " if trainer is not None and trainer.ckpt_path else ""
        return CheckpointError(f"{where}the checkpoint does not fit this {type(self).__name__}: "
                               f"it {'; it '.join(problems)}; {hint}")

    def configure_callbacks(self) -> list[L.Callback]:
        """The task's checkpoints (in place of Lightning's default one) and early stopping when asked.

        A Trainer with `enable_checkpointing=False` gets no checkpoints, and one given its own
        `ModelCheckpoint`s keeps them: Lightning drops every Trainer callback of a type returned here.
        """
        callbacks: list[L.Callback] = []
        if _has_only_the_default_checkpoint(self.trainer):
            callbacks += [
                ModelCheckpoint(
                    monitor=self.monitor,
                    mode=self.monitor_mode,
                    filename=BEST_CHECKPOINT,
                    auto_insert_metric_name=False,
                ),
                # last.ckpt, the state at the end of every training epoch, validated or not (resume,
                # validate, export from it). Not `save_last=True` above: since Lightning 2.6 that writes
                # last.ckpt only at steps where a best checkpoint is written, a copy of the best one.
                ModelCheckpoint(
                    filename=ModelCheckpoint.CHECKPOINT_NAME_LAST, enable_version_counter=False, save_on_train_epoch_end=True
                ),
            ]
        if self.monitor_patience is not None:
            # Checked after each validation, as documented: checked at the end of the training epoch
            # (Lightning's default here), a run that `max_steps` ends mid-epoch, before any validation,
            # stops with "Early stopping conditioned on metric ... which is not available".
            callbacks.append(EarlyStopping(self.monitor, mode=self.monitor_mode, patience=self.monitor_patience,
                                           check_on_train_epoch_end=False))
        return callbacks


def _has_only_the_default_checkpoint(trainer: L.Trainer) -> bool:
    """Whether the Trainer's checkpointing is the `ModelCheckpoint()` Lightning adds when none is given."""
    given = trainer.checkpoint_callbacks  # [] under enable_checkpointing=False
    if len(given) != 1 or type(given[0]) is not ModelCheckpoint:
        return False
    default, checkpoint = ModelCheckpoint(), given[0]
    return checkpoint.state_key == default.state_key and all(
        getattr(checkpoint, name) == getattr(default, name) for name in ("dirpath", "filename", "save_last", "save_top_k")
    )


def build_backbone(
    preset: str, pretrained: str | None, dropout: float | None, activation_checkpointing: bool
) -> GPT2:
    overrides: dict[str, Any] = {"activation_checkpointing": activation_checkpointing}
    if dropout is not None:
        overrides.update(embd_pdrop=dropout, attn_pdrop=dropout, resid_pdrop=dropout)
    if pretrained is None:
        return GPT2(GPT2Config.from_name(preset, **overrides))
    try:
        return GPT2.from_pretrained(pretrained, **overrides)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"model.pretrained: {err}") from None


def last_token_hidden(model: GPT2, batch: dict[str, Any], inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden state (B, C) of each sequence's last real token in a right-padded batch.

    The backbone's last block runs at that token only (`output_positions`): a classifier reads
    nothing else.
    """
    mask = batch["attention_mask"]
    ids = None if inputs_embeds is not None else batch["input_ids"]
    last = mask.sum(dim=1) - 1  # (B,)
    return model.transformer(ids, mask, inputs_embeds=inputs_embeds, output_positions=last)
