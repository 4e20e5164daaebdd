"""`--ckpt_path last` / `best` find the checkpoints of earlier runs of the same task and data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from ptl_gpt2.cli import main
from ptl_gpt2.earlier_runs import describe, find_checkpoint, recipe, saved_recipe
from ptl_gpt2.model.checkpoint import CheckpointError
from tests.cli.test_configs import ROOT, fixture_args

TWO_STEPS = [
    "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=1.0",
    "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("sys.argv", ["ptl-gpt2"])


def fit(task: str, tmp_path: Path, *extra: str) -> dict:
    """Fit a quick recipe on fixture files; return the new run's summary."""
    config = ROOT / "configs" / task / "quick.yaml"
    before = set((tmp_path / "runs").glob("lightning_logs/version_*"))
    main(["fit", "--config", str(config), *TWO_STEPS, *fixture_args(config, tmp_path), *extra])
    (run,) = set((tmp_path / "runs").glob("lightning_logs/version_*")) - before
    return json.loads((run / "summary.json").read_text())


def test_fit_resumes_the_newest_run_of_the_same_task_and_data(tmp_path, caplog):
    first = fit("sst", tmp_path, "--trainer.max_epochs=1")
    assert (first["global_step"], first["samples_seen"]) == (2, 6)  # the fixture: 6 rows, batches of 4
    fit("cfimdb", tmp_path, "--trainer.max_epochs=1")  # newer, same task class, other data: not this one's
    fit("sst", tmp_path, "--trainer.max_epochs=1", "--trainer.callbacks+=ptl_gpt2.peft.LoRA")  # its checkpoint holds adapters
    with caplog.at_level("INFO"):
        resumed = fit("sst", tmp_path, "--trainer.max_epochs=2", "--ckpt_path=last")
    assert "lightning_logs/version_0/checkpoints/last.ckpt" in caplog.text
    # Epoch 1 only: two more steps, on top of the two it resumed from.
    assert (resumed["global_step"], resumed["epochs"], resumed["samples_seen"]) == (4, 2, 6)
    last = torch.load(tmp_path / "runs/lightning_logs/version_3/checkpoints/last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 4)

    config = ROOT / "configs/sst/quick.yaml"
    caplog.clear()
    with caplog.at_level("INFO"):
        main(["validate", "--config", str(config), *fixture_args(config, tmp_path), "--ckpt_path=best"])
    (best,) = (tmp_path / "runs/lightning_logs/version_3/checkpoints").glob("best-*.ckpt")
    assert f"--ckpt_path best: {best.relative_to(tmp_path)} (the best checkpoint of the latest SentimentClassifier" in caplog.text


def test_fit_with_no_earlier_run_starts_from_the_beginning(tmp_path, caplog):
    with caplog.at_level("INFO"):
        summary = fit("sst", tmp_path, "--trainer.max_epochs=1", "--ckpt_path=last")
    assert "no last.ckpt of an earlier SentimentClassifier run on SSTDataModule" in caplog.text
    assert summary["global_step"] == 2


@pytest.mark.parametrize("which, file", [("last", "last.ckpt"), ("best", "best-*.ckpt")])
def test_validate_with_no_earlier_run_refuses_to_score_random_weights(tmp_path, which, file):
    config = ROOT / "configs/sst/quick.yaml"
    with pytest.raises(CheckpointError, match=rf"--ckpt_path {which}: no {re.escape(file)} of an earlier SentimentClassifier"):
        main(["validate", "--config", str(config), *fixture_args(config, tmp_path), f"--ckpt_path={which}"])


def test_find_checkpoint_skips_runs_without_a_config_or_of_another_recipe(tmp_path):
    def run(name: str, config: str | None) -> Path:
        ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"")
        (ckpt.parent / "best-0-1.ckpt").write_bytes(b"")
        if config is not None:
            (tmp_path / name / "config.yaml").write_text(config)
        return ckpt

    sst = "model: {class_path: ptl_gpt2.tasks.SentimentClassifier}\ndata: {class_path: datamodules.SSTDataModule}\n"
    ours = run("version_0", sst + "trainer: {callbacks: [{class_path: ptl_gpt2.callbacks.RunSummary}]}\n")
    run("version_1", None)  # a run without a saved config: unknown recipe
    run("version_2", "model: [")  # unreadable
    run("version_3", sst.replace("SentimentClassifier", "LanguageModel"))
    lora = run("version_4", sst + "trainer: {callbacks: [{class_path: ptl_gpt2.peft.LoRA, init_args: {r: 4}}]}\n")
    plain = recipe(yaml.safe_load(sst))
    assert plain == ("ptl_gpt2.tasks.SentimentClassifier", "datamodules.SSTDataModule", ())
    assert find_checkpoint(tmp_path, plain) == ours  # other callbacks do not matter; PEFT ones do
    assert find_checkpoint(tmp_path, plain, which="best") == ours.parent / "best-0-1.ckpt"
    with_lora = (*plain[:2], ("ptl_gpt2.peft.LoRA",))
    assert find_checkpoint(tmp_path, with_lora) == lora
    assert describe(with_lora) == "SentimentClassifier run on SSTDataModule with LoRA"
    assert find_checkpoint(tmp_path, ("ptl_gpt2.tasks.SentimentClassifier", "datamodules.CFIMDBDataModule", ())) is None
    assert saved_recipe(tmp_path / "version_2" / "config.yaml") is None


def test_without_a_logger_best_is_found_in_the_one_checkpoint_folder(tmp_path, caplog):
    config = ROOT / "configs/sst/quick.yaml"
    no_logger = ["--trainer.logger=false", *TWO_STEPS, *fixture_args(config, tmp_path)]
    main(["fit", "--config", str(config), "--trainer.max_epochs=1", *no_logger])
    (best,) = (tmp_path / "runs/checkpoints").glob("best-*.ckpt")
    with caplog.at_level("INFO"):  # Lightning alone: "ModelCheckpoint is not configured to save the best model"
        main(["validate", "--config", str(config), "--ckpt_path=best", *no_logger])
    assert f"--ckpt_path best: {best.relative_to(tmp_path)}" in caplog.text
