"""Adaptive attacks on HyperFL (methods.md §9 "Attack surface"; protocol in threat_models/hyperfl.py).

HyperFL generates every target tensor θ_k with its own Linear head from ONE hidden vector
a = ReLU(W₁v + b₁). For one local SGD step the gradient of head k is therefore
    ∂L/∂b_k = ∂L/∂θ_k,    ∂L/∂W_k = (∂L/∂θ_k)·aᵀ  (rank 1),
so from the observed Δφ the server reads ∂L/∂θ exactly (up to the common clip factor), recovers
a = Σ_k (∂L/∂W_k)ᵀ(∂L/∂b_k) / Σ_k ‖∂L/∂b_k‖², and computes θ_k = W_k a + b_k with the φ̄ it sent.
What is left is an ordinary gradient inversion against a KNOWN feature extractor θ whose
classifier head is private: the head is optimised jointly with x̂ (mode "one-step").

With several local steps (momentum, weight decay, clipping) the structure is only approximate;
mode "unrolled" then replays the client's hypernetwork phase differentiably (IG's FedAvg
reconstructor) with the embedding v and the head as extra unknowns, v initialised from the
rank-1 estimate of a. Both modes remove the data-independent weight-decay drift of Δφ first:
SGD with momentum and weight decay is linear in (φ̄, g₁…g_K), so Δφ − drift(φ̄) depends on the data
only.

For B=1 the fc1 update also gives the conv features that entered fc1 exactly,
h = (∂L/∂W_fc1)ᵀ(∂L/∂b_fc1)/‖∂L/∂b_fc1‖² (the linear-layer leak of Phong et al. 2018), matched as an
extra term; an attacker with auxiliary data also trains a decoder h(x; θ) → x on its own images
(θ is known!) and starts from its estimate of the victim (prior "decoder").

Labels: with the head unknown, a label is only defined up to a permutation of the head's rows, so
an attacker without label knowledge loses nothing by fixing them (B=1: class 0; B>1: distinct)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fedleak.core.console import progress_bar

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction
from fedleak.attacks.decoders import fit_decoder
from fedleak.attacks.hyperfl_replay import factored_cosine_distance, factored_phase
from fedleak.attacks.objective import cosine_distance, total_variation
from fedleak.core.components import HYPERNETWORK_UPDATE
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_bool, check_choice, check_integer, check_number
from fedleak.threat_models.hypernetwork import PHI_PREFIX, head_key
from fedleak.models.optim import sgd_step

MODES = ("auto", "one-step", "unrolled")
PRIORS = ("auto", "none", "decoder")


@dataclass
class TargetLeak:
    theta: dict[str, torch.Tensor]      # recovered feature-extractor weights θ = W a + b
    gradient: dict[str, torch.Tensor]   # recovered ∂L/∂θ (times the unknown clip factor)
    hidden: torch.Tensor                # recovered a
    residual: float                     # relative distance of the head updates from rank 1 (0: one exact step)


def weight_decay_drift(phi: dict[str, torch.Tensor], steps: int, lr: float, momentum: float, weight_decay: float):
    """Δφ of `steps` SGD steps with zero data gradient: the part of an update that carries no data."""
    current, buffers = dict(phi), None
    for _ in range(steps):
        current, buffers = sgd_step(current, {k: torch.zeros_like(v) for k, v in current.items()}, buffers, lr, momentum, weight_decay)
    return {k: current[k] - phi[k] for k in phi}


def data_part(observation, net, local_training) -> dict[str, torch.Tensor]:
    """−(Δφ − drift)/lr: for one step exactly the clipped gradient of φ. Without the
    hyperparameters the drift cannot be removed and −Δφ stands in (its scale is irrelevant)."""
    update = dict(zip(observation.param_names, observation.update))
    if local_training is None:
        return {k: -u for k, u in update.items()}
    p = net.protocol
    drift = weight_decay_drift(observation.global_params, local_training.steps(observation.num_examples),
                               local_training.lr, p.momentum, p.weight_decay)
    return {k: -(update[k] - drift[k]) / local_training.lr for k in update}


def leak_target(net, phi: dict[str, torch.Tensor], gradient: dict[str, torch.Tensor]) -> TargetLeak:
    """θ, ∂L/∂θ and a from the gradient of φ (output of `data_part`), by the rank-1 structure."""
    heads = {n: (f"{PHI_PREFIX}heads.{head_key(n)}.weight", f"{PHI_PREFIX}heads.{head_key(n)}.bias") for n in net.target_names}
    numerator = sum(gradient[w].T @ gradient[b] for w, b in heads.values())
    hidden = numerator / sum(gradient[b].pow(2).sum() for _, b in heads.values()).clamp_min(1e-30)
    residual = torch.sqrt(sum((gradient[w] - torch.outer(gradient[b], hidden)).pow(2).sum() for w, b in heads.values())
                          / sum(gradient[w].pow(2).sum() for w, _ in heads.values()).clamp_min(1e-30))
    shapes = net.hypernetwork.target_shapes
    theta = {n: (phi[w] @ hidden + phi[b]).view(shapes[n]) for n, (w, b) in heads.items()}
    grads = {n: gradient[b].view(shapes[n]) for n, (_, b) in heads.items()}
    return TargetLeak(theta, grads, hidden, float(residual))


def leaked_trunk_features(leak: TargetLeak, num_images: int) -> torch.Tensor | None:
    """The input of fc1 for B=1 (exact after one step); None for B>1, where the rows mix."""
    if num_images != 1:
        return None
    bias = leak.gradient["fc1.bias"]
    return (leak.gradient["fc1.weight"].T @ bias / bias.pow(2).sum().clamp_min(1e-30)).unsqueeze(0)


@dataclass(frozen=True)
class HyperFLLeakConfig:
    mode: str = "auto"         # auto: one-step when the update is one local step, else unrolled
    prior: str = "auto"        # "none" | "decoder" | auto: decoder when auxiliary data and B=1
    lr: float = 0.1            # signed Adam on the image from a random start (IG)
    refine: bool = False       # optimise on from the decoder's estimate; off: in our digits runs the
                               # match pulled a good estimate away (SSIM 0.96 → 0.85 at equal PSNR)
    refine_lr: float = 1e-3    # plain Adam (signed steps would add ±lr to every pixel of a good estimate)
    private_lr: float = 0.01   # Adam on the unknown head (and embedding)
    gradient: float = 1.0      # weight of the cosine match of ∂L/∂θ (or of the replayed Δφ)
    features: float = 1.0      # weight of the leaked-feature match (B=1)
    tv: float = 1e-2
    decoder_steps: int = 600
    boxed: bool = True
    lr_decay: bool = True
    rank1_tolerance: float = 0.05  # auto without hyperparameters: residual below this means one step

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        check_choice("prior", self.prior, PRIORS)
        for key in ("lr", "refine_lr", "private_lr"):
            check_number(key, getattr(self, key), low=0, low_open=True)
        for key in ("gradient", "features", "tv", "rank1_tolerance"):
            check_number(key, getattr(self, key), low=0)
        check_integer("decoder_steps", self.decoder_steps, low=0)
        for key in ("refine", "boxed", "lr_decay"):
            check_bool(key, getattr(self, key))


class HyperFLLeak(Attack):
    name = "hyperfl-leak"
    options_class = HyperFLLeakConfig
    applies_to = (HYPERNETWORK_UPDATE,)
    budgets = {"ci": PresetBudget(iterations=50)}

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        self.check_observation(observation)
        gradient = data_part(observation, model, knowledge.local_training)
        leak = leak_target(model, observation.global_params, gradient)
        features = leaked_trunk_features(leak, knowledge.num_images)
        labels = _labels(knowledge, observation.shared[0].device)
        mode, prior = self._mode(knowledge, observation, leak), self._prior(knowledge, features)
        generator = torch.Generator().manual_seed(seed)
        terms = _Terms(model, leak, features, self.options)
        problem = _OneStep(terms, labels) if mode == "one-step" else _Unrolled(terms, observation, knowledge, labels, gradient)
        start = self._start(model, leak, features, knowledge, budget, prior, generator, seed)
        if prior == "decoder" and not self.options.refine:
            x, trace = start, [[] for _ in range(budget.restarts)]
            final = torch.stack([terms.feature_match(xr).detach() for xr in x]).cpu()
        else:
            x, trace, final = self._optimise(problem, start, knowledge, budget, generator, prior, progress)
        winner = int(final.argmin())
        return Reconstruction(knowledge.to_unit(x[winner].detach()), labels.cpu(), trace[winner], float(final[winner]),
                              final.tolist(), {"mode": mode, "prior": prior, "rank1_residual": leak.residual})

    def _mode(self, knowledge, observation, leak: TargetLeak) -> str:
        if self.options.mode != "auto":
            return self.options.mode
        if knowledge.local_training is not None:
            return "one-step" if knowledge.local_training.steps(observation.num_examples) == 1 else "unrolled"
        return "one-step" if leak.residual < self.options.rank1_tolerance else "unrolled"

    def _prior(self, knowledge, features) -> str:
        usable = knowledge.auxiliary_images is not None and features is not None
        if self.options.prior == "decoder" and not usable:
            raise ConfigError("attack 'hyperfl-leak' prior 'decoder' needs auxiliary data (knowledge preset "
                              "'data_enhanced') and B=1")
        if self.options.prior == "auto":
            return "decoder" if usable and self.options.decoder_steps > 0 else "none"
        return self.options.prior

    def _start(self, net, leak, features, knowledge, budget, prior, generator, seed) -> torch.Tensor:
        shape = (budget.restarts, knowledge.num_images, *knowledge.image_shape)
        device = leak.hidden.device
        if prior == "none":
            return torch.randn(shape, generator=generator).to(device)
        # θ is known, so the attacker computes the leaked quantity for its own images
        aux = knowledge.auxiliary_images.to(device)
        normalised = _normalise(aux, knowledge)
        with torch.no_grad():
            codes = torch.cat([net.trunk_features(leak.theta, normalised[i:i + 500]) for i in range(0, len(aux), 500)])
        decode = fit_decoder(codes, aux, self.options.decoder_steps, seed=seed)
        return _normalise(decode(features), knowledge).expand(shape).clone()

    def _optimise(self, problem, start, knowledge, budget: Budget, generator, prior, progress):
        c = self.options
        device = start.device
        x = start.requires_grad_(True)
        private = problem.initial_private(budget.restarts, generator)
        image_opt = torch.optim.Adam([x], lr=c.lr if prior == "none" else c.refine_lr)
        private_opt = torch.optim.Adam(private, lr=c.private_lr)
        milestones = [int(budget.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)] if c.lr_decay else []
        schedulers = [torch.optim.lr_scheduler.MultiStepLR(o, milestones=milestones, gamma=0.1) for o in (image_opt, private_opt)]
        low, high = knowledge.box(device)
        traces = []
        for _ in progress_bar(range(budget.iterations), desc=self.name, enabled=progress):
            image_opt.zero_grad()
            private_opt.zero_grad()
            match = torch.stack([problem.distance(x[r], [p[r] for p in private]) for r in range(budget.restarts)])
            objective = match + c.tv * torch.stack([total_variation(xr) for xr in x])
            objective.sum().backward()  # restarts are independent: the sum's gradient is each one's
            if prior == "none":
                x.grad.sign_()
            image_opt.step()
            private_opt.step()
            for s in schedulers:
                s.step()
            if c.boxed:
                with torch.no_grad():
                    x.data = torch.maximum(torch.minimum(x, high), low)
            traces.append(objective.detach().cpu())
        final = torch.stack([problem.distance(x[r], [p[r] for p in private]).detach() for r in range(budget.restarts)]).cpu()
        trace = torch.stack(traces).T.tolist() if traces else [[] for _ in range(budget.restarts)]
        return x, trace, final


def _normalise(images: torch.Tensor, knowledge) -> torch.Tensor:
    m = torch.tensor(knowledge.mean, device=images.device).view(-1, 1, 1)
    s = torch.tensor(knowledge.std, device=images.device).view(-1, 1, 1)
    return (images - m) / s


def _labels(knowledge, device) -> torch.Tensor:
    if knowledge.labels is not None:
        return knowledge.labels.to(device)
    return torch.arange(knowledge.num_images, device=device) % knowledge.num_classes


class _Terms:
    """What both modes share: the leaked θ, ∂L/∂θ and a, and the leaked-feature match (zero when
    nothing leaked, B>1)."""

    def __init__(self, net, leak: TargetLeak, features, config: HyperFLLeakConfig):
        self.net, self.config = net, config
        self.theta = {k: v.detach().requires_grad_(True) for k, v in leak.theta.items()}
        self.gradient = {k: v.detach() for k, v in leak.gradient.items()}
        self.hidden = leak.hidden.detach()
        self.features = None if features is None or config.features == 0 else features.detach()

    def feature_match(self, x) -> torch.Tensor:
        if self.features is None:
            return torch.zeros((), device=x.device)
        trial = self.net.trunk_features(self.theta, x)
        return self.config.features * (trial - self.features).pow(2).sum() / self.features.pow(2).sum().clamp_min(1e-30)


class _OneStep:
    """Cosine between ∂L(x̂; θ, head)/∂θ and the leaked ∂L/∂θ, + leaked features; unknowns x̂, head."""

    def __init__(self, terms: _Terms, labels):
        self.terms, self.labels, self.device = terms, labels, labels.device
        self.target = [terms.gradient[k] for k in terms.theta]

    def initial_private(self, restarts: int, generator) -> list[torch.Tensor]:
        return _random_heads(self.terms.net, restarts, generator, self.device)

    def distance(self, x, private) -> torch.Tensor:
        weight, bias = private
        theta = self.terms.theta
        loss = F.cross_entropy(self.terms.net.logits(theta, {"weight": weight, "bias": bias}, x), self.labels)
        trial = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
        return self.terms.config.gradient * cosine_distance(list(trial), self.target) + self.terms.feature_match(x)


class _Unrolled:
    """Cosine between the data part of the replayed Δφ (factored, attacks/hyperfl_replay.py) and
    the observed one, + leaked features (approximate after several steps); unknowns x̂, v, head."""

    def __init__(self, terms: _Terms, observation, knowledge, labels, gradient):
        if knowledge.local_training is None:
            raise ConfigError("attack 'hyperfl-leak' mode 'unrolled' needs the local hyperparameters "
                              "(knowledge preset 'parameter_aware' or stronger)")
        self.terms, self.labels, self.training, self.device = terms, labels, knowledge.local_training, labels.device
        self.phi = {k: v.detach() for k, v in observation.global_params.items()}
        self.observed = {k: g.detach() for k, g in gradient.items()}

    def initial_private(self, restarts: int, generator) -> list[torch.Tensor]:
        net = self.terms.net
        embedding = _fit_embedding(net, self.phi, self.terms.hidden, generator).expand(restarts, -1).clone()
        return [embedding.requires_grad_(True), *_random_heads(net, restarts, generator, self.device)]

    def distance(self, x, private) -> torch.Tensor:
        embedding, weight, bias = private
        net = self.terms.net
        trial = factored_phase(net, self.phi, embedding, {"weight": weight, "bias": bias}, x, self.labels,
                               net.protocol, self.training)
        return self.terms.config.gradient * factored_cosine_distance(trial, self.observed) + self.terms.feature_match(x)


def _random_heads(net, restarts: int, generator, device) -> list[torch.Tensor]:
    """nn.Linear's default init U(±1/√fan_in), one head per restart."""
    classes, features = net.head.out_features, net.head.in_features
    bound = features ** -0.5
    weight = (torch.rand((restarts, classes, features), generator=generator) * 2 - 1) * bound
    bias = (torch.rand((restarts, classes), generator=generator) * 2 - 1) * bound
    return [weight.to(device).requires_grad_(True), bias.to(device).requires_grad_(True)]


def _fit_embedding(net, phi, hidden: torch.Tensor, generator, steps: int = 300) -> torch.Tensor:
    """An embedding v with ReLU(W₁v + b₁) ≈ the leaked a: the unrolled attack's starting point."""
    v = torch.randn(net.embedding.shape, generator=generator).to(hidden.device).requires_grad_(True)
    optimiser = torch.optim.Adam([v], lr=0.05)
    scale = hidden.pow(2).sum().clamp_min(1e-12)
    for _ in range(steps):
        optimiser.zero_grad()
        ((net.hidden_code(phi, v) - hidden).pow(2).sum() / scale).backward()
        optimiser.step()
    return v.detach()
