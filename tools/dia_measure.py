"""Dropout defense vs. IG, DIA and the WIIG oracle (Scheliga et al., AAAI 2023; demo setting of
`DIA_demo.ipynb`: untrained small ViT, CIFAR-size colour images, B=1, p=0.5).

Runs on one CPU thread with a budget far below the paper's 20,000 GPU iterations; the schedules
(Plateau patience, early stopping) of `dia`/`dia-oracle` scale with the budget. Prints one line
per (image, attack) as it finishes and writes rows.csv + images.pt to --output.

    python tools/dia_measure.py --iterations 2000 --victims 0 1 2                   # ViT, photos
    python tools/dia_measure.py --model mlp --dataset digits --iterations 1000       # DIA's MLP

MSE is reported on [0,1] images (the harness convention) and on normalised images (the
convention of the DIA code and of its demo's numbers: IG ≈ 3.5, DIA ≈ 0.01, WIIG ≈ 0.005).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from fedleak.attacks import Budget, build_attack  # noqa: E402
from fedleak.defenses import build_defense  # noqa: E402
from fedleak.data.datasets import load_dataset  # noqa: E402
from fedleak.metrics.image import mse, psnr  # noqa: E402
from fedleak.threat_models import THREAT_MODELS  # noqa: E402
from fedleak.threat_models.knowledge import knowledge_flags  # noqa: E402
from fedleak.threat_models.victim import VictimSpec, build_victim  # noqa: E402

MODELS = {
    # DIA's ViT.yaml (lucidrains ViT: patch 4, dim 256, depth 4, 16 heads, MLP 256)
    "vit": {"patch_size": 4, "dim": 256, "depth": 4, "heads": 16, "mlp_dim": 256},
    # DIA's MLP.yaml (depth 3, width 512, bias-free GELU)
    "mlp": {"width": 512, "depth": 3},
}

# name -> (registered attack, options). "ig" is the harness's Inverting Gradients (MultiStep decay)
# on the eval-mode model; "ig-plateau" is the DIA code's IG baseline exactly: DIA's optimiser and
# schedule with no masks (p = 0), i.e. also the eval-mode model.
ATTACKS = {
    "ig": ("ig", {"tv": 1e-5}),
    "ig-plateau": ("dia", {"p": 0.0}),
    "dia": ("dia", {}),
    "dia-oracle": ("dia-oracle", {}),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="vit")
    parser.add_argument("--dataset", default="photos")
    parser.add_argument("--victims", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    parser.add_argument("--model-options", type=json.loads, default=None, help="JSON, overrides the DIA config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/dia_measure")
    args = parser.parse_args(argv)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset)
    options = args.model_options if args.model_options is not None else MODELS[args.model]
    victim = build_victim(VictimSpec(model=args.model, options=options, seed=args.seed), data)
    mean = torch.tensor(data.mean).view(-1, 1, 1)
    std = torch.tensor(data.std).view(-1, 1, 1)
    threat = THREAT_MODELS.create("fedsgd")
    oracle_flags = knowledge_flags({"preset": "informed", "dropout_masks": True})
    print(f"# {args.model} {options} on {args.dataset}, p={args.p}, B=1, {args.iterations} iterations, "
          f"1 CPU thread, labels known (informed)", flush=True)

    rows, images = [], {}
    for index in args.victims:
        x, y = data.victims([index])
        defense = build_defense("dropout", p=args.p, noise_seed=args.seed)
        observation, oracle = threat.observe(victim, x, y, defense, oracle_flags, seed=args.seed, client_id=index)
        # Everyone but the oracle gets the "informed" knowledge: no masks.
        informed = dataclasses.replace(oracle, flags=knowledge_flags("informed"), dropout_masks=None)
        images[(index, "truth")] = x
        for label in args.attacks:
            name, attack_options = ATTACKS[label]
            knowledge = oracle if name == "dia-oracle" else informed
            started = time.perf_counter()
            rec = build_attack(name, **attack_options).reconstruct(observation, victim.model, knowledge,
                                                                   Budget(args.iterations), seed=args.seed)
            wall = time.perf_counter() - started
            row = {"model": args.model, "dataset": args.dataset, "image_index": index, "attack": label, "p": args.p,
                   "iterations": args.iterations, "iterations_run": rec.extras.get("iterations_run", len(rec.loss_trace)),
                   "psnr": psnr(rec.images, x).item(), "mse": mse(rec.images, x).item(),
                   "mse_normalised": mse((rec.images - mean) / std, (x - mean) / std).item(),
                   "gradient_loss": rec.gradient_loss, "wall_s": wall,
                   "mask_agreement": _agreement(rec.extras.get("masks"), oracle.dropout_masks)}
            rows.append(row)
            images[(index, label)] = rec.images
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
            _write(out, rows, images)
    _summary(rows)


def _agreement(masks, truth) -> float | None:
    """Fraction of mask entries that DIA's relaxed masks, rounded, get right (a diagnostic only)."""
    if not masks:
        return None
    hits = sum(int((m.round() == t).sum()) for step, true in zip(masks, truth) for m, t in zip(step, true))
    return hits / sum(t.numel() for true in truth for t in true)


def _write(out: Path, rows, images) -> None:
    import pandas as pd
    pd.DataFrame(rows).to_csv(out / "rows.csv", index=False)
    torch.save({f"{i}:{k}": v for (i, k), v in images.items()}, out / "images.pt")


def _summary(rows) -> None:
    import pandas as pd
    frame = pd.DataFrame(rows)
    cols = ["psnr", "mse", "mse_normalised", "gradient_loss", "iterations_run", "wall_s", "mask_agreement"]
    print("\n# mean over images")
    print(frame.groupby("attack", sort=False)[cols].mean().to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
