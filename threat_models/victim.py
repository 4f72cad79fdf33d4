"""The victim: a model, the global weights of the attacked round, and the data it came from.

A victim is either untrained (the attacked round is the first) or trained for R FedAvg rounds on
the auxiliary/training split; trained checkpoints are cached by a hash of everything that made
them, so a matrix never retrains per attack."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch.func import functional_call

from fedleak.core.io import cache_dir, cached_tensors, digest
from fedleak.defenses.base import Defense, NoDefense, ShareContext, share_update
from fedleak.models.functional import local_update
from fedleak.models.functional import LocalTraining


@dataclass(frozen=True)
class VictimSpec:
    model: str = "convnet"
    options: dict = field(default_factory=dict)
    seed: int = 0
    rounds: int = 0            # FedAvg rounds before the attacked round; 0 = untrained
    clients: int = 10
    partition: str = "iid"     # "iid" | "dirichlet"
    alpha: float = 0.5
    local_lr: float = 0.05
    local_epochs: int = 1
    local_batch_size: int = 32

    @property
    def state(self) -> str:
        return "untrained" if self.rounds == 0 else f"trained-{self.rounds}"


@dataclass
class Victim:
    model: torch.nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    data: object  # data.datasets.ImageData
    spec: VictimSpec
    accuracy: float | None = None
    # held-out accuracy after each training round (FedAvg-trained victims); keyword-only, so the
    # subclasses' own fields keep their positions
    curve: list[float] | None = field(default=None, kw_only=True)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.data.mean, device=x.device).view(-1, 1, 1)
        s = torch.tensor(self.data.std, device=x.device).view(-1, 1, 1)
        return (x - m) / s

    def to(self, device) -> "Victim":
        self.model.to(device)
        self.params = {k: v.to(device) for k, v in self.params.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self

    def describe(self) -> dict:
        return {"model": self.spec.model, "model_options": dict(self.spec.options), "victim_state": self.spec.state,
                "victim_accuracy": self.accuracy}


def build_victim(spec: VictimSpec, data, defense: Defense | None = None, progress: bool = False) -> Victim:
    from fedleak.models.architectures import build_model
    model = build_model(spec.model, data.num_classes, data.shape, seed=spec.seed, **spec.options).eval()
    victim = Victim(model, {k: v.detach().clone() for k, v in model.named_parameters()},
                    {k: v.detach().clone() for k, v in model.named_buffers()}, data, spec)
    if spec.rounds > 0:
        _train_cached(victim, defense or NoDefense(), progress)
    return victim


def evaluate_accuracy(victim: Victim, images: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> float:
    images = victim.data.victim_images if images is None else images
    labels = victim.data.victim_labels if labels is None else labels
    victim.model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 500):
            logits = functional_call(victim.model, (victim.params, victim.buffers), (victim.normalise(images[start:start + 500]),))
            correct += (logits.argmax(1) == labels[start:start + 500]).sum().item()
    return correct / len(images)


def _cache_key(spec: VictimSpec, data, defense: Defense) -> str:
    """The recipe, the defense's code included: a victim trained with an edited plugin defense is
    trained again (core.fingerprint)."""
    from fedleak.core.fingerprint import module_digest
    return digest({"spec": asdict(spec), "data": data.name, "n": len(data.train_images),
                   "defense": defense.name, "defense_params": defense.describe(),
                   "defense_source": module_digest(type(defense)), "v": 1})


def _train_cached(victim: Victim, defense: Defense, progress: bool) -> None:
    def train() -> dict:
        federated_training(victim, defense, progress)
        return {"params": victim.params, "buffers": victim.buffers, "accuracy": victim.accuracy, "curve": victim.curve}

    path = cache_dir() / "victims" / f"{_cache_key(victim.spec, victim.data, defense)}.pt"
    state = cached_tensors(path, train, "trained victim", lambda s: state_problem(s, victim.params, victim.buffers))
    victim.params, victim.buffers, victim.accuracy = state["params"], state["buffers"], state["accuracy"]
    victim.curve = state.get("curve")


def state_problem(state, params: dict, buffers: dict) -> str | None:
    """Why a cached model state cannot stand in for `params`/`buffers` (names, shapes), or None."""
    if not isinstance(state, dict) or not {"params", "buffers", "accuracy"} <= set(state):
        return "not a trained-victim state (params, buffers, accuracy)"
    for what, expected in (("params", params), ("buffers", buffers)):
        got = state[what]
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"its {what} are not this model's"
        for name, tensor in expected.items():
            if not isinstance(got[name], torch.Tensor) or got[name].shape != tensor.shape:
                return f"{what} {name} has the wrong shape"
    return None


def federated_training(victim: Victim, defense: Defense, progress: bool = False) -> None:
    """R rounds of FedAvg over the training split: every client trains locally, the defense shapes
    what it sends, the server decodes and averages (weighted by examples). BN statistics are
    averaged too. Updates victim.params/buffers in place and records held-out accuracy."""
    from fedleak.data.datasets import partition
    from tqdm.auto import tqdm
    spec, data = victim.spec, victim.data
    shards = partition(data.train_labels.numpy(), spec.clients, scheme=spec.partition, alpha=spec.alpha, seed=spec.seed)
    training = LocalTraining(lr=spec.local_lr, epochs=spec.local_epochs, batch_size=spec.local_batch_size)
    model = defense.prepare_model(victim.model).train()
    names = list(victim.params)
    generator = torch.Generator().manual_seed(spec.seed)
    curve = []
    for rnd in tqdm(range(spec.rounds), desc="victim FedAvg", disable=not progress):
        total = [torch.zeros_like(victim.params[k]) for k in names]
        buffer_sum = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in victim.buffers.items()}
        weight = 0
        for client, shard in enumerate(shards):
            order = torch.as_tensor(shard)[torch.randperm(len(shard), generator=generator)]
            x, y = victim.normalise(data.train_images[order]), data.train_labels[order]
            buffers = {k: v.clone() for k, v in victim.buffers.items()}
            update = local_update(model, victim.params, buffers, x, y, training, gradient_fn=defense.gradient_fn())
            context = ShareContext(names, len(shard), client, rnd, seed=spec.seed * 100003 + rnd)
            shared, public = share_update(defense, update, context)
            decoded = defense.decode(shared, public)
            for acc, u in zip(total, decoded):
                acc += len(shard) * u
            for k, v in buffers.items():
                buffer_sum[k] += len(shard) * v.float()
            weight += len(shard)
        victim.params = {k: victim.params[k] + t / weight for k, t in zip(names, total)}
        victim.buffers = {k: (buffer_sum[k] / weight).to(v.dtype) for k, v in victim.buffers.items()}
        curve.append(evaluate_accuracy(victim))  # evaluate_accuracy leaves the model in eval mode
        model.train()
    victim.model.eval()
    victim.accuracy = evaluate_accuracy(victim)
    victim.curve = curve
