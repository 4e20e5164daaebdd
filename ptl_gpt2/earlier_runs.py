"""`--ckpt_path last` / `best` across runs: checkpoints of earlier runs of the same task on the same data.

Lightning resolves "last" and "best" within the current Trainer: "last" in this run's own checkpoint
folder, "best" from the ModelCheckpoint's memory of this process's `fit`. With a versioned logger
(the CLI's default: runs/lightning_logs/version_N/checkpoints) every run gets a new, empty folder,
so a resumed `fit` would warn and train from scratch, `validate` would score random weights, and
"best" fails outright. Here, among the runs beside this one (runs/lightning_logs/*) whose saved
config.yaml names the same task class, DataModule class and PEFT callbacks (which decide what
weights a checkpoint holds), "last" is the newest last.ckpt and "best" the newest best-*.ckpt: the
best checkpoint of the latest such run (each task keeps one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from .tasks.base import BEST_CHECKPOINT

# The file names the tasks' ModelCheckpoints write: last.ckpt, best-*.ckpt.
FILE_PATTERNS = {
    which: re.sub(r"\{.*", "*", name) + ModelCheckpoint.FILE_EXTENSION  # from the first {field} on: *
    for which, name in (("last", ModelCheckpoint.CHECKPOINT_NAME_LAST), ("best", BEST_CHECKPOINT))
}
# Callbacks that change which weights a checkpoint holds (adapters, adapter-only checkpoints).
STATE_SHAPING_CALLBACKS = "ptl_gpt2.peft."

Recipe = tuple[str | None, str | None, tuple[str, ...]]


def recipe(config: dict[str, Any]) -> Recipe:
    """What a run's checkpoints fit: (task class_path, DataModule class_path, PEFT callback class_paths)."""

    def class_path(section: object) -> str | None:
        return section.get("class_path") if isinstance(section, dict) else None

    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    peft = sorted(c for c in map(class_path, callbacks) if c and c.startswith(STATE_SHAPING_CALLBACKS))
    return class_path(config.get("model")), class_path(config.get("data")), tuple(peft)


def saved_recipe(config_file: Path) -> Recipe | None:
    """The recipe of a run's saved config.yaml; None if it cannot be read."""
    try:
        config = yaml.safe_load(config_file.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return recipe(config) if isinstance(config, dict) else None


def describe(run: Recipe) -> str:
    """E.g. "SentimentClassifier run on SSTDataModule with LoRA"."""

    def short(path: str | None) -> str | None:
        return path.rsplit(".", 1)[-1] if path else None

    model, data, peft = run
    text = f"{short(model)} run on {short(data) or 'no data'}"
    return text + (f" with {', '.join(map(short, peft))}" if peft else "")


def find_checkpoint(runs: Path, run: Recipe, which: str = "last") -> Path | None:
    """The newest `<run>/checkpoints/<last.ckpt | best-*.ckpt>` under `runs` (or `runs/checkpoints/...`,
    where runs without a logger write) of a run with the same recipe; None if there is none."""
    pattern = f"checkpoints/{FILE_PATTERNS[which]}"
    found = [
        ckpt
        for ckpt in [*runs.glob(f"*/{pattern}"), *runs.glob(pattern)]  # a run per folder; without a logger, runs/ itself
        if saved_recipe(ckpt.parent.parent / "config.yaml") == run
    ]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)
