"""Finished cells on disk, one folder each, so a matrix resumes and concurrent runs share work.

    <root>/cells/<key>/           a finished cell: run_attack's files + cell.json (written last, with
                                  the sha256 of every file of the cell: `digests`)
    <root>/cells/<key>.error.json why the last attempt failed (removed once the cell succeeds)
    <root>/.locks/<key>.lock      flock held by the run computing the cell

A cell's folder appears by one rename of a complete staging folder, so a reader (or a crash at
any point) never sees half a cell; the first of two runs to finish a cell wins, the other's copy
is dropped. The flock is released by the kernel when its holder dies, SIGKILL included, so an
interrupted run leaves no stale claim behind.

Every read of a stored file checks it against the digest written with it: a cell edited after it was
stored (a score raised, a column renamed) is set aside and computed again with a warning naming the
file (`discard_unusable`, at the start of a run), or refused with a one-line error where it is
merged. README's "tampered files are detected" covers the cells this way: without a secret, it
catches edits, not a forger who rewrites cell.json too."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd

from fedleak.core.errors import DataError, StorageError, UnreadableFileError
from fedleak.core.io import atomic_write, json_bytes, load_tensors, log, read_frame, read_json, write_json

CELL_FILE = "cell.json"
# How each file a task stores is read back: none of them is ever unpickled past plain tensors.
READERS = {".json": read_json, ".parquet": read_frame, ".pt": load_tensors}


class Claim:
    """An exclusive, non-blocking claim on one cell; release() or process death ends it."""

    def __init__(self, fd: int):
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class CellStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.cells = self.root / "cells"
        self.locks = self.root / ".locks"

    def prepare(self) -> None:
        self.cells.mkdir(parents=True, exist_ok=True)
        self.locks.mkdir(parents=True, exist_ok=True)

    def directory(self, key: str) -> Path:
        return self.cells / key

    def done(self, key: str) -> bool:
        return (self.cells / key / CELL_FILE).is_file()

    def claim(self, key: str) -> Claim | None:
        """The cell for this process alone, or None while another process holds it."""
        fd = os.open(self.locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return Claim(fd)

    def commit(self, key: str, files: dict[str, bytes], record: dict) -> bool:
        """Store a finished cell; False if another run stored it first (its copy is kept)."""
        staging = self.cells / f".staging-{key}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir(parents=True)
            for name, data in files.items():
                atomic_write(staging / name, data)
            digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
            atomic_write(staging / CELL_FILE, json_bytes({**record, "digests": digests}))
            try:
                os.rename(staging, self.cells / key)
            except OSError:
                if self.done(key):
                    return False
                raise
        except OSError as e:
            raise StorageError(f"cannot store cell {self.cells / key}: {e.strerror}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        self.error_path(key).unlink(missing_ok=True)
        return True

    def record_error(self, key: str, record: dict) -> None:
        write_json(self.error_path(key), record)

    def error_path(self, key: str) -> Path:
        return self.cells / f"{key}.error.json"

    def error(self, key: str) -> dict | None:
        """Why the last attempt failed; None when it did not, or when that note is unreadable (the
        task runs again either way)."""
        path = self.error_path(key)
        if not path.is_file() or self.done(key):
            return None
        try:
            record = read_json(path, "failure record")
        except UnreadableFileError:
            return None
        return record if isinstance(record, dict) and "error" in record else None

    def record(self, key: str) -> dict:
        return read_json(self.cells / key / CELL_FILE, "stored cell record")

    def rows(self, key: str) -> pd.DataFrame:
        return self.read(key, "results.parquet")

    def read(self, key: str, name: str):
        """One stored file of a cell, checked against its digest, then read the safe way its suffix
        calls for; an edited file is a one-line DataError naming it."""
        path = self.cells / key / name
        if name != CELL_FILE:
            self.verify(key, name)
        return READERS[Path(name).suffix](path, "stored cell file")

    def verify(self, key: str, name: str) -> None:
        path = self.cells / key / name
        try:
            record = self.record(key)
            expected = record.get("digests", {}).get(name) if isinstance(record, dict) else None
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except (UnreadableFileError, OSError, AttributeError) as e:
            raise DataError(f"{path}: cannot check it against its digest ({e})") from None
        if expected is None:
            raise DataError(f"{path}: no digest was stored with it (a cell of an older fedleak, or an edited "
                            f"{CELL_FILE}); delete {path.parent} to compute it again")
        if actual != expected:
            raise DataError(f"{path}: does not match the digest stored with it (edited after it was written); "
                            f"delete {path.parent} to compute it again")

    def problem(self, key: str, files: tuple[str, ...]) -> str | None:
        """Why a stored cell cannot be used (a file missing, truncated, foreign, edited), or None."""
        for name in (CELL_FILE, *files):
            if not (self.cells / key / name).is_file():
                return f"{name} is missing"
            try:
                value = self.read(key, name)
            except (UnreadableFileError, DataError) as e:
                return str(e)
            if name.endswith((".json", ".pt")) and not isinstance(value, dict):
                return f"{self.cells / key / name}: not a table"
        return None

    def discard_unusable(self, tasks) -> list[str]:
        """Stored cells that do not read are set aside and computed again, said once each: a corrupt
        cell must not break every later run of the matrix."""
        dropped = []
        for task in tasks:
            if not self.done(task.key):
                continue
            reason = self.problem(task.key, task.files)
            if reason is None:
                continue
            claim = self.claim(task.key)
            if claim is None:
                continue  # another run holds it; that run decides
            try:
                aside = self.cells / f".unusable-{task.key}-{uuid.uuid4().hex[:8]}"
                os.rename(self.cells / task.key, aside)
                shutil.rmtree(aside, ignore_errors=True)
            finally:
                claim.release()
            log.warning(f"fedleak: stored cell {self.cells / task.key} is unusable ({reason}); computing it again")
            dropped.append(task.key)
        return dropped

    def stale(self, tasks) -> list[tuple[str, dict, object]]:
        """Stored results of these tasks' configs that other code computed: (stored key, the code
        it recorded, {} for a cell stored before keys covered the code; the task). Not reused."""
        wanted = {t.config_hash: t for t in tasks}
        current = {t.key for t in tasks}
        out = []
        for path in sorted(self.cells.glob(f"*/{CELL_FILE}")):
            key = path.parent.name
            if key in current:
                continue
            try:
                record = read_json(path, "stored cell record")
            except UnreadableFileError:
                continue
            if not isinstance(record, dict):
                continue
            config_hash = record.get("config_hash", key)  # before code keys, a cell's key was its config's digest
            if config_hash in wanted:
                out.append((key, record.get("code", {}), wanted[config_hash]))
        return out

    def clean_staging(self) -> None:
        """Staging folders of runs that died mid-commit (none of them is a finished cell)."""
        for path in self.cells.glob(".staging-*"):
            key = path.name[len(".staging-"):].rsplit("-", 1)[0]
            claim = self.claim(key)
            if claim is not None:  # nobody is committing this cell right now
                shutil.rmtree(path, ignore_errors=True)
                claim.release()
