"""Causal language modelling: next-token cross-entropy, logged as loss and perplexity."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.aggregation import MeanMetric

from ..ops import linear_cross_entropy
from .base import GPT2Task


class LanguageModel(GPT2Task):
    """Train the backbone as a language model (pre-training from scratch, or on a domain's text).

    Batches hold `input_ids` and `attention_mask` (B, T); each real token is predicted from the
    ones before it. Validation logs `val/loss` (mean over tokens) and `val/ppl` = exp(val/loss).

    Training and evaluation fuse the LM head into the loss (`ptl_gpt2.ops.linear_cross_entropy`), so
    the (B, T, V) logits are never built; `task_outputs` still returns them for SMART and callers
    that want them. The logits path is kept when the head is not a plain bias-free `nn.Linear`
    (LoRA on `lm_head`, a quantised or hooked head). See docs/ops.md.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Token-weighted mean of the loss, so perplexity is per token whatever the batch padding.
        self.val_nll = MeanMetric()
        self.test_nll = MeanMetric()

    def task_outputs(self, batch: dict[str, Any], inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        ids = None if inputs_embeds is not None else batch["input_ids"]
        return self.model(ids, batch["attention_mask"], inputs_embeds=inputs_embeds)  # (B, T, V)

    def task_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return lm_loss(outputs, batch["input_ids"], batch["attention_mask"])

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        head = self.model.lm_head
        plain_head = type(head) is nn.Linear and head.bias is None and not (head._forward_hooks or head._forward_pre_hooks)
        if not plain_head:
            return super().loss(batch)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        hidden = self.model.transformer(ids, mask)  # (B, T, C)
        return linear_cross_entropy(hidden, head.weight, lm_targets(ids, mask))

    def _evaluate(self, batch: dict[str, Any], nll: MeanMetric, stage: str) -> None:
        if "input_ids" not in batch:  # e.g. the sonnets' test split: prompts to continue, no gold text
            raise self.unscorable_split(stage, "gold text (prompts only)")
        loss = self.loss(batch)
        nll.update(loss, weight=batch["attention_mask"][:, 1:].sum())
        self.log(f"{stage}/loss", nll, prog_bar=stage == "val")

    def on_validation_epoch_end(self) -> None:
        self.log("val/ppl", torch.exp(self.val_nll.compute()), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log("test/ppl", torch.exp(self.test_nll.compute()))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_nll, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_nll, "test")


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the real (non-padding) target tokens."""
    targets = lm_targets(input_ids, attention_mask)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def lm_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The next token at each position (B, T); -100 (ignored) after the last real token and on padding."""
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)  # (B, T-1)
    return F.pad(targets, (0, 1), value=-100)  # shift the labels, not the (B, T, V) logits: no copy
