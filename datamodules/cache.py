"""On-disk cache of tokenised splits, so a second run does not tokenise again.

An entry is one `.npz` file (numpy arrays; lists of strings are stored as UTF-8 bytes + offsets,
so loading never unpickles anything). Its name is a hash of everything the content depends on:
the bytes of the input files, the tokenizer and every setting. Entries are written to a temporary
file and renamed, so an interrupted run never leaves a half-written entry behind, and a data
directory that is read-only is fine (the cache lives elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the stored layout or the tokenisation code changes (2: notes without the path)
PROBE_TEXT = (
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.\n"
    "  Is \"this\" a paraphrase? Answer: yes 1234 3.14 -- naïve café 日本語 \t<|endoftext|>"
)
_STRINGS = "__utf8__"  # suffix of the byte array of a packed list of strings
_OFFSETS = "__offsets__"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/ptl-gpt2-datamodules`, else `~/.cache/ptl-gpt2-datamodules`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ptl-gpt2-datamodules"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encode_ordinary(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Encode texts as plain text: `<|endoftext|>` inside user text is never a special token.

    tiktoken's `encode` refuses special-token text by default; `encode_ordinary` treats it as
    ordinary characters. Other tokenizers only need `encode(str) -> list[int]`. A plain loop is
    about twice as fast as `encode_ordinary_batch` for short texts (thread-pool overhead).
    """
    encode = getattr(tokenizer, "encode_ordinary", None) or tokenizer.encode
    return [encode(text) for text in texts]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of a tokenizer: its name, vocabulary size and the ids it gives a probe text."""
    name = getattr(tokenizer, "name", None) or getattr(tokenizer, "name_or_path", None)
    n_vocab = getattr(tokenizer, "n_vocab", None) or getattr(tokenizer, "vocab_size", None)
    identity = [str(name or type(tokenizer).__qualname__), n_vocab, encode_ordinary(tokenizer, [PROBE_TEXT])[0]]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def cache_key(**parts: Any) -> str:
    """Hash of JSON-able parts (sorted keys), e.g. file hashes, tokenizer fingerprint, settings."""
    text = json.dumps({"format_version": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def pack(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    """numpy arrays stay; lists of strings become UTF-8 bytes + offsets; scalars become 0-d arrays."""
    packed = {}
    for name, value in arrays.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            encoded = [v.encode("utf-8") for v in value]
            packed[name + _STRINGS] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            packed[name + _OFFSETS] = np.cumsum([0] + [len(b) for b in encoded], dtype=np.int64)
        else:
            packed[name] = np.asarray(value)
    return packed


def unpack(packed: dict[str, np.ndarray]) -> dict[str, Any]:
    arrays: dict[str, Any] = {}
    for name, value in packed.items():
        if name.endswith(_STRINGS):
            base = name[: -len(_STRINGS)]
            data, offsets = value.tobytes(), packed[base + _OFFSETS]
            arrays[base] = [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
        elif not name.endswith(_OFFSETS):
            arrays[name] = value if value.ndim else value.item()
    return arrays


class ArrayCache:
    """A folder of `.npz` entries keyed by `cache_key(...)`.

    Args:
        root: the folder; created on first write. An unwritable folder only disables writing.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, key: str) -> Path:
        return self.root / f"{key[:40]}.npz"

    def load(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return unpack({name: npz[name] for name in npz.files})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            log.warning("ignoring unreadable cache entry %s (%s); rebuilding it", path, err)
            return None

    def save(self, key: str, arrays: dict[str, Any]) -> None:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:  # a file object, so numpy does not append ".npz"
                    np.savez(f, **pack(arrays))
                os.replace(tmp, path)  # atomic: readers see the old entry or the whole new one
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            log.warning("could not write cache entry %s (%s); continuing without caching", path, err)

    def get_or_build(self, key: str, build: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Return (arrays, hit): the cached entry, or `build()` stored under `key`."""
        cached = self.load(key)
        if cached is not None:
            return cached, True
        arrays = build()
        self.save(key, arrays)
        return arrays, False
