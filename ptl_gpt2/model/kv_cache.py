"""Keys and values of the tokens already seen, so incremental decoding attends without recomputing."""

from __future__ import annotations

import torch


class KVCache:
    """One (keys, values) pair per layer, each (B, nh, T_seen, hs), grown as tokens arrive.

    By default each update concatenates (differentiable: prefix tuning trains through it). After
    `reserve(capacity)` updates write into per-layer buffers instead and `keys`/`values` are views
    of them: no new tensor per step (generation; with batch 12 over positions 32-160 the
    concatenations cost GPT-2 124M 8.4 ms a step, ~12% of a packed decoding step).
    """

    def __init__(self, n_layer: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.prefix_len = 0  # leading positions filled by a learned prefix (prefix tuning), not by tokens
        self.capacity: int | None = None  # positions per buffer after `reserve`; None: concatenate
        self._key_buffers: list[torch.Tensor | None] = [None] * n_layer  # (B, nh, capacity, hs)
        self._value_buffers: list[torch.Tensor | None] = [None] * n_layer

    @property
    def seq_len(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].size(2)

    def reserve(self, capacity: int) -> None:
        """Write updates into buffers of `capacity` positions (grown to twice the need if one
        overflows, e.g. by a prefix). The writes are in place: for inference only, no autograd."""
        if torch.is_grad_enabled():
            raise RuntimeError("KVCache.reserve is for inference: call it under torch.inference_mode() or torch.no_grad()")
        if self.seq_len:
            raise RuntimeError("KVCache.reserve needs an empty cache")
        self.capacity = capacity

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's (B, nh, T, hs) keys and values; return all of them for the layer."""
        if self.capacity is None:
            if self.keys[layer] is not None:
                k = torch.cat([self.keys[layer], k], dim=2)
                v = torch.cat([self.values[layer], v], dim=2)
        else:
            k, v = self._write(layer, k, v)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def _write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past = 0 if self.keys[layer] is None else self.keys[layer].size(2)
        end = past + k.size(2)
        buffers = self._key_buffers[layer], self._value_buffers[layer]
        if buffers[0] is None or end > buffers[0].size(2):
            B, nh, _, hs = k.shape
            size = self.capacity if end <= self.capacity else 2 * end
            new = tuple(k.new_empty(B, nh, size, hs) for _ in range(2))
            if past:  # an overflow: keep what is cached
                new[0][:, :, :past], new[1][:, :, :past] = self.keys[layer], self.values[layer]
            self._key_buffers[layer], self._value_buffers[layer] = buffers = new
        buffers[0][:, :, past:end] = k
        buffers[1][:, :, past:end] = v
        return buffers[0][:, :, :end], buffers[1][:, :, :end]  # (B, nh, end, hs) views

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows in `index` (beam search picks which hypotheses continue)."""
        if self.capacity is not None:
            T = self.seq_len
            self._key_buffers = [None if b is None else b.index_select(0, index) for b in self._key_buffers]
            self._value_buffers = [None if b is None else b.index_select(0, index) for b in self._value_buffers]
            self.keys = [None if b is None else b[:, :, :T] for b in self._key_buffers]
            self.values = [None if b is None else b[:, :, :T] for b in self._value_buffers]
            return
        self.keys = [None if k is None else k.index_select(0, index) for k in self.keys]
        self.values = [None if v is None else v.index_select(0, index) for v in self.values]
