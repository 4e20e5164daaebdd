"""Dropout whose CPU mask takes 2.4x less time than `bernoulli_`'s: 32 random bits per element.

On CPU, `F.dropout` draws its mask with `bernoulli_`, one Mersenne-Twister call and a float
conversion per element on one thread: 9-14 ms for GPT-2's (8, 128, 768) residual stream, 25 of them
a training step (0.2-0.35 s of a 5 s LoRA step). `drop_mask` draws 64-bit words with `random_`,
splits each into two 32-bit lanes and compares them with p * 2^32: 3-4 ms for the same mask, from
the same generator, so `torch.manual_seed` and activation checkpointing's RNG replay work as before
(the draws themselves differ from `F.dropout`'s). The rate is p rounded to a multiple of 2^-32.

`Dropout` is `nn.Dropout` with that mask in CPU training; on other devices it is `nn.Dropout`
(CUDA's fused kernel draws with Philox at memory speed), and so it is under `torch.compile`, which
cannot capture the in-place `random_` (a graph break per mask) and generates its own random numbers
inside its fused kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

_LANES = 2**32


def drop_mask(shape: tuple[int, ...] | torch.Size, p: float, device: torch.device | str | None = None) -> torch.Tensor:
    """A boolean tensor of `shape`, each element True (drop) with probability p, independently.

    On CPU: ceil(n / 2) full-range int64 draws, read as n int32 lanes, True where a lane is below
    -2^31 + round(p * 2^32). Elsewhere, and while `torch.compile` traces: `torch.rand(shape) < p`.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type != "cpu" or torch.compiler.is_compiling():
        return torch.rand(shape, device=device) < p
    n = math.prod(shape)
    words = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2**63), None)  # 64 uniform bits each
    lanes = words.view(torch.int32)[:n]  # uniform over [-2^31, 2^31)
    threshold = -(2**31) + min(round(p * _LANES), _LANES - 1)
    return (lanes < threshold).view(shape)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with `drop_mask` on CPU: x * keep / (1 - p).

    Autograd keeps only the boolean mask for backward (multiplication saves the other factor, and
    the mask needs no gradient).
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    keep = ~drop_mask(x.shape, p)
    return (x * keep).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same state dict, same repr) whose CPU training mask comes from `drop_mask`."""

    def __init__(self, p: float = 0.5) -> None:  # no `inplace`: the product is a new tensor anyway
        super().__init__(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
