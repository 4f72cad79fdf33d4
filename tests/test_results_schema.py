"""docs/results.md documents every column a run writes: a column added without a line there fails here."""
import re
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def documented_columns() -> set[str]:
    text = (REPO / "docs" / "results.md").read_text()
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return names


def test_every_matrix_column_is_documented(tmp_path):
    from fedleak.harness.matrix.config import matrix_from_dict
    from fedleak.harness.matrix.run import prepare_matrix, run_matrix
    from test_matrix import smoke_matrix
    run_matrix(prepare_matrix(matrix_from_dict(smoke_matrix(images={"indices": [1]}, defenses=[{"name": "none"}]))),
               tmp_path / "m", workers=0, progress=False)
    columns = set(pd.read_parquet(tmp_path / "m" / "results.parquet").columns)
    missing = columns - documented_columns()
    assert not missing, f"columns not in docs/results.md: {sorted(missing)}"


def test_the_check_can_fail():
    assert "psnr" in documented_columns() and "no_such_column" not in documented_columns()
