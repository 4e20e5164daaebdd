"""A finished (or partly finished) sweep folder -> per-task tables (markdown + CSV) and plots.

Each run folder holds `manifest.json` (what ran) and `summary.json` (what it measured). Runs with
the same point (same overrides, different seeds) become one row: the metric's mean and standard
deviation over seeds, and the mean cost (parameters, peak memory, tokens/s, wall time).
"""

from __future__ import annotations

import csv
import json
import statistics
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

from .runner import MANIFEST, find_summary

COLUMNS = ["label", "seeds", "metric", "metric_mean", "metric_std", "trainable_params", "total_params",
           "peak_memory_mb", "tokens_per_s", "wall_time_s"]


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in ("loss", "ppl", "perplexity"))


def run_metric(summary: dict[str, Any], metric: str | None) -> tuple[str, float] | None:
    """`metric` from the final metrics, or by default the score of the best checkpoint (the task's
    dev metric: val/acc, val/chrf, val/loss), else val/loss."""
    if metric:
        value = summary.get("metrics", {}).get(metric)
        return None if value is None else (metric, float(value))
    best = summary.get("best")
    if best and best.get("score") is not None:
        return best["monitor"], float(best["score"])
    value = summary.get("metrics", {}).get("val/loss")
    return None if value is None else ("val/loss", float(value))


def collect(sweep_dir: str | Path, metric: str | None = None) -> list[dict[str, Any]]:
    """One record per finished run (a manifest and a summary with the metric); a warning names the
    runs left out (no summary.json yet: running or failed; no metric: e.g. no validation ran)."""
    records = []
    left_out: dict[str, list[str]] = defaultdict(list)
    for manifest_path in sorted(Path(sweep_dir).glob(f"*/{MANIFEST}")):
        manifest = json.loads(manifest_path.read_text())
        summary_path = find_summary(manifest_path.parent)
        if summary_path is None:
            left_out["no summary.json yet (still running, or failed: see its log.txt)"].append(manifest_path.parent.name)
            continue
        summary = json.loads(summary_path.read_text())
        found = run_metric(summary, metric)
        if found is None:
            wanted = metric or "best-checkpoint score or val/loss"
            left_out[f"no {wanted} in summary.json (did validation run?)"].append(manifest_path.parent.name)
            continue
        records.append({"task": manifest.get("task", "run"), "label": manifest.get("label", manifest_path.parent.name),
                        "index": manifest.get("index", 0), "seed": manifest.get("seed"),
                        "metric": found[0], "value": found[1], **{k: summary.get(k) for k in
                        ("trainable_params", "total_params", "peak_memory_mb", "tokens_per_s", "wall_time_s")}})
    for reason, names in left_out.items():
        warnings.warn(f"report: {len(names)} run(s) left out, {reason}: {', '.join(names)}", stacklevel=2)
    return records


def mean(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def aggregate(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """task -> rows (one per point, in grid order), mean and sample std of the metric over seeds."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for record in records:
        groups[(record["task"], record["label"], record["metric"])].append(record)
    tables: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (task, label, metric), group in sorted(groups.items(), key=lambda g: (g[0][0], min(r["index"] for r in g[1]))):
        values = [r["value"] for r in group]
        tables[task].append({
            "label": label, "seeds": len(group), "metric": metric, "metric_mean": statistics.fmean(values),
            "metric_std": statistics.stdev(values) if len(values) > 1 else None,
            **{k: mean([r[k] for r in group]) for k in ("trainable_params", "total_params", "peak_memory_mb",
                                                         "tokens_per_s", "wall_time_s")},
        })
    return dict(tables)


def pareto_front(points: list[tuple[float, float]], maximize: bool = True) -> list[int]:
    """Indices of the points no other point beats: cost x no larger and metric y no worse, one strictly."""
    sign = 1 if maximize else -1
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            ox <= x and sign * oy >= sign * y and (ox < x or sign * oy > sign * y)
            for j, (ox, oy) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}g}"
    return f"{int(value):,}"


def markdown(task: str, rows: list[dict[str, Any]]) -> str:
    metric = rows[0]["metric"]
    better = "lower" if lower_is_better(metric) else "higher"
    lines = [f"## {task}: {metric} ({better} is better)", "",
             f"| run | seeds | {metric} | trainable params | total params | peak memory MB | tokens/s | wall time s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        value = f"{row['metric_mean']:.4f}" + ("" if row["metric_std"] is None else f" ± {row['metric_std']:.4f}")
        lines.append(f"| {row['label']} | {row['seeds']} | {value} | {fmt(row['trainable_params'])} | "
                     f"{fmt(row['total_params'])} | {fmt(row['peak_memory_mb'], 5)} | {fmt(row['tokens_per_s'], 5)} | "
                     f"{fmt(row['wall_time_s'], 4)} |")
    return "\n".join(lines) + "\n"


def plot(task: str, rows: list[dict[str, Any]], cost: str, path: Path) -> bool:
    """metric vs `cost` with the Pareto front drawn; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in rows if r[cost] is not None]
    if not rows:
        return False
    metric = rows[0]["metric"]
    points = [(float(r[cost]), r["metric_mean"]) for r in rows]
    front = sorted(pareto_front(points, maximize=not lower_is_better(metric)), key=lambda i: points[i][0])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[r["metric_std"] or 0 for r in rows],
                fmt="o", color="tab:gray", alpha=0.7, label="runs (mean ± std over seeds)")
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "o-", color="tab:red", label="Pareto front")
    for i in front:
        ax.annotate(rows[i]["label"], points[i], fontsize=7, xytext=(3, 3), textcoords="offset points")
    if cost == "trainable_params" and min(p[0] for p in points) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(cost.replace("_", " "))
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} vs {cost.replace('_', ' ')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, metric: str | None = None) -> list[Path]:
    """Write `<task>.md`, `<task>.csv` and (with matplotlib) `<task>_vs_trainable_params.png`,
    `<task>_vs_peak_memory.png` to `out_dir` (default `<sweep_dir>/report`); returns the files."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"report: {sweep_dir} is not a folder (give the --out of `ptl-gpt2 sweep`)")
    tables = aggregate(collect(sweep_dir, metric))
    if not tables:
        raise FileNotFoundError(f"report: no finished run with a metric (manifest.json + summary.json) under {sweep_dir}")
    out = Path(out_dir) if out_dir else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for task, rows in tables.items():
        (out / f"{task}.md").write_text(markdown(task, rows))
        with open(out / f"{task}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: row[k] for k in COLUMNS} for row in rows)
        written += [out / f"{task}.md", out / f"{task}.csv"]
        for cost in ("trainable_params", "peak_memory_mb"):
            path = out / f"{task}_vs_{cost.removesuffix('_mb')}.png"
            if plot(task, rows, cost, path):
                written.append(path)
    return written
