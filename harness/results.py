"""Result rows: one per victim image, with the provenance needed to trace and re-run it."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import pandas as pd

from fedleak.core.io import atomic_write_bytes


def versions() -> dict[str, str]:
    import numpy
    import torch
    from importlib.metadata import PackageNotFoundError, version
    try:
        fedleak = version("fedleak")
    except PackageNotFoundError:
        fedleak = "source"
    return {"fedleak": fedleak, "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def write_rows(rows: list[dict], directory: Path) -> pd.DataFrame:
    """Write all rows so far as results.parquet and results.csv (atomically, both)."""
    return write_frame(pd.DataFrame(rows), directory)


def write_frame(frame: pd.DataFrame, directory: Path, stem: str = "results") -> pd.DataFrame:
    """`<stem>.parquet` and `<stem>.csv` in `directory`, each written atomically."""
    frame = frame.copy()
    for column in frame.columns:  # nested provenance as JSON text keeps Parquet schemas flat
        if frame[column].map(lambda v: isinstance(v, (dict, list))).any():
            frame[column] = frame[column].map(lambda v: json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v)
    import io
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(directory / f"{stem}.parquet", buffer.getvalue())
    atomic_write_bytes(directory / f"{stem}.csv", frame.to_csv(index=False).encode())
    return frame


def read_results(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "results.parquet"
    if not path.exists():
        from fedleak.core.errors import DataError
        raise DataError(f"no results at {path}")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
