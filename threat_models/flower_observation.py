"""A recorded Flower client update (`threat_models.flower.ClientUpdate`) as a fedleak `Observation`.

Flower moves arrays, not names, so they are mapped onto the model:

* keyed arrays whose keys include every `named_parameters()` name (the Message API's
  `ArrayRecord(model.state_dict())`) are matched by name;
* otherwise they are taken as a list in `state_dict()` order (parameters and buffers interleaved,
  as `[v.numpy() for v in model.state_dict().values()]` gives them) when there are as many as
  state_dict entries, or in `named_parameters()` order when there are as many as parameters.

Every array's shape is checked against its tensor. Buffers (BatchNorm running statistics,
`num_batches_tracked`) are in `state_dict()` but not in `parameters()`: they become the
observation's `buffers` (the global ones the client started from), never part of what is attacked.
When the client sends no buffers, the model's own are used.
Needs no `flwr`: a ClientUpdate only holds NumPy arrays."""
from __future__ import annotations

import numpy as np
import torch

from fedleak.core.errors import ConfigError
from fedleak.threat_models.base import FedAvg, FedSGD
from fedleak.threat_models.observation import Observation

# what a client sends back -> the threat model that explains it (its name and kind go on the observation)
SHARES = {"weights": FedAvg, "gradient": FedSGD}


def explained_by(shares: str):
    """The threat model class that explains what a Flower client replies with."""
    if shares not in SHARES:
        raise ConfigError(f"shares: expected one of {', '.join(SHARES)}, got {shares!r}")
    return SHARES[shares]


def arrays_to_state(arrays: dict[str, np.ndarray], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Model entry name -> tensor for every array that maps onto the model (see module doc)."""
    state = model.state_dict()
    params = [name for name, _ in model.named_parameters()]
    if all(name in arrays for name in params):
        pairs = [(name, arrays[name]) for name in state if name in arrays]
    elif len(arrays) == len(state):
        pairs = list(zip(state, arrays.values()))
    elif len(arrays) == len(params):
        pairs = list(zip(params, arrays.values()))
    else:
        raise ConfigError(f"cannot map {len(arrays)} Flower arrays onto {type(model).__name__}: expected its "
                          f"{len(state)} state_dict entries or its {len(params)} parameters, in that order, or arrays keyed by name")
    mapped = {}
    for name, array in pairs:
        if tuple(array.shape) != tuple(state[name].shape):
            raise ConfigError(f"Flower array for '{name}' has shape {tuple(array.shape)}, the model's is "
                              f"{tuple(state[name].shape)}: are the arrays in state_dict() order?")
        mapped[name] = torch.from_numpy(np.array(array, copy=True)).to(state[name].dtype)
    return mapped


def observation_from_update(update, model: torch.nn.Module, shares: str = "weights") -> Observation:
    """What the server holds after `update`: Δθ = sent − global for a client that sends weights
    after local training (threat model `fedavg`), or the sent arrays as they are for one that
    sends a gradient (`fedsgd`)."""
    threat_model, kind = explained_by(shares).name, explained_by(shares).kind
    names = [name for name, _ in model.named_parameters()]
    sent, received = arrays_to_state(update.sent, model), arrays_to_state(update.received, model)
    params = {name: received[name] for name in names}
    buffers = {name: received.get(name, b.detach().clone()) for name, b in model.named_buffers()}
    shared = [sent[n] - params[n] for n in names] if shares == "weights" else [sent[n] for n in names]
    bytes_sent = int(sum(np.asarray(a).nbytes for a in update.sent.values()))
    return Observation(threat_model, kind, shared, names, params, buffers, update.num_examples,
                       client_id=update.client_id, round=update.round, public={"bytes_sent": bytes_sent})
