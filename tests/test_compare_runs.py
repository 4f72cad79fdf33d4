"""tools/compare_runs.py says whether two stored matrix runs hold the same numbers (issue #22's bit-identical
check): digests that cover the code (cell keys, utility keys) and timings may differ, every other value may not,
and rows are paired by their content, not by their keys. Synthetic folders: the pairing is the point."""
import json
from pathlib import Path

import pandas as pd

from toolfile import load_tool


def run(root: Path, keys: list[str], accuracy: dict[str, float], overhead: float) -> Path:
    """A run folder with one cell per defense and a merged utility.csv, keyed as the code's digest would key it."""
    for key, defense in zip(keys, accuracy):
        cell = root / "cells" / key
        cell.mkdir(parents=True)
        (cell / "cell.json").write_text(json.dumps({"kind": "utility", "key": key, "config": {"defense": defense,
                                                                                             "output": f"cells/{key}"}}))
        pd.DataFrame([{"utility_key": key, "defense": defense, "accuracy": accuracy[defense]}]).to_parquet(cell / "results.parquet")
    pd.DataFrame([{"utility_key": k, "defense": d, "accuracy": a, "compute_overhead": overhead}
                  for k, (d, a) in zip(keys, accuracy.items())]).to_csv(root / "utility.csv", index=False)
    return root


def test_new_keys_and_timings_alone_are_no_difference(tmp_path):
    tool = load_tool("compare_runs")
    accuracy = {"none": 0.932, "dp": 0.819, "prune": 0.894}
    before = run(tmp_path / "a", ["u3", "u1", "u2"], accuracy, 1.0)
    after = run(tmp_path / "b", ["u9", "u5", "u0"], accuracy, 1.3)  # sorting by key would misalign the rows
    tally = tool.compare(before, after)
    assert tally.differences == [] and tally.unpaired == [] and tally.values > 0
    assert tool.main([str(before), str(after)]) == 0


def test_a_changed_value_and_a_missing_cell_are_reported(tmp_path):
    tool = load_tool("compare_runs")
    before = run(tmp_path / "a", ["u1", "u2"], {"none": 0.932, "dp": 0.819}, 1.0)
    after = run(tmp_path / "b", ["u1", "u2"], {"none": 0.932, "dp": 0.818}, 1.0)
    assert any("accuracy" in line and "0.819" in line for line in tool.compare(before, after).differences)
    assert tool.main([str(before), str(after)]) == 1
    short = run(tmp_path / "c", ["u1"], {"none": 0.932}, 1.0)
    tally = tool.compare(before, short)
    assert tally.unpaired == ["only before: cell u2"]
    assert tool.main([str(before), str(short), "--partial"]) == 1  # the merged utility.csv has a row fewer
