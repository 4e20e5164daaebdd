"""Performance primitives: faster ways to compute what the model's plain PyTorch code computes."""

from .linear_cross_entropy import linear_cross_entropy
