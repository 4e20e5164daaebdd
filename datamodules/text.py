"""Plain text for language modelling from scratch (e.g. TinyStories), packed into fixed blocks.

A file is split into documents on `separator` (TinyStories: `<|endoftext|>`); each document is
stripped, tokenised as plain text and followed by the end-of-text token (50256), and the
documents are concatenated into one token stream that is cut into blocks of `block_size` tokens.
Consecutive blocks share one token (the stride is `block_size - 1`): the LM loss shifts inside a
block, so this way every token after the first is a prediction target exactly once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import TokenizedDataModule, pack_tokens
from .cache import encode_ordinary
from .errors import DataFormatError

log = logging.getLogger(__name__)


class BlockDataset(Dataset):
    """Blocks of `block_size` tokens taken from one stream every `block_size - 1` tokens."""

    def __init__(self, stream: np.ndarray, block_size: int) -> None:
        self.stream, self.block_size, self.stride = stream, block_size, block_size - 1
        self.size = 0 if len(stream) < block_size else (len(stream) - block_size) // self.stride + 1

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.size:
            raise IndexError(i)
        start = i * self.stride
        return {"input_ids": torch.from_numpy(self.stream[start : start + self.block_size].astype(np.int64))}

    @property
    def unused_tokens(self) -> int:
        """Tokens at the end of the stream that no block predicts (fewer than one stride)."""
        covered = self.size * self.stride + 1 if self.size else 0
        return len(self.stream) - covered


def split_documents(text: str, separator: Optional[str]) -> tuple[list[str], int]:
    """(stripped non-empty documents, count of empty ones between two separators).

    An empty piece before the first or after the last separator is not counted (files often end
    with a separator). separator None: the whole text is one document.
    """
    pieces = [text] if not separator else text.split(separator)
    documents = [piece.strip() for piece in pieces]
    kept = [doc for doc in documents if doc]
    edges = int(not documents[0]) + int(len(documents) > 1 and not documents[-1])
    return kept, max(0, len(documents) - len(kept) - edges)


class TextDataModule(TokenizedDataModule):
    """Causal LM on plain text files, packed into blocks.

    Batches: `input_ids` (B, block_size) and `attention_mask` (B, block_size), all ones.

    Args:
        data_dir: folder holding the files.
        train_file: training text (one file or a list of files).
        val_file: validation text; None holds out `val_fraction` of the training documents.
        test_file: test text; None = no test split.
        val_fraction: share of the training documents (chosen at random from `seed`, at least
            one) held out for validation when `val_file` is None; 0 = no validation.
        separator: the string between documents; None = each file is one document.
        block_size: tokens per block (>= 2).
        max_documents: use only the first N documents of each file (quick runs); None = all.
        **kwargs: options of TokenizedDataModule (batch_size, num_workers, seed, pad_id,
            cache_dir, use_cache, url, tokenizer, predict_split).
    """

    split_options = {"train": "train_file", "val": "val_file", "test": "test_file"}

    def __init__(
        self,
        data_dir: Union[str, Path],
        train_file: Optional[Union[str, list[str]]] = "train.txt",
        val_file: Optional[str] = None,
        test_file: Optional[str] = None,
        val_fraction: float = 0.05,
        separator: Optional[str] = "<|endoftext|>",
        block_size: int = 256,
        max_documents: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        # Documents, not blocks, are held out (no document is in both splits): done here, so the
        # base class's row-level hold-out stays off.
        super().__init__(data_dir, val_fraction=0.0, **kwargs)
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if max_documents is not None and max_documents < 1:
            raise ValueError(f"max_documents must be >= 1 or None, got {max_documents}")
        self.train_file, self.val_file, self.test_file = train_file, val_file, test_file
        self.val_document_fraction, self.separator, self.block_size, self.max_documents = val_fraction, separator, block_size, max_documents
        self._train_documents: Optional[list[np.ndarray]] = None  # token rows of the training files
        self._held_out: Optional[np.ndarray] = None  # document indices held out for validation

    def build_split(self, split: str) -> Optional[BlockDataset]:
        if split == "train":
            rows = self._training_rows(held_out=False)
        elif split == "val" and self.val_file is None:
            if self.val_document_fraction == 0 or self.train_file is None:
                return None
            rows = self._training_rows(held_out=True)
        else:
            option = self.split_options[split]
            if getattr(self, option) is None:
                return None
            rows = self._documents(option, getattr(self, option))
        if not rows:
            return None
        return self._blocks(split, rows)

    def _training_rows(self, held_out: bool) -> list[np.ndarray]:
        if self.train_file is None:
            return []
        if self._train_documents is None:
            self._train_documents = self._documents("train_file", self.train_file)
            n = len(self._train_documents)
            fraction = 0 if self.val_file is not None else self.val_document_fraction
            n_val = max(1, round(fraction * n)) if fraction else 0
            if n_val >= n:
                raise DataFormatError(
                    f"{n} document(s): too few to hold out val_fraction={fraction} for validation;"
                    " set val_file or add documents", field="val_fraction",
                )
            self._held_out = np.sort(np.random.default_rng(self.seed).permutation(n)[:n_val])
        chosen = np.zeros(len(self._train_documents), dtype=bool)
        chosen[self._held_out] = True
        return [row for row, is_val in zip(self._train_documents, chosen) if is_val == held_out]

    def _documents(self, option: str, names: Union[str, list[str]]) -> list[np.ndarray]:
        """Token rows (each ending in end-of-text) of every document in the files, cached per file."""
        rows = []
        for name in [names] if isinstance(names, (str, Path)) else names:
            path = self.require(option, name)
            settings = {"separator": self.separator, "max_documents": self.max_documents, "eot_id": self.eot_id}
            arrays = self.cached("documents", [path], settings, lambda p=path: self._encode(p, option))
            tokens, offsets = arrays["tokens"], arrays["offsets"]
            rows.extend(tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:]))
        return rows

    def _encode(self, path: Path, option: str) -> dict[str, Any]:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise DataFormatError(f"not UTF-8 text ({err.reason})", file=path, field=option) from None
        documents, n_empty = split_documents(text, self.separator)
        if not documents:
            raise DataFormatError("the file is empty (no text between separators)", file=path, line=1, field=option)
        notes = []
        if n_empty:
            notes.append(f"skipped {n_empty} empty documents (nothing between two separators)")
        if self.max_documents is not None and len(documents) > self.max_documents:
            notes.append(f"using the first {self.max_documents} of {len(documents)} documents (max_documents)")
            documents = documents[: self.max_documents]
        token_lists = [ids + [self.eot_id] for ids in encode_ordinary(self.tokenizer, documents)]
        return {**pack_tokens(token_lists), "notes": notes}

    def _blocks(self, split: str, rows: list[np.ndarray]) -> BlockDataset:
        stream = np.concatenate(rows)
        dataset = BlockDataset(stream, self.block_size)
        if len(dataset) == 0:
            raise DataFormatError(
                f"the {split} text has {len(stream)} tokens, fewer than one block of block_size={self.block_size}",
                field="block_size",
            )
        log.info(
            "TextDataModule: %s: %d documents, %d tokens, %d blocks of %d (%d tokens at the end unused)",
            split, len(rows), len(stream), len(dataset), self.block_size, dataset.unused_tokens,
        )
        return dataset
