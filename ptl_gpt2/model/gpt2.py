"""GPT-2 written from scratch, in the spirit of nanoGPT's `model.py`.

Module names match the Hugging Face GPT-2 state dict (`transformer.h.0.attn.c_attn`, ...), with
`nn.Linear` where Hugging Face uses `Conv1D` (checkpoint io transposes those weights).

The config's architecture options (rotary positions, RMSNorm, SwiGLU, no biases, untied head; see
docs/llama.md) keep these module names, so LoRA, quantisation and the PEFT callbacks find the same
`attn.c_attn`, `mlp.c_fc`, `ln_1`, ... in a LLaMA-style model.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from ..ops.dropout import Dropout
from ..ops.dropout_attention import dropout_attention
from .config import GPT2Config
from .kv_cache import KVCache


# cuDNN attention is left out: it builds an execution plan for every new (B, T) shape, and
# padded batches and KV-cached decoding bring a new shape almost every step (a bf16 pass over
# variable-length batches ran ~15x slower on an H100 with it).
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
FULL_PRECISION = (torch.float32, torch.float64)


Rotary = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (B or 1, 1, T, hs)


def rotary_cos_sin(position_ids: torch.Tensor, head_size: int, theta: float, dtype: torch.dtype) -> Rotary:
    """cos and sin of the rotary angles position * theta^(-2i/hs) for position_ids (B or 1, T).

    Half-split layout (as Hugging Face's LLaMA): dimension j pairs with j + hs/2, both at frequency i = j mod hs/2.
    """
    inv_freq = theta ** -(torch.arange(0, head_size, 2, device=position_ids.device, dtype=torch.float32) / head_size)
    angles = position_ids[..., None].float() * inv_freq  # (B, T, hs/2), in float32 for long positions
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, hs)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
    """Rotate each (x_j, x_{j+hs/2}) pair of x (B, nh, T, hs) by its position's angle."""
    cos, sin = rotary
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v fused
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = Dropout(config.resid_pdrop)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        kv_cache: KVCache | None,
        layer: int,
        rotary: Rotary | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with `positions` (B,), only those queries: (B, 1, C)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:  # before caching: the cache holds rotated keys, rotated once
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, nh, T_past + T, hs)
        dropout_p = self.attn_pdrop if self.training else 0.0
        # Without a mask and without earlier tokens, the plain causal mask applies (flash path).
        is_causal = mask is None and k.size(2) == T and T > 1
        if positions is not None:  # one query per row; keys and values stay at every position
            rows = torch.arange(B, device=x.device)
            q = q[rows, :, positions].unsqueeze(2)  # (B, nh, 1, hs)
            if is_causal:
                mask = torch.arange(T, device=x.device) <= positions[:, None]  # (B, T): keys up to the query
                mask, is_causal = mask[:, None, None, :], False  # (B, 1, 1, T)
            elif mask is not None:
                mask = mask.expand(B, -1, -1, -1)[rows, :, positions].unsqueeze(2)  # (B, 1, 1, S)
            T = 1
        if dropout_p > 0 and q.device.type == "cpu" and q.dtype in FULL_PRECISION and torch.is_grad_enabled():
            # SDPA's CPU flash kernel has no dropout; its math path would keep two (T, T) floats per layer
            y = dropout_attention(q, k, v, mask, dropout_p, is_causal)
        else:
            with sdpa_kernel(ATTENTION_BACKENDS):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """GELU: c_proj(gelu(c_fc x)). SwiGLU: c_proj(silu(gate) * up) with [gate; up] = c_fc x (one fused matmul)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        width = config.mlp_width
        self.c_fc = nn.Linear(config.n_embd, 2 * width if self.swiglu else width, bias=config.bias)
        self.c_proj = nn.Linear(width, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, W) or (B, T, 2W)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))


def make_norm(config: GPT2Config) -> nn.Module:
    if config.norm == "rmsnorm":  # x / sqrt(mean(x^2) + eps) * weight
        return nn.RMSNorm(config.n_embd, eps=config.layer_norm_epsilon)
    return nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    With `positions` (B,) it computes the output at one position per row only, (B, 1, C): keys and
    values still come from every position, but queries, the attention output, the residual and the
    MLP are computed for that position alone.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        kv_cache: KVCache | None,
        layer: int,
        rotary: Rotary | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attended = self.attn(self.ln_1(x), mask, kv_cache, layer, rotary, positions)
        if positions is not None:
            x = x[torch.arange(x.size(0), device=x.device), positions].unsqueeze(1)  # (B, 1, C)
        x = x + attended
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Embeddings, blocks and the final LayerNorm: token ids (or embeddings) -> hidden states."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.position_embedding == "learned":  # rotary positions have no table
            self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        output_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the final hidden states (B, T, C), or (B, C) at `output_positions`.

        `attention_mask` (B, T_past + T) marks real tokens with 1 and padding with 0, covering the
        cached tokens too. Positions count real tokens only, so left-padded prompts get the same
        positions as unpadded ones. `output_positions` (B,) picks one position (an index into the
        T new tokens) per row, e.g. the last real token for a classifier: the last block then
        computes that position only (GPT-2 124M: a sixteenth of the block FLOPs less).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        past = 0 if kv_cache is None else kv_cache.seq_len
        if past + T > self.config.n_positions:
            raise ValueError(f"sequence of {past + T} tokens exceeds n_positions={self.config.n_positions}")
        if attention_mask is not None and attention_mask.shape != (B, past + T):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, past + T)} "
                "(it must cover the cached tokens too)"
            )
        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(past, past + T, device=x.device).unsqueeze(0)  # (1, T)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
        rotary = None
        if self.config.position_embedding == "rope":
            head_size = self.config.n_embd // self.config.n_head
            rotary = rotary_cos_sin(position_ids, head_size, self.config.rope_theta, x.dtype)
            x = self.drop(x)
        else:
            x = self.drop(x + self.wpe(position_ids))
        mask = _attention_mask(attention_mask, T, past, x.device)
        last = len(self.h) - 1
        for i, block in enumerate(self.h):
            positions = output_positions if i == last else None
            if self.config.activation_checkpointing and self.training and kv_cache is None:
                x = checkpoint(block, x, mask, None, i, rotary, positions, use_reentrant=False)
            else:
                x = block(x, mask, kv_cache, i, rotary, positions)
        x = self.ln_f(x)
        return x if output_positions is None else x.squeeze(1)  # (B, T, C) or (B, C)


def _attention_mask(
    attention_mask: torch.Tensor | None, T: int, past: int, device: torch.device
) -> torch.Tensor | None:
    """Boolean SDPA mask (B, 1, T, past + T): causal and not padding; None where SDPA's own will do."""
    if attention_mask is not None and past == 0 and bool(attention_mask.all()):
        attention_mask = None  # no padding: SDPA's causal path (flash attention), for one host sync
    if attention_mask is None and (past == 0 or T == 1):
        return None  # plain causal (is_causal) or one new token that sees everything
    q_pos = torch.arange(past, past + T, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(past + T, device=device)[None, :]  # (1, past + T)
    mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, past + T)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]
        # A padding query may see no key at all; let it see itself so SDPA returns no NaN.
        mask = mask | (k_pos == q_pos)[None, None]
    return mask


class GPT2(nn.Module):
    """GPT-2 language model: `model(input_ids)` -> logits (B, T, vocab_size)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer) at init.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size). Use `self.transformer(...)` for the hidden states alone."""
        hidden = self.transformer(
            input_ids, attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids, kv_cache=kv_cache
        )
        return self.lm_head(hidden)

    def new_kv_cache(self) -> KVCache:
        return KVCache(self.config.n_layer)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters counted once (a tied LM head shares the token embedding)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # Checkpoint io lives in checkpoint.py; these are the public entry points.
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **config_overrides) -> GPT2:
        """Load a Hugging Face GPT-2 checkpoint: a directory, a weights file or a hub name (`gpt2`)."""
        from .checkpoint import load_pretrained

        return load_pretrained(cls, name_or_path, **config_overrides)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write `config.json` + `model.safetensors` in the Hugging Face GPT-2 layout (plus
        `lm_head.weight` when the head is untied)."""
        from .checkpoint import save_pretrained

        save_pretrained(self, directory)

