"""Attention with dropout on the probabilities that keeps no float (T, S) matrix for backward.

PyTorch's CPU flash attention has no dropout, so `F.scaled_dot_product_attention(dropout_p > 0)` on
CPU falls back to its math path, which keeps per layer two float (B, nh, T, S) tensors for backward
(the softmax output and the dropped probabilities) and scaled copies of q and k. GPT-2 124M at batch
8 x 128: 19 MB a layer, 0.23 GB a step. This function keeps q, k, v and the dropout mask as booleans,
and recomputes the probabilities in backward (one more q @ k^T and softmax), as flash attention
does. On GPU, SDPA's flash and memory-efficient kernels already do this, so the model uses it for
CPU training only.

Forward, with s = q k^T * scale + bias (bias: 0 where a key is visible, -inf where not):
    p = softmax(s),  d = p * keep / (1 - dropout_p),  y = d v
Backward, with dy the gradient of y:
    dv = d^T dy,  dd = dy v^T,  dp = dd * keep / (1 - dropout_p),  ds = p * (dp - rowsum(dp * p)),
    dq = ds k * scale,  dk = ds^T q * scale
The mask is stored as `drop = not keep`, which `masked_fill_` applies without a float copy.
"""

from __future__ import annotations

import math

import torch

from .dropout import drop_mask


class _DropoutAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, drop, dropout_p: float):  # noqa: ANN001, ANN205 - autograd.Function
        # One copy each now instead of one per matmul: the (B, nh, T, hs) views of the fused qkv
        # projection are not batched-matmul operands, and backward would copy them four more times.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        scale = 1.0 / math.sqrt(q.size(-1))
        p = _probabilities(q, k, bias, scale)  # (B, nh, T, S)
        dropped = p.masked_fill_(drop, 0.0).mul_(1.0 / (1.0 - dropout_p))  # in place: one (T, S) buffer
        ctx.save_for_backward(q, k, v, bias, drop)
        ctx.scale, ctx.dropout_p = scale, dropout_p
        return dropped @ v  # (B, nh, T, hs)

    @staticmethod
    def backward(ctx, grad_y):  # noqa: ANN001, ANN205
        q, k, v, bias, drop = ctx.saved_tensors
        scale, rescale = ctx.scale, 1.0 / (1.0 - ctx.dropout_p)
        p = _probabilities(q, k, bias, scale)  # recomputed, (B, nh, T, S)
        grad_v = p.masked_fill(drop, 0.0).mul_(rescale).transpose(-2, -1) @ grad_y
        dp = (grad_y @ v.transpose(-2, -1)).masked_fill_(drop, 0.0).mul_(rescale)
        ds = dp.sub_((dp * p).sum(-1, keepdim=True)).mul_(p)  # softmax backward, in place
        grad_q = (ds @ k).mul_(scale)
        grad_k = (ds.transpose(-2, -1) @ q).mul_(scale)
        return grad_q, grad_k, grad_v, None, None, None


def _probabilities(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    s = (q @ k.transpose(-2, -1)).mul_(scale)  # (B, nh, T, S)
    return (s if bias is None else s.add_(bias)).softmax(-1)


def attention_bias(mask: torch.Tensor | None, is_causal: bool, T: int, S: int, like: torch.Tensor) -> torch.Tensor | None:
    """The additive form of SDPA's mask arguments: 0 where a query sees a key, -inf where not; None: all visible."""
    if is_causal:
        mask = torch.ones(T, S, dtype=torch.bool, device=like.device).tril()  # (T, S), top-left aligned as SDPA's
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill_(~mask, float("-inf"))


def dropout_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    is_causal: bool = False,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)` for a boolean or absent mask.

    q (B, nh, T, hs), k and v (B, nh, S, hs); `attn_mask` broadcasts to (B, nh, T, S), True = visible,
    and every query must see at least one key. `keep` (B, nh, T, S, bool) fixes the dropout mask
    (tests); by default it is drawn from torch's RNG, so `torch.manual_seed` and activation
    checkpointing's RNG replay work as with SDPA (the draws themselves differ from SDPA's). It is
    drawn by `ops.dropout.drop_mask`, 32 random bits per element: 3-4 ms for 8 x 12 x 128 x 128
    on this CPU, where `bernoulli_` takes 12-19 ms and the whole attention forward about 25.
    """
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise TypeError(f"attn_mask must be boolean (True = visible), got {attn_mask.dtype}")
    B, nh, T, _ = q.shape
    S = k.size(-2)
    drop = drop_mask((B, nh, T, S), dropout_p, q.device) if keep is None else ~keep
    bias = attention_bias(attn_mask, is_causal, T, S, like=q)
    return _DropoutAttention.apply(q, k, v, bias, drop, dropout_p)
