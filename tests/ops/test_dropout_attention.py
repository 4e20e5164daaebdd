import math

import pytest
import torch
import torch.nn.functional as F

from ptl_gpt2.model import GPT2, GPT2Config, gpt2
from ptl_gpt2.ops.dropout_attention import dropout_attention

B, NH, T, HS = 2, 3, 5, 4


def qkv(S: int = T, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(B, NH, n, HS, generator=g, dtype=dtype).requires_grad_()
        for n in (T, S, S)
    ]


def padding_mask(S: int = T) -> torch.Tensor:
    """Causal (bottom-right aligned) and the first key of row 0 is padding; every query sees a key."""
    mask = torch.ones(T, S, dtype=torch.bool).tril(S - T).expand(B, 1, T, S).clone()
    mask[0, :, 1:, 0] = False
    return mask


def keep_mask(p: float, S: int = T) -> torch.Tensor:
    return torch.empty(B, NH, T, S, dtype=torch.bool).bernoulli_(1 - p, generator=torch.Generator().manual_seed(1))


def reference(q, k, v, mask, is_causal, keep, p):
    """The definition: softmax(q k^T / sqrt(hs) masked), dropped by `keep` and rescaled, times v."""
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if is_causal:
        mask = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return (s.softmax(-1) * keep / (1 - p)) @ v


CASES = {
    "causal": lambda: (T, None, True),
    "padding mask": lambda: (T, padding_mask(), False),
    "prefix keys, mask": lambda: (T + 3, padding_mask(T + 3), False),
    "no mask": lambda: (T + 3, None, False),
}


@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_match_the_definition(case):
    S, mask, is_causal = CASES[case]()
    keep = keep_mask(0.3, S)
    inputs = qkv(S)
    y = dropout_attention(*inputs, mask, 0.3, is_causal, keep=keep)
    expected_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    expected = reference(*expected_inputs, mask, is_causal, keep, 0.3)
    torch.testing.assert_close(y, expected)
    grad = torch.randn_like(y)
    y.backward(grad)
    expected.backward(grad)
    for name, a, b in zip("qkv", inputs, expected_inputs):
        torch.testing.assert_close(a.grad, b.grad, msg=f"d{name}")


@pytest.mark.parametrize("case", CASES)
def test_gradcheck(case):
    S, mask, is_causal = CASES[case]()
    keep = keep_mask(0.2, S)
    assert torch.autograd.gradcheck(lambda q, k, v: dropout_attention(q, k, v, mask, 0.2, is_causal, keep=keep), qkv(S))


@pytest.mark.parametrize("case", CASES)
def test_keeping_everything_is_sdpa_without_dropout(case):
    S, mask, is_causal = CASES[case]()
    q, k, v = qkv(S, torch.float32)
    keep = torch.ones(B, NH, T, S, dtype=torch.bool)
    y = dropout_attention(q, k, v, mask, 0.0, is_causal, keep=keep)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    torch.testing.assert_close(y, expected)


def test_the_mask_comes_from_torch_rng_at_the_rate_asked():
    q, k, v = (torch.randn(4, 4, 64, 16) for _ in range(3))
    torch.manual_seed(0)
    a = dropout_attention(q, k, v, None, 0.25, is_causal=True)
    torch.manual_seed(0)
    b = dropout_attention(q, k, v, None, 0.25, is_causal=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, dropout_attention(q, k, v, None, 0.25, is_causal=True))
    v1 = torch.ones(1, 1, 4000, 1)
    y = dropout_attention(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 4000, 1), v1, None, 0.25)
    # uniform attention over 4000 keys of value 1: y = kept fraction / 0.75
    assert y.item() * 0.75 == pytest.approx(0.75, abs=0.03)


def test_bad_arguments_are_named():
    q, k, v = qkv(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1.0"):
        dropout_attention(q, k, v, None, 1.0)
    with pytest.raises(TypeError, match="attn_mask must be boolean"):
        dropout_attention(q, k, v, torch.zeros(T, T), 0.1)


def saved_tensor_shapes(model: GPT2, ids: torch.Tensor) -> list[tuple[tuple[int, ...], torch.dtype]]:
    saved = []

    def pack(t):
        saved.append((tuple(t.shape), t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids)
    return saved


def test_training_on_cpu_with_attention_dropout_keeps_no_float_attention_matrix(monkeypatch):
    T_ = 24  # differs from every other size in the tiny model
    model = GPT2(GPT2Config.from_name("tiny", vocab_size=512, attn_pdrop=0.1)).train()
    ids = torch.randint(0, 512, (2, T_))

    def per_head_matrices() -> list[torch.dtype]:  # (B, nh, T, T) tensors kept for backward
        return [d for s, d in saved_tensor_shapes(model, ids) if len(s) == 4 and s[-2:] == (T_, T_)]

    assert per_head_matrices() == [torch.bool] * model.config.n_layer  # the dropout masks only
    monkeypatch.setattr(gpt2, "FULL_PRECISION", ())  # SDPA's math path, for contrast
    assert torch.float32 in per_head_matrices()


def test_activation_checkpointing_replays_the_same_attention_dropout():
    config = GPT2Config.from_name("tiny", vocab_size=512, attn_pdrop=0.3, resid_pdrop=0.0, embd_pdrop=0.0)
    torch.manual_seed(0)
    plain = GPT2(config).train()
    ckpt = GPT2(GPT2Config(**{**vars(config), "activation_checkpointing": True})).train()
    ckpt.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 512, (2, 12))
    for model in (plain, ckpt):
        torch.manual_seed(1)
        model(ids).logsumexp(-1).mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)
