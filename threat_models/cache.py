"""A trained state cached on disk by a hash of everything that made it (as threat_models.victim
does for FedAvg victims), for protocols whose training is not plain FedAvg (HyperFL, VFL)."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import torch

from fedleak.threat_models.victim import cache_dir


def cached(kind: str, recipe: dict, build: Callable[[], dict]) -> dict:
    """`build()` once per recipe; later calls load it. Written atomically, so concurrent runs
    never read half a checkpoint."""
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / kind / f"{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    state = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return state
