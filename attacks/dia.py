"""Dropout Inversion Attack (Scheliga, Mäder, Seeland, "Dropout is NOT all you need to prevent
gradient leakage", AAAI 2023, §4), and its oracle WIIG ("well-informed IG", §5 baseline).

A client that trains with dropout shares the gradient of a network thinned by Bernoulli masks
the server does not see. DIA treats every mask as an unknown: one real tensor per dropout layer
(full activation shape, batch and token dimensions included), initialised Bernoulli(1−p),
optimised jointly with the image in ONE Adam (lr 0.1) and clamped to [0,1] after every step.
The objective is IG's global cosine gradient distance plus 1e-5·TV(x̂) plus, per dropout layer,
1e-4·|(1 − mean(m)) − p| which keeps each relaxed mask's drop rate near p. Only the image
gradient is replaced by its sign; the image is clamped to the valid box. ReduceLROnPlateau
(×0.1), early stopping and a hard stop at loss < 1e-5 as in the authors' configuration
(`example_configs/attacks/DIA.yaml`, 20,000 iterations, patience 800 / 4000), here with both
patiences expressed as fractions of the budget (800/20,000 and 4,000/20,000) so that a shorter
CPU budget keeps the same shape. The best iterate by objective is kept. With p = 0 it is IG with
that schedule, which is the paper's IG baseline (the eval-mode model, no masks).

`dia-oracle` (WIIG) replays the client's true masks (oracle knowledge flag `dropout_masks`) and
optimises the image alone: the upper bound DIA approaches.

The trial update goes through `GradientMatcher`, so the threat model's replay (FedSGD gradient,
or FedAvg's unrolled local steps with one mask set per step) and an adaptive attacker's defense
simulation apply unchanged.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from fedleak.core.console import progress_bar

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction, attack_labels
from fedleak.attacks.objective import DISTANCES, GradientMatcher, total_variation
from fedleak.core.errors import ConfigError, NotApplicableError
from fedleak.core.options import check_choice, check_number
from fedleak.models.architectures import clear_masks, dropout_layers, use_masks


@dataclass(frozen=True)
class DIAConfig:
    lr: float = 0.1
    tv: float = 1e-5
    mask_rate: float = 1e-4      # weight of the per-layer drop-rate term
    distance: str = "cosine"
    p: float | None = None       # dropout rate the attacker assumes; None: the published rate
    plateau: float = 0.04        # ReduceLROnPlateau patience, fraction of the iterations (800/20k)
    early_stop: float = 0.2      # stop after this fraction without improvement (4000/20k)
    stop_loss: float = 1e-5

    def __post_init__(self):
        if self.p is not None:
            check_number("p", self.p, low=0, high=1, high_open=True)
        for key in ("lr", "plateau", "early_stop"):
            check_number(key, getattr(self, key), low=0, low_open=True)
        for key in ("tv", "mask_rate", "stop_loss"):
            check_number(key, getattr(self, key), low=0)
        check_choice("distance", self.distance, tuple(DISTANCES))


class _MaskSchedule:
    """Applies `masks[k]` on the model's k-th forward pass since `reset()`: the k-th forward of
    the client's update (one for FedSGD, one per local step for FedAvg)."""

    def __init__(self, model: torch.nn.Module, masks: list[list[torch.Tensor]]):
        self.model, self.masks, self.calls = model, masks, 0
        self.handle = model.register_forward_pre_hook(self._apply)

    def _apply(self, module, args):
        if self.calls >= len(self.masks):
            raise ConfigError(f"dropout replay: the attacker's replay made more forward passes than the "
                              f"{len(self.masks)} the client's update had")
        use_masks(module, self.masks[self.calls])
        self.calls += 1

    def reset(self) -> None:
        self.calls = 0

    def close(self) -> None:
        self.handle.remove()
        clear_masks(self.model)


def activation_shapes(matcher: GradientMatcher, x: torch.Tensor, labels: torch.Tensor) -> list[list[torch.Size]]:
    """Input shape of every dropout layer in every forward pass of one replay of the client's update."""
    model = matcher.model
    layers = dropout_layers(model)
    passes: list[list[torch.Size | None]] = []
    hooks = [model.register_forward_pre_hook(lambda m, a: passes.append([None] * len(layers)))]
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(lambda m, a, i=i: passes[-1].__setitem__(i, a[0].shape)))
    try:
        matcher.trial_update(x, labels)  # eval mode, no masks: dropout is the identity here
    finally:
        for h in hooks:
            h.remove()
    return passes


class DropoutInversion(Attack):
    name = "dia"
    options_class = DIAConfig
    budgets = {"ci": PresetBudget(iterations=200)}
    oracle = False

    def dropout_rate(self, observation, knowledge) -> float:
        if self.options.p is not None:
            return float(self.options.p)
        if "dropout" in observation.public:
            return float(observation.public["dropout"])
        return float(getattr(knowledge.defense, "p", 0.0) or 0.0)

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        c = self.options
        device = observation.shared[0].device
        labels = attack_labels(observation, model, knowledge)  # before masks exist: label probes see the plain model
        p = self.dropout_rate(observation, knowledge)
        if not dropout_layers(model) and p > 0:
            raise ConfigError(f"attack '{self.name}': the model has no dropout layers, but dropout p={p} was assumed")
        if self.oracle and knowledge.dropout_masks is None:
            raise NotApplicableError(f"attack '{self.name}' needs the oracle knowledge flag dropout_masks = true")
        # The attacker's own copy: setting p and masks must not leak into the caller's model.
        model = copy.deepcopy(model)
        for layer in dropout_layers(model):
            layer.p = p
            layer.clear_mask()
        matcher = GradientMatcher(observation, model, knowledge, c.distance)
        low, high = knowledge.box(device)
        generator = torch.Generator().manual_seed(seed)
        shape = (knowledge.num_images, *knowledge.image_shape)
        shapes = activation_shapes(matcher, torch.zeros(shape, device=device), labels) if p > 0 else []
        if self.oracle and p > 0:
            true = [[m.to(device) for m in step] for step in knowledge.dropout_masks]
            if [[tuple(m.shape) for m in s] for s in true] != [[tuple(s) for s in step] for step in shapes]:
                raise ConfigError(f"attack '{self.name}': the recorded dropout masks do not fit the replay of this update "
                                  "(different threat model or local hyperparameters?)")

        best = None
        restart_losses = []
        for _ in range(budget.restarts):
            x = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
            if self.oracle:
                masks = true if p > 0 else []
                trainable = []
            else:
                masks = [[torch.bernoulli(torch.full(tuple(s), 1 - p), generator=generator).to(device).requires_grad_(True)
                          for s in step] for step in shapes]
                trainable = [m for step in masks for m in step]
            run = self._optimise(matcher, x, masks, trainable, labels, p, low, high, budget.iterations, progress)
            restart_losses.append(run["gradient_loss"])
            if best is None or run["gradient_loss"] < best["gradient_loss"]:
                best = run
        extras = {"p": p, "fallback": "ig" if p == 0 else None, "iterations_run": best["iterations_run"],
                  "best_iteration": best["best_iteration"],
                  "masks": best["masks"] if not self.oracle else None,
                  "drop_rates": [[1 - float(m.mean()) for m in step] for step in best["masks"]]}
        return Reconstruction(knowledge.to_unit(best["x"]), labels.detach(), best["trace"], best["gradient_loss"],
                              restart_losses, extras)

    def _optimise(self, matcher, x, masks, trainable, labels, p, low, high, iterations, progress) -> dict:
        c = self.options
        optimiser = torch.optim.Adam([x, *trainable], lr=c.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.1,
                                                               patience=max(1, math.ceil(c.plateau * iterations)))
        stop_after = max(1, math.ceil(c.early_stop * iterations))
        schedule = _MaskSchedule(matcher.model, masks) if masks else None
        trace, best_loss, best_it, best_x, best_masks = [], math.inf, 0, x.detach().clone(), masks
        bar = progress_bar(range(iterations), desc=self.name, enabled=progress)
        try:
            for it in bar:
                optimiser.zero_grad()
                if schedule:
                    schedule.reset()
                objective = matcher(x, labels) + c.tv * total_variation(x)
                if trainable:
                    objective = objective + c.mask_rate * sum(((1 - m.mean()) - p).abs() for m in trainable)
                loss = float(objective.detach())
                if not math.isfinite(loss):
                    break  # keep the best finite iterate rather than poisoning it
                trace.append(loss)
                if loss < best_loss:  # the iterate this loss belongs to, before the step moves it
                    best_loss, best_it = loss, it
                    best_x = x.detach().clone()
                    best_masks = [[m.detach().clone() for m in step] for step in masks]
                if best_loss < c.stop_loss or it - best_it >= stop_after:
                    break
                objective.backward()
                x.grad.sign_()  # signed step on the image only; masks take raw gradients (DIA §4)
                optimiser.step()
                with torch.no_grad():
                    x.data = torch.maximum(torch.minimum(x, high), low)
                    for m in trainable:
                        m.clamp_(0, 1)
                scheduler.step(loss)
                if progress and it % 50 == 0:
                    bar.set_postfix(loss=f"{best_loss:.2e}")
            # Scored like IG's restarts: the gradient distance alone, at the kept iterate.
            if schedule:
                schedule.close()
                schedule = _MaskSchedule(matcher.model, best_masks)
            gradient_loss = float(matcher(best_x, labels).detach())
        finally:
            if schedule:
                schedule.close()
        return {"x": best_x, "masks": best_masks, "trace": trace, "gradient_loss": gradient_loss,
                "best_iteration": best_it, "iterations_run": len(trace)}


class DropoutInversionOracle(DropoutInversion):
    """WIIG: IG through the client's true masks (oracle knowledge `dropout_masks`)."""
    name = "dia-oracle"
    oracle = True
