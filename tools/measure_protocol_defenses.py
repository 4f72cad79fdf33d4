"""Protocol-level defenses vs. the attacks that know them, on the embedded digits (CPU, 1 thread).

HyperFL (Guo et al., AAAI 2025): B=1, victims from a HyperFL run of --rounds rounds (10 IID
clients, SGD lr 0.02, batch 50, 1 local epoch), the attacked client training one round on its
image. Rows: non-adaptive IG on Δφ vs hyperfl-leak (one local step: exact leak of θ and ∂L/∂θ;
five steps: factored unrolled replay), with and without auxiliary data; utility = personalised
accuracy of HyperFL vs the same CNN trained by FedAvg with the same clients and schedule.

HashVFL (Qiu et al., TIFS 2024): two parties (left/right 28×14 halves), the server inverts the
left party's message; none vs hashing at --bits; white-box inversion and auxiliary-data decoder;
utility = main-task accuracy.

Every row goes through harness.run.runner.run_attack (same metrics, matching, provenance as any
run); per-run folders and summary.md/summary.csv land in --output.

    python tools/measure_protocol_defenses.py --output runs/protocol-defenses            # both parts
    python tools/measure_protocol_defenses.py --part vfl --bits 4 16 --output /tmp/vfl
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import pandas as pd  # noqa: E402

from fedleak.harness.run.config import config_from_dict  # noqa: E402
from fedleak.harness.run.runner import run_attack  # noqa: E402

# the HyperFL paper's schedule (methods.md §9) except the number of rounds
HYPERFL_VICTIM = {"clients": 10, "local_lr": 0.02, "local_batch_size": 50}


def victim_schedule(args) -> dict:
    return {**HYPERFL_VICTIM, "local_epochs": args.local_epochs, "rounds": args.rounds}


def hyperfl_runs(args) -> list[tuple[str, dict]]:
    def run(name, epochs, attack, knowledge, iterations, **options):
        return name, {
            "data": {"num_victims": args.victims, "batch_size": 1},
            "victim": victim_schedule(args),
            "threat_model": {"name": "hyperfl", "knowledge": knowledge, "lr": 0.02, "epochs": epochs},
            "defense": {"name": "hyperfl"},
            "attack": {"name": attack, "iterations": iterations, "restarts": 1, "options": options}}
    it = args.iterations
    return [
        run("hyperfl 1-step | ig (non-adaptive)", 1, "ig", "informed", args.ig_iterations, tv=1e-2),
        run("hyperfl 1-step | hyperfl-leak", 1, "hyperfl-leak", "informed", it, prior="none"),
        run("hyperfl 1-step | hyperfl-leak + aux decoder", 1, "hyperfl-leak", "data_enhanced", it),
        run("hyperfl 5-step | hyperfl-leak unrolled", 5, "hyperfl-leak", "informed", args.unrolled_iterations, prior="none"),
        run("hyperfl 5-step | hyperfl-leak + aux decoder", 5, "hyperfl-leak", "data_enhanced", it),
    ]


def vfl_runs(args) -> list[tuple[str, dict]]:
    def run(name, defense, attack, knowledge, iterations):
        return name, {
            "data": {"num_victims": args.victims, "batch_size": 1},
            "threat_model": {"name": "vfl", "knowledge": knowledge},
            "defense": defense, "attack": {"name": attack, "iterations": iterations, "restarts": 1}}
    rows = []
    settings = [("none", {"name": "none"})] + [(f"hashing {b} bits", {"name": "hashing", "options": {"bits": b}}) for b in args.bits]
    for label, defense in settings:
        rows.append(run(f"vfl {label} | white-box", defense, "embedding-inversion", "data_enhanced", args.vfl_iterations))
        rows.append(run(f"vfl {label} | decoder", defense, "embedding-decoder", "data_enhanced", args.decoder_steps))
    # the same white-box attacker that does not know about the hashing layer
    rows.append(run(f"vfl hashing {args.bits[0]} bits | white-box, non-adaptive", {"name": "hashing", "options": {"bits": args.bits[0]}},
                    "embedding-inversion", {"preset": "data_enhanced", "defense": False}, args.vfl_iterations))
    return rows


def utility(args) -> list[dict]:
    """HyperFL vs FedAvg accuracy (same clients/rounds/schedule), both label-weighted per client."""
    from fedleak.defenses import NoDefense
    from fedleak.data.datasets import load_dataset
    from fedleak.threat_models.hyperfl import HyperFL
    from fedleak.threat_models.hyperfl_victim import fedavg_baseline_accuracy
    from fedleak.models.functional import LocalTraining
    from fedleak.threat_models.victim import VictimSpec
    data = load_dataset("digits")
    spec = VictimSpec(**victim_schedule(args))
    epochs = f"{args.rounds} rounds × {args.local_epochs} local epochs"
    hyperfl = HyperFL(LocalTraining(lr=0.02)).build_victim(spec, data, NoDefense(), progress=True).accuracy
    return [{"run": f"utility | HyperFL personalised accuracy, {epochs}", "accuracy": hyperfl},
            {"run": f"utility | FedAvg (same CNN) accuracy, {epochs}", "accuracy": fedavg_baseline_accuracy(spec, data)}]


def references(args) -> list[dict]:
    """What needs no leak at all: the auxiliary mean image, and the class mean (which a 4-bit
    class-consistent hash code is designed to reveal), scored like the attacks."""
    from fedleak.data.datasets import load_dataset
    from fedleak.metrics.image import score_images
    data = load_dataset("digits")
    x, y = data.victims(list(range(args.victims)))
    half = slice(0, data.shape[2] // 2)  # the vfl victim party's columns (split 0.5, party 0)
    class_mean = torch.stack([data.train_images[data.train_labels == c].mean(0) for c in range(data.num_classes)])
    guesses = {"reference | aux mean image (full)": (data.train_images.mean(0).expand_as(x), x),
               "reference | aux mean image (left half)": (data.train_images.mean(0).expand_as(x)[..., half], x[..., half]),
               "reference | aux class mean (left half)": (class_mean[y][..., half], x[..., half])}
    rows = []
    for name, (guess, truth) in guesses.items():
        scores = score_images(guess, truth)
        rows.append({"run": name, "psnr": scores["psnr"].mean().item(), "psnr_median": scores["psnr"].median().item(),
                     "ssim": scores["ssim"].mean().item(), "lpips": scores["lpips"].mean().item()})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("hyperfl", "vfl", "utility", "all"), default="all")
    parser.add_argument("--output", default="runs/protocol-defenses")
    parser.add_argument("--victims", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="HyperFL/FedAvg rounds before the attacked one")
    parser.add_argument("--local-epochs", type=int, default=1,
                        help="victim training: hypernetwork (FedAvg: local) epochs per round; paper: 5")
    parser.add_argument("--iterations", type=int, default=300, help="hyperfl-leak (one-step) iterations")
    parser.add_argument("--ig-iterations", type=int, default=100, help="non-adaptive IG (dense replay, slow)")
    parser.add_argument("--unrolled-iterations", type=int, default=100)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--vfl-iterations", type=int, default=500)
    parser.add_argument("--decoder-steps", type=int, default=1500)
    args = parser.parse_args(argv)
    out = Path(args.output)
    runs = (hyperfl_runs(args) if args.part in ("hyperfl", "all") else []) + (vfl_runs(args) if args.part in ("vfl", "all") else [])
    summary = (utility(args) if args.part in ("hyperfl", "utility", "all") else []) + references(args)
    for row in summary:
        print(f"{row['run']}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "run"), flush=True)
    write(summary, out)
    for name, table in runs:
        slug = name.replace(" | ", "__").replace(" ", "-").replace("(", "").replace(")", "").replace(",", "").replace("+", "plus")
        started = time.perf_counter()
        rows = run_attack(config_from_dict({**table, "output": str(out / slug)})).rows
        summary.append({"run": name, "psnr": rows["psnr"].mean(), "psnr_median": rows["psnr"].median(), "ssim": rows["ssim"].mean(),
                        "lpips": rows["lpips"].mean(), "accuracy": rows["victim_accuracy"].iloc[0],
                        "bytes_sent": rows["bytes_sent"].iloc[0], "wall_s": time.perf_counter() - started})
        print(f"{name}: PSNR {summary[-1]['psnr']:.2f} (median {summary[-1]['psnr_median']:.2f}) SSIM {summary[-1]['ssim']:.3f} "
              f"LPIPS {summary[-1]['lpips']:.3f} victim acc {summary[-1]['accuracy']:.3f} [{summary[-1]['wall_s']:.0f}s]", flush=True)
        write(summary, out)


def write(summary: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(summary)
    frame.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown(frame))


def markdown(frame: pd.DataFrame) -> str:
    cell = lambda v: "" if pd.isna(v) else f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
