"""GradInversion (Yin et al., CVPR 2021) against plain Inverting Gradients at several batch sizes on
ResNet-18 (docs/attacks.md): both attacks on the same batches, with the same budget and the same
knowledge (statistics_informed: true labels and the client batch's BN statistics, which IG ignores).
Every setting is one `fedleak attack` run (harness.run.runner.run_attack), written under
--output/<attack>-B<batch>/, and the table is printed as Markdown: per setting, the median PSNR over
the batch's images and the share at >= 20 dB.

    python tools/gradinversion_table.py --output runs/gradinversion              # the table in docs/attacks.md
    python tools/gradinversion_table.py --batches 8 --iterations 2000 --width 64  # a larger budget

Victim: held-out digits, untrained ResNet-18 (--width; 64 is the standard network), FedSGD, one
batch of B images per setting. The paper runs 20,000 iterations with a trained ResNet-50 on
ImageNet (`fedleak list budgets`: gradinversion's `paper` preset)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from fedleak.harness.run.config import config_from_dict  # noqa: E402
from fedleak.harness.run.runner import run_attack  # noqa: E402


def setting(attack: str, batch: int, args) -> dict:
    return {
        "data": {"name": args.dataset, "num_victims": batch, "batch_size": batch},
        "victim": {"model": "resnet18", "options": {"width": args.width}},
        "threat_model": {"name": "fedsgd", "knowledge": "statistics_informed"},
        "attack": {"name": attack, "iterations": args.iterations, "restarts": args.restarts},
        "device": "cpu", "output": str(Path(args.output) / f"{attack}-w{args.width}-B{batch}"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--attacks", nargs="+", default=["ig", "gradinversion"])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--width", type=int, default=8, help="ResNet-18's base width (64: the standard network)")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--output", default="runs/gradinversion")
    args = parser.parse_args()
    cells = {}
    for batch in args.batches:
        for attack in args.attacks:
            started = time.perf_counter()
            rows = run_attack(config_from_dict(setting(attack, batch, args))).rows
            cells[attack, batch] = (float(rows["psnr"].median()), float((rows["psnr"] >= 20).mean()))
            print(f"{attack} B={batch}: median {cells[attack, batch][0]:.1f} dB, {cells[attack, batch][1]:.0%} at "
                  f">= 20 dB ({time.perf_counter() - started:.0f} s)", flush=True)
    print("\n| attack | " + " | ".join(f"B = {b}" for b in args.batches) + " |")
    print("|---|" + "---|" * len(args.batches))
    for attack in args.attacks:
        print(f"| {attack} | " + " | ".join(
            f"{cells[attack, b][0]:.1f} dB ({cells[attack, b][1]:.0%} ≥ 20 dB)" for b in args.batches) + " |")


if __name__ == "__main__":
    main()
