"""Running a sweep: one folder and manifest per run, finished runs skipped on restart, --only-index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptl_gpt2.commands.sweep import main as sweep_main
from ptl_gpt2.sweep import expand, load_grid, run_sweep
from tests import fixture_files

ROOT = Path(__file__).resolve().parents[2]


class FakeRunner:
    """Records the calls and writes a summary.json, failing the runs it is told to fail."""

    def __init__(self, fail: set[int] = frozenset()):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, args: list[str], run_dir: Path) -> int:
        self.calls.append(args)
        if len(self.calls) - 1 in self.fail:
            return 1
        (run_dir / "summary.json").write_text(json.dumps({"metrics": {"val/acc": 0.5}}))
        return 0


@pytest.fixture
def runs(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: [a.yaml]\nseeds: [0, 1]\nmodel.init_args.optimizer.init_args.lr: [0.1, 0.2]\n")
    return expand(load_grid(grid))


def test_every_run_gets_its_folder_manifest_and_logger(runs, tmp_path):
    runner = FakeRunner()
    outcome = run_sweep(runs, tmp_path / "sweep", runner, echo=lambda _: None)
    assert outcome == {"done": [0, 1, 2, 3], "skipped": [], "failed": []}
    for run, args in zip(runs, runner.calls):
        run_dir = tmp_path / "sweep" / run.name
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "done" and manifest["index"] == run.index and manifest["seed"] == run.seed
        assert manifest["overrides"] == [["model.init_args.optimizer.init_args.lr", run.overrides[0][1]]]
        assert args[0] == "fit" and f"--trainer.default_root_dir={run_dir}" in args
        logger = json.loads(next(a for a in args if a.startswith("--trainer.logger=")).split("=", 1)[1])
        assert logger["init_args"]["save_dir"] == str(run_dir)


def test_restart_skips_finished_runs_and_retries_failed_ones(runs, tmp_path):
    first = FakeRunner(fail={1, 3})
    outcome = run_sweep(runs, tmp_path, first, echo=lambda _: None)
    assert outcome == {"done": [0, 2], "skipped": [], "failed": [1, 3]}
    assert json.loads((tmp_path / runs[1].name / "manifest.json").read_text())["status"] == "failed"
    second = FakeRunner()
    outcome = run_sweep(runs, tmp_path, second, echo=lambda _: None)
    assert outcome == {"done": [1, 3], "skipped": [0, 2], "failed": []}
    assert len(second.calls) == 2


def test_only_index_runs_one(runs, tmp_path):
    runner = FakeRunner()
    assert run_sweep(runs, tmp_path / "sweep", runner, only_index=2, echo=lambda _: None)["done"] == [2]
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == [runs[2].name]
    with pytest.raises(IndexError, match="0..3"):
        run_sweep(runs, tmp_path, runner, only_index=4)


@pytest.mark.slow
def test_real_quick_run_then_restart_skips(tmp_path, monkeypatch, capsys):
    """configs/quora/quick.yaml for one step as a real subprocess (~10 s), then a restart."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    fixture_files.write_quora(tmp_path / "data", {"train_file": "quora-train-30.csv", "dev_file": "quora-dev-30.csv",
                                                  "test_file": "quora-test-student-30.csv"})
    (tmp_path / "grid.yaml").write_text("""
fixed:
  data.init_args.data_dir: data
  trainer.max_steps: 1
  trainer.limit_val_batches: 1
  trainer.num_sanity_val_steps: 0
  trainer.enable_progress_bar: false
grid:
  model.init_args.optimizer.init_args.lr: [0.001]
""")
    argv = ["--config", str(ROOT / "configs/quora/quick.yaml"), "--grid", "grid.yaml", "--out", "sweep", "--seeds", "3"]
    sweep_main(argv)
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 1 and summaries[0].parent.name.startswith("lr=0.001,seed=3_")
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["global_step"] == 1 and "val/acc" in summary["metrics"]
        assert json.loads((path.parent / "manifest.json").read_text())["task"] == "quora"
        assert "seed_everything: 3" in (path.parent / "config.yaml").read_text()  # the sweep's seed was used
    capsys.readouterr()
    sweep_main(argv)
    assert "0 run, 1 skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_lora_grid_point_trains_only_the_adapters_and_head(tmp_path, monkeypatch):
    """One point of configs/sweeps/lora_grid.yaml (r=16, alpha=1), one step: the trained count is
    2 x r x (64 + 192) LoRA weights on c_attn of the 2-block tiny model + the 325-weight head."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    fixture_files.write_sentiment(tmp_path / "data", {"train_file": "ids-sst-train.csv", "dev_file": "ids-sst-dev.csv",
                                                      "test_file": "ids-sst-test-student.csv"}, 5)
    monkeypatch.chdir(ROOT)  # the grid names configs/sst/quick.yaml relative to the repository
    sweep_main(["--grid", "configs/sweeps/lora_grid.yaml", "--out", str(tmp_path / "sweep"), "--only-index", "4",
                "--", f"--data.init_args.data_dir={tmp_path / 'data'}", "--trainer.max_steps=1",
                "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
                "--trainer.enable_progress_bar=false"])
    (summary,) = (tmp_path / "sweep").glob("*/summary.json")
    assert summary.parent.name.startswith("r=16_alpha=1,seed=0_")
    assert json.loads(summary.read_text())["trainable_params"] == 2 * 16 * (64 + 192) + 325


def test_a_malformed_grid_file_is_one_line_naming_the_file(tmp_path):
    grid = tmp_path / "bad.yaml"
    grid.write_text("grid:\n  configs: [configs/sst/quick.yaml]\n")  # an axis value must be a list of files
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(["--grid", str(grid), "--out", str(tmp_path / "out")])
    message = str(exit_info.value.code)
    assert message.startswith("ptl-gpt2 sweep: error: ") and str(grid) in message and "configs" in message
