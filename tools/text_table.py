"""The measured tables of docs/text.md: DAGER and TAG against the shipped LM (harness.text.run).

    PYTHONPATH=... python tools/text_table.py batch     # DAGER, full FedSGD, B = 1, 2, 4, 8 at L = 16
    PYTHONPATH=... python tools/text_table.py falloff   # DAGER, B x (L-1) up to and past the width d = 128
    PYTHONPATH=... python tools/text_table.py lora      # DAGER on LoRA adapter gradients, ranks 8..128
    PYTHONPATH=... python tools/text_table.py tag       # TAG and LAMP beside DAGER at B = 1 and 4
    PYTHONPATH=... python tools/text_table.py defenses  # DAGER under dp / prune / quantize / sketch
    --model bert | bert-mlm: the same runs against the BERT classifier (harness.text.run.TEXT_MODELS)

Each prints a Markdown table (one row per setting: means over every private sequence of `--batches`
batches) and writes the rows to --out as CSV.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd
import torch


def settings(experiment: str, batches: int, tag_iterations: int, shapes=None):
    from fedleak.harness.text.run import TextRun
    if shapes:
        return [TextRun(batch_size=B, seq_len=L, batches=batches) for B, L in shapes]
    if experiment == "batch":
        return [TextRun(batch_size=B, seq_len=16, batches=batches) for B in (1, 2, 4, 8)]
    if experiment == "falloff":
        return [TextRun(batch_size=B, seq_len=L, batches=batches)
                for B, L in ((8, 9), (8, 12), (4, 25), (8, 14), (4, 31), (8, 16), (4, 33), (8, 17), (8, 20), (8, 24))]
    if experiment == "lora":
        return [TextRun(threat_model="text-lora", threat_model_options={"rank": r}, batch_size=B, seq_len=16, batches=batches)
                for r in (8, 32, 128) for B in (1, 2, 4, 8)]
    if experiment == "tag":
        return [TextRun(attack=a, attack_options=({"iterations": tag_iterations} if a != "dager" else {}), batch_size=B,
                        seq_len=16, batches=batches) for B in (1, 4) for a in ("dager", "tag", "lamp")]
    if experiment == "defenses":
        return [TextRun(defense=d, defense_options=o, batch_size=4, seq_len=16, batches=batches) for d, o in (
            ("none", {}), ("dp", {"clip": 1.0, "sigma": 0.01}), ("dp", {"clip": 1.0, "sigma": 0.1}), ("prune", {"ratio": 0.9}),
            ("quantize", {"clip": 0.01, "levels": 16}), ("sketch", {"ratio": 0.5}))]
    raise SystemExit(f"unknown experiment {experiment!r}")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment", choices=("batch", "falloff", "lora", "tag", "defenses"))
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--tag-iterations", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--shapes", default="", help="falloff only: BxL,BxL,... instead of the shipped list")
    parser.add_argument("--model", default="gpt2", help="the victim: gpt2 (default), bert, bert-mlm")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from fedleak.harness.text.run import run_text, shipped_lm
    data, model = shipped_lm(model=args.model)
    rows, table = [], []
    shapes = [tuple(int(v) for v in item.split("x")) for item in args.shapes.split(",") if item]
    for run in settings(args.experiment, args.batches, args.tag_iterations, shapes if args.experiment == "falloff" else None):
        run = dataclasses.replace(run, model=args.model)
        start = time.perf_counter()
        got = pd.DataFrame(run_text(run, data, model))
        rows.append(got)
        tm = run.threat_model + (f" r={run.threat_model_options['rank']}" if "rank" in run.threat_model_options else "")
        defense = run.defense + "".join(f" {k}={v}" for k, v in run.defense_options.items())
        rank = got["first_layer_rank"].mean() if "first_layer_rank" in got else float("nan")
        table.append(f"| {run.attack} | {tm} | {defense} | {run.batch_size} | {run.seq_len} | {run.batch_size * (run.seq_len - 1)} | "
                     f"{rank:.0f} | {got['exact_sequence'].mean():.3f} | {got['token_accuracy'].mean():.3f} | {got['rouge1'].mean():.3f} | "
                     f"{got['rouge2'].mean():.3f} | {got['rougeL'].mean():.3f} | {len(got)} | "
                     f"{(time.perf_counter() - start) / run.batches:.1f} | {got['error'].notna().sum()} |")
        print(table[-1], flush=True)
    header = ("| attack | threat model | defense | B | L | B×(L−1) | span rank | exact | token acc. | ROUGE-1 | ROUGE-2 | "
              "ROUGE-L | sequences | s / batch | errors |\n|" + "---|" * 15)
    print(header)
    print("\n".join(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(rows).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
