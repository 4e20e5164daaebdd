"""What every DataModule here shares: files, downloads, the cache, padding, dataloaders, split sizes.

A subclass names its split files (`split_options`) and builds one split in `build_split`, usually
through `self.cached(...)` so that tokenisation runs once per input file, tokenizer and settings.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from .cache import ArrayCache, cache_key, default_cache_dir, file_sha256, tokenizer_fingerprint
from .errors import DataFileNotFoundError, SplitNotConfiguredError

log = logging.getLogger(__name__)

PAD_ID = 50256  # GPT-2's <|endoftext|>; padded positions are masked out, so any valid id would do
SPLITS_OF_STAGE = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),  # replaced by the split that `predict_split` names
    None: ("train", "val", "test"),
}
PREDICT_SPLITS = {"test": "test", "dev": "val"}  # predict_split option -> split name


def pack_tokens(token_lists: list[list[int]]) -> dict[str, np.ndarray]:
    """Ragged token lists as one flat int32 array + int64 offsets (row i is tokens[o[i]:o[i+1]])."""
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)
    np.cumsum([len(ids) for ids in token_lists], out=offsets[1:])
    flat = itertools.chain.from_iterable(token_lists)  # C-level iteration: ~4x faster than a generator
    tokens = np.fromiter(flat, dtype=np.int32, count=int(offsets[-1]))
    return {"tokens": tokens, "offsets": offsets}


class TokenDataset(Dataset):
    """Rows of token ids (ragged, flat storage), optional labels and any per-row columns.

    An item is a dict in the batch's key names: `input_ids` (1-D LongTensor), `labels` (int) and
    one value per column (e.g. `ids`, `prompts`, `references`). Without tokens (test prompts
    only), items hold just the columns.
    """

    def __init__(
        self,
        tokens: Optional[np.ndarray] = None,
        offsets: Optional[np.ndarray] = None,
        labels: Optional[np.ndarray] = None,
        **columns: list,
    ) -> None:
        self.tokens, self.offsets, self.labels, self.columns = tokens, offsets, labels, columns
        sizes = {len(v) for v in columns.values()}
        if offsets is not None:
            sizes.add(len(offsets) - 1)
        if labels is not None:
            sizes.add(len(labels))
        if len(sizes) != 1:
            raise ValueError(f"columns of different lengths: {sorted(sizes)}")
        self.size = sizes.pop()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        if self.tokens is not None:
            item["input_ids"] = torch.from_numpy(self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64))
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        for name, values in self.columns.items():
            item[name] = values[i]
        return item

    def subset(self, indices: np.ndarray) -> TokenDataset:
        """A new dataset with rows `indices` (in that order), storage compacted."""
        columns = {name: [values[i] for i in indices] for name, values in self.columns.items()}
        labels = None if self.labels is None else self.labels[indices]
        if self.tokens is None:
            return TokenDataset(labels=labels, **columns)
        rows = [self.tokens[self.offsets[i] : self.offsets[i + 1]] for i in indices]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in rows], out=offsets[1:])
        tokens = np.concatenate(rows).astype(self.tokens.dtype) if rows else self.tokens[:0]
        return TokenDataset(tokens, offsets, labels, **columns)


@dataclass(frozen=True)
class PadCollate:
    """Collate items into a batch: `input_ids` right-padded with `pad_id` (B, T) plus
    `attention_mask` (B, T) with 1 for real tokens, `labels` as a LongTensor (B,), and every other
    key as a list. A small picklable object, so dataloader workers do not copy the DataModule."""

    pad_id: int = PAD_ID

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if key == "input_ids":
                lengths = torch.tensor([len(v) for v in values])
                batch["input_ids"] = pad_sequence(values, batch_first=True, padding_value=self.pad_id)  # (B, T)
                positions = torch.arange(batch["input_ids"].shape[1])
                batch["attention_mask"] = (positions[None, :] < lengths[:, None]).long()  # (B, T)
            elif key == "labels":
                batch["labels"] = torch.tensor(values, dtype=torch.long)  # (B,)
            else:
                batch[key] = values
        return batch


class TokenizedDataModule(LightningDataModule):
    """Base class: locates, checks and (optionally) downloads files, caches tokenised splits, pads
    batches, shuffles deterministically from `seed` and logs the split sizes (`split_sizes`).

    Args:
        data_dir: folder holding the data files; file options may also be absolute paths.
            It may be read-only: nothing is written there unless `url` downloads a missing file.
        batch_size: rows per batch, in every split.
        num_workers: dataloader worker processes (0 = load in the main process).
        seed: seeds the training order (the same seed gives the same batches) and any random split.
        pad_id: the id used to right-pad `input_ids` (GPT-2's `<|endoftext|>`, 50256).
        cache_dir: folder of the tokenised-split cache; "default" is
            `$XDG_CACHE_HOME/ptl-gpt2-datamodules` (else `~/.cache/ptl-gpt2-datamodules`);
            None turns caching off.
        use_cache: False turns caching off.
        url: base URL; `prepare_data` downloads a missing file from `<url>/<file name>`
            (urllib, any scheme it knows). None (the default) never downloads.
        tokenizer: any object with `encode(str) -> list[int]` and `decode(list[int]) -> str`
            (tiktoken, HF tokenizers, ...); None uses GPT-2 (`datamodules.tokenizer.gpt2_tokenizer()`).
        predict_split: "test" (default) or "dev": the file `predict` runs on. Task modules use the
            name in their prediction files (`para-dev-output.csv`).
        val_fraction: when no dev file is configured, hold out this fraction of the training rows
            (a random choice fixed by `seed`) as the validation split. 0 = no validation.
        length_buckets: 0 = plain seeded shuffle. N > 0: shuffle, then sort rows by length within
            pools of N batches so each batch holds similar lengths (SST at batch 8: padding 43% ->
            2.5% with N=50); batches are still drawn in random order. See datamodules/bucketing.py.
    """

    split_options: dict[str, str] = {}  # split -> the option naming its file, e.g. {"train": "train_file"}

    def __init__(
        self,
        data_dir: Union[str, Path],
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        pad_id: int = PAD_ID,
        cache_dir: Optional[Union[str, Path]] = "default",
        use_cache: bool = True,
        url: Optional[str] = None,
        tokenizer: Optional[Any] = None,
        predict_split: str = "test",
        val_fraction: float = 0.0,
        length_buckets: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if predict_split not in PREDICT_SPLITS:
            raise ValueError(f"predict_split must be one of {list(PREDICT_SPLITS)}, got {predict_split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if length_buckets < 0:
            raise ValueError(f"length_buckets must be >= 0, got {length_buckets}")
        self.predict_split, self.val_fraction, self.length_buckets = predict_split, val_fraction, length_buckets
        self._full_train: Optional[Dataset] = None  # the training rows before val_fraction splits them
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.num_workers, self.seed, self.pad_id, self.url = batch_size, num_workers, seed, pad_id, url
        if use_cache and cache_dir is not None:
            self.cache: Optional[ArrayCache] = ArrayCache(default_cache_dir() if cache_dir == "default" else cache_dir)
        else:
            self.cache = None
        self._tokenizer, self._tokenizer_fingerprint = tokenizer, None
        self.collate = PadCollate(pad_id)
        self.datasets: dict[str, Dataset] = {}
        self.split_sizes: dict[str, int] = {}
        self._unconfigured: set[str] = set()  # splits whose build_split returned None

    # ---- tokenizer -------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from .tokenizer import gpt2_tokenizer

            self._tokenizer = gpt2_tokenizer()
        return self._tokenizer

    @property
    def eot_id(self) -> int:
        return getattr(self.tokenizer, "eot_token", PAD_ID)

    # ---- files -----------------------------------------------------------------------------
    def data_files(self) -> dict[str, Optional[str]]:
        """Every configured file by option name (None = that split is not used)."""
        return {option: getattr(self, option) for option in self.split_options.values()}

    def path(self, name: Union[str, Path]) -> Path:
        return self.data_dir / Path(name).expanduser()  # an absolute name replaces data_dir

    def require(self, option: str, name: Optional[Union[str, Path]] = None) -> Path:
        """The path of the file that `option` names; DataFileNotFoundError when it is missing."""
        path = self.path(getattr(self, option) if name is None else name)
        if not path.is_file():
            raise DataFileNotFoundError(path, option, hint=f"data_dir is {str(self.data_dir)!r}")
        return path

    def prepare_data(self) -> None:
        """Check that every configured file exists; download missing ones when `url` is set."""
        for option, name in self.data_files().items():
            names = name if isinstance(name, (list, tuple)) else [name]
            for one in names:
                if one is not None and not self.path(one).is_file():
                    if self.url is None:
                        self.require(option, one)  # raises, naming the option
                    self._download(option, one)

    def _download(self, option: str, name: str) -> None:
        source, dest = self.url.rstrip("/") + "/" + Path(name).as_posix(), self.path(name)
        log.warning("%s: downloading %s -> %s", type(self).__name__, source, dest)
        part = dest.with_name(dest.name + ".part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(source, timeout=60) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f)
            os.replace(part, dest)  # never leave a half-downloaded file under the real name
        except (urllib.error.URLError, OSError, ValueError) as err:
            part.unlink(missing_ok=True)
            raise DataFileNotFoundError(dest, option, hint=f"download from {source} failed: {err}") from err

    # ---- splits ----------------------------------------------------------------------------
    def build_split(self, split: str) -> Optional[Dataset]:
        """Build one split ("train", "val" or "test"); None when it is not configured."""
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the splits that `stage` needs (fit: train + val, validate: val, test/predict: test,
        None: every configured split). Building twice is a no-op."""
        if stage not in SPLITS_OF_STAGE:
            raise ValueError(f"unknown stage {stage!r}; expected one of {list(SPLITS_OF_STAGE)}")
        splits = (PREDICT_SPLITS[self.predict_split],) if stage == "predict" else SPLITS_OF_STAGE[stage]
        for split in splits:
            if split in self.datasets:
                continue
            dataset = self._build_or_hold_out(split)
            if dataset is None:
                self._unconfigured.add(split)
                if stage is not None and (split != "val" or stage == "predict"):
                    stage_name = getattr(stage, "value", stage)  # Lightning passes a TrainerFn (a str enum)
                    raise SplitNotConfiguredError(type(self).__name__, stage_name, split, self.split_options.get(split, split))
                continue
            self.datasets[split] = dataset
            self.split_sizes[split] = len(dataset)
        log.info("%s split sizes: %s", type(self).__name__, self.split_sizes)

    def _holds_out_val(self) -> bool:
        val_option = self.split_options.get("val")
        return self.val_fraction > 0 and (val_option is None or getattr(self, val_option, None) is None)

    def _build_or_hold_out(self, split: str) -> Optional[Dataset]:
        """`build_split(split)`, except that with `val_fraction` and no dev file, train and val
        are two disjoint random parts (fixed by `seed`) of the training file."""
        if split not in ("train", "val") or not self._holds_out_val():
            return self.build_split(split)
        if self._full_train is None:
            self._full_train = self.build_split("train")
        full = self._full_train
        if full is None:
            return None
        if not hasattr(full, "subset"):
            raise TypeError(f"{type(self).__name__}: val_fraction needs a dataset with subset(), got {type(full).__name__}")
        order = np.random.default_rng(self.seed).permutation(len(full))
        n_val = max(1, round(len(full) * self.val_fraction))
        if n_val >= len(full):
            raise ValueError(f"val_fraction={self.val_fraction} leaves no training rows out of {len(full)}")
        part = order[:n_val] if split == "val" else order[n_val:]
        return full.subset(np.sort(part))

    def cached(self, kind: str, files: list[Path], settings: dict[str, Any], build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """`build()` (a dict of arrays / string lists), or its cached copy. The key covers the bytes
        of `files`, the tokenizer and `settings`. `build` may return `notes` (messages about
        truncated or skipped rows of `files[0]`): they are logged as warnings on every run, cache hit
        or not, after the file's path as given now (the cache is shared by files of equal bytes)."""
        if self.cache is None:
            arrays = build()
        else:
            if self._tokenizer_fingerprint is None:
                self._tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)
            key = cache_key(
                datamodule=type(self).__name__, kind=kind, files=[file_sha256(f) for f in files],
                tokenizer=self._tokenizer_fingerprint, settings=settings,
            )
            arrays, hit = self.cache.get_or_build(key, build)
            log.info("%s: %s %s (%s)", type(self).__name__, "cache hit for" if hit else "tokenised and cached", kind, self.cache.path(key))
        for note in arrays.pop("notes", []):
            log.warning("%s: %s: %s", type(self).__name__, files[0], note)
        return arrays

    # ---- dataloaders -----------------------------------------------------------------------
    def train_sampler(self, dataset: Dataset) -> Optional[Sampler]:
        """A custom training sampler (None = shuffle with a generator seeded from `seed`)."""
        if self.length_buckets:
            from .bucketing import LengthBucketSampler, row_lengths

            return LengthBucketSampler(row_lengths(dataset), self.batch_size, self.length_buckets, self.seed)
        return None

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            option = self.split_options.get(split, split)
            raise RuntimeError(
                f"{type(self).__name__} has no {split} split: call setup() first, and set option {option!r}"
            )
        dataset = self.datasets[split]
        sampler = self.train_sampler(dataset) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> Union[DataLoader, list]:
        return [] if "val" in self._unconfigured else self.loader("val")  # no dev data: no validation

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader(PREDICT_SPLITS[self.predict_split])
