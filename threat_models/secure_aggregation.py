"""Secure aggregation over FedSGD (Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS 2017): the server learns only the aggregate of N clients'
updates, never one client's.

The attacked client (client 0) holds the victim batch of B images; the other N − 1 clients hold B
images each, drawn with the round's seed from the training split (the federation's data: victim
training partitions it among the clients). Every client runs the defense on its own update; the
server receives the mean of what they sent, weighted by examples (`reduction = "mean"`, what FedAvg
computes from a secure sum and the public example counts), or the plain sum.

What the attacker faces: one update covering N·B images. `AttackerKnowledge.num_images` is N·B (the
labels, when the knowledge grants them, are all N·B), and the replay is the FedSGD gradient of a
trial batch of N·B images: exactly the aggregate for the mean, since a mean of per-client mean
gradients over equal batches is the mean gradient of their union (the models treat samples
independently in eval mode), and N times it for the sum. An attack reconstructs N·B images; the
attacked client's B are scored against their best distinct matches among them (the runner).
With clients = 1 the observation is FedSGD's, bit for bit."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fedleak.core.components import GRADIENT
from fedleak.core.errors import DataError
from fedleak.core.options import check_choice, check_integer
from fedleak.defenses.base import Defense, ShareContext
from fedleak.threat_models.base import FedSGD
from fedleak.threat_models.knowledge import KnowledgeFlags
from fedleak.threat_models.observation import Observation

REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class SecAggOptions:
    clients: int = 4          # N: the clients whose updates are aggregated, the attacked one included
    reduction: str = "mean"   # mean (weighted by examples) | sum

    def __post_init__(self):
        check_integer("clients", self.clients, low=1)
        check_choice("reduction", self.reduction, REDUCTIONS)


class SecureAggregation(FedSGD):
    """N clients' FedSGD gradients, aggregated before the server sees them (module docstring)."""
    name, kind = "secagg", GRADIENT
    options_class = SecAggOptions

    @property
    def replay_is_loss_gradient(self) -> bool:
        return self.options.reduction == "mean"

    def observe(self, victim, x, y, defense: Defense, flags: KnowledgeFlags, seed: int = 0, client_id: int = 0,
                round: int = 0):
        clients = self.options.clients
        batches = [(x, y), *self.other_clients(victim.data, len(x), seed, x.device)]
        names = list(victim.params)
        rounds = []
        for c, (xc, yc) in enumerate(batches):
            received = victim.for_client(c)
            context = ShareContext(names, len(xc), client_id * clients + c, round, seed)
            rounds.append(self.client_round(received, received.normalise(xc), yc, defense, context))
        counts = [len(xc) for xc, _ in batches]
        shared = self.aggregate([r[0] for r in rounds], counts)
        decoded = self.aggregate([r[2] for r in rounds], counts)
        public = {**rounds[0][1], "aggregated_clients": clients} if clients > 1 else rounds[0][1]
        observation = Observation(self.name, self.kind, shared, names, victim.params, victim.buffers,
                                  sum(counts), client_id, round, public, decoded)
        x_all, y_all = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        return observation, self.knowledge(victim, victim.normalise(x_all), y_all, defense, flags)

    def aggregate(self, updates: list[list[torch.Tensor]], counts: list[int]) -> list[torch.Tensor]:
        """What secure aggregation reveals: the sum, or the mean weighted by examples."""
        if len(updates) == 1:
            return updates[0]
        total = sum(counts)
        weights = [1.0] * len(counts) if self.options.reduction == "sum" else [n / total for n in counts]
        return [sum(w * u[i] for w, u in zip(weights, updates)) for i in range(len(updates[0]))]

    def other_clients(self, data, batch_size: int, seed: int, device=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The other N − 1 clients' batches: B training images each, drawn with the round's seed."""
        others = self.options.clients - 1
        pool = len(data.train_images)
        if others * batch_size > pool:
            raise DataError(f"threat_model.options.clients: {others} other clients of {batch_size} images need "
                            f"{others * batch_size} training images; '{data.name}' has {pool}")
        picked = torch.randperm(pool, generator=torch.Generator().manual_seed(seed))[:others * batch_size]
        return [(data.train_images[i].to(device), data.train_labels[i].to(device)) for i in picked.split(batch_size)] \
            if others else []

    def replay(self, model, params, buffers, x, y, knowledge):
        update = super().replay(model, params, buffers, x, y, knowledge)
        return update if self.options.reduction == "mean" else [self.options.clients * u for u in update]
