"""Task modules on hand-made batches: outputs, losses, freezing, prediction files."""

import math

import pytest
import torch
import torch.nn.functional as F

from ptl_gpt2.tasks import LanguageModel, ParaphraseDetection, SentimentClassifier, SonnetGenerator
from ptl_gpt2.tasks.lm import lm_loss
from ptl_gpt2.tasks.sonnet import chrf, write_generated_sonnets

TINY = {"preset": "tiny", "dropout": 0.0}


def batch(lengths=(5, 3), labels=(1, 0)):
    T = max(lengths)
    ids = torch.randint(0, 50257, (len(lengths), T), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    return {"input_ids": ids.masked_fill(mask == 0, 50256), "attention_mask": mask,
            "labels": torch.tensor(labels), "ids": [f"id{i}" for i in range(len(lengths))]}


def test_sentiment_reads_the_last_real_token():
    torch.manual_seed(0)
    task = SentimentClassifier(num_classes=5, **TINY).eval()
    b = batch()
    logits = task.task_outputs(b)
    assert logits.shape == (2, 5)
    alone = {"input_ids": b["input_ids"][1:, :3], "attention_mask": b["attention_mask"][1:, :3]}
    torch.testing.assert_close(task.task_outputs(alone)[0], logits[1], atol=1e-5, rtol=0)


def test_last_linear_layer_trains_only_the_head():
    task = SentimentClassifier(num_classes=2, mode="last-linear-layer", **TINY)
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    with pytest.raises(ValueError, match="model.mode must be"):
        SentimentClassifier(mode="linear", **TINY)


def test_cloze_scores_equal_the_lm_logits_of_yes_and_no():
    torch.manual_seed(0)
    task = ParaphraseDetection(**TINY).eval()
    assert task.verbalizer_ids == [3919, 8505]  # "no", "yes": the reference's token ids
    b = batch()
    scores = task.task_outputs(b)
    full = task.model(b["input_ids"], b["attention_mask"])
    for row, last in enumerate([4, 2]):
        torch.testing.assert_close(scores[row], full[row, last, [3919, 8505]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="model.verbalizer: 'yes indeed'"):
        ParaphraseDetection(verbalizer=("no", "yes indeed"), **TINY)


def test_lm_loss_ignores_padding_and_matches_the_definition():
    logits = torch.randn(2, 4, 7)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    terms = [-F.log_softmax(logits[0, t], -1)[ids[0, t + 1]] for t in range(3)]
    terms.append(-F.log_softmax(logits[1, 0], -1)[ids[1, 1]])
    torch.testing.assert_close(lm_loss(logits, ids, mask), torch.stack(terms).mean())


def test_language_model_loss_is_near_log_vocab_at_init():
    torch.manual_seed(0)
    task = LanguageModel(**TINY)
    b = batch((6, 6))
    loss = task.task_loss(task.task_outputs(b), b)
    assert abs(loss.item() - math.log(50257)) < 0.5


def test_chrf_matches_the_course_calibration_style():
    gold = ["Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"]
    assert chrf(gold, gold) == pytest.approx(100.0)
    assert 0 < chrf(["Shall I compare thee\n"], gold) < 100


def test_sonnet_completion_is_cut_at_14_lines():
    torch.manual_seed(0)
    task = SonnetGenerator(generation={"max_new_tokens": 40, "do_sample": False}, lines=4, **TINY)
    prompt = "one line here\ntwo lines here\nthree lines here\n"
    (text,) = task.complete([prompt])
    assert text.startswith(prompt) and len(text.rstrip("\n").split("\n")) <= 4
    with pytest.raises(ValueError, match=r"model.generation: unknown option\(s\) \['topp'\]"):
        SonnetGenerator(generation={"topp": 0.9}, **TINY)
    with pytest.raises(ValueError, match=r"model.generation: top_p must be in \(0, 1\], got 1.5"):  # before any training
        SonnetGenerator(generation={"top_p": 1.5}, **TINY)


def test_generated_sonnets_file_layout(tmp_path):
    path = write_generated_sonnets(tmp_path / "out.txt", [(145, "a\nb\n"), (146, "c\n")])
    assert path.read_text() == "--Generated Sonnets-- \n\n\n145\na\nb\n\n\n\n146\nc\n\n\n"


def test_missing_pretrained_checkpoint_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pretrained: .*nowhere"):
        SentimentClassifier(pretrained=str(tmp_path / "nowhere"))


def test_pretrained_checkpoint_is_loaded(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    task = LanguageModel(pretrained=str(tmp_path))
    torch.testing.assert_close(task.model.transformer.wte.weight, tiny_model.transformer.wte.weight)


def test_compile_option_compiles_in_place_and_trains(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    graphs = []

    def counting_backend(gm, example_inputs):  # dynamo hands each captured graph here; run it eagerly
        graphs.append(gm)
        return gm.forward

    b = batch((6, 6))
    for task in (LanguageModel(compile={"backend": counting_backend}, **TINY),
                 SentimentClassifier(num_classes=2, compile={"backend": counting_backend}, **TINY)):
        graphs.clear()
        torch._dynamo.reset()  # else the second task may reuse the first one's compiled code
        keys = ("input_ids", "attention_mask", "labels") if isinstance(task, SentimentClassifier) else ("input_ids", "attention_mask")
        loader = DataLoader([{k: v[i] for k, v in b.items() if k in keys} for i in range(2)], batch_size=2)
        trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(task, loader)
        assert task.model.transformer._compiled_call_impl is not None  # nn.Module.compile was applied
        # The training step ran the compiled transformer (the classifier and the fused LM loss call it directly).
        assert graphs, type(task).__name__
        assert "model.transformer.wte.weight" in task.state_dict()  # checkpoints keep their keys


def _fit_sentiment(tmp_path, monitor_patience, max_steps=-1, max_epochs=1, lr=1e-3, **trainer_options):
    import lightning as L
    from torch.utils.data import DataLoader

    from ptl_gpt2.optim import AdamW

    b = batch((4, 4, 3, 2), (1, 0, 1, 0))
    rows = [{k: b[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(4)]
    task = SentimentClassifier(num_classes=2, monitor_patience=monitor_patience, optimizer=lambda p: AdamW(p, lr=lr), **TINY)
    trainer = L.Trainer(max_steps=max_steps, max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, **trainer_options)
    trainer.fit(task, DataLoader(rows, batch_size=1), DataLoader(rows, batch_size=4))
    return trainer


def test_early_stopping_survives_max_steps_ending_before_any_validation(tmp_path):
    # 4 batches an epoch, 2 steps: training ends mid-epoch, before the first validation.
    trainer = _fit_sentiment(tmp_path, monitor_patience=1, max_steps=2)
    assert trainer.global_step == 2


def test_early_stopping_stops_after_patience_validations_without_improvement(tmp_path):
    # lr 0: val/acc never changes, so the first validation sets the best and the next one stops the run.
    trainer = _fit_sentiment(tmp_path, monitor_patience=1, max_epochs=10, lr=0.0)
    assert trainer.should_stop and trainer.current_epoch == 2


def test_last_checkpoint_is_the_state_at_the_end_not_a_copy_of_the_best(tmp_path):
    # lr 0: val/acc never improves after the first validation, so only epoch 0 is "best". Lightning
    # 2.6's own save_last would leave last.ckpt at epoch 0 too, and resuming from it would redo epochs.
    trainer = _fit_sentiment(tmp_path, monitor_patience=None, max_epochs=3, lr=0.0)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-0-4.ckpt", "last.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 12)
    assert trainer.checkpoint_callback.best_model_path.endswith("best-0-4.ckpt")  # the summary's "best"
    assert trainer._checkpoint_connector._parse_ckpt_path(trainer.state.fn, "last", True, True) == str(checkpoints / "last.ckpt")


def test_last_checkpoint_is_written_at_epoch_ends_without_validation(tmp_path):
    # Validation every 4 epochs (as sonnet/quick does, generation is slow), 2 epochs: no validation ran.
    _fit_sentiment(tmp_path, monitor_patience=None, max_epochs=2, check_val_every_n_epoch=4)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 8)


def test_checkpointing_off_writes_no_checkpoints(tmp_path):
    _fit_sentiment(tmp_path, monitor_patience=None, enable_checkpointing=False)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_checkpoint_callback_given_to_the_trainer_is_kept(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    mine = ModelCheckpoint(dirpath=tmp_path / "mine", filename="step-{step}", every_n_train_steps=2, save_top_k=-1)
    trainer = _fit_sentiment(tmp_path, monitor_patience=None, callbacks=[mine])
    assert trainer.checkpoint_callbacks == [mine]
    assert sorted(p.name for p in tmp_path.rglob("*.ckpt")) == ["step-step=2.ckpt", "step-step=4.ckpt"]


def test_a_smart_trained_checkpoint_loads_into_the_task_without_smart(tmp_path):
    from ptl_gpt2.regularization import SMART

    trained = SentimentClassifier(num_classes=2, smart=SMART(), **TINY)
    trained.smart.slow = {"head.weight": torch.zeros(2, 64)}  # as after SMART's first optimizer step
    checkpoint = {"state_dict": trained.state_dict()}
    assert "smart._extra_state" in checkpoint["state_dict"]
    plain = SentimentClassifier(num_classes=2, **TINY)
    plain.on_load_checkpoint(checkpoint)  # Lightning calls it before loading the state dict
    plain.load_state_dict(checkpoint["state_dict"])  # strict, as Lightning loads it
    torch.testing.assert_close(plain.head.weight, trained.head.weight)
    resumed = SentimentClassifier(num_classes=2, smart=SMART(), **TINY)  # resuming SMART keeps its state
    checkpoint = {"state_dict": trained.state_dict()}
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"])
    assert resumed.smart.slow.keys() == {"head.weight"}


def test_a_checkpoint_that_does_not_fit_is_one_error_naming_the_cause():
    from ptl_gpt2.model.checkpoint import CheckpointError
    from ptl_gpt2.peft import inject_lora

    def load(task, checkpoint):  # as Lightning loads a checkpoint: the hook, then a strict state dict
        task.on_load_checkpoint(checkpoint)
        task.load_state_dict(checkpoint["state_dict"])

    lora = SentimentClassifier(num_classes=2, **TINY)
    inject_lora(lora.model, ["c_attn"], r=2)
    plain = SentimentClassifier(num_classes=2, **TINY)
    with pytest.raises(CheckpointError, match=r"has weights this model has no place for: 4 .*lora_A.*"
                                              r"saved by a run with the LoRA callback \(options \{'r': 2\}\)"):
        load(plain, {"state_dict": lora.state_dict(), "peft": {"method": "LoRA", "config": {"r": 2}}})
    with pytest.raises(CheckpointError, match=r"lacks weights of this model: 4 .*without this run's PEFT callback"):
        load(lora, {"state_dict": plain.state_dict()})
    five = SentimentClassifier(num_classes=5, **TINY)
    with pytest.raises(CheckpointError, match=r"of another shape: 2 \(e.g. size mismatch for head.weight"):
        load(five, {"state_dict": plain.state_dict()})
    trained = SentimentClassifier(num_classes=2, **TINY)
    load(plain, {"state_dict": trained.state_dict()})  # fits: loads
    torch.testing.assert_close(plain.head.weight, trained.head.weight)
    assert plain.load_state_dict({}, strict=False).missing_keys  # not strict: torch's answer, no error


def test_a_float_checkpoint_still_loads_into_a_quantised_task():
    # Quantised layers rename their keys in load hooks (weight -> weight_qdata, weight_scale): the
    # fit check must compare after them, as torch does.
    from ptl_gpt2.quantization import quantize_model

    trained = SentimentClassifier(num_classes=2, **TINY)
    quantised = SentimentClassifier(num_classes=2, **TINY)
    quantize_model(quantised.model, "int8")
    quantised.on_load_checkpoint({"state_dict": trained.state_dict()})
    quantised.load_state_dict(trained.state_dict())
    torch.testing.assert_close(quantised.head.weight, trained.head.weight)
