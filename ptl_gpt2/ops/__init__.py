"""Performance primitives: faster ways to compute what the model's plain PyTorch code computes."""

from .dropout import Dropout, drop_mask  # not the function `dropout`: it would hide the module
from .dropout_attention import dropout_attention
from .linear_cross_entropy import linear_cross_entropy
from .packed_linear import packed_linears

__all__ = ["Dropout", "drop_mask", "dropout_attention", "linear_cross_entropy", "packed_linears"]
