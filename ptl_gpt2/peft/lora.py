"""LoRA (Hu et al. 2021) and DoRA (Liu et al. 2024) for the backbone's `nn.Linear` layers.

`LoRALinear` *is* an `nn.Linear` holding the frozen base weight under the same names (`weight`,
`bias`), so the backbone's state-dict keys do not change and the tied `lm_head` keeps sharing
`transformer.wte.weight`; the adapter adds `lora_A` (r, in), `lora_B` (rows, r) and, for DoRA,
`lora_magnitude` (rows,):

    LoRA:  h = W0 x + b + s * B A dropout(x),            s = alpha / r  (alpha / sqrt(r) with rsLoRA)
    DoRA:  h = m / ||W0 + s B A||_row * (W0 x + s B A dropout(x)) + b

GPT-2's fused `c_attn` projects q, k and v at once (out = 3 C). A q/k/v mask (`qkv="qv"`) adapts
only those slices: `lora_B` then has rows for the chosen slices only, scattered into the full
output by `lora_rows`. The DoRA norm is taken per output row (PEFT's "column" norm of W^T) and, as
in the paper (section 4.3) and PEFT, detached from the graph.

This file needs only torch, so merging and export work without Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.dropout import Dropout

# Short names accepted in `target_modules`; a name matches a module whose dotted path ends with it.
TARGETS = ("c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "lm_head")


class LoRALinear(nn.Linear):
    """A frozen `nn.Linear` plus a low-rank update; starts as the same function (B = 0)."""

    def __init__(
        self,
        base: nn.Linear,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        rslora: bool = False,
        dora: bool = False,
        rows: Sequence[int] | None = None,
    ) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: the base parameters are shared, not new
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # the same Parameter object: keeps lm_head tied to wte
        self.register_parameter("bias", base.bias)
        self.r, self.alpha, self.rslora, self.dora = r, alpha, rslora, dora
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.lora_dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        n_rows = self.out_features if rows is None else len(rows)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(n_rows, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's (and PEFT's) init
        # Output rows the adapter writes to; None means all of them.
        self.lora_rows: torch.Tensor | None
        rows_tensor = None if rows is None else torch.as_tensor(list(rows), dtype=torch.long, device=base.weight.device)
        self.register_buffer("lora_rows", rows_tensor, persistent=False)
        if dora:
            with torch.no_grad():  # B = 0, so the magnitude starts at the base weight's row norms
                norm = torch.linalg.vector_norm(self.weight, dim=1)
            self.lora_magnitude = nn.Parameter(norm if rows is None else norm[self.lora_rows].clone())

    @property
    def dropout(self) -> float:
        return self.lora_dropout.p if isinstance(self.lora_dropout, nn.Dropout) else 0.0

    def full_B(self) -> torch.Tensor:
        """B with zero rows for the outputs the adapter leaves alone: (out, r)."""
        if self.lora_rows is None:
            return self.lora_B
        return self.lora_B.new_zeros(self.out_features, self.r).index_copy(0, self.lora_rows, self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """s * B A, the update LoRA adds to the base weight: (out, in)."""
        return self.scaling * (self.full_B() @ self.lora_A)

    def dora_scale(self) -> torch.Tensor:
        """m / ||W0 + s B A|| per output row (1 for rows outside the mask), detached norm: (out,)."""
        norm = torch.linalg.vector_norm(self.weight + self.delta_weight().detach(), dim=1).detach()
        if self.lora_rows is None:
            return self.lora_magnitude / norm
        return torch.ones_like(norm).index_copy(0, self.lora_rows, self.lora_magnitude / norm[self.lora_rows])

    def full_magnitude(self) -> torch.Tensor:
        """The DoRA magnitude over all output rows; rows outside the mask keep their base norm (scale 1)."""
        if self.lora_rows is None:
            return self.lora_magnitude
        norm = torch.linalg.vector_norm(self.weight, dim=1)
        return norm.index_copy(0, self.lora_rows, self.lora_magnitude)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r)
        if not self.dora:  # W0 x + b, then + s (A x) B^T inside one addmm: no separate scale or add pass
            base = F.linear(x, self.weight, self.bias)  # (..., out)
            out = torch.addmm(base.reshape(-1, self.out_features), h.reshape(-1, self.r), self.full_B().t(), alpha=self.scaling)
            return out.view(base.shape)
        base = F.linear(x, self.weight)  # (..., out), the bias comes after DoRA's scale
        out = self.dora_scale() * (base + F.linear(h, self.full_B()) * self.scaling)
        return out if self.bias is None else out + self.bias

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` computing the same function: no extra cost at inference.

        The weight is a new tensor, so a merged `lm_head` stops sharing `wte`'s weight (the
        embedding must keep W0); the bias Parameter is reused.
        """
        weight = self.weight + self.delta_weight()
        if self.dora:
            weight = self.dora_scale()[:, None] * weight
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.to(self.weight.dtype), requires_grad=self.weight.requires_grad)
        linear.bias = self.bias
        return linear

    def lora_parameters(self) -> Iterator[nn.Parameter]:
        yield self.lora_A
        yield self.lora_B
        if self.dora:
            yield self.lora_magnitude

    def extra_repr(self) -> str:
        mask = "" if self.lora_rows is None else f", rows={len(self.lora_rows)}/{self.out_features}"
        kind = "DoRA" if self.dora else "LoRA"
        return f"{super().extra_repr()}, {kind} r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}{mask}"


def qkv_rows(qkv: str, n_embd: int) -> list[int] | None:
    """Rows of the fused c_attn output (3 C) for the chosen slices of "qkv"; None for all three."""
    if not qkv or set(qkv) - set("qkv") or len(set(qkv)) != len(qkv):
        raise ValueError(f"LoRA qkv={qkv!r}: use a non-empty subset of 'qkv' without repeats, e.g. 'qv'")
    if len(qkv) == 3:
        return None
    return [row for i, part in enumerate("qkv") if part in qkv for row in range(i * n_embd, (i + 1) * n_embd)]


def matches(name: str, target: str) -> bool:
    """PEFT's rule: the module's dotted path equals the target or ends with '.' + target."""
    return name == target or name.endswith("." + target)


def find_targets(model: nn.Module, target_modules: Iterable[str]) -> list[str]:
    """Names of the `nn.Linear` modules that the targets select; every target must select one."""
    target_modules = list(target_modules)
    if not target_modules:
        raise ValueError(f"LoRA target_modules is empty; choose from {', '.join(TARGETS)}")
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for target in target_modules:
        if not any(matches(name, target) for name in linears):
            raise ValueError(
                f"LoRA target_modules entry {target!r} matches no nn.Linear of the model; "
                f"choose from {', '.join(TARGETS)} (or a longer dotted path such as 'h.0.attn.c_attn')"
            )
    return [name for name in linears if any(matches(name, t) for t in target_modules)]


def inject_lora(
    model: nn.Module,
    target_modules: Iterable[str] = ("c_attn",),
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    rslora: bool = False,
    dora: bool = False,
    qkv: str = "qkv",
) -> list[str]:
    """Replace the targeted `nn.Linear`s of `model` (e.g. a GPT2) by `LoRALinear`; return their names.

    Idempotent: modules that already are `LoRALinear` are left as they are. The `qkv` mask applies
    to modules named `c_attn` (GPT-2's fused q, k, v projection). Freezing is the caller's job.
    """
    qkv_rows(qkv, 1)  # validate the mask before touching the model
    names = find_targets(model, target_modules)
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, LoRALinear):
            continue
        rows = None
        if name.split(".")[-1] == "c_attn":
            if module.out_features != 3 * module.in_features:
                raise ValueError(f"{name}: expected a fused q, k, v projection (out = 3 * in), got {module}")
            rows = qkv_rows(qkv, module.in_features)
        _replace(model, name, LoRALinear(module, r, alpha, dropout, rslora, dora, rows))
    return names


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every `LoRALinear` of `model` into a plain `nn.Linear`; return the merged names."""
    names = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in names:
        _replace(model, name, model.get_submodule(name).merged())
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
