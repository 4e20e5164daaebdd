"""`ptl-gpt2 sweep`: run every combination of a grid of config overrides, each as a normal fit.

    ptl-gpt2 sweep --config configs/sst/quick.yaml --grid configs/sweeps/lora_grid.yaml --out sweeps/lora
    ptl-gpt2 sweep --grid configs/sweeps/lora_grid.yaml --out sweeps/lora --list          # the runs, numbered
    ptl-gpt2 sweep --grid configs/sweeps/lora_grid.yaml --out sweeps/lora --only-index 3  # one run (SLURM arrays)
    ptl-gpt2 report sweeps/lora

Each run gets `<out>/<point>,seed=<s>_<hash>/` with manifest.json, log.txt, metrics.csv,
checkpoints and summary.json; runs with a summary.json are skipped, so rerunning resumes.
Arguments after `--` are added to every run (`-- --trainer.max_steps=10`). See docs/sweep.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..sweep import expand, load_grid, run_sweep
from ..sweep.runner import run_args


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="ptl-gpt2 sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--grid", required=True, help="grid YAML (base, seeds, fixed, grid)")
    parser.add_argument("--config", action="append", default=[], help="base config of every run (repeatable)")
    parser.add_argument("--out", required=True, help="sweep folder (one subfolder per run)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds, replacing the grid file's")
    parser.add_argument("--only-index", type=int, help="run only this run index (0-based; see --list)")
    parser.add_argument("--list", action="store_true", help="print the runs and their commands, run nothing")
    return parser.parse_args(argv), extra


def main(argv: list[str] | None = None) -> None:
    args, extra = parse(sys.argv[1:] if argv is None else list(argv))
    try:
        spec = load_grid(args.grid)
    except ValueError as err:  # a malformed grid file: the message names the file and the key
        raise SystemExit(f"ptl-gpt2 sweep: error: {err}") from None
    # Extra arguments go before the grid's own overrides, so a grid axis still wins over them.
    spec["fixed"] = {**{a.split("=", 1)[0].removeprefix("--"): a.split("=", 1)[1] for a in extra if "=" in a},
                     **spec["fixed"]}
    bad = [a for a in extra if "=" not in a or not a.startswith("--")]
    if bad:
        raise SystemExit(f"ptl-gpt2 sweep: arguments after -- must look like --key=value, got {bad}")
    try:
        runs = expand(spec, args.config, args.seeds)
    except ValueError as err:
        raise SystemExit(f"ptl-gpt2 sweep: error: {err}") from None
    if args.list:
        for run in runs:
            print(json.dumps({"index": run.index, "name": run.name,
                              "command": shlex.join(["ptl-gpt2", *run_args(run, Path(args.out) / run.name)])}))
        return
    outcome = run_sweep(runs, args.out, only_index=args.only_index)
    print(f"sweep {args.out}: {len(outcome['done'])} run, {len(outcome['skipped'])} skipped (finished before), "
          f"{len(outcome['failed'])} failed {outcome['failed'] or ''}")
    if outcome["failed"]:
        raise SystemExit(1)
