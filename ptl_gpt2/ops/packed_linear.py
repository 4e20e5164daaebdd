"""Plain `nn.Linear`s through oneDNN, with prepacked weights or as they are, for float32 inference on CPU.

On CPU `F.linear` reads the weight in its plain (out, in) layout on every call. oneDNN's
`mkldnn._linear_pointwise` takes a weight reordered once into its own blocked layout
(`mkldnn._reorder_linear_weight`) and is much faster for the few rows of a decoding step: GPT-2
124M's LM head (50257 x 768) took 17-19 ms instead of 42-50 ms for 12 rows on a 2-core AVX2 machine
(2 threads, idle). For one row the gain is small, and with 1 thread or a busy second core it is a
loss, so `generate` packs batches of 2+ rows only (docs/generation.md, "Speed on CPU"); one row
sends only its LM head through oneDNN, unpacked (below).

`packed_linears(model)` gives every module whose type is exactly `nn.Linear` a packed forward for
the duration of a `with` block and puts the class's forward back on exit (also on an exception).
Subclasses keep their own forward: LoRA's `LoRALinear`, parametrized (quantised, QAT) linears,
whose class torch.nn.utils.parametrize swaps. A weight that is not a plain float32 CPU tensor
(e.g. a torchao quantised tensor subclass) is left alone too. A tied `lm_head` is packed on its own:
the embedding keeps reading the shared weight.

Inference only: the packed copy does not follow changes of the weight made inside the block, and
it has no autograd (a call with grad enabled takes the plain path). The patch is on the module
objects, so another thread calling the same model meanwhile gets it too.

`packed_linears(head, prepack=False)` runs the same oneDNN op on the plain (out, in) weight: no copy.
It matters for one row, where MKL's `F.linear` is a matrix-vector product on one thread while
oneDNN's uses both: GPT-2 124M's LM head (154 MB) took 8.3 ms instead of 15.3 (2 threads, idle), and
the same as `F.linear` with 1 thread or a busy second core (14.5 vs 14.3, 14.8 vs 15.3 ms). The
block linears are another story: 24 vs 33 ms for all 48 when idle, but 46 vs 30 ms with a busy
second core, so `generate` sends only the LM head of a one-row batch this way.

Off switch: `torch.backends.mkldnn.enabled = False` (PyTorch's own switch for oneDNN). The block
then runs the plain path, as it does when oneDNN is not built in, under CPU autocast, or when the
private ops are missing or fail (a debug log line says why).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


@functools.cache
def _ops_work() -> bool:
    """The private oneDNN ops exist and compute a linear (their signatures may change between torch versions)."""
    try:
        w, b, x = torch.randn(3, 4), torch.randn(3), torch.randn(2, 4)
        with torch.no_grad():
            expected = F.linear(x, w, b)
            packed = torch.ops.mkldnn._reorder_linear_weight(w)
            return all(
                torch.allclose(torch.ops.mkldnn._linear_pointwise(x, weight, b, "none", [], ""), expected, atol=1e-5)
                for weight in (packed, w)
            )
    except Exception as e:  # noqa: BLE001 - any failure of a private op means: use the plain path
        log.debug("packed_linears: oneDNN linear ops unusable (%s)", e)
        return False


def packing_available() -> bool:
    """Whether `packed_linears` would pack anything right now (given float32 CPU weights)."""
    return (
        torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")  # autocast would run F.linear in lower precision
        and _ops_work()
    )


def _packable(module: nn.Module) -> bool:
    def plain_fp32_cpu(t: torch.Tensor | None) -> bool:
        return t is None or (type(t) in (torch.Tensor, nn.Parameter) and t.dtype == torch.float32 and t.device.type == "cpu")

    return (
        type(module) is nn.Linear
        and "forward" not in module.__dict__  # already patched (a nested block) or by someone else
        and plain_fp32_cpu(module.weight)
        and plain_fp32_cpu(module.bias)
    )


def _packed_forward(weight: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None):
    # `packed` is the reordered copy, or `weight` itself without prepacking
    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dtype != torch.float32:  # the op has no autograd, float32 only
            return F.linear(x, weight, bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")  # (..., in) -> (..., out)

    return forward


@contextmanager
def packed_linears(*modules: nn.Module, prepack: bool = True) -> Iterator[int]:
    """Run the plain float32 CPU `nn.Linear`s among `modules` (and their children) through oneDNN inside the block.

    `prepack=True` reorders each weight once into oneDNN's layout: a copy of every weight (GPT-2
    124M: 0.5 GB, 0.38 s on 2 threads), freed on exit. `prepack=False` reads the weights as they are.
    Yields how many linears were patched (0 when it does not apply, see the module doc).
    """
    patched: list[nn.Linear] = []
    if packing_available():
        found = dict.fromkeys(m for top in modules for m in top.modules())  # each module once
        linears = [m for m in found if _packable(m) and (prepack or m.weight.is_contiguous())]
        try:
            with torch.no_grad():
                weights = [torch.ops.mkldnn._reorder_linear_weight(m.weight.detach()) if prepack else m.weight for m in linears]
        except Exception as e:  # noqa: BLE001 - e.g. a weight layout oneDNN refuses: keep the plain path
            log.debug("packed_linears: packing failed (%s); using F.linear", e)
            linears, weights = [], []
        for m, weight in zip(linears, weights):
            m.forward = _packed_forward(m.weight, weight, m.bias)  # an instance attribute shadows Linear.forward
            patched.append(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward  # back to nn.Linear.forward
