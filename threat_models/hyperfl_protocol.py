"""The HyperFL client's round (Guo et al., AAAI 2025, §3 and Alg. 1; methods.md §9): the protocol's
options, a client's private state, and its two training phases (threat_models/hyperfl.py says what the
server sees of it)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedleak.core.options import check_integer, check_number
from fedleak.models.functional import LocalTraining
from fedleak.models.optim import clip_by_global_norm, sgd_step
from fedleak.threat_models.hypernetwork import HyperFLNet

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class HyperFLProtocol:
    """What the paper fixes beyond the hypernetwork phase's lr/epochs/batch (methods.md §9)."""
    embedding_dim: int = 64
    hidden_dim: int = 128
    head_epochs: int = 1
    head_lr: float = 0.1
    momentum: float = 0.5
    weight_decay: float = 5e-4
    clip_norm: float = 50.0

    def __post_init__(self):
        for key in ("embedding_dim", "hidden_dim"):
            check_integer(key, getattr(self, key), low=1)
        check_integer("head_epochs", self.head_epochs, low=0)
        for key in ("head_lr", "clip_norm"):
            check_number(key, getattr(self, key), low=0, low_open=True)
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        check_number("weight_decay", self.weight_decay, low=0)


@dataclass
class ClientState:
    """What a HyperFL client keeps between rounds and never sends."""
    embedding: torch.Tensor
    head: Tensors  # "weight" (classes, 128), "bias" (classes,)

    def to(self, device) -> "ClientState":
        return ClientState(self.embedding.to(device), {k: v.to(device) for k, v in self.head.items()})


def initial_client_state(net: HyperFLNet, seed: int) -> ClientState:
    """A client's own N(0,1) embedding and default-initialised head, from its own seed."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        embedding = torch.randn(net.embedding.shape)
        head = torch.nn.Linear(net.head.in_features, net.head.out_features)
    return ClientState(embedding, {k: v.detach().clone() for k, v in head.named_parameters()})


def public_state(net: HyperFLNet) -> ClientState:
    """The architecture's own initial embedding/head: the non-adaptive attacker's stand-in."""
    return ClientState(net.embedding.detach(), {k: v.detach() for k, v in net.head.named_parameters()})


def _batches(n: int, training: LocalTraining):
    size = n if training.batch_size is None else training.batch_size
    return [slice(s, s + size) for s in range(0, n, size)]


def train_head(net: HyperFLNet, phi: Tensors, state: ClientState, x, y, protocol: HyperFLProtocol,
               training: LocalTraining) -> Tensors:
    """Step 1 of the round: the head alone, on features of the θ generated from φ̄ (fixed)."""
    with torch.no_grad():
        theta = net.generate(phi, state.embedding)
        features = [net.features(theta, x[b]) for b in _batches(len(x), training)]
    head, momentum = dict(state.head), None
    for _ in range(protocol.head_epochs):
        for f, b in zip(features, _batches(len(x), training)):
            attached = {k: v.detach().requires_grad_(True) for k, v in head.items()}
            loss = F.cross_entropy(F.linear(f, attached["weight"], attached["bias"]), y[b])
            grads = dict(zip(attached, torch.autograd.grad(loss, list(attached.values()))))
            head, momentum = sgd_step(head, grads, momentum, protocol.head_lr, protocol.momentum, protocol.weight_decay)
    return {k: v.detach() for k, v in head.items()}


def hypernetwork_phase(net: HyperFLNet, phi: Tensors, embedding: torch.Tensor, head: Tensors, x, y,
                       protocol: HyperFLProtocol, training: LocalTraining,
                       create_graph: bool = False) -> tuple[Tensors, torch.Tensor]:
    """Step 2 of the round: (φ_K, v_K) after `training.steps(B)` clipped SGD steps on L(x; h(v; φ), head).

    With create_graph the whole unrolled loop stays differentiable in x, v, the head and labels
    (the attacker's replay); otherwise each step starts from detached leaves (the client)."""
    names = list(phi)
    current, v = dict(phi), embedding
    phi_momentum = v_momentum = None
    for _ in range(training.epochs):
        for b in _batches(len(x), training):
            if not create_graph:
                current = {k: t.detach().requires_grad_(True) for k, t in current.items()}
                v = v.detach().requires_grad_(True)
            else:
                current = {k: t if t.requires_grad else t.detach().requires_grad_(True) for k, t in current.items()}
                v = v if v.requires_grad else v.detach().requires_grad_(True)
            logits = net.logits(net.generate(current, v), head, x[b])
            loss = _cross_entropy(logits, y[b])
            *g_phi, g_v = torch.autograd.grad(loss, [current[k] for k in names] + [v], create_graph=create_graph)
            g_phi = clip_by_global_norm(dict(zip(names, g_phi)), protocol.clip_norm)
            g_v = clip_by_global_norm({"v": g_v}, protocol.clip_norm)
            current, phi_momentum = sgd_step(current, g_phi, phi_momentum, training.lr, protocol.momentum, protocol.weight_decay)
            stepped, v_momentum = sgd_step({"v": v}, g_v, v_momentum, training.lr, protocol.momentum, protocol.weight_decay)
            v = stepped["v"]
    if not create_graph:
        current, v = {k: t.detach() for k, t in current.items()}, v.detach()
    return current, v


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Hard labels (B,) or label distributions (B,C), as models.functional.cross_entropy."""
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    return -(labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def client_round(net: HyperFLNet, phi: Tensors, state: ClientState, x, y, protocol: HyperFLProtocol,
                 training: LocalTraining) -> tuple[list[torch.Tensor], ClientState]:
    """One HyperFL round of one client: (Δφ in the order of `phi`, the client's new private state)."""
    head = train_head(net, phi, state, x, y, protocol, training)
    phi_k, embedding = hypernetwork_phase(net, phi, state.embedding, head, x, y, protocol, training)
    return [phi_k[k] - phi[k] for k in phi], ClientState(embedding, head)
