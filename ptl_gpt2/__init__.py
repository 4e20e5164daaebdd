"""ptl-gpt2: adapt GPT-2 to downstream tasks efficiently with PyTorch Lightning."""

__version__ = "0.1.0"
