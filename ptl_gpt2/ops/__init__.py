"""Performance primitives: faster ways to compute what the model's plain PyTorch code computes."""

from .dropout_attention import dropout_attention
from .linear_cross_entropy import linear_cross_entropy
from .packed_linear import packed_linears

__all__ = ["dropout_attention", "linear_cross_entropy", "packed_linears"]
