"""The shape every classification-style task shares: logits (B, K), cross-entropy, accuracy and F1."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy, MulticlassF1Score

from .base import GPT2Task, OptionError
from .predictions import gather_rows


class ClassificationTask(GPT2Task):
    """`task_outputs` gives class logits (B, K); this class trains, evaluates and predicts on them.

    Subclasses say how a prediction is written (`prediction_value`, `write_predictions`).
    """

    monitor = "val/acc"
    monitor_mode = "max"
    f1_average = "macro"  # "binary": F1 of class 1, for yes/no tasks

    def __init__(self, num_classes: int, predictions_dir: str = "predictions", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.predictions_dir = predictions_dir
        f1 = BinaryF1Score() if self.f1_average == "binary" else MulticlassF1Score(num_classes, average="macro")
        metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro"), "f1": f1})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self._predictions: list[tuple[Any, ...]] = []

    def setup(self, stage: str) -> None:
        # The head must have the DataModule's classes: an SST checkpoint's 5 would score CFIMDB's 2
        # wrongly without a word, and 2 on SST fail inside cross-entropy. LightningCLI rebuilds the
        # model from a --ckpt_path checkpoint's options, so that is where a mismatch usually comes from.
        datamodule = getattr(self._trainer, "datamodule", None)
        data_classes = getattr(datamodule, "num_classes", None)
        if isinstance(data_classes, int) and data_classes != self.num_classes:
            raise OptionError(
                f"model.init_args.num_classes={self.num_classes}, but {type(datamodule).__name__} has "
                f"{data_classes} classes; use a config or checkpoint made for this data (the model options "
                "of a --ckpt_path checkpoint replace the config's)"
            )

    def task_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), batch["labels"])

    def _evaluate(self, batch: dict[str, Any], metrics: MetricCollection, stage: str) -> None:
        if "labels" not in batch:
            raise self.unscorable_split(stage, "labels")
        logits = self.task_outputs(batch)
        self.log(f"{stage}/loss", self.task_loss(logits, batch), batch_size=len(logits), sync_dist=True)
        metrics.update(logits.argmax(-1), batch["labels"])
        self.log_dict(metrics, batch_size=len(logits), prog_bar=stage == "val")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[tuple[Any, ...]]:
        preds = self.task_outputs(batch).argmax(-1).tolist()
        rows = [(id_, self.prediction_value(p)) for id_, p in zip(batch["ids"], preds)]
        self._predictions.extend(rows)
        return rows

    def on_predict_epoch_start(self) -> None:
        self._predictions = []

    def on_predict_epoch_end(self) -> None:
        rows = gather_rows(self._predictions)
        if self.trainer.is_global_zero:
            path = self.write_predictions(rows)
            self.print(f"wrote {len(rows)} predictions to {path}")

    def prediction_value(self, class_index: int) -> Any:
        return class_index

    def write_predictions(self, rows: list[tuple[Any, ...]]):
        raise NotImplementedError
