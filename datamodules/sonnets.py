"""Sonnets for generation: the CS224N `sonnets.txt` layout, prompts matched to gold by number.

The layout (CRLF or LF): a header, then blocks `<number>` / blank line / the sonnet's lines,
separated by blank lines. As in the CS224N reference, a sonnet starts at a line that holds only a
number and runs to the next such line; everything before the first number is the header and is
dropped. Unlike the reference, the numbers are kept, so generated sonnets can be matched to gold
by number (the test prompts hold two repeated openings under new numbers, 155 and 156).
Irregular sonnets (99 has 15 lines, 126 has 12) are kept as they are and listed in the log.

`data_dir=None` uses the demo corpus shipped in `datamodules/demo/`: original poems written for
this project (not Shakespeare), so the quickstart runs with no data and no network.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
from torch.utils.data import Sampler

from .base import TokenDataset, TokenizedDataModule, pack_tokens
from .cache import encode_ordinary
from .errors import DataFormatError
from .readers import read_jsonl

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).parent / "demo"
NUMBER_LINE = re.compile(r"^\s*\d+\s*$")  # the reference's separator: a line holding only a number
# A lone token that was meant as a number: it has a digit ("12a", "13.") or is a roman numeral.
MALFORMED_NUMBER = re.compile(r"^\s*(\S*\d\S*|[IVXLCDM]+\.?)\s*$")
JSONL_SUFFIXES = {".jsonl", ".json"}


@dataclass(frozen=True)
class Sonnet:
    """One numbered poem: its lines (no line ends) and the 1-based file line of its number."""

    number: int
    lines: tuple[str, ...]
    line: int

    @property
    def text(self) -> str:
        """The sonnet with every line ended by "\\n" (a prompt of it is a prefix of it)."""
        return "".join(line + "\n" for line in self.lines)

    def opening(self, n: int) -> str:
        return "".join(line + "\n" for line in self.lines[:n])


def read_sonnets(path: Union[str, Path], option: Optional[str] = None) -> list[Sonnet]:
    """Parse a file in the `sonnets.txt` layout; DataFormatError names file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # universal newlines: CRLF and CR become "\n"
    except UnicodeDecodeError as err:
        raise DataFormatError(f"not UTF-8 text ({err.reason})", file=path, field=option) from None
    if not text.strip():
        raise DataFormatError("the file is empty (expected a header, then numbered sonnets)", file=path, line=1, field=option)
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if NUMBER_LINE.match(line)]
    if not starts:
        raise DataFormatError(
            "no sonnet number found: each sonnet must follow a line holding only its number", file=path, field=option
        )
    _check_separators(path, lines, 0, starts[0])  # a malformed first number would hide in the header
    sonnets: list[Sonnet] = []
    first_seen: dict[int, int] = {}
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        number = int(lines[start])
        _check_separators(path, lines, start + 1, end)
        body = lines[start + 1 : end]
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        if not body:
            raise DataFormatError(f"sonnet {number} has no text", file=path, line=start + 1, field="text")
        if number in first_seen:
            raise DataFormatError(
                f"sonnet number {number} appears twice (first on line {first_seen[number]})",
                file=path, line=start + 1, field="number",
            )
        first_seen[number] = start + 1
        sonnets.append(Sonnet(number, tuple(body), start + 1))
    return sonnets


def _check_separators(path: Path, lines: list[str], begin: int, end: int) -> None:
    """Raise on a lone, blank-surrounded line in lines[begin:end] that looks like a bad number."""
    for i in range(begin, end):
        alone = (i == 0 or not lines[i - 1].strip()) and (i + 1 == len(lines) or not lines[i + 1].strip())
        if alone and MALFORMED_NUMBER.match(lines[i]):
            raise DataFormatError(
                f"sonnet number {lines[i].strip()!r} is not a number (a line holding only digits starts each sonnet)",
                file=path, line=i + 1, field="number",
            )


def read_extra_sonnets(path: Path, option: str) -> list[str]:
    """Synthetic sonnets: JSON lines with a "text" field (`.jsonl`/`.json`), else the sonnets.txt layout."""
    if path.suffix.lower() not in JSONL_SUFFIXES:
        return [s.text for s in read_sonnets(path, option)]
    texts = []
    for line, row in read_jsonl(path, required=["text"]):
        value = row["text"]
        if not isinstance(value, str) or not value.strip():
            raise DataFormatError(f"expected non-empty text, got {value!r:.60}", file=path, line=line, field="text")
        texts.append(value.replace("\r\n", "\n").replace("\r", "\n").lstrip("\n").rstrip() + "\n")
    return texts


class ExtraMixSampler(Sampler[int]):
    """Training order when extra (synthetic) sonnets are mixed in: rows [0, n_real) are the real
    sonnets, [n_real, n_real + n_extra) the extra ones.

    Each epoch every real sonnet appears once and every extra one `floor(weight)` times, plus a
    fresh random `weight - floor(weight)` share of the extra ones once more; then all is shuffled.
    The draw depends only on `seed` and the epoch (`set_epoch`, which Lightning calls; without
    it each `iter` moves to the next epoch).
    """

    def __init__(self, n_real: int, n_extra: int, weight: float, seed: int) -> None:
        self.n_real, self.n_extra, self.weight, self.seed, self.epoch = n_real, n_extra, weight, seed, 0
        self.repeats = math.floor(weight)
        self.n_partial = round((weight - self.repeats) * n_extra)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_real + self.repeats * self.n_extra + self.n_partial

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        extra = torch.arange(self.n_real, self.n_real + self.n_extra)
        parts = [torch.arange(self.n_real)] + [extra] * self.repeats
        parts.append(extra[torch.randperm(self.n_extra, generator=generator)[: self.n_partial]])
        order = torch.cat(parts)
        yield from order[torch.randperm(len(order), generator=generator)].tolist()


class SonnetDataModule(TokenizedDataModule):
    """Sonnets for causal LM fine-tuning and prompt-conditioned generation.

    Batches (`input_ids`/`attention_mask` are (B, T), right-padded with `pad_id`):
      - train: `input_ids`, `attention_mask`: each training sonnet's full text followed by the
        end-of-text token (50256), so the model learns where a sonnet stops.
      - val: `input_ids`, `attention_mask` (the gold dev sonnets + end-of-text, for val loss),
        `prompts` list[str] (the prompt file's lines, each ending in "\\n"), `references`
        list[str] (the gold sonnets, lines ending in "\\n"), `ids` list[int] (sonnet numbers).
      - test / predict: `prompts`, `ids` (the test prompts; `predict_split="dev"` predicts the
        dev prompts instead).

    Args:
        data_dir: folder holding the files; None uses the demo corpus in `datamodules/demo/`
            (original poems, not Shakespeare; a warning says so).
        train_file: sonnets to train on (header, then numbered sonnets).
        dev_prompts_file: dev prompts, same layout, first lines of each dev sonnet; None takes
            the first `prompt_lines` lines of each gold sonnet.
        dev_gold_file: the dev sonnets in full; None = no validation. Each prompt must have a
            gold sonnet with the same number.
        test_prompts_file: test prompts; None = no test/predict split.
        extra_train_files: extra training sonnets (e.g. synthetic), each file JSON lines with a
            "text" field (`.jsonl`/`.json`) or the sonnets.txt layout.
        extra_weight: how much each extra sonnet counts per epoch relative to a real one: every
            epoch each extra sonnet appears `floor(extra_weight)` times, plus a fresh random
            `extra_weight - floor(extra_weight)` share of them once more (1.0 = plain union,
            0.25 = a different quarter each epoch, 0 = unused). Real sonnets appear once.
        prompt_lines: prompt length in lines when prompts come from the gold file.
        max_length: longer sonnets (with their end-of-text token) are truncated to this many
            tokens, and the count is logged. None = no limit.
        append_eot: end each train/val sonnet with the end-of-text token.
        **kwargs: options of TokenizedDataModule (batch_size, num_workers, seed, pad_id,
            cache_dir, use_cache, url, tokenizer, predict_split: "test" predicts the test prompts,
            "dev" the dev prompts). Its `val_fraction` is not supported here: validation needs
            gold sonnets and prompts, so set `dev_gold_file`.
    """

    split_options = {"train": "train_file", "val": "dev_gold_file", "test": "test_prompts_file"}

    def __init__(
        self,
        data_dir: Optional[Union[str, Path]] = None,
        train_file: Optional[str] = "sonnets.txt",
        dev_prompts_file: Optional[str] = "sonnets_held_out_dev.txt",
        dev_gold_file: Optional[str] = "TRUE_sonnets_held_out_dev.txt",
        test_prompts_file: Optional[str] = "sonnets_held_out.txt",
        extra_train_files: Optional[list[str]] = None,
        extra_weight: float = 1.0,
        prompt_lines: int = 3,
        max_length: Optional[int] = 512,
        append_eot: bool = True,
        **kwargs: Any,
    ) -> None:
        self.using_demo = data_dir is None
        if self.using_demo:
            log.warning(
                "SonnetDataModule: data_dir is not set, so the DEMO corpus is used (%s): original poems"
                " written for this project, not Shakespeare's sonnets; set data_dir for real data", DEMO_DIR,
            )
        super().__init__(DEMO_DIR if data_dir is None else data_dir, **kwargs)
        if self.val_fraction:
            raise ValueError("SonnetDataModule: val_fraction is not supported; set dev_gold_file (and dev_prompts_file)")
        if extra_weight < 0:
            raise ValueError(f"extra_weight must be >= 0, got {extra_weight}")
        if prompt_lines < 1:
            raise ValueError(f"prompt_lines must be >= 1, got {prompt_lines}")
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {max_length}")
        if isinstance(extra_train_files, str):
            extra_train_files = [extra_train_files]
        self.train_file, self.dev_prompts_file, self.dev_gold_file = train_file, dev_prompts_file, dev_gold_file
        self.test_prompts_file, self.extra_train_files = test_prompts_file, list(extra_train_files or [])
        self.extra_weight, self.prompt_lines, self.max_length = extra_weight, prompt_lines, max_length
        self.append_eot = append_eot
        self.train_rows = (0, 0)  # (real, extra) training sonnets, set by setup

    def data_files(self) -> dict[str, Any]:
        files: dict[str, Any] = {option: getattr(self, option) for option in self.split_options.values()}
        files["dev_prompts_file"] = self.dev_prompts_file if self.dev_gold_file is not None else None
        files["extra_train_files"] = self.extra_train_files or None
        return files

    # ---- splits ----------------------------------------------------------------------------
    def build_split(self, split: str) -> Optional[TokenDataset]:
        if split == "train":
            return self._train_split()
        if split == "val":
            return self._dev_split()
        return self._prompt_split()

    def _train_split(self) -> Optional[TokenDataset]:
        if self.train_file is None:
            return None
        path = self.require("train_file")
        sonnets = read_sonnets(path, "train_file")
        _log_irregular(path, sonnets)
        parts = [self._tokens("train", path, lambda: [s.text for s in sonnets])]
        for name in self.extra_train_files:
            extra_path = self.require("extra_train_files", name)
            parts.append(self._tokens("extra", extra_path, lambda p=extra_path: read_extra_sonnets(p, "extra_train_files")))
        rows = [part["tokens"][a:b] for part in parts for a, b in zip(part["offsets"][:-1], part["offsets"][1:])]
        n_real = len(parts[0]["offsets"]) - 1
        self.train_rows = (n_real, len(rows) - n_real)
        if self.train_rows[1]:
            log.info("SonnetDataModule: %d training sonnets + %d extra (extra_weight=%s)", *self.train_rows, self.extra_weight)
        packed = pack_tokens(rows)
        return TokenDataset(packed["tokens"], packed["offsets"])

    def _dev_split(self) -> Optional[TokenDataset]:
        if self.dev_gold_file is None:
            return None
        gold_path = self.require("dev_gold_file")
        gold = {s.number: s for s in read_sonnets(gold_path, "dev_gold_file")}
        if self.dev_prompts_file is None:
            numbers, prompts = list(gold), [s.opening(self.prompt_lines) for s in gold.values()]
        else:
            prompt_path = self.require("dev_prompts_file")
            prompt_sonnets = read_sonnets(prompt_path, "dev_prompts_file")
            for s in prompt_sonnets:
                if s.number not in gold:
                    raise DataFormatError(
                        f"dev prompt {s.number} has no gold sonnet with that number in {gold_path}",
                        file=prompt_path, line=s.line, field="number",
                    )
            numbers, prompts = [s.number for s in prompt_sonnets], [s.text for s in prompt_sonnets]
            unused = sorted(set(gold) - set(numbers))
            if unused:
                log.warning("SonnetDataModule: gold sonnets without a prompt are not used: %s (%s)", unused, gold_path)
            mismatched = [n for n, p in zip(numbers, prompts) if not gold[n].text.startswith(p)]
            if mismatched:
                log.warning("SonnetDataModule: dev prompts %s are not the opening lines of their gold sonnets", mismatched)
        references = [gold[n].text for n in numbers]
        # Tokenise every gold sonnet in file order, so the cache entry depends on the gold file only.
        arrays = self._tokens("gold", gold_path, lambda: [s.text for s in gold.values()])
        by_number = {number: i for i, number in enumerate(gold)}
        rows = [arrays["tokens"][arrays["offsets"][i] : arrays["offsets"][i + 1]] for i in (by_number[n] for n in numbers)]
        packed = pack_tokens(rows)
        return TokenDataset(packed["tokens"], packed["offsets"], prompts=prompts, references=references, ids=numbers)

    def _prompt_split(self) -> Optional[TokenDataset]:
        if self.test_prompts_file is None:
            return None
        sonnets = read_sonnets(self.require("test_prompts_file"), "test_prompts_file")
        return TokenDataset(prompts=[s.text for s in sonnets], ids=[s.number for s in sonnets])

    def _tokens(self, kind: str, path: Path, texts) -> dict[str, Any]:
        """Token rows (flat + offsets) of every sonnet in `path`, in file order; cached."""
        settings = {"max_length": self.max_length, "append_eot": self.append_eot, "eot_id": self.eot_id}

        def build() -> dict[str, Any]:
            all_texts = texts()
            suffix = [self.eot_id] if self.append_eot else []
            token_lists = [ids + suffix for ids in encode_ordinary(self.tokenizer, all_texts)]
            notes = []
            if self.max_length is not None:
                long = sum(len(ids) > self.max_length for ids in token_lists)
                token_lists = [ids[: self.max_length] for ids in token_lists]
                if long:
                    notes.append(f"{long} of {len(token_lists)} sonnets were longer than max_length={self.max_length} tokens and were truncated")
            return {**pack_tokens(token_lists), "notes": notes}

        return self.cached(kind, [path], settings, build)

    # ---- dataloaders -----------------------------------------------------------------------
    def train_sampler(self, dataset) -> Optional[Sampler]:
        n_real, n_extra = self.train_rows
        if not n_extra:
            return None  # plain seeded shuffle
        return ExtraMixSampler(n_real, n_extra, self.extra_weight, self.seed)


def _log_irregular(path: Path, sonnets: list[Sonnet]) -> None:
    irregular = [f"{s.number} ({len(s.lines)} lines)" for s in sonnets if len(s.lines) != 14]
    if irregular:
        log.info("SonnetDataModule: %s: sonnets without 14 lines (kept as they are): %s", path, ", ".join(irregular))
