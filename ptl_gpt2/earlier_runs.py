"""`--ckpt_path last` / `best` across runs: checkpoints of earlier runs of the same task on the same data.

Lightning resolves "last" and "best" within the current Trainer: "last" in this run's own checkpoint
folder, "best" from the ModelCheckpoint's memory of this process's `fit`. With a versioned logger
(the CLI's default: runs/lightning_logs/version_N/checkpoints) every run gets a new, empty folder,
so a resumed `fit` would warn and train from scratch, `validate` would score random weights, and
"best" fails outright. Here, among the runs beside this one (runs/lightning_logs/*) whose saved
config.yaml names the same task class and DataModule class, "last" is the newest last.ckpt and
"best" the newest best-*.ckpt: the best checkpoint of the latest such run (each task keeps one).
"""

from __future__ import annotations

from pathlib import Path

import yaml

FILE_PATTERNS = {"last": "last.ckpt", "best": "best-*.ckpt"}  # as the tasks' ModelCheckpoints name them


def recipe_classes(config_file: Path) -> tuple[str | None, str | None]:
    """(model class_path, data class_path) of a run's saved config.yaml; None where it has none."""
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None, None

    def class_path(section: object) -> str | None:
        return section.get("class_path") if isinstance(section, dict) else None

    return class_path(config.get("model")), class_path(config.get("data"))


def find_checkpoint(runs: Path, model_class: str, data_class: str | None, which: str = "last") -> Path | None:
    """The newest `<run>/checkpoints/<last.ckpt | best-*.ckpt>` under `runs` whose run trained
    `model_class` on `data_class`; None if there is none."""
    found = [
        ckpt
        for ckpt in runs.glob(f"*/checkpoints/{FILE_PATTERNS[which]}")
        if recipe_classes(ckpt.parent.parent / "config.yaml") == (model_class, data_class)
    ]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)
