"""The GPT-2 backbone: config, model, KV cache and Hugging Face checkpoint io."""

from .checkpoint import CheckpointError
from .config import GPT2Config
from .gpt2 import GPT2
from .kv_cache import KVCache

__all__ = ["GPT2", "GPT2Config", "KVCache", "CheckpointError"]
