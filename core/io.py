"""Reading and writing files: one atomic write, TOML reading with one-line errors."""
from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

from fedleak.core.errors import ConfigError


def read_toml(path: str | Path, what: str) -> dict:
    """A TOML file as a table; a missing file or a syntax error is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML: {e}") from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write-then-rename so a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output: cannot write to {out}: {e.strerror}") from None
