"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""
from __future__ import annotations

import os

__all__ = ["DeepSciError", "InputError", "ConfigError", "expected"]


class DeepSciError(Exception):
    """Base class of every error caused by the user's input or options.

    Parameters
    ----------
    message : str
        What is wrong, e.g. ``"expected 3 dimensions (z, y, x), found 2"``.
    path : str or os.PathLike, optional
        The file the error is about; appended as ``" (<path>)"``.

    Examples
    --------
    >>> str(InputError("expected a BAM index, found none", "reads.bam"))
    'expected a BAM index, found none (reads.bam)'
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.message = str(message)
        self.path = None if path is None else os.fspath(path)
        super().__init__(self.message)

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        return f"{self.message} ({self.path})"


class InputError(DeepSciError):
    """A user's file is missing, malformed, or of the wrong kind or shape."""


class ConfigError(DeepSciError):
    """An option value or a combination of options is invalid."""


def expected(
    what: str,
    found: object,
    path: str | os.PathLike | None = None,
    cls: type[DeepSciError] = InputError,
) -> DeepSciError:
    """Build the house-style error ``"expected <what>, found <found>"``.

    Examples
    --------
    >>> str(expected("an integer label volume", "float32", "gt.zarr"))
    'expected an integer label volume, found float32 (gt.zarr)'
    """
    return cls(f"expected {what}, found {found}", path)
