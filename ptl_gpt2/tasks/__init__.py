"""One LightningModule per task, all on the shared `GPT2Task` base."""

from .base import GPT2Task, OptionError
from .classification import ClassificationTask
from .cloze import ClozeClassifier, ParaphraseDetection, YesNoQA
from .lm import LanguageModel
from .sentiment import SentimentClassifier
from .sonnet import SonnetGenerator

__all__ = [
    "GPT2Task",
    "ClassificationTask",
    "ClozeClassifier",
    "ParaphraseDetection",
    "YesNoQA",
    "LanguageModel",
    "OptionError",
    "SentimentClassifier",
    "SonnetGenerator",
]
