"""GPT-2 tokenizer: tiktoken's GPT-2 encoding, built offline.

The vocabulary ships with the stand-alone `datamodules` package (which must not import
`ptl_gpt2`), so it lives there once and is re-exported here as part of the public API.
"""

from datamodules.tokenizer import EOT, EOT_ID, gpt2_tokenizer

__all__ = ["EOT", "EOT_ID", "gpt2_tokenizer"]
