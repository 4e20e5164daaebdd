"""SST (5-way) and CFIMDB (2-way) sentiment: a linear head on the last real token's hidden state."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from .base import OptionError, last_token_hidden
from .classification import ClassificationTask
from .predictions import write_text


class SentimentClassifier(ClassificationTask):
    """Sentiment classification as in the CS224N GPT-2 project.

    Args:
        num_classes: 5 for SST, 2 for CFIMDB.
        mode: `last-linear-layer` freezes the backbone and trains only the head; `full-model`
            trains everything.
        head_dropout: dropout on the hidden state before the head.
        dataset_name: used in prediction file names (`sst`, `cfimdb`).
        predictions_dir: where `predict` writes `{mode}-{dataset}-{split}-out.csv`.
        **kwargs: the backbone and optimizer options of `GPT2Task` (preset, pretrained, optimizer, ...).
    """

    def __init__(
        self,
        num_classes: int = 5,
        mode: Literal["last-linear-layer", "full-model"] = "full-model",
        head_dropout: float = 0.1,
        dataset_name: str = "sst",
        predictions_dir: str = "predictions",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, predictions_dir=predictions_dir, **kwargs)
        if mode not in ("last-linear-layer", "full-model"):
            raise OptionError(f"model.mode must be 'last-linear-layer' or 'full-model', got {mode!r}")
        self.mode = mode
        self.dataset_name = dataset_name
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.model.config.n_embd, num_classes)
        if mode == "last-linear-layer":
            self.model.requires_grad_(False)

    def task_outputs(self, batch: dict[str, Any], inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        last = last_token_hidden(self.model, batch, inputs_embeds)  # (B, C)
        return self.head(self.dropout(last))  # (B, K)

    def write_predictions(self, rows: list[tuple[Any, ...]]) -> Path:
        split = getattr(self.trainer.datamodule, "predict_split", "test")
        path = Path(self.predictions_dir) / f"{self.mode}-{self.dataset_name}-{split}-out.csv"
        return write_text(path, "id \t Predicted_Sentiment \n" + "".join(f"{i} , {p} \n" for i, p in rows))
