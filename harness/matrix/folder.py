"""A matrix's claim on its output folder (harness.run.folder's rule): it may go on where its config
(preset applied; the gate aside, which only judges stored rows) is the stored one's, or where it
contains every cell the stored one had (a matrix grown by an image, a seed or a defense loses no row)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fedleak.core.errors import FedleakError
from fedleak.harness.matrix.config import matrix_from_dict
from fedleak.harness.run.folder import Owner, claim_folder


def check_matrix_folder(out: Path, matrix, cells: list[str], mode: str = "same", command: str = "matrix") -> None:
    """claim_folder for a matrix: `cells`, the keys of this matrix's cells."""
    from fedleak.core.io import digest
    identity = matrix_identity(matrix)

    def differs(record) -> str | None:
        changed = _differences(_stored_matrix(record), matrix)
        stored_cells = record.get("cells")
        lost = [k for k in stored_cells if k not in set(cells)] if isinstance(stored_cells, list) else ["?"]
        if changed and lost:
            return f"holds a different matrix ({changed}; {len(lost)} of its cells are not in this one)"
        return None

    claim_folder(out, Owner(command, "matrix", digest(identity, 12), {"matrix": _as_json(matrix), "cells": list(cells)}),
                 mode, differs)


def matrix_identity(matrix) -> dict:
    """The matrix as it is compared: its config as JSON, the gate left out."""
    table = _as_json(matrix)
    table.pop("gate", None)
    return table


def _as_json(matrix) -> dict:
    """The matrix's config as plain JSON values (what the folder's record stores)."""
    return json.loads(json.dumps(dataclasses.asdict(matrix), default=str))


def _stored_matrix(record) -> dict | None:
    """The stored matrix's config, read back through the config parser (so fields a newer fedleak
    added compare at their defaults); None when it does not read as a matrix."""
    try:
        return matrix_identity(matrix_from_dict(record["matrix"]))
    except (FedleakError, KeyError, TypeError):
        return None


def _differences(stored: dict | None, matrix) -> str:
    if stored is None:
        return "its matrix record does not read as a matrix"
    mine = matrix_identity(matrix)
    keys = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
    return ", ".join(keys) + (" differ" if len(keys) > 1 else " differs") if keys else ""
