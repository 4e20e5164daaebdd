"""`ptl-gpt2 report <sweep dir>`: per-task markdown + CSV tables and PNG plots of a sweep.

    ptl-gpt2 report sweeps/lora                      # -> sweeps/lora/report/<task>.{md,csv,png}
    ptl-gpt2 report sweeps/lora --metric val/loss    # a final metric instead of the best checkpoint's

The metric is the best checkpoint's score (the task's dev metric) unless --metric names one;
rows are mean ± sample std over seeds. Plots (metric vs trainable params, metric vs peak memory,
the Pareto front in red) need matplotlib: `pip install -e '.[report]'`.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..sweep import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ptl-gpt2 report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", help="folder written by `ptl-gpt2 sweep --out`")
    parser.add_argument("--out", help="where to write (default <sweep_dir>/report)")
    parser.add_argument("--metric", help="a metric of summary.json's `metrics` (default: the best checkpoint's)")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    with warnings.catch_warnings(record=True) as caught:  # runs left out: one plain line each
        warnings.simplefilter("always")
        try:
            written = write_report(args.sweep_dir, args.out, args.metric)
        finally:
            for warning in caught:
                print(f"ptl-gpt2 {warning.message}", file=sys.stderr)
    for path in written:
        if path.suffix == ".md":
            print(path.read_text())
    print("wrote " + ", ".join(str(p) for p in written))
