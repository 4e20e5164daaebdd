"""LanguageModel's fused loss (no (B, T, V) logits) against the logits path it replaces."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from ptl_gpt2.peft import inject_lora
from ptl_gpt2.tasks import LanguageModel
from ptl_gpt2.tasks.lm import lm_loss

TINY = {"preset": "tiny", "dropout": 0.0}


def padded_batch(lengths=(7, 4, 6), seed=0):
    T = max(lengths)
    ids = torch.randint(0, 50257, (len(lengths), T), generator=torch.Generator().manual_seed(seed))
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    return {"input_ids": ids.masked_fill(mask == 0, 50256), "attention_mask": mask}


def logits_loss(task, batch):
    return task.task_loss(task.task_outputs(batch), batch)


def loss_and_grads(task, loss_fn, batch):
    task.zero_grad(set_to_none=True)
    loss = loss_fn(task, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in task.named_parameters() if p.grad is not None}


def no_head_call(task, monkeypatch):
    """Make calling the LM head fail, so a test knows the fused path ran."""
    def fail(x):
        raise AssertionError("the (B, T, V) logits were computed")
    monkeypatch.setattr(task.model.lm_head, "forward", fail)


def test_training_loss_and_grads_equal_the_logits_path(monkeypatch):
    torch.manual_seed(0)
    task = LanguageModel(**TINY)
    b = padded_batch()
    expected, expected_grads = loss_and_grads(task, logits_loss, b)
    no_head_call(task, monkeypatch)
    loss, grads = loss_and_grads(task, LanguageModel.loss, b)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert grads.keys() == expected_grads.keys() and "model.transformer.wte.weight" in grads  # tied head
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lora_on_the_blocks_stays_fused_and_lora_on_the_head_falls_back(monkeypatch):
    torch.manual_seed(0)
    task = LanguageModel(**TINY)
    task.model.requires_grad_(False)
    inject_lora(task.model, ["c_attn"], r=4, alpha=8)
    torch.nn.init.normal_(task.model.transformer.h[0].attn.c_attn.lora_B)  # B = 0 would give A no grad
    b = padded_batch()
    expected, expected_grads = loss_and_grads(task, logits_loss, b)
    with monkeypatch.context() as m:
        no_head_call(task, m)
        loss, grads = loss_and_grads(task, LanguageModel.loss, b)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert len(grads) == 4 and grads.keys() == expected_grads.keys()  # lora_A, lora_B of both blocks
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)

    inject_lora(task.model, ["lm_head"], r=4, alpha=8)  # a LoRALinear head: the logits path
    torch.testing.assert_close(task.loss(b), logits_loss(task, b), rtol=0, atol=0)


def test_fit_and_validate_log_the_token_weighted_loss(tmp_path):
    torch.manual_seed(0)
    task = LanguageModel(**TINY)
    batches = [padded_batch((7, 4), seed=1), padded_batch((3, 2), seed=2)]  # 9 and 3 targets
    rows = [{k: v[i] for k, v in b.items()} for b in batches for i in range(2)]
    loader = DataLoader(rows, batch_size=2)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    before = task.model.transformer.wte.weight.detach().clone()
    trainer.fit(task, loader)
    assert not torch.equal(task.model.transformer.wte.weight, before)  # the head's grad reached the tied weight

    (metrics,) = trainer.validate(task, loader, verbose=False)
    with torch.no_grad():
        losses = [lm_loss(task.model(b["input_ids"], b["attention_mask"]), b["input_ids"], b["attention_mask"])
                  for b in batches]
    expected = (9 * losses[0] + 3 * losses[1]) / 12
    assert metrics["val/loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(torch.exp(expected).item(), rel=1e-5)
