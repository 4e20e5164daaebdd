import pytest
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ptl_gpt2.ops.dropout import Dropout, drop_mask, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_is_p(p):
    torch.manual_seed(0)
    n = 1_000_001  # odd: the last 64-bit word is half used
    mask = drop_mask((n,), p)
    assert mask.dtype == torch.bool and mask.shape == (n,)
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(mask.float().mean().item() - p) < 5 * sigma


def test_neighbours_are_independent():
    # Lanes 2i and 2i+1 come from one 64-bit word, 2i+1 and 2i+2 from two: both pairs must drop together at p^2.
    torch.manual_seed(1)
    p, n = 0.3, 2_000_000
    mask = drop_mask((n,), p).view(-1, 2)
    same_word = (mask[:, 0] & mask[:, 1]).float().mean().item()
    next_word = (mask[:-1, 1] & mask[1:, 0]).float().mean().item()
    sigma = (p**2 * (1 - p**2) / (n // 2)) ** 0.5
    assert abs(same_word - p**2) < 5 * sigma
    assert abs(next_word - p**2) < 5 * sigma


def test_zero_probability_drops_nothing_and_bad_p_is_refused():
    assert not drop_mask((3, 5, 7), 0.0).any()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        drop_mask((4,), 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        drop_mask((4,), -0.1)


def test_mask_follows_the_seed():
    torch.manual_seed(3)
    a = drop_mask((8, 9), 0.4)
    torch.manual_seed(3)
    b = drop_mask((8, 9), 0.4)
    c = drop_mask((8, 9), 0.4)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_dropout_is_x_times_keep_over_one_minus_p_with_its_gradient():
    p = 0.25
    x = torch.randn(4, 6, 10, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(7)
    y = dropout(x, p)
    torch.manual_seed(7)
    keep = ~drop_mask(x.shape, p)
    torch.testing.assert_close(y, x.detach() * keep / (1 - p), rtol=0, atol=1e-15)
    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    torch.testing.assert_close(x.grad, grad_out * keep / (1 - p), rtol=0, atol=1e-15)


def test_dropout_keeps_the_mean():
    torch.manual_seed(0)
    y = dropout(torch.ones(1_000_000), 0.1)
    assert y.unique().tolist() == [0.0, pytest.approx(1 / 0.9)]
    assert abs(y.mean().item() - 1.0) < 5 * (0.1 / 0.9 / 1_000_000) ** 0.5


def test_backward_keeps_only_the_boolean_mask():
    saved = []
    x = torch.randn(16, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        dropout(x, 0.5).sum().backward()
    assert [t.dtype for t in saved] == [torch.bool]


def test_identity_when_not_training_or_p_zero_and_zeros_at_p_one():
    x = torch.randn(3, 4)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_checkpointing_replays_the_same_mask():
    torch.manual_seed(0)
    layer = nn.Linear(8, 8)
    x = torch.randn(5, 8, requires_grad=True)

    def f(t):
        return dropout(layer(t), 0.5).square()

    torch.manual_seed(11)
    f(x).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    torch.manual_seed(11)
    checkpoint(f, x, use_reentrant=False).sum().backward()
    torch.testing.assert_close(x.grad, plain)


def test_module_is_a_drop_in_for_nn_dropout():
    module = Dropout(0.2)
    assert isinstance(module, nn.Dropout) and module.p == 0.2
    assert repr(module) == repr(nn.Dropout(0.2)) and module.state_dict() == {}
    x = torch.randn(1000)
    assert (module(x) == 0).any()
    assert module.eval()(x) is x


def test_other_devices_use_torch_dropout():
    x = torch.ones(2, 3, device="meta")
    assert dropout(x, 0.5).device.type == "meta"
    assert drop_mask((2, 3), 0.5, "meta").dtype == torch.bool


def test_compiled_code_uses_torch_dropout_without_graph_breaks():
    # Dynamo cannot capture the in-place random_; while it traces, the mask comes from torch.rand / F.dropout.
    x = torch.randn(8, 8, requires_grad=True)
    explained = torch._dynamo.explain(lambda t: dropout(t * 2, 0.5).sum() + drop_mask((4, 4), 0.5).sum())(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
