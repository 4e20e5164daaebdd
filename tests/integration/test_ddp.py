"""2-process DDP on CPU (gloo): training runs, validation metrics equal a single-process run, and
prediction files are written once and complete. Sentiment (fixture files) and sonnets (demo corpus).

The DDP job is this file run as a script (`python tests/integration/test_ddp.py OUT DATA`): under
pytest, `strategy="ddp"` would re-launch the whole pytest session in the rank-1 process. The job
fits a few steps under DDP, saves the weights, validates and predicts; the test then validates and
predicts with the same weights in one process and compares.

Equal metrics need equal work on both sides: the dev splits hold 6 rows, so a DistributedSampler
splits them 3 + 3 without repeating a row (Lightning pads uneven splits by repeating rows, which
count twice in accuracy and loss; chrF and prediction files dedupe by id), and the sonnets are
decoded greedily (sampling draws depend on which rows share a batch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("sentiment", "sonnet")
FIT = {"max_steps": 2, "limit_val_batches": 1.0, "num_sanity_val_steps": 0, "logger": False,
       "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}

pytestmark = pytest.mark.slow


def build(task: str, data_dir: Path, predictions_dir: Path):
    """(model, datamodule) of a tiny, dropout-free, greedy-decoding run."""
    import datamodules
    from ptl_gpt2.tasks import SentimentClassifier, SonnetGenerator

    common = {"preset": "tiny", "dropout": 0.0, "predictions_dir": str(predictions_dir)}
    if task == "sentiment":
        return (SentimentClassifier(num_classes=5, head_dropout=0.0, **common),
                datamodules.SSTDataModule(data_dir=str(data_dir), batch_size=2))  # plain str: checkpoints load with weights_only
    generation = {"do_sample": False, "max_new_tokens": 8}
    return SonnetGenerator(generation=generation, **common), datamodules.SonnetDataModule(data_dir=None, batch_size=2)


def ddp_job(out: Path, data_dir: Path) -> None:
    """Run by both ranks: fit under DDP, save the weights, validate, predict; rank 0 writes metrics."""
    import lightning as L

    from ptl_gpt2.callbacks import RunSummary

    for task in TASKS:
        L.seed_everything(0)
        model, dm = build(task, data_dir, out / task / "predictions")
        # RunSummary as the CLI adds it: its end-of-fit sums are collectives every rank must join.
        trainer = L.Trainer(devices=2, strategy="ddp", default_root_dir=out / task, callbacks=[RunSummary()], **FIT)
        trainer.fit(model, dm)
        trainer.save_checkpoint(out / task / "final.ckpt")  # rank 0 writes it
        metrics = trainer.validate(model, dm, verbose=False)[0]
        trainer.predict(model, dm, return_predictions=False)
        if trainer.is_global_zero:
            info = {"metrics": metrics, "world_size": trainer.world_size, "global_step": trainer.global_step}
            (out / task / "ddp.json").write_text(json.dumps(info))


def single_run(task: str, out: Path, data_dir: Path) -> dict[str, float]:
    """Validate and predict the DDP-trained weights in this process, on one device."""
    import lightning as L
    import torch

    model, dm = build(task, data_dir, out / task / "single_predictions")
    model.load_state_dict(torch.load(out / task / "final.ckpt", weights_only=True)["state_dict"])
    trainer = L.Trainer(devices=1, default_root_dir=out / task / "single", **FIT)
    metrics = trainer.validate(model, dm, verbose=False)[0]
    trainer.predict(model, dm, return_predictions=False)
    return metrics


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path, float]:
    from tests import fixture_files

    out, data = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("data")
    names = {"train_file": "ids-sst-train.csv", "dev_file": "ids-sst-dev.csv", "test_file": "ids-sst-test-student.csv"}
    fixture_files.write_sentiment(data, names, 5)
    # A clean environment: no rank variables from an outer launcher, a private token cache.
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(XDG_CACHE_HOME=str(out / "cache"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, str(out), str(data)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out, data, seconds


@pytest.fixture(scope="module")
def single_runs(ddp_run) -> dict[str, dict[str, float]]:
    out, data, _ = ddp_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(out / "cache"))
        return {task: single_run(task, out, data) for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_ddp_metrics_equal_a_single_process_run(ddp_run, single_runs, task):
    out, _, seconds = ddp_run
    ddp = json.loads((out / task / "ddp.json").read_text())
    assert ddp["world_size"] == 2 and ddp["global_step"] == 2
    expected = {"sentiment": {"val/acc", "val/f1", "val/loss"}, "sonnet": {"val/loss", "val/ppl", "val/chrf", "val/perfect_rate"}}
    assert expected[task] <= set(ddp["metrics"]), ddp["metrics"]
    for key in expected[task]:
        assert ddp["metrics"][key] == pytest.approx(single_runs[task][key], rel=1e-5, abs=1e-6), key
    print(f"DDP job (both tasks, 2 processes) took {seconds:.1f} s")


def test_run_summary_counts_both_processes(ddp_run):
    out, data, _ = ddp_run
    summary = json.loads((out / "sentiment" / "summary.json").read_text())
    # 2 steps = one epoch: each process saw 3 of the 6 training rows, so together they saw each once.
    _, dm = build("sentiment", data, out / "unused")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(out / "cache"))
        dm.setup("fit")
    tokens = sum(int(batch["attention_mask"].sum()) for batch in dm.train_dataloader())
    assert (summary["world_size"], summary["global_step"]) == (2, 2)
    assert (summary["samples_seen"], summary["tokens_seen"]) == (6, tokens)


def rows_of(path: Path) -> list[str]:
    """The data rows of a prediction file (header dropped), in file order."""
    if path.suffix == ".csv":
        return [line for line in path.read_text().splitlines()[1:] if line.strip()]
    # generated_sonnets.txt: a header, then "\n<number>\n<sonnet>\n\n" blocks
    return [block.strip() for block in path.read_text().split("\n\n")[1:] if block.strip()]


@pytest.mark.parametrize(("task", "name", "n"), [("sentiment", "full-model-sst-test-out.csv", 6),
                                                 ("sonnet", "generated_sonnets.txt", 4)])
def test_prediction_files_are_written_once_and_complete(ddp_run, single_runs, task, name, n):
    out, _, _ = ddp_run
    files = list((out / task / "predictions").iterdir())
    assert [f.name for f in files] == [name], files  # one file, from rank 0
    ddp_rows = rows_of(files[0])
    ids = [row.split(",")[0].strip() if task == "sentiment" else row.split("\n")[0] for row in ddp_rows]
    assert len(ids) == n == len(set(ids)), ids  # every test row once: none lost, none repeated
    # The same rows as one process writes (their order is the ranks' order, see docs/scale.md).
    assert sorted(ddp_rows) == sorted(rows_of(out / task / "single_predictions" / name))


if __name__ == "__main__":
    ddp_job(Path(sys.argv[1]), Path(sys.argv[2]))
