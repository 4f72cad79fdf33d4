"""Whose results an output folder holds. Rerunning the same command into its folder resumes (a
matrix) or redoes (a single run) it, as always; a DIFFERENT run into a folder that holds results
refuses with one line, unless told `--resume` (a matrix: add this one, reusing the stored cells it
shares) or `--overwrite` (replace what the folder holds), so that `runs/latest` never silently
loses the rows of an earlier run.

A matrix may go on in a folder when its config (preset applied; the gate aside, which only judges
stored rows) is the stored one's, or when it contains every cell the stored one had (a matrix grown
by an image, a seed or a defense loses no row); a single run when its config hash is the stored one.
A folder holding only files fedleak does not write, or only stored cells (a CI cache restores just
`cells/`), holds no earlier run."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from fedleak.core.errors import ConfigError, FedleakError, StorageError
from fedleak.core.io import read_frame, read_json

MODES = ("same", "resume", "overwrite")
# what a matrix run writes in its folder (harness.matrix_results, ci_outputs, compare, the report)
MATRIX_OUTPUTS = ("results.parquet", "results.csv", "utility.csv", "failures.json", "matrix.json", "summary.json",
                  "junit.xml", "report", "compare", "cells", ".locks")
RUN_OUTPUTS = ("results.parquet", "results.csv", "images.pt", "grid.png", "report.md")


def check_matrix_folder(out: Path, matrix, cells: list[str], mode: str = "same") -> None:
    """Refuse a different matrix's folder (mode "same"); with "overwrite" empty it of fedleak's files
    first. `cells`: the keys of this matrix's cells."""
    out = Path(out)
    if mode not in MODES:
        raise ConfigError(f"existing output mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "overwrite":
        _remove(out, MATRIX_OUTPUTS)
        return
    if mode == "resume":
        return
    if (out / "matrix.json").is_file():
        record = _read_record(out / "matrix.json")
        differs = _differences(_stored_matrix(record), matrix)
        lost = [k for k in record.get("cells", []) if k not in set(cells)] if isinstance(record, dict) else ["?"]
        if differs and lost:
            raise ConfigError(f"{out} holds a different matrix ({differs}; {len(lost)} of its cells are not in this "
                              f"one); pass --resume to add this one to it (stored cells are reused), --overwrite to "
                              f"replace it, or another --output")
    elif (out / "results.parquet").is_file():
        raise ConfigError(f"{out} holds the results of a single run, not a matrix; pass --overwrite to replace "
                          f"them, or another --output")


def check_run_folder(out: Path, config_hash: str, overwrite: bool = False) -> None:
    """Refuse a folder whose results another config produced (or that holds a matrix) unless `overwrite`."""
    out = Path(out)
    if overwrite:
        _remove(out, RUN_OUTPUTS)
        return
    if (out / "matrix.json").is_file():
        raise ConfigError(f"{out} holds a matrix run; pass --overwrite to replace it, or another --output")
    if (out / "results.parquet").is_file():
        try:
            stored = set(read_frame(out / "results.parquet", "results")["config_hash"])
        except (FedleakError, KeyError):
            stored = {"(unreadable)"}
        if stored != {config_hash}:
            raise ConfigError(f"{out} holds the results of a different run (config {', '.join(sorted(stored))}, this "
                              f"one {config_hash}); pass --overwrite to replace them, or another --output")


def matrix_identity(matrix) -> dict:
    """The matrix as it is compared: its config as JSON, the gate left out."""
    table = json.loads(json.dumps(dataclasses.asdict(matrix), default=str))
    table.pop("gate", None)
    return table


def _read_record(path: Path):
    try:
        return read_json(path, "matrix record")
    except FedleakError:
        return None


def _stored_matrix(record) -> dict | None:
    """The stored matrix.json's config, read back through the config parser (so fields a newer
    fedleak added compare at their defaults); None when it does not read as a matrix."""
    from fedleak.harness.matrix_config import matrix_from_dict
    try:
        return matrix_identity(matrix_from_dict(record["matrix"]))
    except (FedleakError, KeyError, TypeError):
        return None


def _differences(stored: dict | None, matrix) -> str:
    if stored is None:
        return "its matrix.json does not read as a matrix"
    mine = matrix_identity(matrix)
    keys = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
    return ", ".join(keys) + (" differ" if len(keys) > 1 else " differs") if keys else ""


def _remove(out: Path, names: tuple[str, ...]) -> None:
    """Only the files fedleak itself writes: whatever else the folder holds stays."""
    for name in names:
        path = out / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as e:
            raise StorageError(f"--overwrite: cannot remove {path}: {e.strerror or e}") from None
