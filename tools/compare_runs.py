"""Are two stored matrix runs the same numbers? Every stored row and value, timings and the names of
the code aside (a move of modules changes the cells' keys, since they cover the code, and nothing else).

    python tools/compare_runs.py BEFORE AFTER

Cells (attack cells, utility measurements, checks) are paired by their config (cell.json, the output
folder left out), not by key; each pair's stored files are compared value by value: results.parquet
row by row, the JSON files field by field. Where both runs finished, the merged files (results,
verdicts, utility, checks, budget check) are compared the same way, paired by position after sorting
on the columns that remain. A cell only one run holds is listed (a run cut short holds fewer).
Exit 0 when nothing differs (with --partial, cells only one run holds do not count)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

# what a run's time, its command line and the code's identity (keys, digests, commit) may change
TIMING = {"wall_time_s", "time_per_image_s", "client_seconds", "client_seconds_baseline", "compute_overhead",
          "seconds", "elapsed_s", "started", "finished", "timestamp"}
IDENTITY = {"cell", "key", "output", "command", "fedleak_commit", "code", "digests", "config_hash", "cells",
            "budget_check", "twin", "baseline_cell", "source_cell"}
IGNORED = TIMING | IDENTITY


def _ignored(name: str) -> bool:
    # every "*_key" (utility_key, victim keys) is a digest that covers the code, like "key"
    return name in IGNORED or name.endswith("_key")


def _clean(value):
    """A stored value with what may differ removed: JSON text parsed, ignored keys dropped."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _clean(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not _ignored(k)}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if a is None and isinstance(b, float) and math.isnan(b) or b is None and isinstance(a, float) and math.isnan(a):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return repr(a) == repr(b)


class Tally:
    def __init__(self):
        self.rows = 0
        self.values = 0
        self.differences: list[str] = []
        self.unpaired: list[str] = []

    def frame(self, where: str, before: pd.DataFrame, after: pd.DataFrame, sort: bool = False) -> None:
        columns = [c for c in before.columns if not _ignored(c)]
        if set(columns) != {c for c in after.columns if not _ignored(c)}:
            self.differences.append(f"{where}: columns differ: {sorted(set(columns) ^ {c for c in after.columns if not _ignored(c)})}")
            return
        if len(before) != len(after):
            self.differences.append(f"{where}: {len(before)} rows before, {len(after)} after")
            return
        left = [[_clean(v) for v in row] for row in before[columns].itertuples(index=False)]
        right = [[_clean(v) for v in row] for row in after[columns].itertuples(index=False)]
        if sort:
            left, right = sorted(left, key=repr), sorted(right, key=repr)
        for i, (a, b) in enumerate(zip(left, right)):
            self.rows += 1
            for column, x, y in zip(columns, a, b):
                self.values += 1
                if not _same(x, y):
                    self.differences.append(f"{where} row {i} {column}: {x!r} != {y!r}")

    def json(self, where: str, before, after) -> None:
        a, b = _clean(before), _clean(after)
        self.rows += 1
        self.values += _count(a)
        if not _same(a, b):
            self.differences.append(f"{where}: {json.dumps(a, default=str)[:300]} != {json.dumps(b, default=str)[:300]}")


def _count(value) -> int:
    if isinstance(value, dict):
        return sum(_count(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count(v) for v in value)
    return 1


def _cells(run: Path) -> dict[str, Path]:
    """Cell folders by their config (canonical JSON, the output folder left out)."""
    found = {}
    for record in sorted((run / "cells").glob("*/cell.json")):
        cell = json.loads(record.read_text())
        config = dict(cell.get("config", {}))
        config.pop("output", None)
        found[json.dumps({"kind": cell.get("kind"), "config": config, "labels": _clean(cell.get("labels"))},
                         sort_keys=True, default=str)] = record.parent
    return found


def _read(path: Path):
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return json.loads(path.read_text())


def compare(before: Path, after: Path) -> Tally:
    tally = Tally()
    mine, theirs = _cells(before), _cells(after)
    for identity in sorted(set(mine) - set(theirs)):
        tally.unpaired.append(f"only before: cell {mine[identity].name}")
    for identity in sorted(set(theirs) - set(mine)):
        tally.unpaired.append(f"only after: cell {theirs[identity].name}")
    paired = sorted(set(mine) & set(theirs))
    for identity in paired:
        a, b = mine[identity], theirs[identity]
        tally.json(f"cell {a.name}/{b.name} cell.json", json.loads((a / "cell.json").read_text()),
                   json.loads((b / "cell.json").read_text()))
        names = sorted(p.name for p in a.iterdir() if p.suffix in (".parquet", ".json", ".csv") and p.name != "cell.json")
        if names != sorted(p.name for p in b.iterdir() if p.suffix in (".parquet", ".json", ".csv") and p.name != "cell.json"):
            tally.differences.append(f"cell {a.name}/{b.name}: files differ")
            continue
        for name in names:
            x, y = _read(a / name), _read(b / name)
            if isinstance(x, pd.DataFrame):
                tally.frame(f"cell {a.name}/{b.name} {name}", x, y)
            else:
                tally.json(f"cell {a.name}/{b.name} {name}", x, y)
    print(f"cells paired: {len(paired)} (before {len(mine)}, after {len(theirs)})")
    for name in ("results.parquet", "verdicts.csv", "utility.csv", "checks.json", "budget_check.parquet",
                 "budget_check.csv", "summary.json", "failures.json"):
        if (before / name).exists() and (after / name).exists():
            x, y = _read(before / name), _read(after / name)
            if isinstance(x, pd.DataFrame):
                tally.frame(name, x, y, sort=True)
            else:
                tally.json(name, x, y)
            print(f"compared merged {name}")
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--partial", action="store_true", help="a run cut short: cells only one run holds are listed, "
                                                                 "not failures")
    args = parser.parse_args(argv)
    tally = compare(args.before, args.after)
    print(f"rows/records compared: {tally.rows}, values compared: {tally.values}, differences: {len(tally.differences)}, "
          f"cells in one run only: {len(tally.unpaired)}")
    for line in tally.differences[:50] + tally.unpaired[:20]:
        print(f"  {line}")
    return 1 if tally.differences or (tally.unpaired and not args.partial) else 0


if __name__ == "__main__":
    sys.exit(main())
