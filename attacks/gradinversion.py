"""GradInversion (Yin, Mallya, Vahdat, Alvarez, Kautz, Molchanov, "See Through Gradients: Image Batch
Recovery via GradInversion", CVPR 2021): batch recovery on BatchNorm networks.

The objective (§3, Eq. 3-8) is gradient matching plus a fidelity prior and group consistency:

    L(x̂) = D(∇W(x̂, y), ∇W) + α_TV·TV(x̂) + α_ℓ2·‖x̂‖² + α_BN·R_BN(x̂) + α_group·R_group(x̂)

* R_BN = Σ_l ‖μ_l(x̂) − μ_l‖₂ + ‖σ²_l(x̂) − σ²_l‖₂ over the BatchNorm layers (the first one weighted
  `first_bn` times, as DeepInversion and breaching do): the batch statistics of the trial batch at
  every BN input, pulled to the targets. `bn_source = "batch"` takes the client batch's own
  statistics (the knowledge flag `bn_statistics`, preset `statistics_informed`); "running" the global
  model's running statistics (what the paper assumes of a trained model); "auto" the first where
  the knowledge grants it.
* R_group: G restarts run in parallel from different seeds; each is pulled towards their pixel-wise
  mean, ‖x̂_g − mean_g x̂_g‖₂ (§3.3). The paper registers the restarts onto each other first
  (RANSAC-flow); here the restarts share the slot order of the labels instead, so slot i of every
  restart has label y_i, and no registration is done.
* Adam (lr 0.1) with a linear warm-up and cosine decay, Gaussian (Langevin) noise on the step
  (breaching's `seethroughgradients` case: 0.01 of the step size; the paper's 0.2 is large), the
  image clamped to the valid box; labels are the true ones where known, else inferred (attacks/labels).
  The restart with the lowest matching loss is returned.

Budgets: the paper runs 20,000 iterations (breaching's `max_iterations: 20_000`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction, attack_labels
from fedleak.attacks.objective import DISTANCES, FastGradientMatcher, total_variation
from fedleak.core.components import GRADIENT, UPDATE
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_choice, check_integer, check_number

BN_SOURCES = ("auto", "batch", "running")


@dataclass(frozen=True)
class GradInversionOptions:
    lr: float = 0.1
    distance: str = "l2"           # the paper's Euclidean gradient distance | cosine
    grad_scale: float = 1e-4       # the matching term's weight (breaching: 1e-4 for Euclidean)
    tv: float = 1e-4
    l2: float = 1e-6
    bn: float = 0.1                # α_BN (breaching's deep_inversion scale)
    first_bn: float = 10.0
    group: float = 0.01            # α_group
    bn_source: str = "auto"
    noise: float = 0.01            # Langevin noise, in units of the step size
    warmup: int = 50

    def __post_init__(self):
        check_number("lr", self.lr, low=0, low_open=True)
        check_choice("distance", self.distance, tuple(DISTANCES))
        for key in ("grad_scale", "tv", "l2", "bn", "first_bn", "group", "noise"):
            check_number(key, getattr(self, key), low=0)
        check_choice("bn_source", self.bn_source, BN_SOURCES)
        check_integer("warmup", self.warmup, low=0)


class GradInversion(Attack):
    name = "gradinversion"
    options_class = GradInversionOptions
    applies_to = (GRADIENT, UPDATE)
    # paper: 20,000 iterations; the restarts are the group of §3.3 (4 here, the paper's figure shows 4-8)
    budgets = {"ci": PresetBudget(iterations=200, restarts=2), "paper": PresetBudget(iterations=20000, restarts=4)}

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        o = self.options
        device = observation.shared[0].device
        matcher = FastGradientMatcher(observation, model, knowledge, o.distance)
        labels = attack_labels(observation, model, knowledge)
        statistics = BatchStatistics(model, observation, *self.bn_targets(observation, model, knowledge))
        shape = (budget.restarts, knowledge.num_images, *knowledge.image_shape)
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
        low, high = knowledge.box(device)
        optimiser = torch.optim.Adam([x], lr=o.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda it: warmup_cosine(it, budget.iterations, o.warmup))
        batched = matcher.batched_value_and_grad(labels, lambda xr: 0 * xr.sum()) if o.distance == "cosine" else None
        traces = []
        bar = tqdm(range(budget.iterations), desc=self.name, disable=not progress, leave=False)
        for _ in bar:
            optimiser.zero_grad()
            step = batched(x) if batched is not None else None
            if step is not None:
                matching_grad, matching = step
            else:
                batched = None
                matching = torch.stack([matcher(xr, labels) for xr in x])
                (matching_grad,) = torch.autograd.grad(matching.sum(), x)
                matching = matching.detach()
            prior = self.prior(x, statistics)
            (prior_grad,) = torch.autograd.grad(prior.sum(), x)
            x.grad = o.grad_scale * matching_grad + prior_grad
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                if o.noise > 0:
                    x.add_(torch.randn(shape, generator=generator).to(device), alpha=o.noise * schedule.get_last_lr()[0])
                x.data = torch.maximum(torch.minimum(x, high), low)
            traces.append((o.grad_scale * matching + prior.detach()).cpu())
        scored = matcher.batched_distance(labels) if batched is not None else None
        final = scored(x) if scored is not None else None
        final = (torch.stack([matcher(xr, labels) for xr in x.detach()]) if final is None else final).detach()
        winner = int(final.argmin())
        trace = torch.stack(traces)[:, winner].tolist() if traces else []
        return Reconstruction(knowledge.to_unit(x[winner].detach()), labels.detach(), trace, float(final[winner]),
                              final.tolist(), extras={"bn_source": statistics.source})

    def prior(self, x: torch.Tensor, statistics: "BatchStatistics") -> torch.Tensor:
        """Per restart: α_TV·TV + α_ℓ2·‖x‖² + α_BN·R_BN + α_group·R_group (the restarts coupled by the last)."""
        o = self.options
        terms = torch.stack([o.tv * total_variation(xr) for xr in x]) + o.l2 * x.pow(2).flatten(1).sum(1)
        if o.bn > 0 and statistics.targets:
            terms = terms + o.bn * statistics.distance(x, o.first_bn)
        if o.group > 0 and len(x) > 1:
            terms = terms + o.group * (x - x.mean(0, keepdim=True)).flatten(1).norm(dim=1)
        return terms

    def bn_targets(self, observation, model, knowledge) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        """(the source, (mean, var) per BatchNorm layer in module order) as the options name it."""
        source = self.options.bn_source
        if source == "auto":
            source = "batch" if knowledge.bn_statistics is not None else "running"
        if source == "batch":
            if knowledge.bn_statistics is None:
                raise ConfigError("attack.options.bn_source: 'batch' needs the client batch's BN statistics; use "
                                  "knowledge preset statistics_informed (or flag bn_statistics), or 'running'")
            device = observation.shared[0].device
            return source, [(m.to(device), v.to(device)) for m, v in knowledge.bn_statistics]
        return source, [(observation.buffers[f"{name}.running_mean"], observation.buffers[f"{name}.running_var"])
                        for name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]


def warmup_cosine(iteration: int, total: int, warmup: int) -> float:
    """The learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to zero."""
    if iteration < warmup:
        return (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class BatchStatistics:
    """R_BN of restarts: one forward pass of all restarts stacked, every BatchNorm layer's input
    mean and variance taken per restart over its batch, compared with the targets."""

    def __init__(self, model, observation, source: str, targets):
        self.model, self.observation, self.source, self.targets = model, observation, source, targets
        self.layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        if len(targets) != len(self.layers):
            raise ConfigError(f"GradInversion: {len(targets)} BN statistics for {len(self.layers)} BatchNorm layers")

    def distance(self, x: torch.Tensor, first_weight: float) -> torch.Tensor:
        restarts = x.shape[0]
        inputs = []
        hooks = [layer.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for layer in self.layers]
        try:
            functional_call(self.model, (self.observation.global_params, self.observation.buffers), (x.flatten(0, 1),))
        finally:
            for hook in hooks:
                hook.remove()
        total = x.new_zeros(restarts)
        for k, (h, (mean, var)) in enumerate(zip(inputs, self.targets)):
            h = h.view(restarts, -1, *h.shape[1:])
            mu = h.mean((1, 3, 4))
            sigma2 = h.var((1, 3, 4), unbiased=False)
            weight = first_weight if k == 0 else 1.0
            total = total + weight * ((mu - mean).norm(dim=1) + (sigma2 - var).norm(dim=1))
        return total
