"""GPT-2 hyper-parameters, named as in Hugging Face's `config.json` so the two map one to one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024  # context length (learned position embeddings)
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    # Recompute each block in the backward pass instead of storing its activations.
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    @property
    def mlp_width(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPT2Config:
        """A named preset (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, `tiny`), optionally overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT-2 preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    # Hugging Face `config.json` <-> GPT2Config
    HF_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are GELU with the tanh approximation

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], source: str = "config.json", **overrides: Any) -> GPT2Config:
        activation = hf.get("activation_function", "gelu_new")
        if activation not in cls.HF_ACTIVATIONS:
            raise ValueError(f"{source}: activation_function={activation!r} is not GPT-2's tanh GELU")
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in hf.items() if k in known}, **overrides})

    def to_hf_dict(self) -> dict[str, Any]:
        hf = {k: v for k, v in asdict(self).items() if k != "activation_checkpointing"}
        hf.update(
            model_type="gpt2",
            architectures=["GPT2LMHeadModel"],
            activation_function="gelu_new",
            n_ctx=self.n_positions,
            bos_token_id=50256,
            eos_token_id=50256,
            tie_word_embeddings=True,
        )
        return hf


PRESETS: dict[str, GPT2Config] = {
    "gpt2": GPT2Config(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPT2Config(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": GPT2Config(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPT2Config(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # For tests and quick recipes: the real vocabulary, a toy body.
    "tiny": GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256),
}
