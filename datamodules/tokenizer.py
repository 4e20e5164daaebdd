"""The GPT-2 byte-pair encoding, built offline from the vocabulary shipped in this package.

`tiktoken.get_encoding("gpt2")` downloads its files on first use, which fails without internet.
The same ranks ship here (`assets/gpt2.tiktoken`, MIT, see `assets/README.md`) and are checked
against the hash tiktoken itself expects for r50k/gpt2, so the ids are exactly tiktoken's.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

VOCAB_FILE = Path(__file__).parent / "assets" / "gpt2.tiktoken"
VOCAB_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT = "<|endoftext|>"
EOT_ID = 50256
# The pre-tokenisation pattern of tiktoken's "gpt2" / "r50k_base" encodings.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=None)
def gpt2_tokenizer() -> tiktoken.Encoding:
    """Return the GPT-2 `tiktoken.Encoding` (n_vocab 50257, `<|endoftext|>` = 50256), offline."""
    ranks = load_tiktoken_bpe(str(VOCAB_FILE), expected_hash=VOCAB_SHA256)
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: EOT_ID},
    )
