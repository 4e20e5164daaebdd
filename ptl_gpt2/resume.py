"""`--ckpt_path last` across runs: the newest last.ckpt of an earlier run of the same task on the same data.

Lightning looks for "last" only in this run's own checkpoint folder. With a versioned logger (the
CLI's default: runs/lightning_logs/version_N/checkpoints) every run gets a new, empty one, so a
resumed `fit` would warn and train from scratch, and `validate`, `test` or `predict` would score
random weights. Here "last" means: among the runs beside this one (runs/lightning_logs/*), those
whose saved config.yaml names the same task class and DataModule class, the newest last.ckpt.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def recipe_classes(config_file: Path) -> tuple[str | None, str | None]:
    """(model class_path, data class_path) of a run's saved config.yaml; None where it has none."""
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None, None

    def class_path(section: object) -> str | None:
        return section.get("class_path") if isinstance(section, dict) else None

    return class_path(config.get("model")), class_path(config.get("data"))


def find_last_checkpoint(runs: Path, model_class: str, data_class: str | None) -> Path | None:
    """The newest `<run>/checkpoints/last.ckpt` under `runs` whose run trained `model_class` on `data_class`."""
    found = [
        ckpt
        for ckpt in runs.glob("*/checkpoints/last.ckpt")
        if recipe_classes(ckpt.parent.parent / "config.yaml") == (model_class, data_class)
    ]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)
