"""`ptl-gpt2`: LightningCLI (fit / validate / test / predict) plus a few task-free commands."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from .callbacks import RunSummary
from .earlier_runs import FILE_PATTERNS, describe, find_checkpoint, recipe
from .model.checkpoint import CheckpointError
from .quantization.precision import check_precision
from .tasks import GPT2Task, OptionError

# Commands that are not Trainer runs, each a module with `main(argv)`.
COMMANDS = {
    "generate": "ptl_gpt2.commands.generate",
    "export-adapter": "ptl_gpt2.commands.export_adapter",
    "retention": "ptl_gpt2.commands.retention",
    "synth": "ptl_gpt2.commands.synth",
    "sweep": "ptl_gpt2.commands.sweep",
    "report": "ptl_gpt2.commands.report",
}


DEFAULT_LOG_DIR = "runs"


def default_loggers() -> list[dict]:
    """CSV logs (and checkpoints) in runs/lightning_logs/version_N, TensorBoard logs in
    runs/tensorboard/version_N when tensorboard is installed; `trainer.default_root_dir`, when
    given, takes the place of runs/ (see `logs_under_default_root_dir`)."""
    loggers = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": DEFAULT_LOG_DIR}}]
    if importlib.util.find_spec("tensorboard") is not None:
        # Its own folder: in the CSV logger's folder it would take the next version number.
        loggers.append({"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": "tensorboard"}})
    return loggers


def logs_under_default_root_dir(config) -> None:
    """`--trainer.default_root_dir DIR` moves the default loggers (and so checkpoints, the saved
    config and the run summary) from runs/ to DIR, as it moves Lightning's own default logger.
    A logger whose save_dir was set to something else is left alone."""
    root = config.trainer.get("default_root_dir")
    loggers = config.trainer.get("logger")
    if root is None or not isinstance(loggers, list):
        return
    for logger in loggers:
        init_args = logger.get("init_args") if hasattr(logger, "get") else None
        if init_args is not None and init_args.get("save_dir") == DEFAULT_LOG_DIR:
            init_args["save_dir"] = str(root)


class AcceleratorUnavailableError(RuntimeError):
    """`trainer.accelerator` names hardware this machine does not have."""


def check_accelerator(accelerator: Any) -> None:
    """Refuse a GPU accelerator on a machine without one, naming the option (Lightning raises "No
    supported gpu backend found!" from inside the Trainer)."""
    if not isinstance(accelerator, str):
        return  # "auto", None and Accelerator objects choose for themselves
    name = accelerator.lower()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    missing = {"gpu": not (torch.cuda.is_available() or mps), "cuda": not torch.cuda.is_available(), "mps": not mps}
    if missing.get(name, False):
        raise AcceleratorUnavailableError(
            f"trainer.accelerator={accelerator}: torch sees no such device on this machine; leave out the GPU "
            "config (e.g. configs/scale/*.yaml, configs/sst/bf16.yaml) or pass --trainer.accelerator=cpu"
        )


class GPT2CLI(LightningCLI):
    """Configs name a task (`model: {class_path: ptl_gpt2.tasks.SentimentClassifier, ...}`) and a
    DataModule (`data: {class_path: datamodules.SSTDataModule, ...}`).

    Callbacks listed under `trainer.callbacks` come on top of the defaults added here, each only
    where it applies and is not already given: a rich progress bar (unless
    `enable_progress_bar: false`), a learning-rate monitor (when there is a logger) and the run
    summary. The task adds its own checkpointing and early stopping (`configure_callbacks`).
    """

    def before_instantiate_classes(self) -> None:
        """Refuse a GPU or precision this machine lacks (FP8 without TransformerEngine) before any work;
        hand clipping to SMART; put the default logs under `trainer.default_root_dir`."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_accelerator(config.trainer.accelerator)
        check_precision(config.trainer.precision, config.trainer.accelerator)
        hand_trainer_options_to_smart(config)
        logs_under_default_root_dir(config)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = self._get(self.config_init, "trainer", default={})
        callbacks = list(trainer.get("callbacks") or [])

        def missing(kind: type) -> bool:
            return not any(isinstance(c, kind) for c in callbacks)

        if trainer.get("enable_progress_bar") is not False and missing(ProgressBar):
            callbacks.append(RichProgressBar())
        if trainer.get("logger") is not False and missing(LearningRateMonitor):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if missing(RunSummary):
            callbacks.append(RunSummary())
        trainer["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    def resolve_checkpoint_of_earlier_run(self) -> None:
        """`--ckpt_path last` / `best`: the newest last.ckpt / best checkpoint of an earlier run of this
        task on this data with the same PEFT callbacks (`ptl_gpt2.earlier_runs`); Lightning would look
        only in this run's new folder."""
        options = self.config_init[self.subcommand]
        which = options.get("ckpt_path")
        if which not in FILE_PATTERNS:
            return
        if any(callback.dirpath for callback in self.trainer.checkpoint_callbacks):
            return  # a ModelCheckpoint of the user's, with its own folder: Lightning's rules
        if self.trainer.loggers:  # runs/lightning_logs/version_N/checkpoints, from the first logger's folder
            logger = self.trainer.loggers[0]
            runs = Path(logger.save_dir or self.trainer.default_root_dir) / str(logger.name)
        else:  # runs/checkpoints, one folder for every run
            runs = Path(self.trainer.default_root_dir)
        this_run = recipe(self.config[self.subcommand].as_dict())
        found = find_checkpoint(runs, this_run, which)
        task = describe(this_run)
        if found is not None:
            what = "the newest last.ckpt of a" if which == "last" else "the best checkpoint of the latest"
            rank_zero_info(f"ptl-gpt2: --ckpt_path {which}: {found} ({what} {task})")
            options["ckpt_path"] = str(found)
        elif self.subcommand == "fit" and which == "last":  # Lightning's meaning: set and forget before the first run
            rank_zero_info(f"ptl-gpt2: --ckpt_path last: no last.ckpt of an earlier {task} under {runs}; training from the start")
            options["ckpt_path"] = None
        else:
            raise CheckpointError(
                f"--ckpt_path {which}: no {FILE_PATTERNS[which]} of an earlier {task} under {runs}; "
                "fit first, or pass the checkpoint's path"
            )

    before_fit = before_validate = before_test = before_predict = resolve_checkpoint_of_earlier_run


def hand_trainer_options_to_smart(config) -> None:
    """SMART trains with manual optimisation, where Lightning refuses `trainer.gradient_clip_val`
    and `trainer.accumulate_grad_batches`: move them to SMART's own options of the same name, so
    a recipe that clips stays valid with `--config configs/knobs/smart.yaml` stacked on it."""
    smart = config.model.init_args.get("smart") if "init_args" in config.model else None
    if not smart:
        return
    for option, unset in (("gradient_clip_val", None), ("accumulate_grad_batches", 1)):
        value = config.trainer.get(option)
        if value is not None and value != unset:
            smart.init_args[option] = value
            config.trainer[option] = unset
            print(f"ptl-gpt2: SMART uses manual optimisation; trainer.{option}={value} is applied by SMART instead")


def main(argv: list[str] | None = None) -> None:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
        return
    GPT2CLI(
        GPT2Task,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        # default_root_dir: without a logger (logger: false, fast_dev_run) checkpoints, the saved config
        # and summary.json would otherwise land in the working directory itself
        trainer_defaults={"logger": default_loggers(), "default_root_dir": DEFAULT_LOG_DIR},
        save_config_kwargs={"overwrite": True},
        # None: LightningCLI reads sys.argv itself (given both, it warns on every run)
        args=None if from_command_line else argv,
        auto_configure_optimizers=False,  # optimizers come from the task's `optimizer` option
        parser_kwargs={
            "description": (
                "Fine-tune GPT-2 with Lightning. Trainer commands: fit, validate, test, predict "
                "(ptl-gpt2 fit --config configs/sst/quick.yaml). Other commands: " + ", ".join(COMMANDS)
            )
        },
    )


def entry() -> None:
    """The `ptl-gpt2` console script: `main`, with the errors a user can fix printed as one line
    (missing or malformed data, a split the command needs but no file for it, a checkpoint or other
    given file that is not there, a task option or decoding option the task refuses, a precision this
    machine lacks); set PTL_GPT2_TRACEBACK=1 to see their tracebacks too."""
    try:
        main()
    except Exception as err:
        fixable = user_fixable(err)
        if fixable is None or os.environ.get("PTL_GPT2_TRACEBACK"):
            raise
        sys.exit(f"ptl-gpt2: error: {fixable}")


def user_fixable(err: BaseException) -> BaseException | None:
    """`err` or the error it was raised from, if it is one a user fixes in the config or the files.

    Errors raised while the config's classes are built reach us wrapped: jsonargparse re-raises them
    as "Does not validate against any of the Union subtypes", with the original as `__cause__`.
    """
    from datamodules import DataFileNotFoundError, DataFormatError, SplitNotConfiguredError

    from .generation import GenerationInputError
    from .model.checkpoint import CheckpointError
    from .quantization.precision import PrecisionUnavailableError

    # FileNotFoundError: every path the commands take (--checkpoint, --grid, --prompts-file, a hub name
    # offline, ...) is checked with a message naming the option and the path.
    kinds = (
        DataFileNotFoundError, FileNotFoundError, DataFormatError, SplitNotConfiguredError, CheckpointError,
        PrecisionUnavailableError, AcceleratorUnavailableError, GenerationInputError, OptionError,
    )  # fmt: skip
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, kinds):
            return seen
        seen = seen.__cause__
    return None


if __name__ == "__main__":
    entry()
