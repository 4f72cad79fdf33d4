"""tools/battery_table.py builds docs/attacks.md's battery table from evaluate-defense folders: per image the best of
the old and of the new attacks, medians, the verdict as printed, and a mark where the user's command falls more than
3 dB below the battery's figure (a weaker preset must show). Synthetic folders: the arithmetic is the point."""
import json
from pathlib import Path

import pandas as pd

from toolfile import load_tool


def folder(tmp_path: Path, label: str, old: list[float], new: list[float]) -> Path:
    out = tmp_path / label
    out.mkdir()
    rows = []
    for attack, values in (("idlg", old), ("defense-loop", new)):
        rows += [{"defense_label": label, "threat_model": "fedsgd", "attack": attack, "attack_label": attack,
                  "adaptive": attack != "idlg", "image_index": i, "psnr": v, "true_label": 1, "predicted_label": 1,
                  "label_baseline_psnr": 12.0 + i} for i, v in enumerate(values)]
    rows.append({**rows[0], "defense_label": "none", "psnr": 100.0})     # another defense's row: not counted
    pd.DataFrame(rows).to_parquet(out / "results.parquet")
    verdict = {"gated": True, "defense_label": label, "context": {"threat_model": "fedsgd"}, "worst_psnr": max(old + new),
               "recovered": 1, "n_images": 3, "psnr": 20.0, "psnr_interval": [18.0, 22.0], "best_attack": "x",
               "status": "LEAKS"}
    (out / "verdicts.json").write_text(json.dumps([{**verdict, "gated": False, "defense_label": "none"}, verdict]))
    return out


def test_the_battery_table_reads_medians_per_family_and_marks_a_weaker_command(tmp_path, capsys):
    tool = load_tool("battery_table")
    strong = tool.summarise(folder(tmp_path, "public-seed-noise", [10.0, 11.0, 30.0], [100.0, 99.0, 20.0]))
    assert strong["best old attack"] == 11.0 and strong["best new attack"] == 99.0 and strong["label only"] == 13.0
    assert strong["within 3 dB"] == "yes" and strong["worst image"] == 100.0 and strong["recovered"] == "1/3"
    weak = tool.summarise(folder(tmp_path, "clip-only", [10.0, 11.0, 12.0], [70.0, 75.0, 76.0]))
    assert weak["best new attack"] == 75.0 and weak["within 3 dB"].startswith("NO (-5.6")   # the battery had 80.6
    assert tool.summarise(folder(tmp_path, "sign-only", [1.0], [2.0]))["within 3 dB"] == "–"  # no figure before
    assert tool.main([str(tmp_path / "clip-only"), str(tmp_path / "public-seed-noise")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| public-seed noise |") and lines[3].startswith("| clipping only |")
