"""Performance primitives: faster ways to compute what the model's plain PyTorch code computes."""

from .linear_cross_entropy import linear_cross_entropy
from .packed_linear import packed_linears

__all__ = ["linear_cross_entropy", "packed_linears"]
