"""LoRALinear and injection/merging on the bare backbone (no Lightning)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from ptl_gpt2.model import GPT2, GPT2Config
from ptl_gpt2.peft import LoRALinear, count_parameters, inject_lora, lora_modules, merge_lora
from tests.peft.stub import tiny_backbone

IDS = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(3))


def randomise_B(model: nn.Module, seed: int = 0) -> None:
    """B starts at zero; give it values so the adapters change the function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)
            if m.dora:
                m.lora_magnitude.mul_(1 + 0.1 * torch.randn(m.lora_magnitude.shape, generator=g))


def test_injection_touches_only_targets_and_keeps_keys():
    model = tiny_backbone()
    before = set(model.state_dict())
    names = inject_lora(model, ["c_attn", "mlp.c_fc"], r=4, alpha=8)
    assert names == ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc",
                     "transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_fc"]
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            assert isinstance(module, LoRALinear) == (name in names), name
    after = set(model.state_dict())
    assert before <= after  # base keys unchanged, so pretrained loading still works
    assert all(".lora_" in k for k in after - before)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied


def test_starts_as_the_pretrained_function():
    model = tiny_backbone().eval()
    expected = model(IDS)
    inject_lora(model, ["c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "lm_head"], r=4, alpha=8, dora=True)
    assert torch.equal(model(IDS), expected)


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 6), (6,)])
def test_forward_and_gradients_are_w0x_plus_scaled_BAx(rslora, bias, shape):
    torch.manual_seed(0)
    base = nn.Linear(6, 5, bias=bias, dtype=torch.float64)
    lora = LoRALinear(base, r=2, alpha=3.0, rslora=rslora)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    s = 3.0 / math.sqrt(2) if rslora else 3.0 / 2
    A, B = (t.detach().clone().requires_grad_() for t in (lora.lora_A, lora.lora_B))
    expected = x @ base.weight.T + s * (x @ A.T @ B.T) + (base.bias if bias else 0)
    out = lora(x)
    assert out.shape == (*shape[:-1], 5)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, lora.lora_A, lora.lora_B), grad_out)
    want = torch.autograd.grad(expected, (x, A, B), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_qkv_mask_leaves_k_alone():
    model = tiny_backbone().eval()
    attn = model.transformer.h[0].attn
    x = torch.randn(1, 3, 64)
    q0, k0, v0 = attn.c_attn(x).split(64, dim=2)
    inject_lora(model, ["c_attn"], r=4, alpha=4, qkv="qv")
    assert attn.c_attn.lora_B.shape == (128, 4)  # rows for q and v only
    randomise_B(model)
    q1, k1, v1 = attn.c_attn(x).split(64, dim=2)
    assert torch.equal(k1, k0)
    assert not torch.allclose(q1, q0) and not torch.allclose(v1, v0)


@pytest.mark.parametrize("targets,qkv,dora", [
    (["c_attn"], "qkv", False),
    (["c_attn", "mlp.c_proj"], "qv", False),
    (["c_attn", "attn.c_proj", "lm_head"], "qkv", True),
    (["c_attn", "mlp.c_fc"], "k", True),
])
def test_merge_gives_same_logits_and_plain_linears(targets, qkv, dora):
    model = tiny_backbone().eval()
    n_before = model.num_parameters()
    inject_lora(model, targets, r=4, alpha=16, qkv=qkv, dora=dora)
    randomise_B(model)
    adapted = model(IDS)
    merged_names = merge_lora(model)
    assert merged_names and not lora_modules(model)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    torch.testing.assert_close(model(IDS), adapted, rtol=0, atol=1e-5)
    extra = model.config.vocab_size * model.config.n_embd if "lm_head" in targets else 0  # head untied
    assert model.num_parameters() == n_before + extra


def test_frozen_weights_get_no_gradient():
    model = tiny_backbone()
    model.requires_grad_(False)
    inject_lora(model, ["c_attn"], r=2, alpha=2)
    randomise_B(model)
    model(IDS).sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (".lora_" in name), name


def gpt2_124m_on_meta() -> GPT2:
    with torch.device("meta"):  # shapes only: counting needs no memory or time
        return GPT2(GPT2Config.from_name("gpt2"))


def trainable(model: nn.Module) -> int:
    return sum(t for t, _ in count_parameters(model).values())


@pytest.mark.parametrize("targets,qkv,dora,expected", [
    (["c_attn"], "qkv", False, 12 * 8 * (768 + 2304)),  # the formula: 294,912
    (["c_attn"], "qv", False, 12 * 8 * (768 + 2 * 768)),
    (["c_attn"], "qkv", True, 12 * (8 * (768 + 2304) + 2304)),  # + magnitude per output row
    (["c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"], "qkv", False,
     12 * 8 * ((768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768))),
    (["lm_head"], "qkv", False, 8 * (768 + 50257)),
])
def test_trainable_count_formulas_on_124m(targets, qkv, dora, expected):
    model = gpt2_124m_on_meta()
    model.requires_grad_(False)
    inject_lora(model, targets, r=8, alpha=16, qkv=qkv, dora=dora)
    assert trainable(model) == expected
    total = sum(n for _, n in count_parameters(model).values())
    assert total == 124_439_808 + expected  # GPT-2 small counted once (tied head)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        inject_lora(tiny_backbone(), ["q_proj"])
    with pytest.raises(ValueError, match="qkv='qx'"):
        inject_lora(tiny_backbone(), ["c_attn"], qkv="qx")
    with pytest.raises(ValueError, match="rank r"):
        LoRALinear(nn.Linear(2, 2), r=0, alpha=1)
