"""Analytic attack on a fully-connected layer (issue #12, item 1c): the rank-one structure of a linear
layer's weight gradient, read from whatever the defense left of it.

For one example, a linear layer y = W h + b has ∂L/∂W = δ hᵀ and ∂L/∂b = δ (δ = ∂L/∂y). So
* with a bias, h = (∂L/∂W)ᵀ(∂L/∂b) / ‖∂L/∂b‖² exactly, over all rows at once (Geiping et al., NeurIPS 2020,
  §4 "any input to a fully connected layer can be reconstructed analytically"; Phong et al. 2018);
* without a bias, h is the leading right singular vector of ∂L/∂W, up to scale and sign;
* from partial information: a pruned (sparse) gradient keeps some entries δ_i h_j, and a rank-one fit of
  the kept entries alone (alternating least squares on the observed support) fills in the rest of h, on
  every column that kept at least one entry; a sign-only gradient sign(δ) sign(h)ᵀ is exactly rank one in
  its signs; noisy or quantised gradients are denoised by the rank-one projection (the leading singular
  vector averages over all rows).
The unknown scale a, offset b (for what only signs or levels fix) and the value f of the columns that kept
no entry are searched on the gradient-matching objective of attacks/defense_loop.py (the defense in the
loop where the attacker knows it): x = a·v + b on observed columns, f elsewhere, clamped to the image box.

What is read: the attacker's decoding of what was sent (`DefenseReplay.invert`; a permutation, rotation or
public-seed noise is undone first), or the server's decoding without knowledge of the defense. Which layer:
the first linear layer (in parameter order) whose gradient is not all zero. When its input is the image
(an MLP), the estimate is the image; otherwise (a CNN's classifier) it is the layer's input feature h, and
the image is found by matching the model's features at that layer to h (cosine + TV, IG's optimiser, the
budget's iterations). `refine` > 0 continues with that many iterations of the defense-in-the-loop
objective from the estimate (lr ×0.1), kept only if it lowers the objective.

One example per update (B = 1); for B > 1 the weight gradient has rank B and this attack does not apply."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.func import functional_call

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction
from fedleak.attacks.share_matching import (DISTANCE_NAMES, DefenseLoopConfig, ShareMatcher, build_replay, decoded_update,
                                            labels_for, provisional_labels)
from fedleak.attacks.inverting_gradients import search_images
from fedleak.attacks.objective import total_variation
from fedleak.core.errors import ConfigError, NotApplicableError
from fedleak.core.options import check_choice, check_integer, check_number


@dataclass(frozen=True)
class AnalyticConfig:
    layer: str = ""            # the linear layer's weight parameter; "": the first one with a non-zero gradient
    distance: str = "auto"     # the objective that fixes scale, offset and fill (attacks/defense_loop.py)
    refine: int = 0            # iterations of defense-in-the-loop matching from the estimate; 0: none
    tv: float = 1e-4           # feature inversion and refinement
    draws: int = 1

    def __post_init__(self):
        check_choice("distance", self.distance, DISTANCE_NAMES)
        check_integer("refine", self.refine, low=0)
        check_number("tv", self.tv, low=0)
        check_integer("draws", self.draws, low=1)


@dataclass
class Estimate:
    image: torch.Tensor          # (1, C, H, W), normalised
    layer: str
    method: str                  # bias-ratio | svd | masked-als | feature-inversion
    observed: float              # fraction of the layer's inputs that kept at least one entry
    objective: float
    notes: dict


class AnalyticFC(Attack):
    name = "analytic-fc"
    max_images = 1
    options_class = AnalyticConfig
    budgets = {"ci": PresetBudget(iterations=200)}  # feature inversion, where the layer's input is not the image

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        c = self.options
        replay = None
        if knowledge.defense is not None:
            replay = build_replay(observation, model, knowledge, provisional_labels(observation, model, knowledge),
                                  seed, c.draws)
        labels = labels_for(observation, model, knowledge, replay)
        matcher = ShareMatcher(observation, model, knowledge, replay, c.distance)
        estimate = analytic_estimate(observation, model, knowledge, labels, replay, matcher, c.layer,
                                     budget.iterations, c.tv, seed)
        image, objective, trace = estimate.image, estimate.objective, []
        if c.refine > 0:
            search = DefenseLoopConfig(lr=0.01, tv=c.tv)
            refined = search_images(matcher, labels, knowledge, Budget(c.refine), search, seed, progress, self.name, image)
            trace = refined.loss_trace
            if refined.gradient_loss < objective:
                low, high = knowledge.box(image.device)
                m = torch.tensor(knowledge.mean, device=image.device).view(-1, 1, 1)
                s = torch.tensor(knowledge.std, device=image.device).view(-1, 1, 1)
                image = ((refined.images - m) / s).clamp(low, high)
                objective = refined.gradient_loss
                estimate.notes["refined"] = True
        extras = {"layer": estimate.layer, "method": estimate.method, "observed_inputs": estimate.observed,
                  "distance": matcher.kind, **estimate.notes,
                  "strategy": f"{self.name}:{estimate.method}:{replay.path if replay else 'decoded'}"}
        if replay is not None:
            extras["defense_replay"] = replay.describe()
        return Reconstruction(knowledge.to_unit(image), labels.detach(), trace, objective, [objective], extras)


def analytic_estimate(observation, model, knowledge, labels, replay, matcher: ShareMatcher, layer: str = "",
                      iterations: int = 200, tv: float = 1e-4, seed: int = 0) -> Estimate:
    if knowledge.num_images != 1:
        raise NotApplicableError(f"attack 'analytic-fc' rebuilds one example per update (max_images = 1); "
                          f"this batch has {knowledge.num_images}")
    update = dict(zip(observation.param_names, decoded_update(replay, observation)))
    name, module = _linear_layer(model, update, layer)
    weight = update[f"{name}.weight" if name else "weight"]
    bias = update.get(f"{name}.bias" if name else "bias")
    direction, observed, method = rank_one_input(weight, bias)
    image_input = _input_is_image(model, observation, module, knowledge)
    objective = _Counted(lambda x: _value(matcher, x, labels))
    low, high = knowledge.box(weight.device)
    notes = {}
    if image_input:
        shape = (1, *knowledge.image_shape)
        v, mask = direction.view(shape), observed.view(shape)
        exact_scale = method == "bias-ratio"
        x, value = _fit_levels(objective, v, mask, low, high, exact_scale)
    else:
        x, value = _invert_features(observation, model, module, direction, knowledge, objective, iterations, tv, seed)
        method = f"{method}+feature-inversion"
    notes["objective_evaluations"] = objective.count
    return Estimate(x, f"{name}.weight", method, float(observed.float().mean()), value, notes)


def rank_one_input(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(direction of the layer's input, mask of input coordinates that kept an entry, method). The
    direction is exact (scale and sign) for "bias-ratio", a unit vector up to sign otherwise."""
    g = weight.detach().double().reshape(weight.shape[0], -1)
    present = g != 0
    observed = present.any(0)
    dense = float(present.double().mean()) > 0.95
    if bias is not None and dense and float(bias.detach().double().pow(2).sum()) > 0:
        b = bias.detach().double().reshape(-1)
        return (g.T @ b / b.pow(2).sum()).to(weight.dtype), observed, "bias-ratio"
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    left, right = u[:, 0] * s[0], vh[0]
    if dense:
        return right.to(weight.dtype), observed, "svd"
    mask = present.double()
    for _ in range(50):
        right = (mask * g).T @ left / ((mask.T @ left.pow(2)) + 1e-30)
        left = (mask * g) @ right / ((mask @ right.pow(2)) + 1e-30)
    right = torch.where(observed, right, torch.zeros_like(right))
    norm = right.norm()
    return (right / norm if norm > 0 else right).to(weight.dtype), observed, "masked-als"


def leading_direction(weight: torch.Tensor, bias: torch.Tensor | None, iterations: int = 12) -> torch.Tensor:
    """A cheap `rank_one_input` for many updates (learn-to-invert's features): the bias ratio where there is a
    bias, else the leading right singular vector of the zero-filled gradient by power iteration, unit norm."""
    g = weight.detach().reshape(weight.shape[0], -1)
    present = g != 0
    sparse = float(present.float().mean()) < 0.95
    if bias is not None and not sparse and float(bias.pow(2).sum()) > 0:
        v = g.T @ bias.detach().reshape(-1)
    else:
        v = g.abs().sum(0)  # a start with a component along the leading vector whenever g is not zero
        for _ in range(iterations):
            v = g.T @ (g @ v)
            v = v / v.norm().clamp(min=1e-30)
        if sparse:  # a few steps of the masked rank-one fit of rank_one_input
            mask = present.to(g.dtype)
            for _ in range(iterations // 2):
                u = g @ v / (mask @ v.pow(2) + 1e-30)
                v = g.T @ u / (mask.T @ u.pow(2) + 1e-30)
    return v / v.norm().clamp(min=1e-30)


class _Counted:
    def __init__(self, f):
        self.f, self.count = f, 0

    def __call__(self, x):
        self.count += 1
        return self.f(x)


def _value(matcher, x, labels) -> float:
    with torch.enable_grad():
        value = float(matcher(x, labels).detach())
    return value if math.isfinite(value) else math.inf


def _fit_levels(objective, v, mask, low, high, exact_scale: bool):
    """x = clamp(a·v + b on observed inputs, f elsewhere): a over a signed log grid then golden section,
    b and f over the box; each chosen on the objective."""
    box = lambda a, b, f: torch.maximum(torch.minimum(torch.where(mask, a * v + b, f * torch.ones_like(v)), high), low)
    lo, hi = float(low.min()), float(high.max())
    mid = (lo + hi) / 2 if lo > 0 or hi < 0 else 0.0
    best = (1.0, 0.0, mid)
    if not exact_scale:
        # v is a unit vector; images in normalised space have norms of about sqrt(d)
        d = v.numel()
        grid = [s * math.sqrt(d) * 10 ** e for s in (1, -1) for e in torch.linspace(-1.5, 1.5, 25).tolist()]
        best = min(((a, 0.0, mid) for a in grid), key=lambda p: objective(box(*p)))
    levels = torch.linspace(lo, hi, 9).tolist()
    if not exact_scale:
        best = min(((best[0], b, best[2]) for b in [0.0, *levels]), key=lambda p: objective(box(*p)))
    if not bool(mask.all()):
        best = min(((best[0], best[1], f) for f in [mid, *levels]), key=lambda p: objective(box(*p)))
    if not exact_scale:
        a = _golden(lambda t: objective(box(best[0] * math.exp(t), best[1], best[2])), -0.35, 0.35)
        best = (best[0] * math.exp(a), best[1], best[2])
    x = box(*best)
    return x, objective(x)


def _golden(f, lo: float, hi: float, steps: int = 12) -> float:
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    zero = f(0.0)
    return 0.0 if zero <= min(fc, fd) else (c if fc < fd else d)


def _linear_layer(model, update: dict, layer: str):
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if layer:
        for n, m in linears:
            if f"{n}.weight" == layer:
                return n, m
        raise ConfigError(f"attack 'analytic-fc': layer '{layer}' is not the weight of a linear layer of the model; "
                          f"linear layers: {', '.join(f'{n}.weight' for n, _ in linears)}")
    order = {name: i for i, name in enumerate(update)}
    candidates = sorted((order[f"{n}.weight"], n, m) for n, m in linears if f"{n}.weight" in order)
    for _, n, m in candidates:
        if bool(update[f"{n}.weight"].abs().sum() > 0):
            return n, m
    raise ConfigError("attack 'analytic-fc' needs a model with a linear layer whose gradient was shared non-zero")


def _layer_input(observation, model, module, x) -> torch.Tensor:
    captured = {}

    def keep(m, inputs, output):
        captured["h"] = inputs[0]
    hook = module.register_forward_hook(keep)
    try:
        functional_call(model.eval(), (observation.global_params, observation.buffers), (x,))
    finally:
        hook.remove()
    return captured["h"].flatten(1)


def _input_is_image(model, observation, module, knowledge) -> bool:
    x = torch.randn((1, *knowledge.image_shape), generator=torch.Generator().manual_seed(1)).to(observation.shared[0].device)
    with torch.no_grad():
        h = _layer_input(observation, model, module, x)
    return h.shape == x.flatten(1).shape and torch.equal(h, x.flatten(1))


def _invert_features(observation, model, module, direction, knowledge, objective, iterations, tv, seed):
    """Images whose input to `module` points along ±direction: IG's optimiser on 1 − cos + TV, the sign
    that reaches the lower gradient-matching objective kept."""
    device = direction.device
    low, high = knowledge.box(device)
    best = (None, math.inf)
    for sign in (1.0, -1.0):
        target = sign * direction.reshape(1, -1)
        x = torch.randn((1, *knowledge.image_shape), generator=torch.Generator().manual_seed(seed)).to(device)
        x = torch.maximum(torch.minimum(x, high), low).requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=0.1)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], 0.1)
        for _ in range(max(1, iterations // 2)):
            optimiser.zero_grad()
            h = _layer_input(observation, model, module, x)
            loss = 1 - torch.nn.functional.cosine_similarity(h, target, dim=1).sum() + tv * total_variation(x)
            loss.backward(inputs=[x])
            x.grad.sign_()
            optimiser.step()
            scheduler.step()
            with torch.no_grad():
                x.data = torch.maximum(torch.minimum(x, high), low)
        value = objective(x.detach())
        if value < best[1]:
            best = (x.detach(), value)
    return best


