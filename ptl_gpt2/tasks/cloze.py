"""Cloze classification: read the LM's logits for verbaliser tokens right after the prompt.

Paraphrase detection asks "...Are these questions asking the same thing?\\nAnswer:" and compares
the logits of "yes" (token 8505) and "no" (3919) at the last prompt token, as the CS224N reference
does (both without a leading space). Only those two rows of the tied LM head are used: projecting
one position onto 2 tokens instead of all 50257 is what keeps this task cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..tokenizer import gpt2_tokenizer
from .base import OptionError, last_token_hidden
from .classification import ClassificationTask
from .predictions import write_text


class ClozeClassifier(ClassificationTask):
    """Binary cloze task; class 1 ("yes") is the positive class, class 0 ("no") the negative.

    Args:
        verbalizer: the answer words for class 0 and class 1; each must be a single GPT-2 token.
        predictions_dir: where `predict` writes its file.
        **kwargs: the backbone and optimizer options of `GPT2Task`.
    """

    f1_average = "binary"
    prediction_file = "cloze-{split}-output.csv"
    prediction_header = "id \t Predicted_Answer \n"

    def __init__(
        self, verbalizer: tuple[str, str] = ("no", "yes"), predictions_dir: str = "predictions", **kwargs: Any
    ) -> None:
        super().__init__(num_classes=2, predictions_dir=predictions_dir, **kwargs)
        self.verbalizer = tuple(verbalizer)
        self.verbalizer_ids = [_single_token(word) for word in verbalizer]

    def task_outputs(self, batch: dict[str, Any], inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        last = last_token_hidden(self.model, batch, inputs_embeds)  # (B, C)
        return last @ self.model.lm_head.weight[self.verbalizer_ids].T  # (B, 2)

    def prediction_value(self, class_index: int) -> int | str:
        return self.verbalizer[class_index].strip()  # the answer word: "yes" or "no"

    def write_predictions(self, rows: list[tuple[Any, ...]]) -> Path:
        split = getattr(self.trainer.datamodule, "predict_split", "test")
        path = Path(self.predictions_dir) / self.prediction_file.format(split=split)
        return write_text(path, self.prediction_header + "".join(f"{i}, {p} \n" for i, p in rows))


class ParaphraseDetection(ClozeClassifier):
    """Quora paraphrase detection; predictions go to `para-{split}-output.csv` as in CS224N."""

    prediction_file = "para-{split}-output.csv"
    prediction_header = "id \t Predicted_Is_Paraphrase \n"

    def prediction_value(self, class_index: int) -> int:
        return self.verbalizer_ids[class_index]  # CS224N's file holds the answer's token id (8505 / 3919)


class YesNoQA(ClozeClassifier):
    """BoolQ-style yes/no questions answered from a passage with the same cloze machinery."""

    prediction_file = "boolq-{split}-output.csv"


def _single_token(word: str) -> int:
    ids = gpt2_tokenizer().encode(word)
    if len(ids) != 1:
        raise OptionError(f"model.verbalizer: {word!r} is {len(ids)} GPT-2 tokens {ids}; it must be exactly one")
    return ids[0]
