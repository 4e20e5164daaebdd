"""A grid YAML -> the list of runs it stands for (every combination of its axes, times its seeds).

    base: [configs/sst/quick.yaml]        # config(s) of every run (optional; --config adds more)
    seeds: [0, 1, 2]                      # each point runs once per seed (--seed_everything)
    fixed:                                # overrides of every run, given before the grid's
      trainer.max_steps: 40
    grid:                                 # axes, in order; every combination is one point
      configs: [[], [configs/knobs/smart.yaml]]     # config fragments stacked on the base
      model.init_args.optimizer.init_args.lr: [1.0e-3, 3.0e-3]

Without a `grid:` key, every other top-level key is an axis (`{"model...lr": [1e-3, 3e-3]}`).
An override key is any LightningCLI option (`trainer.callbacks+` appends a callback, and
`trainer.callbacks.r` then sets an option of the callback appended last), so the order of the
keys is the order of the command-line arguments.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RESERVED = {"base", "seeds", "fixed", "grid"}
CONFIGS_AXIS = "configs"


@dataclass
class Run:
    """One `ptl-gpt2 fit`: configs, then overrides `(key, value)` in order, then the seed."""

    index: int
    configs: list[str]
    overrides: list[tuple[str, Any]]
    seed: int | None
    point: dict[str, str] = field(default_factory=dict)  # axis -> short value, the folder name's readable part
    # axis -> the value as the report's row label shows it: the short value, unless another value on
    # the axis has the same short value (see `unique_labels`)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.labels.items()) or "base"

    @property
    def name(self) -> str:
        """Folder name: readable, and unique through a hash of everything that defines the run, so a
        restart finds the same folder even after the grid gained or lost values."""
        canonical = json.dumps([self.configs, self.overrides, self.seed], sort_keys=True, default=str)
        digest = hashlib.sha1(canonical.encode()).hexdigest()[:8]
        short = ",".join(f"{k}={v}" for k, v in self.point.items()) or "base"  # not `label`: it depends on the other values
        slug = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", short)[:80]
        seed = "" if self.seed is None else f",seed={self.seed}"
        return f"{slug}{seed}_{digest}"

    def cli_args(self) -> list[str]:
        """Arguments of `ptl-gpt2 fit` (the run folder and logger are added by the runner)."""
        args = [arg for config in self.configs for arg in ("--config", config)]
        args += [f"--{key}={cli_value(value)}" for key, value in self.overrides]
        if self.seed is not None:
            args.append(f"--seed_everything={self.seed}")
        return args


def cli_value(value: Any) -> str:
    """Strings as they are (class paths, names); everything else as JSON, which jsonargparse reads."""
    return value if isinstance(value, str) else json.dumps(value)


def short_value(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):  # a configs-axis value
        return "+".join(Path(v).stem for v in value) or "base"
    if isinstance(value, dict):
        name = value.get("class_path", "")
        return name.rsplit(".", 1)[-1] if name else json.dumps(value, sort_keys=True)
    return cli_value(value)


def unique_labels(values: list[Any], short: list[str]) -> list[str]:
    """The short value of each value on an axis, or the value in full where two values share a short
    one (configs/sst/quick.yaml and configs/exp/quick.yaml; two AdamW with different lr): the report
    groups runs by label, so a shared label would pool different runs as seeds of one row."""
    counts = Counter(short)
    return [label if counts[label] == 1 else full_value(v) for label, v in zip(short, values)]


def full_value(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(map(str, value)) or "base"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return cli_value(value)


def short_key(key: str) -> str:
    return key.rstrip("+").rsplit(".", 1)[-1]


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read and check a grid YAML; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--grid: {path} does not exist")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a grid file is a mapping (base, seeds, fixed, grid), got {type(spec).__name__}")
    axes = spec["grid"] if "grid" in spec else {k: v for k, v in spec.items() if k not in RESERVED}
    for key, values in (axes or {}).items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid axis '{key}' must be a non-empty list of values, got {values!r}")
        if key == CONFIGS_AXIS and not all(isinstance(v, list) for v in values):
            raise ValueError(f"{path}: grid axis 'configs' takes lists of config files, e.g. [[], [configs/knobs/smart.yaml]]")
    base = spec.get("base") or []
    seeds = spec.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds)):
        raise ValueError(f"{path}: 'seeds' must be a list of integers, got {seeds!r}")
    fixed = spec.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ValueError(f"{path}: 'fixed' must be a mapping of override -> value, got {fixed!r}")
    return {"base": [base] if isinstance(base, str) else list(base), "seeds": seeds, "fixed": fixed,
            "grid": dict(axes or {})}


def expand(spec: dict[str, Any], configs: list[str] | None = None, seeds: list[int] | None = None) -> list[Run]:
    """Every combination of the axes (the last axis varies fastest), each once per seed.

    `configs` (from `--config`) come before the grid's `base`; `seeds` replaces the grid's seeds.
    """
    base = list(configs or []) + list(spec.get("base") or [])
    seeds = seeds if seeds is not None else spec.get("seeds")
    axes = spec.get("grid") or {}
    keys = [CONFIGS_AXIS if k == CONFIGS_AXIS else short_key(k) for k in axes]
    shorts = [[short_value(v) for v in values] for values in axes.values()]
    labels = [unique_labels(values, short) for values, short in zip(axes.values(), shorts)]
    runs = []
    for picks in itertools.product(*(range(len(v)) for v in axes.values())):
        point = {k: axes[k][i] for k, i in zip(axes, picks)}
        extra = list(point.pop(CONFIGS_AXIS, []))
        overrides = list((spec.get("fixed") or {}).items()) + list(point.items())
        short = {key: axis[i] for key, axis, i in zip(keys, shorts, picks)}
        label = {key: axis[i] for key, axis, i in zip(keys, labels, picks)}
        for seed in seeds if seeds else [None]:
            runs.append(Run(len(runs), base + extra, overrides, seed, short, label))
    if not base and not any(r.configs for r in runs):
        raise ValueError("sweep: no config: give --config or `base:` (or a `configs` axis) in the grid file")
    return runs


def task_name(configs: list[str]) -> str:
    """The task a run belongs to in the report: the folder of the last config that names a model
    class (configs/sst/quick.yaml -> sst); fragments such as knobs/smart.yaml do not count."""
    name = "run"
    for config in configs:
        try:
            data = yaml.safe_load(Path(config).read_text()) or {}
        except OSError:
            continue
        if isinstance(data.get("model"), dict) and "class_path" in data["model"]:
            name = Path(config).parent.name
    return name
