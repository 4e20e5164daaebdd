"""The report of a tiny finished sweep whose summary.json files are written by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from ptl_gpt2.commands.report import main as report_main
from ptl_gpt2.sweep import aggregate, collect, pareto_front

# (task, label, seed, dev score, trainable params, peak MB, tokens/s, wall s)
RUNS = [
    ("sst", "r=1", 0, 0.30, 837, 500.0, 100.0, 10.0),
    ("sst", "r=1", 1, 0.34, 837, 520.0, 110.0, 12.0),
    ("sst", "r=16", 0, 0.40, 8517, 510.0, 90.0, 11.0),
    ("sst", "r=16", 1, 0.36, 8517, 530.0, 95.0, 13.0),
    ("sst", "full", 0, 0.37, 3332928, 900.0, 50.0, 20.0),  # more params, worse than r=16: off the front
    ("lm", "base", 0, 6.3, 3332928, 1000.0, 80.0, 30.0),
]


def write_sweep(root: Path) -> Path:
    for i, (task, label, seed, score, trainable, peak, tps, wall) in enumerate(RUNS):
        run = root / f"run{i}"
        run.mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"index": i, "task": task, "label": label, "seed": seed}))
        monitor = "val/loss" if task == "lm" else "val/acc"
        (run / "summary.json").write_text(json.dumps({
            "metrics": {monitor: score, "train/loss": 1.0}, "best": {"monitor": monitor, "score": score, "path": ""},
            "trainable_params": trainable, "total_params": 3332928, "peak_memory_mb": peak,
            "tokens_per_s": tps, "wall_time_s": wall}))
    (root / "unfinished").mkdir()  # a run still going: manifest only, left out
    (root / "unfinished" / "manifest.json").write_text(json.dumps({"index": 9, "task": "sst", "label": "r=256"}))
    return root


def test_mean_and_sample_std_over_seeds(tmp_path):
    with pytest.warns(UserWarning, match=r"1 run\(s\) left out, no summary.json yet .*: unfinished$"):
        tables = aggregate(collect(write_sweep(tmp_path)))
    assert set(tables) == {"sst", "lm"}
    sst = {row["label"]: row for row in tables["sst"]}
    assert list(sst) == ["r=1", "r=16", "full"]  # grid order
    assert sst["r=1"]["metric_mean"] == pytest.approx(0.32)
    assert sst["r=1"]["metric_std"] == pytest.approx(math.sqrt(2 * 0.02**2))  # sample std of 0.30, 0.34
    assert sst["r=16"]["metric_mean"] == pytest.approx(0.38)
    assert sst["r=16"]["peak_memory_mb"] == pytest.approx(520.0) and sst["r=16"]["wall_time_s"] == pytest.approx(12.0)
    assert sst["full"]["seeds"] == 1 and sst["full"]["metric_std"] is None
    assert tables["lm"][0]["metric"] == "val/loss"


def test_pareto_front():
    # (cost, metric): (2, 0.5) is beaten by (1, 0.6); equal points both stay.
    assert pareto_front([(1, 0.6), (2, 0.5), (3, 0.9), (3, 0.9)]) == [0, 2, 3]
    assert pareto_front([(1, 5.0), (2, 4.0), (3, 4.5)], maximize=False) == [0, 1]  # losses: lower is better


def test_report_writes_markdown_csv_per_task(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep")
    report_main([str(sweep), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "sst.md").read_text()
    assert "| r=1 | 2 | 0.3200 ± 0.0283 | 837 | 3,332,928 | 510 | 105 | 11 |" in text
    assert "| full | 1 | 0.3700 | 3,332,928 |" in text
    assert "val/loss (lower is better)" in (tmp_path / "out" / "lm.md").read_text()
    rows = list(csv.DictReader(open(tmp_path / "out" / "sst.csv")))
    assert [r["label"] for r in rows] == ["r=1", "r=16", "full"]
    assert float(rows[1]["metric_mean"]) == pytest.approx(0.38) and rows[2]["metric_std"] == ""
    printed = capsys.readouterr()
    assert "0.3200 ± 0.0283" in printed.out
    assert printed.err == "ptl-gpt2 report: 1 run(s) left out, no summary.json yet (still running, or failed: see its " \
        "log.txt): unfinished\n"


def test_report_metric_option_and_empty_sweep(tmp_path):
    sweep = write_sweep(tmp_path / "sweep")
    tables = aggregate(collect(sweep, metric="train/loss"))
    assert all(row["metric"] == "train/loss" and row["metric_mean"] == 1.0 for row in tables["sst"])
    with pytest.raises(FileNotFoundError, match="nothing is not a folder"):
        report_main([str(tmp_path / "nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no finished run"):
        report_main([str(tmp_path / "empty")])
    with pytest.warns(UserWarning, match=r"6 run\(s\) left out, no val/f1 in summary.json \(did validation run\?\)"):
        assert collect(sweep, metric="val/f1") == []  # a metric no run logged


def test_plots_with_the_pareto_front(tmp_path):
    pytest.importorskip("matplotlib")
    sweep = write_sweep(tmp_path / "sweep")
    report_main([str(sweep)])
    for name in ("sst_vs_trainable_params.png", "sst_vs_peak_memory.png", "lm_vs_trainable_params.png"):
        png = sweep / "report" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
