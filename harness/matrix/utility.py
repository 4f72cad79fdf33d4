"""What a defense costs, measured on the same victim an attack targets: held-out accuracy after R
FedAvg rounds trained WITH the defense against the same run without it, upload bytes per client
per round, ε where the defense is DP, and the client's compute overhead.

Training goes through `threat_models.victim.federated_training`, which routes every client update
through the defense (`gradient_fn`, `share`, `decode`), so the accuracy is that of the protocol the
attack sees. Results are cached as JSON under `cache_dir()/utility/<hash>.json` (the trained
checkpoints themselves are cached by `build_victim`), so an attack × defense matrix trains each
(victim, defense) pair once.

Accounting (`Defense.privacy(steps, sampling_rate)`; docs/privacy.md says what ε means here):
* example level (DP-SGD): steps = rounds × local steps of the largest shard, sampling rate =
  local batch size / smallest shard, i.e. the worst-off client;
* user level (DP on the shared update): one mechanism per round, and every client takes part in
  every round of `federated_training`, so steps = rounds, sampling rate = 1.
`epsilon` is over the R training rounds, `epsilon_round` over one round (what protects one attacked
update), with `delta`, the `neighbouring` relation and the `accountant` that computed them."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, replace

import torch

from fedleak.core.errors import ConfigError
from fedleak.core.io import cache_dir, cached_json, digest
from fedleak.defenses.base import Defense, NoDefense, ShareContext, share_update
from fedleak.models.functional import local_update
from fedleak.models.functional import LocalTraining
from fedleak.threat_models.victim import VictimSpec, build_victim

CACHE_VERSION = 4  # 3: interleaved timing, fresh round seed per repeat; 4: ε per round, neighbouring, accountant


def measure_utility(data, victim_spec: VictimSpec, defense: Defense, rounds: int | None = None,
                    timing_repeats: int = 3, use_cache: bool = True, progress: bool = False) -> dict:
    """Accuracy / bytes / ε / client time of `defense` on `victim_spec` trained for `rounds`
    (default: the spec's own rounds) FedAvg rounds on `data` (an ImageData)."""
    spec = replace(victim_spec, rounds=victim_spec.rounds if rounds is None else rounds)
    if spec.rounds < 1:
        raise ConfigError(f"utility: rounds must be >= 1, got {spec.rounds}")
    if not use_cache:
        return _measure(spec, data, defense, timing_repeats, progress)
    return cached_json(cache_dir() / "utility" / f"{_cache_key(spec, data, defense)}.json",
                       lambda: _measure(spec, data, defense, timing_repeats, progress), "cached utility measurement",
                       lambda r: None if isinstance(r, dict) and "accuracy" in r else "not a utility measurement")


def _measure(spec: VictimSpec, data, defense: Defense, timing_repeats: int, progress: bool) -> dict:
    # copies: a stateful defense (DGC residuals, noise streams) must not carry training state
    # into the attack that uses the original object
    baseline = build_victim(spec, data, NoDefense(), progress=progress)
    defended = build_victim(spec, data, copy.deepcopy(defense), progress=progress)
    shards, training = _clients(spec, data)
    (plain_s, dense_bytes), (defended_s, sent_bytes) = _client_costs(spec, data, shards[0], training,
                                                                     [NoDefense(), copy.deepcopy(defense)], timing_repeats)
    steps, rate = _accounting(defense, spec, shards, training)
    privacy = defense.privacy(steps, rate)
    # one round of one client: what the server holds when it attacks a single update
    per_round = None if privacy is None else defense.privacy(max(1, steps // spec.rounds), rate)

    return {
        "dataset": data.name, "victim": asdict(spec), "defense": defense.name, "defense_params": defense.describe(),
        "rounds": spec.rounds, "accuracy": defended.accuracy, "accuracy_baseline": baseline.accuracy,
        "accuracy_drop": baseline.accuracy - defended.accuracy,
        # accuracy against rounds: what the last quarter of training still added (a defense that slows
        # convergence looks costlier than it is when this is large: train longer)
        "accuracy_last_quarter": _last_quarter(defended.curve),
        "accuracy_last_quarter_baseline": _last_quarter(baseline.curve),
        "bytes_sent": sent_bytes, "bytes_dense": dense_bytes, "compression": dense_bytes / max(sent_bytes, 1),
        "epsilon": None if privacy is None else privacy["epsilon"],
        "epsilon_round": None if per_round is None else per_round["epsilon"],
        "delta": None if privacy is None else privacy["delta"],
        "neighbouring": None if privacy is None else privacy.get("neighbouring"),
        "accountant": None if privacy is None else privacy.get("accountant"),
        "accounting_steps": None if privacy is None else steps, "sampling_rate": None if privacy is None else rate,
        "client_seconds": defended_s, "client_seconds_baseline": plain_s, "compute_overhead": defended_s / plain_s,
    }


def _last_quarter(curve: list[float] | None) -> float | None:
    """Accuracy after the last round minus after three quarters of them."""
    if not curve or len(curve) < 4:
        return None
    return curve[-1] - curve[len(curve) - len(curve) // 4 - 1]


def _clients(spec: VictimSpec, data):
    from fedleak.data.datasets import partition
    shards = partition(data.train_labels.numpy(), spec.clients, scheme=spec.partition, alpha=spec.alpha, seed=spec.seed)
    training = LocalTraining(lr=spec.local_lr, epochs=spec.local_epochs, batch_size=spec.local_batch_size)
    return shards, training


def _client_costs(spec, data, shard, training, defenses: list[Defense], repeats: int) -> list[tuple[float, int]]:
    """(seconds, bytes sent) of one client round from the untrained global model (local training +
    share) under each defense. The defenses take turns within every repeat and each keeps its
    fastest time: on a shared machine the load drifts, and the minimum is the least disturbed."""
    victim = build_victim(replace(spec, rounds=0), data)
    index = torch.as_tensor(shard)
    x, y = victim.normalise(data.train_images[index]), data.train_labels[index]
    names = list(victim.params)
    best = [float("inf")] * len(defenses)
    sent: list = [None] * len(defenses)
    for repeat in range(max(1, repeats)):
        for i, defense in enumerate(defenses):
            model = defense.prepare_model(victim.model).train()
            buffers = {k: v.clone() for k, v in victim.buffers.items()}
            started = time.perf_counter()
            update = local_update(model, victim.params, buffers, x, y, training, gradient_fn=defense.gradient_fn())
            # a fresh round seed per repeat, as in training: a sketch matrix is regenerated every round
            sent[i], _ = share_update(defense, update, ShareContext(names, len(shard), 0, repeat, seed=spec.seed * 100003 + repeat))
            best[i] = min(best[i], time.perf_counter() - started)
    victim.model.eval()
    return [(t, int(d.bytes_sent(s))) for t, d, s in zip(best, defenses, sent)]


def _accounting(defense: Defense, spec: VictimSpec, shards, training: LocalTraining) -> tuple[int, float]:
    if defense.privacy_unit == "user":
        return spec.rounds, 1.0
    smallest = min(len(s) for s in shards)
    steps = spec.rounds * max(training.steps(len(s)) for s in shards)
    rate = 1.0 if training.batch_size is None else min(1.0, training.batch_size / smallest)
    return steps, rate


def _cache_key(spec: VictimSpec, data, defense: Defense) -> str:
    """Everything the measurement depends on, the defense's code included (an edited plugin is
    measured again, core.fingerprint)."""
    from fedleak.core.fingerprint import module_digest
    return digest({"spec": asdict(spec), "data": data.name, "n": len(data.train_images), "defense": defense.name,
                   "defense_params": defense.describe(), "defense_source": module_digest(type(defense)),
                   "v": CACHE_VERSION})
