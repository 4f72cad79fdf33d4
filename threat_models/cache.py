"""A trained state cached on disk by a hash of everything that made it (as threat_models.victim
does for FedAvg victims), for protocols whose training is not plain FedAvg (HyperFL, VFL)."""
from __future__ import annotations

from typing import Callable, Iterable

from fedleak.core.io import cache_dir, cached_tensors, digest


def cached(kind: str, recipe: dict, build: Callable[[], dict], needs: Iterable[str] = ()) -> dict:
    """`build()` once per recipe; later calls load it (written atomically, so concurrent runs never
    read half a checkpoint). An entry that does not read, or lacks a key in `needs`, is rebuilt."""
    needs = set(needs)

    def problem(state) -> str | None:
        if not isinstance(state, dict):
            return f"not a {kind} state (a table of tensors)"
        missing = sorted(needs - set(state))
        return f"not a {kind} state (it lacks {', '.join(missing)})" if missing else None

    return cached_tensors(cache_dir() / kind / f"{digest(recipe)}.pt", build, f"cached {kind} state", problem)
