"""Fused, chunked linear + cross-entropy: the LM loss without the (N, V) logits.

`linear_cross_entropy(hidden, weight, targets)` equals
`F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=-100)` (value and gradients
with respect to `hidden` and `weight`), but runs over `chunk_size` rows at a time, so only a
(chunk_size, V) block of logits exists at once. For GPT-2 (V = 50257) a batch of 8 x 128 tokens would
otherwise hold the logits, their log-softmax and both gradients: four 206 MB tensors.

When gradients are needed they are computed in the forward pass, chunk by chunk, as Liger-Kernel's
FusedLinearCrossEntropy does: the chunk's logits are turned into g = softmax - one_hot(target) in
place, then dx_c = g @ W and dW += g^T @ x_c. Backward only scales the saved dx and dW by
grad_output / (number of valid targets), so the 1/n factor is applied in float32 after the matmuls
(fp16 probabilities are not divided by n before the low-precision matmul).

Precision follows what the unfused code computes: under `torch.autocast` the matmuls run in the
autocast dtype (as `F.linear` would), softmax and loss in float32; grads come back in each input's
dtype. float64 inputs stay in float64 throughout, loss included (the unfused `.float()` would drop to
float32). Like `F.cross_entropy`, a batch whose targets are all ignored has loss nan and zero grads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows per chunk when not given: the largest power of two whose float32 logits fit in CHUNK_BYTES
# (128 rows, 25.7 MB for GPT-2's 50257 words). glibc serves blocks up to 32 MiB from memory it has
# already touched, where each fresh 206 MB logits tensor is page-faulted in again; larger chunks were
# at most ~10% faster on the head and cost memory. See docs/ops.md for the measurements.
CHUNK_BYTES = 32 * 2**20


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `targets`, over targets != ignore_index.

    Args:
        hidden: (N, C) or (B, T, C) inputs of the output projection.
        weight: (V, C) projection, e.g. a (tied) LM head's weight.
        targets: (N,) or (B, T) class indices, `ignore_index` where no loss is taken.
        chunk_size: rows per chunk; default: the largest power of two whose float32 logits fit in
            `CHUNK_BYTES` (128 for V = 50257).
    """
    C = hidden.size(-1)
    if weight.ndim != 2 or weight.size(1) != C:
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected (V, {C}) for hidden of shape {tuple(hidden.shape)}")
    x = hidden.reshape(-1, C)  # (N, C)
    t = targets.reshape(-1)  # (N,)
    if t.numel() != x.size(0):
        raise ValueError(f"targets has shape {tuple(targets.shape)}, hidden {tuple(hidden.shape)}: one target per row")
    if chunk_size is None:
        chunk_size = 1 << max(0, (CHUNK_BYTES // (weight.size(0) * 4)).bit_length() - 1)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    with torch.no_grad():  # the dtype F.linear computes in here, autocast included (it leaves fp64 alone)
        compute_dtype = F.linear(x[:0], weight[:0]).dtype
    device_type = x.device.type
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, t, ignore_index, chunk_size, compute_dtype)
    with torch.autocast(device_type, enabled=False):
        return _chunked(x, weight, t, ignore_index, chunk_size, compute_dtype, False, False)[0]


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, ignore_index, chunk_size, compute_dtype):
        need_dx, need_dw = ctx.needs_input_grad[:2]
        with torch.autocast(x.device.type, enabled=False):  # the dtypes are chosen explicitly
            loss, n_valid, dx, dw = _chunked(x, weight, targets, ignore_index, chunk_size, compute_dtype, need_dx, need_dw)
        ctx.grads = (dx, dw, n_valid)  # attributes, not saved tensors: backward frees them
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy: backward through the same loss twice (its grads are freed after the first)")
        dx, dw, n_valid = ctx.grads
        ctx.grads = None  # free the (N, C) and (V, C) grads as soon as they are handed over
        scale = grad_output / n_valid.clamp_min(1)  # all ignored: zero grads, as F.cross_entropy
        dx = None if dx is None else dx.mul_(scale.to(dx.dtype))  # in place: they are ours alone
        dw = None if dw is None else dw.mul_(scale.to(dw.dtype))
        return dx, dw, None, None, None, None


def _chunked(x, weight, targets, ignore_index, chunk_size, compute_dtype, need_dx, need_dw):
    """Loss (mean over valid targets), the valid count, and the unscaled sums dx, dW of (softmax - one_hot)."""
    N = x.size(0)
    acc_dtype = torch.promote_types(compute_dtype, torch.float32)  # softmax and loss: float32 at least
    w = weight.to(compute_dtype)  # (V, C); no copy when already in that dtype
    valid = targets != ignore_index  # (N,)
    safe_targets = targets.masked_fill(~valid, 0)  # gather/scatter need an index in range
    total = torch.zeros((), dtype=acc_dtype, device=x.device)
    dx = torch.empty_like(x) if need_dx else None  # (N, C), hidden's dtype
    # float32 sum of the per-chunk dW even for bf16 matmuls; returned in weight's dtype.
    dw = torch.zeros(weight.shape, dtype=torch.promote_types(weight.dtype, acc_dtype), device=x.device) if need_dw else None
    for start in range(0, N, chunk_size):
        rows = slice(start, start + chunk_size)
        x_c = x[rows].to(compute_dtype)  # (n, C)
        # Logits transposed, (V, n): on CPU (MKL) W @ x_c^T runs ~1.6x faster than x_c @ W^T,
        # whose output is short and very wide. Softmax and loss are taken over dim 0.
        logits = (w @ x_c.T).to(acc_dtype)  # (V, n)
        t_c, valid_c = safe_targets[None, rows], valid[None, rows]  # (1, n)
        target_logit = logits.gather(0, t_c)  # (1, n)
        # log-sum-exp with the exponentials written over the logits: no second (V, n) block
        col_max = logits.amax(0, keepdim=True)  # (1, n)
        sum_exp = logits.sub_(col_max).exp_().sum(0, keepdim=True)  # logits now hold exp(l - max)
        lse = col_max + sum_exp.log()  # (1, n)
        total += ((lse - target_logit) * valid_c).sum()
        if not (need_dx or need_dw):
            continue
        # g = d(summed loss)/d(logits) = softmax - one_hot(target), zero in ignored columns: (V, n)
        g = logits.mul_(valid_c / sum_exp)  # softmax, in one pass with the masking
        g.scatter_add_(0, t_c, -valid_c.to(acc_dtype))
        g = g.to(compute_dtype)
        if need_dx:
            dx[rows] = g.T @ w  # (n, C)
        if need_dw:
            if dw.dtype == compute_dtype:
                dw.addmm_(g, x_c)  # (V, C), accumulated in place: no (V, C) temporary
            else:
                dw += g @ x_c
    n_valid = valid.sum()
    loss = total / n_valid  # nan when every target is ignored, as F.cross_entropy
    return loss, n_valid, dx, None if dw is None else dw.to(weight.dtype)
