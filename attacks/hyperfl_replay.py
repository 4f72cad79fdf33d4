"""HyperFL's hypernetwork phase replayed in factored form, for the unrolled attack.

The dense replay (threat_models.hyperfl.hypernetwork_phase) materialises every head weight W_k —
13M numbers for the digits CNN's fc1 head — with a graph at every local step. But SGD with
momentum and weight decay is linear with SCALAR coefficients, and each step's head gradient is
the outer product c_t·g_{k,t}·a_tᵀ, so after t steps
    W_{k,t} = α_t·W_{k,0} + Σ_{s<t} β_{t,s}·g_{k,s}·a_sᵀ,
with α, β from the recurrences of the momentum buffer M_t = μM_{t−1} + c_t·G_t + wd·W_t and
W_{t+1} = W_t − lr·M_t. Then θ_{k,t} = α_t·W_{k,0}a_t + Σ_s β_{t,s}(a_sᵀa_t)·g_{k,s} + b_{k,t} costs one
matrix–vector product, the clip norm of ‖g_k a_tᵀ‖ is ‖g_k‖‖a_t‖, and the cosine against the
observed update needs only O_k·a_s. Same numbers as the dense replay (tests/test_hyperfl.py),
far fewer passes over the big matrices. α_t does not depend on the data, so the weight-decay
drift removed from the observation (attacks/hyperfl_leak.data_part) is exactly (α_K − 1)·φ₀."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedleak.threat_models.hypernetwork import PHI_PREFIX, head_key
from fedleak.models.optim import sgd_step


@dataclass
class FactoredDataPart:
    """−(Δφ − drift)/lr of a replayed round: dense tensors for the small entries of φ, and for
    each big head weight k the factors Σ_s coefficient_s · g_{k,s} a_sᵀ."""
    dense: dict[str, torch.Tensor]
    coefficients: list[torch.Tensor]           # per local step s (scalar)
    hidden: list[torch.Tensor]                 # a_s
    head_gradients: list[dict[str, torch.Tensor]]  # g_{k,s}, flattened, by φ weight name

    def densify(self) -> dict[str, torch.Tensor]:
        big = {name: sum(c * torch.outer(g[name], a) for c, g, a in zip(self.coefficients, self.head_gradients, self.hidden))
               for name in self.head_gradients[0]}
        return {**self.dense, **big}


def _names(net) -> tuple[list[str], dict[str, str]]:
    """(φ weights of the per-tensor heads, target tensor name → its head weight's φ name)."""
    weights = {n: f"{PHI_PREFIX}heads.{head_key(n)}.weight" for n in net.target_names}
    return list(weights.values()), weights


def factored_phase(net, phi: dict[str, torch.Tensor], embedding: torch.Tensor, head: dict[str, torch.Tensor], x, y,
                   protocol, training) -> FactoredDataPart:
    """The data part of Δφ after the hypernetwork phase, differentiable in x, embedding, head."""
    big, weight_of = _names(net)
    shapes = net.hypernetwork.target_shapes
    initial = {k: v.detach() for k, v in phi.items()}
    dense = {k: v for k, v in initial.items() if k not in big}
    v = embedding
    scalar = {"dtype": x.dtype, "device": x.device}  # α in φ's precision: the drift is (α_K − 1)·φ₀
    alpha, rho = torch.ones((), **scalar), torch.zeros((), **scalar)
    betas, deltas, hidden, head_gradients = [], [], [], []
    dense_momentum = v_momentum = None
    size = len(x) if training.batch_size is None else training.batch_size
    for _ in range(training.epochs):
        for start in range(0, len(x), size):
            xb, yb = x[start:start + size], y[start:start + size]
            dense = {k: t if t.requires_grad else t.detach().requires_grad_(True) for k, t in dense.items()}
            v = v if v.requires_grad else v.detach().requires_grad_(True)
            a = F.relu(F.linear(v, dense[f"{PHI_PREFIX}hidden.weight"], dense[f"{PHI_PREFIX}hidden.bias"]))
            theta = {}
            for n, w in weight_of.items():
                flat = alpha * (initial[w] @ a) + dense[w[:-len("weight")] + "bias"]
                for beta, g, a_s in zip(betas, head_gradients, hidden):
                    flat = flat + beta * (a_s @ a) * g[w]
                theta[n] = flat
            loss = _cross_entropy(net.logits({n: t.view(shapes[n]) for n, t in theta.items()}, head, xb), yb)
            dense_names = list(dense)
            grads = torch.autograd.grad(loss, [dense[k] for k in dense_names] + [v] + list(theta.values()), create_graph=True)
            g_dense = dict(zip(dense_names, grads[:len(dense_names)]))
            g_v = grads[len(dense_names)]
            g_heads = {weight_of[n]: g for n, g in zip(theta, grads[len(dense_names) + 1:])}
            squared = sum(g.pow(2).sum() for g in g_dense.values()) + a.pow(2).sum() * sum(g.pow(2).sum() for g in g_heads.values())
            # clip_grad_norm_ over all of φ (and over v); the clamp keeps sqrt's derivative finite when
            # the loss, hence the gradient, underflows to exactly 0
            clip = torch.clamp(protocol.clip_norm / (torch.sqrt(squared.clamp_min(1e-30)) + 1e-6), max=1.0)
            clip_v = torch.clamp(protocol.clip_norm / (torch.sqrt(g_v.pow(2).sum().clamp_min(1e-30)) + 1e-6), max=1.0)
            dense, dense_momentum = sgd_step(dense, {k: clip * g for k, g in g_dense.items()}, dense_momentum,
                                             training.lr, protocol.momentum, protocol.weight_decay)
            stepped, v_momentum = sgd_step({"v": v}, {"v": clip_v * g_v}, v_momentum, training.lr, protocol.momentum,
                                           protocol.weight_decay)
            v = stepped["v"]
            # the big weights: M_t = μM_{t−1} + c·G_t + wd·W_t, then W_{t+1} = W_t − lr·M_t, on coefficients
            rho = protocol.momentum * rho + protocol.weight_decay * alpha
            deltas = [protocol.momentum * d + protocol.weight_decay * b for d, b in zip(deltas, betas)] + [clip]
            betas = betas + [torch.zeros((), **scalar)]
            alpha = alpha - training.lr * rho
            betas = [b - training.lr * d for b, d in zip(betas, deltas)]
            hidden.append(a)
            head_gradients.append(g_heads)
    data_dense = {k: -(dense[k] - alpha * initial[k]) / training.lr for k in dense}
    return FactoredDataPart(data_dense, [-b / training.lr for b in betas], hidden, head_gradients)


def factored_cosine_distance(trial: FactoredDataPart, observed: dict[str, torch.Tensor]) -> torch.Tensor:
    """1 − cos(trial, observed) over all of φ, without densifying the head weights."""
    dot = sum((t * observed[k]).sum() for k, t in trial.dense.items())
    norm = sum(t.pow(2).sum() for t in trial.dense.values())
    steps = range(len(trial.coefficients))
    for s in steps:
        c, g, a = trial.coefficients[s], trial.head_gradients[s], trial.hidden[s]
        dot = dot + c * sum(g[w] @ (observed[w] @ a) for w in g)
    for s in steps:
        for r in steps:
            gram = sum(trial.head_gradients[s][w] @ trial.head_gradients[r][w] for w in trial.head_gradients[s])
            norm = norm + trial.coefficients[s] * trial.coefficients[r] * gram * (trial.hidden[s] @ trial.hidden[r])
    observed_norm = torch.sqrt(sum(o.pow(2).sum() for o in observed.values()))
    return 1 - dot / (torch.sqrt(norm.clamp_min(1e-30)) * observed_norm + 1e-12)


def _cross_entropy(logits, labels):
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    return -(labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()
