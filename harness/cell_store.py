"""Finished cells on disk, one folder each, so a matrix resumes and concurrent runs share work.

    <root>/cells/<key>/           a finished cell: run_attack's files + cell.json (written last)
    <root>/cells/<key>.error.json why the last attempt failed (removed once the cell succeeds)
    <root>/.locks/<key>.lock      flock held by the run computing the cell

A cell's folder appears by one rename of a complete staging folder, so a reader (or a crash at
any point) never sees half a cell; the first of two runs to finish a cell wins, the other's copy
is dropped. The flock is released by the kernel when its holder dies, SIGKILL included, so an
interrupted run leaves no stale claim behind."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd

from fedleak.core.io import atomic_write_bytes

CELL_FILE = "cell.json"


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
        staging.mkdir(parents=True)
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
            (staging / CELL_FILE).write_text(json.dumps(record, sort_keys=True, indent=1, default=str) + "\n")
            try:
                os.rename(staging, self.cells / key)
            except OSError:
                if self.done(key):
                    return False
                raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        self.error_path(key).unlink(missing_ok=True)
        return True

    def record_error(self, key: str, record: dict) -> None:
        atomic_write_bytes(self.error_path(key), (json.dumps(record, sort_keys=True, indent=1, default=str) + "\n").encode())

    def error_path(self, key: str) -> Path:
        return self.cells / f"{key}.error.json"

    def error(self, key: str) -> dict | None:
        path = self.error_path(key)
        return json.loads(path.read_text()) if path.is_file() and not self.done(key) else None

    def record(self, key: str) -> dict:
        return json.loads((self.cells / key / CELL_FILE).read_text())

    def rows(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.cells / key / "results.parquet")

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
                record = json.loads(path.read_text())
            except (OSError, ValueError):
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
