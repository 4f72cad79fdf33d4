"""What the client and server of the example share, and the hooks `fedleak audit-flower` reads.

The auditor's hooks (docs/flower.md) are module-level names: `build_model()`, `private_data()`,
`normalisation()`, optional `local_training()`, `NUM_CLIENTS` and `DATASET`. They are what an
auditor who runs the app in simulation knows beyond the wire: the model architecture (a server
ships the weights, so it has it anyway), the hyperparameters it configured, and the clients'
ground truth, which only scoring uses."""
from __future__ import annotations

import torch

from fedleak.models.functional import LocalTraining

DATASET = "digits"
MODEL = "lenet"
MODEL_SEED = 0
NUM_CLIENTS = 3
NUM_ROUNDS = 2
PRIVATE_BATCH = 2      # images each client holds
LR = 0.1
EPOCHS = 1
LOCAL_BATCH_SIZE = 1   # two local SGD steps per round


def _data():
    from fedleak.data.datasets import load_dataset
    return load_dataset(DATASET)


def build_model() -> torch.nn.Module:
    """The global model before round 1; the same weights as fedleak's untrained victim."""
    from fedleak.models.architectures import build_model as build
    data = _data()
    return build(MODEL, data.num_classes, data.shape, seed=MODEL_SEED)


def private_data(partition_id: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client `partition_id`'s images in [0,1] and labels, in the order it trains on them:
    consecutive held-out digits, so fedleak's own run over the same indices sees the same batches."""
    start = partition_id * PRIVATE_BATCH
    return _data().victims(list(range(start, start + PRIVATE_BATCH)))


def normalisation() -> tuple[tuple[float, ...], tuple[float, ...]]:
    data = _data()
    return tuple(data.mean), tuple(data.std)


def local_training() -> LocalTraining:
    return LocalTraining(lr=LR, epochs=EPOCHS, batch_size=LOCAL_BATCH_SIZE)


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean, std = normalisation()
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Plain local SGD. Mini-batches in the data's order, not shuffled: fedleak's FedAvg threat
    model assumes a fixed order, and an attacker replaying the loop needs it."""
    optimiser = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    loss = torch.zeros(())
    for _ in range(EPOCHS):
        for start in range(0, len(x), LOCAL_BATCH_SIZE):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[start:start + LOCAL_BATCH_SIZE]), y[start:start + LOCAL_BATCH_SIZE])
            loss.backward()
            optimiser.step()
    return float(loss.detach())
