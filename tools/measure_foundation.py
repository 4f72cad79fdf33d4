"""Figures for the foundation issue, measured on the embedded digits (rerun: python tools/measure_foundation.py).

1. iDLG label accuracy at B=1 over all 1,000 held-out victims (untrained LeNet and ConvNet).
2. Label-count accuracy at B=8 for batches with repeated labels (3 classes in 8 images), 50 batches.
3. DLG on LeNet-sigmoid, B=1, 8 victims: median PSNR (the demo preset).
4. IG on the ConvNet, B=1, 8 victims: median PSNR (the demo preset).
"""
from __future__ import annotations

import sys
import time

import torch

from fedleak.attacks.labels import infer_labels
from fedleak.defenses import NoDefense
from fedleak.harness.run.config import load_config
from fedleak.data.datasets import load_dataset
from fedleak.harness.run.runner import run_attack
from fedleak.metrics.labels import multiset_label_accuracy
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.threat_models.victim import VictimSpec, build_victim

PRESETS = "harness/presets"


def label_figures(data) -> None:
    fedsgd, flags = THREAT_MODELS.create("fedsgd"), knowledge_flags("eavesdropper")
    for spec in (VictimSpec(model="lenet"), VictimSpec(model="convnet", options={"width": 16})):
        victim = build_victim(spec, data)
        hits = 0
        for i in range(len(data.victim_labels)):
            x, y = data.victims([i])
            obs, k = fedsgd.observe(victim, x, y, NoDefense(), flags)
            hits += int(infer_labels(obs, victim.model, k).item() == y.item())
        print(f"iDLG label accuracy, B=1, {spec.model}: {hits}/{len(data.victim_labels)}", flush=True)
        generator, scores, exact = torch.Generator().manual_seed(1), [], 0
        for _ in range(50):
            classes = torch.randperm(10, generator=generator)[:3]
            pool = torch.nonzero(torch.isin(data.victim_labels, classes)).flatten()
            indices = pool[torch.randperm(len(pool), generator=generator)[:8]].tolist()
            x, y = data.victims(indices)
            obs, k = fedsgd.observe(victim, x, y, NoDefense(), flags)
            score = multiset_label_accuracy(infer_labels(obs, victim.model, k), y)
            scores.append(score)
            exact += score == 1.0
        print(f"label-count accuracy, B=8 with repeats, {spec.model}: mean {sum(scores) / len(scores):.3f}, "
              f"batches fully right {exact}/50", flush=True)


def attack_figures(output: str) -> None:
    for preset in ("demo-dlg", "demo-ig"):
        config = load_config(f"{PRESETS}/{preset}.toml", {"output": f"{output}/{preset}"})
        started = time.perf_counter()
        rows = run_attack(config).rows
        print(f"{preset}: median PSNR {rows['psnr'].median():.2f} dB, SSIM {rows['ssim'].median():.3f}, "
              f"LPIPS {rows['lpips'].median():.3f}, label acc {rows['label_correct'].mean():.0%}, "
              f"per-victim PSNR {[round(p, 1) for p in rows['psnr']]}, {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    data = load_dataset("digits")
    label_figures(data)
    attack_figures("runs/measure-foundation")
