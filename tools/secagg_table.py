"""Leakage against the number N of clients whose updates secure aggregation sums (docs/attacks.md):
the honest server's Inverting Gradients under `secagg`, and the malicious server's attacks
(imprint, trap-weights, loki) under `malicious`, each for N in --clients. Every setting is one
`fedleak attack` run (harness.run.runner.run_attack), written under --output/<attack>-<N>/, and the
table is printed as Markdown: per setting, the attacked client's images recovered at >= 40 dB and
their median PSNR.

    python tools/secagg_table.py --output runs/secagg                     # the table in docs/attacks.md
    python tools/secagg_table.py --clients 1 4 --attacks imprint loki      # a part of it
    python tools/secagg_table.py --attacks ig --model lenet                # IG on DLG's LeNet

Victim: held-out digits, the ci matrix's MLP (width 128, untrained; --model for another), knowledge
data_enhanced.
IG attacks --ig-victims images one at a time (B = 1 per client; the aggregate covers N images),
with --ig-iterations × 2 restarts; the malicious attacks one batch of --batch images per client."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from fedleak.harness.run.config import config_from_dict  # noqa: E402
from fedleak.harness.run.runner import run_attack  # noqa: E402

MALICIOUS = ("imprint", "trap-weights", "loki")


def setting(attack: str, clients: int, args) -> dict:
    honest = attack not in MALICIOUS
    return {
        "data": {"name": "digits", "num_victims": args.ig_victims if honest else args.batch,
                 "batch_size": 1 if honest else args.batch},
        "victim": {"model": args.model, "options": {"width": 128} if args.model == "mlp" else {}},
        "threat_model": {"name": "secagg" if honest else "malicious", "knowledge": "data_enhanced",
                         "options": {"clients": clients}},
        "attack": {"name": attack, "iterations": args.ig_iterations if honest else 1, "restarts": 2 if honest else 1},
        "device": "cpu", "output": str(Path(args.output) / f"{attack}-{args.model}-{clients}"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--attacks", nargs="+", default=["ig", *MALICIOUS])
    parser.add_argument("--batch", type=int, default=64, help="images per client for the malicious attacks")
    parser.add_argument("--ig-victims", type=int, default=8)
    parser.add_argument("--ig-iterations", type=int, default=500)
    parser.add_argument("--model", default="mlp", help="the victim: the ci matrix's MLP (width 128), or a registered "
                        "model at its default options")
    parser.add_argument("--output", default="runs/secagg")
    args = parser.parse_args()
    cells = {}
    for attack in args.attacks:
        for clients in args.clients:
            started = time.perf_counter()
            rows = run_attack(config_from_dict(setting(attack, clients, args))).rows
            cells[attack, clients] = (float((rows["psnr"] >= 40).mean()), float(rows["psnr"].median()))
            print(f"{attack} N={clients}: {cells[attack, clients][0]:.0%} at >= 40 dB, median "
                  f"{cells[attack, clients][1]:.1f} dB ({time.perf_counter() - started:.0f} s)", flush=True)
    print("\n| attack (images per client) | " + " | ".join(f"N = {n}" for n in args.clients) + " |")
    print("|---|" + "---|" * len(args.clients))
    for attack in args.attacks:
        per_client = 1 if attack not in MALICIOUS else args.batch
        print(f"| {attack} (B = {per_client}) | " + " | ".join(
            f"{cells[attack, n][0]:.0%}, {cells[attack, n][1]:.1f} dB" for n in args.clients) + " |")


if __name__ == "__main__":
    main()
