"""Prompt templates with named fields, encoded with truncation of the fields only.

A template is a `str.format` string such as
`'Question 1: "{sentence1}"\\nQuestion 2: "{sentence2}"\\nAre these questions asking the same thing?\\nAnswer:'`.
The whole rendered prompt is tokenised at once (so tokens across a field boundary are exactly
what the tokenizer gives for the full text). A prompt longer than `max_length` loses tokens from
the end of its longest field (or of the fields named in `truncate_fields`), one at a time, until it
fits: the template text, in particular the end of the prompt where the answer is read, is never cut.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .base import TokenDataset, TokenizedDataModule, pack_tokens
from .cache import encode_ordinary
from .errors import DataFormatError


class PromptTemplate:
    """A `str.format` template whose `{name}` fields are filled from a row.

    Args:
        template: the format string; write literal braces as `{{` and `}}`.
        option: the option name used in error messages.
        truncate_fields: the fields that may lose tokens when a prompt is too long (None = all;
            e.g. ["passage"] keeps a question whole and cuts the passage).
    """

    def __init__(self, template: str, option: str = "template", truncate_fields: list[str] | None = None) -> None:
        self.template, self.option = template, option
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as err:
            raise DataFormatError(f"invalid template {template!r}: {err}", field=option) from None
        self.fields: list[str] = []
        for _, name, _, _ in parsed:
            if name is None:
                continue
            if not name.isidentifier():
                raise DataFormatError(f"template field {{{name}}} must be a name like {{sentence1}}", field=option)
            if name not in self.fields:
                self.fields.append(name)
        self.truncate_fields = list(self.fields) if truncate_fields is None else list(truncate_fields)
        unknown = [name for name in self.truncate_fields if name not in self.fields]
        if unknown:
            raise DataFormatError(f"truncate_fields {unknown} are not fields of the template {template!r}", field=option)

    def check_fields(self, available: list[str], *, file: Any = None, line: int | None = None) -> None:
        """Raise a DataFormatError when the template uses a field the data does not have."""
        missing = [name for name in self.fields if name not in available]
        if missing:
            raise DataFormatError(
                f"template {self.template!r} (option {self.option!r}) uses {missing}, "
                f"but the data only has {available}",
                file=file, line=line, field=missing[0],
            )

    def render(self, row: dict[str, str]) -> str:
        return self.template.format_map(row)

    def encode(
        self, tokenizer: Any, rows: list[dict[str, str]], max_length: int | None
    ) -> tuple[list[list[int]], int]:
        """Token ids of each rendered row, and how many rows had to be truncated."""
        ids = encode_ordinary(tokenizer, [self.render(row) for row in rows])
        n_truncated = 0
        if max_length is not None:
            for i, seq in enumerate(ids):
                if len(seq) > max_length:
                    ids[i] = self._truncate(tokenizer, rows[i], max_length)
                    n_truncated += 1
        return ids, n_truncated

    def _truncate(self, tokenizer: Any, row: dict[str, str], max_length: int) -> list[int]:
        fields = {name: encode_ordinary(tokenizer, [row[name]])[0] for name in self.truncate_fields}
        seq = encode_ordinary(tokenizer, [self.render(row)])[0]
        while len(seq) > max_length:
            # Drop the overflow from the longest fields ("longest first"); merges across a field
            # boundary can change the count by a token or two, so re-encode and check again.
            for _ in range(len(seq) - max_length):
                longest = max(fields, key=lambda name: len(fields[name]), default=None)
                if longest is None or not fields[longest]:
                    raise DataFormatError(
                        f"the prompt is still {len(seq)} tokens, more than max_length={max_length}, with"
                        f" its truncatable fields {self.truncate_fields} empty",
                        field=self.option,
                    )
                fields[longest].pop()
            shortened = {**row, **{name: tokenizer.decode(ids) for name, ids in fields.items()}}
            seq = encode_ordinary(tokenizer, [self.render(shortened)])[0]
        return seq


def encode_rows(
    template: PromptTemplate,
    tokenizer: Any,
    fields: list[dict[str, str]],
    ids: list[str],
    labels: list[int] | None,
    max_length: int | None,
    path: Path,
    skipped: list[int],
    skip_reason: str,
) -> dict[str, Any]:
    """The cached arrays of prompt rows (tokens, offsets, ids, labels) and the `notes` logged on
    every run: how many prompts were truncated, which lines were skipped (`skip_reason`)."""
    token_lists, n_truncated = template.encode(tokenizer, fields, max_length)
    notes = []
    if n_truncated:
        notes.append(
            f"{n_truncated} of {len(fields)} prompts were longer than max_length={max_length} tokens;"
            f" their {'/'.join(template.truncate_fields)} was truncated"
        )
    if skipped:
        shown = ", ".join(map(str, skipped[:20])) + (", ..." if len(skipped) > 20 else "")
        notes.append(f"skipped {len(skipped)} rows {skip_reason} (skip_unlabeled=True): lines {shown}")
    arrays: dict[str, Any] = {**pack_tokens(token_lists), "ids": ids, "notes": notes}
    if labels is not None:
        arrays["labels"] = np.array(labels, dtype=np.int64)
    return arrays


class PromptRowsDataModule(TokenizedDataModule):
    """One prompt per row of a train / dev / test file, with `labels` and `ids`: the shared split
    building of the TSV tasks and BoolQ. Subclasses read a file in `_encode_file` (usually ending
    in `encode_rows`) and say what changes its tokens in `settings` (the cache key)."""

    split_options = {"train": "train_file", "val": "dev_file", "test": "test_file"}

    def build_split(self, split: str) -> Optional[TokenDataset]:
        option = self.split_options[split]
        if getattr(self, option) is None:
            return None
        path = self.require(option)
        needs_labels = split != "test"
        arrays = self.cached(
            "labelled" if needs_labels else "test", [path], self.settings(), lambda: self._encode_file(path, needs_labels)
        )
        return TokenDataset(arrays["tokens"], arrays["offsets"], arrays.get("labels"), ids=arrays["ids"])

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def _encode_file(self, path: Path, needs_labels: bool) -> dict[str, Any]:
        raise NotImplementedError
