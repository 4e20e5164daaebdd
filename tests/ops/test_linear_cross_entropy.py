"""The fused linear + cross-entropy against F.cross_entropy(F.linear(...)) on tiny shapes.

N = 37 rows with chunk_size = 8: five chunks, the last one ragged (5 rows).
"""

import pytest
import torch
import torch.nn.functional as F

from ptl_gpt2.ops import linear_cross_entropy

N, V, C, CHUNK = 37, 101, 16, 8


def inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, C, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(V, C, generator=g, dtype=dtype).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    targets[::4] = -100  # ignored rows, one of them in the ragged last chunk
    return hidden, weight, targets


def reference(hidden, weight, targets):
    logits = F.linear(hidden, weight)
    logits = logits if logits.dtype == torch.float64 else logits.float()  # what lm_loss computes; fp64 stays fp64
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=-100)


def value_and_grads(fn, hidden, weight, targets):
    hidden.grad = weight.grad = None
    loss = fn(hidden, weight, targets)
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad


def fused(hidden, weight, targets):
    return linear_cross_entropy(hidden, weight, targets, chunk_size=CHUNK)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(N,), (1, N)])  # (N, C) rows or (B, T, C) sequences
def test_value_and_grads_equal_the_unfused_loss(dtype, tol, shape):
    hidden, weight, targets = inputs(dtype)
    hidden = hidden.detach().reshape(*shape, C).requires_grad_()
    targets = targets.reshape(shape)
    expected = value_and_grads(reference, hidden, weight, targets)
    got = value_and_grads(fused, hidden, weight, targets)
    assert got[0].dtype == expected[0].dtype
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol * e.abs().max().item())


def test_default_chunk_size_and_one_row_chunks_agree():
    hidden, weight, targets = inputs(torch.float64)
    expected = value_and_grads(reference, hidden, weight, targets)
    for chunk_size in (None, 1):  # None: one chunk here (101 x 37 logits is far under CHUNK_BYTES)
        got = value_and_grads(lambda h, w, t: linear_cross_entropy(h, w, t, chunk_size=chunk_size), hidden, weight, targets)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_frozen_weight_and_frozen_hidden_get_no_grad():
    hidden, weight, targets = inputs(torch.float64)
    _, grad_hidden, grad_weight = value_and_grads(reference, hidden, weight, targets)
    hidden.grad = weight.grad = None
    weight.requires_grad_(False)  # LoRA: the (tied) head is frozen
    fused(hidden, weight, targets).backward()
    assert weight.grad is None
    torch.testing.assert_close(hidden.grad, grad_hidden, rtol=1e-12, atol=1e-12)
    hidden = hidden.detach()
    weight.requires_grad_(True)
    fused(hidden, weight, targets).backward()
    torch.testing.assert_close(weight.grad, grad_weight, rtol=1e-12, atol=1e-12)


def test_tied_embedding_gets_both_gradients():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(V, C, dtype=torch.float64)
    proj = torch.nn.Linear(C, C, dtype=torch.float64)
    ids = torch.randint(0, V, (N,))
    targets = ids.roll(-1).masked_fill(torch.arange(N) % 5 == 0, -100)

    def grads(loss_fn):
        embedding.zero_grad(set_to_none=True)
        hidden = torch.tanh(proj(embedding(ids)))  # (N, C); the embedding is used as input and as head
        loss_fn(hidden, embedding.weight, targets).backward()
        return embedding.weight.grad

    torch.testing.assert_close(grads(fused), grads(reference), rtol=1e-12, atol=1e-12)


def test_bf16_autocast_matches_the_unfused_loss_under_autocast():
    hidden, weight, targets = inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = value_and_grads(reference, hidden, weight, targets)
        got = value_and_grads(fused, hidden, weight, targets)
    assert got[0].dtype == torch.float32  # loss in float32, like the unfused .float()
    assert got[1].dtype == got[2].dtype == torch.float32  # grads in each input's dtype
    fp32 = value_and_grads(reference, hidden, weight, targets)
    for g, e, f in zip(got, expected, fp32):
        # bf16 matmuls: both differ from float32 by ~1e-2; the fused one no more than the unfused one
        tol = 3 * (e - f).abs().max().item()
        torch.testing.assert_close(g, e, rtol=0, atol=tol)
        assert (g - f).abs().max() <= 2 * (e - f).abs().max() + 1e-6


def test_bf16_weights_give_bf16_grads():
    hidden, weight, targets = inputs(torch.float32)
    hidden, weight = (t.detach().bfloat16().requires_grad_() for t in (hidden, weight))
    got = value_and_grads(fused, hidden, weight, targets)
    expected = value_and_grads(reference, hidden, weight, targets)
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.bfloat16
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.float(), e.float(), rtol=2e-2, atol=2e-2 * e.abs().max().item())


def test_two_backward_calls_accumulate():
    hidden, weight, targets = inputs(torch.float64)
    _, grad_hidden, grad_weight = value_and_grads(reference, hidden, weight, targets)
    hidden.grad = weight.grad = None
    fused(hidden, weight, targets).backward()
    (3 * fused(hidden, weight, targets)).backward()  # grad_output 3 scales the saved grads
    torch.testing.assert_close(hidden.grad, 4 * grad_hidden, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weight.grad, 4 * grad_weight, rtol=1e-12, atol=1e-12)


def test_saved_grads_are_freed_by_backward():
    hidden, weight, targets = inputs()
    loss = fused(hidden, weight, targets)
    assert loss.grad_fn.grads is not None
    loss.backward(retain_graph=True)
    assert loss.grad_fn.grads is None  # the (N, C) and (V, C) grads are gone
    with pytest.raises(RuntimeError, match="backward through the same loss twice"):
        loss.backward()


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_without_grad_only_the_loss_is_computed(context):
    hidden, weight, targets = inputs(torch.float64)
    with context():
        loss = fused(hidden, weight, targets)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, reference(hidden, weight, targets).detach(), rtol=1e-12, atol=0)
    # neither input requiring grad takes the same path with grad enabled
    loss = fused(hidden.detach(), weight.detach(), targets)
    assert loss.grad_fn is None


def test_all_targets_ignored_is_nan_with_zero_grads_like_torch():
    hidden, weight, targets = inputs(torch.float64)
    targets = torch.full_like(targets, -100)
    expected = value_and_grads(reference, hidden, weight, targets)
    got = value_and_grads(fused, hidden, weight, targets)
    assert expected[0].isnan() and got[0].isnan()
    for g, e in zip(got[1:], expected[1:]):
        assert not g.any() and not e.any()


def test_custom_ignore_index():
    hidden, weight, targets = inputs(torch.float64)
    targets = targets.masked_fill(targets == -100, V)  # V itself marks padding
    expected = F.cross_entropy(F.linear(hidden, weight), targets, ignore_index=V)
    got = linear_cross_entropy(hidden, weight, targets, ignore_index=V, chunk_size=CHUNK)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_shape_errors_name_the_shapes():
    hidden, weight, targets = inputs()
    with pytest.raises(ValueError, match=r"weight has shape \(101, 15\)"):
        linear_cross_entropy(hidden, weight[:, :15], targets)
    with pytest.raises(ValueError, match="one target per row"):
        linear_cross_entropy(hidden, weight, targets[:-1])
