"""Lightning DataModules for the CS224N GPT-2 tasks, usable without `ptl_gpt2`."""

from .base import PadCollate, TokenDataset, TokenizedDataModule, pack_tokens
from .boolq import BoolQDataModule
from .errors import DataFileNotFoundError, DataFormatError, SplitNotConfiguredError
from .quora import QuoraDataModule
from .sentiment import CFIMDBDataModule, SentimentDataModule, SSTDataModule
from .sonnets import SonnetDataModule
from .text import TextDataModule

__all__ = [
    "BoolQDataModule",
    "CFIMDBDataModule",
    "DataFileNotFoundError",
    "DataFormatError",
    "PadCollate",
    "QuoraDataModule",
    "SSTDataModule",
    "SentimentDataModule",
    "SonnetDataModule",
    "SplitNotConfiguredError",
    "TextDataModule",
    "TokenDataset",
    "TokenizedDataModule",
    "pack_tokens",
]
