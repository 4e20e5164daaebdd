"""Errors for bad input files: every message says which file, line and field is wrong."""

from __future__ import annotations

from pathlib import Path


def _where(file: str | Path | None, line: int | None, field: str | None) -> str:
    parts = []
    if file is not None:
        parts.append(str(file))
    if line is not None:
        parts.append(f"line {line}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)


class DataFormatError(ValueError):
    """A data file does not have the expected format.

    Attributes:
        file: the file (as given), or None when the problem is not in one file.
        line: 1-based line number in that file, or None for the whole file.
        field: the column / JSON field / option concerned, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = _where(file, line, field)
        super().__init__(f"{where}: {message}" if where else message)


class DataFileNotFoundError(FileNotFoundError):
    """A configured data file does not exist; `field` names the option that points to it."""

    def __init__(self, file: str | Path, field: str, hint: str = "") -> None:
        self.file, self.line, self.field = file, None, field
        message = f"{file}: file not found (option {field!r})"
        super().__init__(message + (f"; {hint}" if hint else ""))


class SplitNotConfiguredError(ValueError):
    """A stage (fit, validate, test, predict) needs a split whose file option is not set; `field` names it."""

    def __init__(self, datamodule: str, stage: str, split: str, field: str) -> None:
        self.file, self.line, self.field = None, None, field
        super().__init__(f"{datamodule}: `{stage}` needs the {split} split, but option {field!r} is not set")
