"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""
from __future__ import annotations

from collections.abc import Iterable


class FedleakError(Exception):
    """Base class: anything raised as a FedleakError is the user's input, not our bug."""


class UnknownNameError(FedleakError, KeyError):
    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} '{name}'; known: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(FedleakError, ValueError):
    """A config value is missing, malformed or out of range; the message names the key."""


class NotApplicableError(ConfigError):
    """An attack needs what this setting does not give it (a knowledge flag, one example per update, a model
    with dropout), whatever the defense: a matrix lists the pair as not applicable instead of a failed cell.
    Raise it only for such a declared requirement; any other error of a cell is a failure."""


class DataError(FedleakError):
    """A dataset cannot be found or read, or an image does not fit the model."""


class NumericalError(FedleakError):
    """Observed tensors contain NaN/Inf, or an attack diverged beyond recovery."""


class UnreadableFileError(DataError):
    """A file fedleak reads is missing parts, truncated, or not what fedleak (or the dataset's
    publisher) wrote: possibly tampered with. Never unpickled past the plain types."""


class StorageError(FedleakError):
    """A file cannot be written: the disk is full, the folder is read-only, the path is a file."""
