"""Every file fedleak reads or writes goes through here.

Reading: nothing a user or an attacker can replace is ever unpickled past plain values. Tensor
files load with `torch.load(weights_only=True)`, NumPy archives with `allow_pickle=False`, JSON and
TOML with their parsers, tables with pandas/pyarrow (no pickle), and the one pickle format fedleak must read (CIFAR's batches) with an
unpickler that knows only the plain types such a batch holds. A file that does not read is a
one-line `UnreadableFileError` naming it; a cache entry that does not read is rebuilt (`cached`).

Writing: one atomic write (a temporary file in the same folder, then one rename), so a reader or
a crash never sees half a file, with the mode a plain `open()` would give (the umask applies).
A write that fails (disk full, read-only folder) is a one-line `StorageError`."""
from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import pickle
import tomllib
import uuid
from pathlib import Path
from typing import Any, Callable

from fedleak.core.errors import ConfigError, StorageError, UnreadableFileError

log = logging.getLogger("fedleak")


def cache_dir() -> Path:
    """Trained victims, protocol states and utility measurements: FEDLEAK_CACHE or ~/.cache/fedleak."""
    return Path(os.environ.get("FEDLEAK_CACHE", Path.home() / ".cache" / "fedleak"))


def digest(value: Any, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of `value` as canonical JSON (sorted keys;
    anything JSON lacks as its str): cache keys and config hashes."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


# ----------------------------------------------------------------------------- writing

def json_bytes(value: Any, indent: int | None = 1) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=indent, default=str) + "\n").encode()


def tensor_bytes(value: Any) -> bytes:
    import torch
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write-then-rename: a reader (or a crash) sees the old file or the new one, never half."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 gives the mode open() would (umask applied); mkstemp's is always 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot write {path}: {_reason(e)}") from None
    return path


def write_json(path: str | Path, value: Any, indent: int | None = 1) -> Path:
    return atomic_write(path, json_bytes(value, indent))


def save_tensors(path: str | Path, value: Any) -> Path:
    """Tensors and plain containers only, so `load_tensors` reads them back without unpickling code."""
    return atomic_write(path, tensor_bytes(value))


def _reason(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{e.strerror} (free some space and run the same command again; finished results are kept)"
    return e.strerror or str(e)


def check_writable(out: Path, flag: str = "output") -> None:
    """A folder results can go to, checked before anything runs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag}: {out} is an existing file; give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{flag}: cannot write to {out}: {_reason(e)}") from None


# ----------------------------------------------------------------------------- reading

def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file as a table; a missing file or a syntax error is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: malformed TOML: {_first_line(e)}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror}") from None


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UnreadableFileError(f"{path}: cannot read {what}: {_first_line(e)}") from None


def load_tensors(path: str | Path, what: str, map_location: Any = None) -> Any:
    """A file written by `save_tensors` (or any tensors-only torch file). weights_only: a file that
    holds anything but tensors and plain containers is refused, never unpickled."""
    import torch
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():  # torch's refusal is a page of advice; the point is one line
            raise UnreadableFileError(f"{path}: cannot read {what}: it holds objects other than tensors "
                                      "(refused, not unpickled)") from None
        raise UnreadableFileError(f"{path}: cannot read {what}: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, foreign format: all "this file is unreadable"
        raise UnreadableFileError(f"{path}: cannot read {what}: {type(e).__name__}: {_first_line(e)}") from None


def read_frame(path: str | Path, what: str) -> Any:
    """A results table: Parquet (pyarrow; no pickle) or CSV."""
    import pandas as pd
    path = Path(path)
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - pyarrow and pandas raise a dozen types for a bad file
        raise UnreadableFileError(f"{path}: cannot read {what}: {type(e).__name__}: {_first_line(e)}") from None


def read_npz(path: str | Path, what: str) -> dict[str, Any]:
    """A NumPy .npz as {name: array}. allow_pickle=False: an object array (which NumPy pickles) is
    refused, never unpickled."""
    import numpy as np
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as e:  # noqa: BLE001 - truncated zip, pickled objects, not an npz: all "unreadable"
        raise UnreadableFileError(f"{path}: cannot read {what}: {type(e).__name__}: {_first_line(e)}") from None


def _plain_globals() -> dict[tuple[str, str], Any]:
    """The only callables a plain-data pickle may name: numpy arrays and dtypes (in the spellings
    of numpy 1 and 2, protocols 2 to 5) and `_codecs.encode` (how protocol 2 writes bytes)."""
    import numpy as np
    probe = np.zeros(1, np.uint8)
    reconstruct, frombuffer = probe.__reduce__()[0], probe.__reduce_ex__(5)[0]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _PlainUnpickler(pickle.Unpickler):
    allowed: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which plain data never does "
                                         "(refused, not run)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds a persistent reference (refused)")


def read_plain_pickle(path: str | Path, what: str, encoding: str = "latin1") -> Any:
    """A pickle of plain values only: dict, list, tuple, str, bytes, numbers, numpy arrays (not
    of dtype object). Anything else, e.g. an object whose `__reduce__` would run code, is refused
    before it is called. encoding latin1 reads Python 2 pickles (CIFAR's) as numpy does."""
    import numpy as np
    path = Path(path)
    unpickler = type("PlainUnpickler", (_PlainUnpickler,), {"allowed": _plain_globals()})
    try:
        with open(path, "rb") as f:
            value = unpickler(f, encoding=encoding).load()
    except OSError as e:
        raise UnreadableFileError(f"{path}: cannot read {what}: {e.strerror}") from None
    except Exception as e:  # noqa: BLE001 - whatever a crafted byte stream makes the unpickler raise
        raise UnreadableFileError(f"{path}: cannot read {what}: {_first_line(e)}") from None
    stack = [value]
    while stack:  # object arrays carry arbitrary objects: not plain data
        item = stack.pop()
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple)):
            stack += list(item)
        elif isinstance(item, np.ndarray) and item.dtype.hasobject:
            raise UnreadableFileError(f"{path}: cannot read {what}: it holds an array of Python objects")
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ----------------------------------------------------------------------------- caches

def cached(path: Path, build: Callable[[], Any], load: Callable[[Path], Any], save: Callable[[Path, Any], Any],
           problem: Callable[[Any], str | None] | None = None) -> Any:
    """`load(path)` when it reads and `problem(value)` finds nothing wrong; otherwise `build()`,
    stored with `save`. A corrupt or foreign entry is said once and replaced, so a rerun never
    trips over it again."""
    path = Path(path)
    if path.exists():
        try:
            value = load(path)
            # a state with NaN/Inf would fail every run later, far from here ("observation has NaN")
            reason = _non_finite(value) or (problem(value) if problem is not None else None)
        except UnreadableFileError as e:
            value, reason = None, str(e).split(": ", 1)[-1]
        if reason is None:
            return value
        log.warning(f"fedleak: cache entry {path} is unusable ({reason}); rebuilding it")
    value = build()
    save(path, value)
    return value


def _non_finite(value: Any, where: str = "") -> str | None:
    """Where a cached value holds a NaN or Inf tensor, or None."""
    import torch
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"{where or 'it'} holds NaN or Inf"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def cached_tensors(path: Path, build: Callable[[], Any], what: str, problem: Callable[[Any], str | None] | None = None) -> Any:
    return cached(path, build, lambda p: load_tensors(p, what), save_tensors, problem)


def cached_json(path: Path, build: Callable[[], Any], what: str, problem: Callable[[Any], str | None] | None = None) -> Any:
    return cached(path, build, lambda p: read_json(p, what), write_json, problem)
