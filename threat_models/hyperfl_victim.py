"""The HyperFL victim: global φ̄ after R HyperFL rounds on the training split, plus every training
client's private state (embedding, head). The client attacked in batch i is training client
i mod `clients`: a real participant with its own trained v and head, not a fresh one.

Utility is personalised (each client evaluated with its own θ_i = h(v_i; φ̄) and head): the
accuracy of client i on the held-out split with classes weighted by client i's training label
histogram, averaged over clients by data size. Under an IID partition this is ordinary held-out
accuracy; under label skew it is each client's accuracy on its own label distribution."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.func import functional_call

from fedleak.defenses.base import NoDefense
from fedleak.threat_models.cache import cached
from fedleak.threat_models.hyperfl_protocol import ClientState, HyperFLProtocol, client_round, initial_client_state
from fedleak.threat_models.hypernetwork import build_hyperfl_net
from fedleak.models.functional import LocalTraining
from fedleak.threat_models.victim import Victim

MODEL_NAME = "hyperfl-cnn"


@dataclass
class HyperFLVictim(Victim):
    clients: list[ClientState] = field(default_factory=list)

    def client(self, client_id: int) -> ClientState:
        return self.clients[client_id % len(self.clients)]

    def to(self, device) -> "HyperFLVictim":
        super().to(device)
        self.clients = [c.to(device) for c in self.clients]
        return self

    def describe(self) -> dict:
        return {"model": MODEL_NAME, "model_options": asdict(self.model.protocol), "victim_state": self.spec.state,
                "victim_accuracy": self.accuracy}


def client_seed(seed: int, client: int) -> int:
    return 1_000_003 * (seed + 1) + client  # never the architecture's own seed


def build_hyperfl_victim(spec, data, protocol: HyperFLProtocol, progress: bool = False) -> HyperFLVictim:
    net = build_hyperfl_net(data.shape, data.num_classes, protocol.embedding_dim, protocol.hidden_dim, seed=spec.seed).eval()
    net.protocol = protocol
    recipe = {"spec": asdict(spec), "data": data.name, "n": len(data.train_images), "protocol": asdict(protocol), "v": 1}
    state = cached("hyperfl-victims", recipe, lambda: _train(net, spec, data, protocol, progress),
                   needs=("embeddings", "head_weights", "head_biases", "phi", "accuracy"))
    clients = [ClientState(e, {"weight": w, "bias": b})
               for e, w, b in zip(state["embeddings"], state["head_weights"], state["head_biases"])]
    return HyperFLVictim(net, state["phi"], {}, data, spec, state["accuracy"], clients)


def _train(net, spec, data, protocol: HyperFLProtocol, progress: bool) -> dict:
    """R rounds of HyperFL over a partition of the training split (official server loop: every
    client trains from φ̄, the server averages Δφ weighted by data size)."""
    from fedleak.data.datasets import partition
    from fedleak.core.console import progress_bar
    shards = partition(data.train_labels.numpy(), spec.clients, scheme=spec.partition, alpha=spec.alpha, seed=spec.seed)
    training = LocalTraining(lr=spec.local_lr, epochs=spec.local_epochs, batch_size=spec.local_batch_size)
    phi = net.public_phi()
    clients = [initial_client_state(net, client_seed(spec.seed, i)) for i in range(spec.clients)]
    generator = torch.Generator().manual_seed(spec.seed)
    normalise = Victim(net, {}, {}, data, spec).normalise
    for _ in progress_bar(range(spec.rounds), desc="victim HyperFL", enabled=progress, leave=True):
        total = {k: torch.zeros_like(v) for k, v in phi.items()}
        for i, shard in enumerate(shards):
            order = torch.as_tensor(shard)[torch.randperm(len(shard), generator=generator)]
            update, clients[i] = client_round(net, phi, clients[i], normalise(data.train_images[order]),
                                              data.train_labels[order], protocol, training)
            for k, u in zip(phi, update):
                total[k] += len(shard) * u
        phi = {k: phi[k] + total[k] / len(data.train_labels) for k in phi}
    accuracy = personalised_accuracy(net, phi, clients, [data.train_labels[s] for s in shards], data)
    return {"phi": phi, "embeddings": [c.embedding for c in clients], "head_weights": [c.head["weight"] for c in clients],
            "head_biases": [c.head["bias"] for c in clients], "accuracy": accuracy}


def personalised_accuracy(net, phi, clients: list[ClientState], client_labels: list[torch.Tensor], data) -> float:
    """Mean over clients (weighted by data size) of each client's held-out accuracy with classes
    weighted by its training label histogram (see module docstring)."""
    def predict(client: ClientState, x):
        theta = net.generate(phi, client.embedding)
        return net.logits(theta, client.head, x).argmax(1)
    return label_weighted_accuracy(predict, clients, client_labels, data)


def label_weighted_accuracy(predict, clients: list, client_labels: list[torch.Tensor], data) -> float:
    normalise = Victim(None, {}, {}, data, None).normalise
    x, y = normalise(data.victim_images), data.victim_labels
    total, weight = 0.0, 0
    with torch.no_grad():
        for client, labels in zip(clients, client_labels):
            correct = torch.cat([predict(client, x[s:s + 500]) for s in range(0, len(x), 500)]) == y
            per_class = np.array([correct[y == c].float().mean().item() for c in range(data.num_classes)])
            histogram = np.bincount(labels.numpy(), minlength=data.num_classes) / len(labels)
            total += len(labels) * float(histogram @ per_class)
            weight += len(labels)
    return total / weight


def fedavg_baseline_accuracy(spec, data, progress: bool = False) -> float:
    """The same target CNN + head trained by plain FedAvg (threat_models.victim.federated_training)
    with the same clients, rounds and local schedule, scored by the same label-weighted rule:
    the utility HyperFL is compared against."""
    from fedleak.data.datasets import partition
    from fedleak.threat_models.hypernetwork import FEATURE_DIM, TargetCNN
    from fedleak.threat_models.victim import federated_training

    def build() -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(spec.seed)
            model = torch.nn.Sequential(TargetCNN(data.shape), torch.nn.Linear(FEATURE_DIM, data.num_classes)).eval()
        victim = Victim(model, {k: v.detach().clone() for k, v in model.named_parameters()}, {}, data, spec)
        federated_training(victim, NoDefense(), progress)
        shards = partition(data.train_labels.numpy(), spec.clients, scheme=spec.partition, alpha=spec.alpha, seed=spec.seed)
        predict = lambda _, x: functional_call(model, victim.params, (x,)).argmax(1)
        return {"accuracy": label_weighted_accuracy(predict, shards, [data.train_labels[s] for s in shards], data)}
    recipe = {"spec": asdict(spec), "data": data.name, "n": len(data.train_images), "model": "hyperfl-target-fedavg", "v": 1}
    return cached("hyperfl-fedavg-baseline", recipe, build, needs=("accuracy",))["accuracy"]
