import contextlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

import ptl_gpt2.generation as generation
from ptl_gpt2.generation import generate
from ptl_gpt2.model import GPT2, GPT2Config
from ptl_gpt2.ops import packed_linear
from ptl_gpt2.ops.packed_linear import packed_linears, packing_available
from ptl_gpt2.peft.lora import LoRALinear

pytestmark = pytest.mark.skipif(not packing_available(), reason="oneDNN linear ops unavailable in this torch build")

PROMPTS = [[464, 329, 318, 257, 1332, 11], [40, 588], [261, 318, 1037]]  # different lengths: left padding


def make_linear(in_features: int = 64, out_features: int = 96, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features, bias=bias)


def is_patched(module: nn.Module) -> bool:
    return "forward" in module.__dict__


@pytest.fixture(scope="module")
def model() -> GPT2:
    torch.manual_seed(0)
    return GPT2(GPT2Config.from_name("tiny", vocab_size=2048)).eval()  # a small vocabulary: fast generation


@pytest.mark.parametrize("prepack", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "make_input",
    [
        lambda: torch.randn(1, 64),  # one decoding row
        lambda: torch.randn(12, 64),
        lambda: torch.randn(2, 5, 64),  # (B, T, C): prefill
        lambda: torch.randn(3, 5, 64)[:, -1],  # not contiguous: the last position of each row
    ],
)
def test_packed_linear_is_close_to_f_linear(make_input, bias, prepack):
    linear = make_linear(bias=bias)
    x = make_input()
    with torch.inference_mode():
        expected = F.linear(x, linear.weight, linear.bias)
        with packed_linears(linear, prepack=prepack) as n:
            assert n == 1 and is_patched(linear)
            y = linear(x)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)


def test_forwards_are_restored_after_the_block_and_after_an_exception(model):
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    with torch.inference_mode(), packed_linears(model) as n:
        assert n == len(linears) == 4 * model.config.n_layer + 1  # c_attn, attn.c_proj, c_fc, mlp.c_proj; lm_head
        assert all(is_patched(m) for m in linears)
    assert not any(is_patched(m) for m in linears)
    with pytest.raises(RuntimeError, match="boom"), torch.inference_mode(), packed_linears(model):
        raise RuntimeError("boom")
    assert not any(is_patched(m) for m in linears)
    x = torch.randn(2, 64)
    torch.testing.assert_close(model.lm_head(x), F.linear(x, model.lm_head.weight), rtol=0, atol=0)


def test_nested_blocks_pack_once_and_the_inner_exit_keeps_the_outer_patch():
    linear = make_linear()
    with torch.inference_mode(), packed_linears(linear) as outer:
        with packed_linears(linear) as inner:
            pass
        assert (outer, inner) == (1, 0) and is_patched(linear)
    assert not is_patched(linear)


def test_tied_lm_head_keeps_sharing_the_embedding_and_logits_match(model):
    ids = torch.tensor([[464, 329, 318], [40, 588, 11]])
    with torch.inference_mode():
        expected = model(ids)
        with packed_linears(model):
            logits = model(ids)
    assert model.lm_head.weight is model.transformer.wte.weight
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


class MyLinear(nn.Linear):
    pass


class Double(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_linear_subclasses_and_other_dtypes_are_left_alone():
    lora = LoRALinear(make_linear(), r=2, alpha=4.0)
    parametrized = make_linear()
    parametrize.register_parametrization(parametrized, "weight", Double())  # how quantisation/QAT wrap weights
    others = [lora, parametrized, MyLinear(64, 96), make_linear().double(), make_linear().bfloat16()]
    plain = make_linear()
    net = nn.ModuleList([*others, plain])
    with torch.inference_mode(), packed_linears(net) as n:
        assert n == 1 and is_patched(plain)
        assert not any(is_patched(m) for m in others)
        x = torch.randn(3, 64)
        torch.testing.assert_close(parametrized(x), F.linear(x, 2 * parametrized.parametrizations.weight.original, parametrized.bias))


def test_the_mkldnn_off_switch_and_autocast_keep_the_plain_path(monkeypatch):
    linear = make_linear()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), packed_linears(linear) as n:
        assert n == 0 and not is_patched(linear)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert not packing_available()
    with torch.inference_mode(), packed_linears(linear) as n:
        assert n == 0 and not is_patched(linear)


def test_failing_ops_fall_back_to_the_plain_path(monkeypatch):
    linear = make_linear()

    def refuse(weight):
        raise RuntimeError("oneDNN says no")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    with torch.inference_mode(), packed_linears(linear) as n:
        assert n == 0 and not is_patched(linear)
    monkeypatch.setattr(packed_linear, "_ops_work", lambda: False)  # the private ops are missing or changed
    assert not packing_available()


def test_with_grad_enabled_the_packed_linear_takes_the_autograd_path():
    linear = make_linear()
    x = torch.randn(4, 64, requires_grad=True)
    with packed_linears(linear) as n:
        assert n == 1
        linear(x).sum().backward()
    torch.testing.assert_close(x.grad, linear.weight.sum(0).expand(4, -1))


@pytest.mark.parametrize(
    "options",
    [
        {},  # greedy
        {"do_sample": True, "top_k": 50, "seed": 0},
        {"num_beams": 3},
    ],
)
def test_generate_with_packing_emits_the_same_tokens(model, monkeypatch, options):
    packed = []

    @contextlib.contextmanager
    def spy(*m, **kw):
        with packed_linears(*m, **kw) as n:
            packed.append(n)
            yield n

    monkeypatch.setattr(generation, "packed_linears", spy)
    new = generation.PACK_MIN_NEW_TOKENS
    out = generate(model, PROMPTS, max_new_tokens=new, eos_token_id=None, **options)
    assert packed == [4 * model.config.n_layer + 1]
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # the off switch
    plain = generate(model, PROMPTS, max_new_tokens=new, eos_token_id=None, **options)
    assert packed == [4 * model.config.n_layer + 1, 0]
    assert out.token_ids == plain.token_ids
    torch.testing.assert_close(out.logprobs, plain.logprobs, rtol=1e-4, atol=1e-4)
    assert not any(is_patched(m) for m in model.modules())


def test_short_batched_generations_are_not_packed(model, monkeypatch):
    monkeypatch.setattr(generation, "packed_linears", lambda *m, **kw: pytest.fail("packed"))
    generate(model, PROMPTS, max_new_tokens=generation.PACK_MIN_NEW_TOKENS - 1, eos_token_id=None)


@pytest.mark.parametrize("max_new_tokens", [1, 20])
def test_one_row_runs_only_the_lm_head_through_onednn_unpacked(model, monkeypatch, max_new_tokens):
    calls = []

    @contextlib.contextmanager
    def spy(*modules, prepack=True):
        with packed_linears(*modules, prepack=prepack) as n:
            calls.append((modules, prepack, n))
            yield n

    def no_copy(weight):
        raise AssertionError("the weight was copied")

    monkeypatch.setattr(generation, "packed_linears", spy)
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", no_copy)
    out = generate(model, PROMPTS[:1], max_new_tokens=max_new_tokens, eos_token_id=None)
    assert calls == [((model.lm_head,), False, 1)]  # tied to the embedding: the head is patched, wte is not
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # the off switch
    plain = generate(model, PROMPTS[:1], max_new_tokens=max_new_tokens, eos_token_id=None)
    assert calls[-1] == ((model.lm_head,), False, 0)
    assert out.token_ids == plain.token_ids
    torch.testing.assert_close(out.logprobs, plain.logprobs, rtol=1e-4, atol=1e-4)
    assert not any(is_patched(m) for m in model.modules())


def test_without_prepacking_a_non_contiguous_weight_keeps_the_plain_path():
    linear = make_linear()
    linear.weight = nn.Parameter(torch.randn(64, 96).t())  # (96, 64) viewed from a transposed tensor
    with torch.inference_mode(), packed_linears(linear, prepack=False) as n:
        assert n == 0 and not is_patched(linear)
    with torch.inference_mode(), packed_linears(linear) as n:  # packing copies it into oneDNN's layout
        assert n == 1
        x = torch.randn(3, 64)
        torch.testing.assert_close(linear(x), F.linear(x, linear.weight, linear.bias), rtol=1e-4, atol=1e-5)
