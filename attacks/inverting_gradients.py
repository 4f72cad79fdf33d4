"""Inverting Gradients (Geiping et al., NeurIPS 2020), following the official inversefed code:
one global cosine distance over all layers + α·TV, Adam (lr 0.1) on the SIGN of the image
gradient, the image clamped to the valid box after every step, LR ×0.1 at 3/8, 5/8 and 7/8 of the
iterations, R restarts with the winner chosen by gradient loss alone.

Against a FedAvg observation the threat model's replay unrolls the client's K local steps, which
makes this the FedAvg reconstructor of the paper. All restarts advance in lockstep as one tensor
(R,B,C,H,W) under one Adam (elementwise, so identical to R separate optimisers); their gradients
come from one replay of all restarts stacked as a batch where the replay allows it (plain FedSGD),
else from one backward through a loop. The objective is attacks.objective.FastGradientMatcher: the
same value as GradientMatcher, faster (docs/performance.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from fedleak.core.console import progress_bar

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction, attack_labels
from fedleak.attacks.batch_orders import visiting_orders
from fedleak.attacks.objective import DISTANCES, FastGradientMatcher, total_variation
from fedleak.attacks.partial_matching import PartialMatcher, check_fedleak_options, uses_fedleak
from fedleak.attacks.precision import PRECISIONS, resolve_precision
from fedleak.core.components import GRADIENT, HYPERNETWORK_UPDATE, UPDATE
from fedleak.core.options import check_bool, check_choice, check_integer, check_number


@dataclass(frozen=True)
class IGConfig:
    lr: float = 0.1
    tv: float = 1e-4          # official CLI default; the class default was 1e-1
    distance: str = "cosine"
    signed: bool = True
    boxed: bool = True
    lr_decay: bool = True
    # "bf16": the replay in bfloat16, opt-in (FastGradientMatcher); "auto": bf16 only where the device
    # computes in it natively, else fp32 (attacks.precision: emulated bf16 is 10-30x slower)
    precision: str = "fp32"
    # a shuffling client (knowledge says so) against a FedAvg replay: restarts search the visiting order
    # (attacks/batch_orders.py); off: every restart replays the stored order
    search_order: bool = True
    # FedLeak (attacks/partial_matching.py): match a `partial` fraction of the update's entries, chosen
    # by "magnitude" once or at "random" every step; + grad_reg·‖g̃‖/‖g‖ (l2 or l1)
    partial: float = 1.0
    partial_mode: str = "magnitude"
    grad_reg: float = 0.0
    grad_reg_norm: str = "l2"
    # a budget by convergence (signed_adam): `tolerance` > 0 stops when the best objective gained less than
    # that fraction over `window` iterations, after the LR decays (each taken at such a plateau instead of
    # at fixed fractions); `time_limit` > 0 stops after that many seconds; `iterations` stays the cap
    tolerance: float = 0.0
    window: int = 50
    time_limit: float = 0.0

    def __post_init__(self):
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("tv", self.tv, low=0)
        check_choice("distance", self.distance, tuple(DISTANCES))
        for key in ("signed", "boxed", "lr_decay", "search_order"):
            check_bool(key, getattr(self, key))
        check_choice("precision", self.precision, PRECISIONS)
        check_fedleak_options(self)
        check_number("tolerance", self.tolerance, low=0)
        check_integer("window", self.window, low=1)
        check_number("time_limit", self.time_limit, low=0)


class InvertingGradients(Attack):
    name = "ig"
    options_class = IGConfig
    # under hyperfl: the non-adaptive baseline on Δφ (the public embedding/head stand in for the client's)
    applies_to = (GRADIENT, UPDATE, HYPERNETWORK_UPDATE)
    # paper: inversefed's 24,000 iterations and 8 restarts (research notes §15.3)
    budgets = {"ci": PresetBudget(iterations=200), "paper": PresetBudget(iterations=24000, restarts=8)}

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        c = self.options
        precision = resolve_precision(c.precision, observation.shared[0].device.type)
        matcher = fedleak_matcher(FastGradientMatcher(observation, model, knowledge, c.distance, precision), c, seed)
        labels = attack_labels(observation, model, knowledge)
        orders = searched_orders(observation, knowledge, labels, budget, c, seed)
        return search_images(matcher, labels, knowledge, budget, c, seed, progress, self.name, orders=orders)


def fedleak_matcher(matcher, c, seed: int):
    """`matcher` with FedLeak's partial matching and gradient regulariser where the options ask for them."""
    if not uses_fedleak(c):
        return matcher
    return PartialMatcher(matcher, c.partial, c.partial_mode, c.grad_reg, c.grad_reg_norm, seed)


def searched_orders(observation, knowledge, labels: torch.Tensor, budget: Budget, c, seed: int):
    """Per restart, the visiting order its FedAvg replay assumes, where the attacker knows the client
    shuffles and there is an order to get wrong; None: the stored order for every restart."""
    training = knowledge.local_training
    if (not c.search_order or observation.kind != UPDATE or training is None or not training.shuffle
            or training.steps(knowledge.num_images) <= training.epochs):
        return None
    return visiting_orders(labels.cpu(), training.batch_size, training.epochs, budget.restarts, seed)


def search_images(matcher, labels: torch.Tensor, knowledge, budget: Budget, c: IGConfig, seed: int = 0,
                  progress: bool = False, name: str = "ig", start: torch.Tensor | None = None,
                  orders: list[list[torch.Tensor]] | None = None) -> Reconstruction:
    """IG's optimiser on any objective with GradientMatcher's interface (`matcher(x, y)`, the batched
    paths where it has them). `start` (B,C,H,W), normalised: every restart begins there instead of at
    a random draw (an analytic estimate refined by matching); restart r > 0 adds N(0, (0.1·r)²).
    `orders`: restart r's replay visits the images in orders[r] (searched_orders); the matching loss
    picks among them like among any restarts."""
    device = labels.device
    shape = (budget.restarts, knowledge.num_images, *knowledge.image_shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if start is not None:
        spread = 0.1 * torch.arange(budget.restarts, dtype=x.dtype).view(-1, *[1] * (x.dim() - 1))
        x = start.detach().cpu().to(x.dtype).unsqueeze(0) + spread * x
    x = x.to(device).requires_grad_(True)
    full = getattr(matcher, "unmasked", matcher)  # the full matching loss picks the winner (partial_matching)

    def per_restart(xs, objective=matcher):
        if orders is None:
            return torch.stack([objective(xr, labels) for xr in xs])
        values = []
        for xr, order in zip(xs, orders):
            matcher.orders = order
            values.append(objective(xr, labels))
        return torch.stack(values)
    tv = lambda xs: torch.stack([total_variation(xr) for xr in xs])
    # R > 1: the restarts as one batch where the replay allows it (each layer runs once for all of them;
    # each restart's objective and gradient are unchanged), else the loop below.
    batched = matcher.batched_value_and_grad(labels, lambda xr: c.tv * total_variation(xr)) \
        if budget.restarts > 1 and orders is None else None
    stopping = Stopping()
    traces, batched = signed_adam(x, lambda xs: per_restart(xs) + c.tv * tv(xs), knowledge, c, budget, name,
                                  progress, batched, stopping)
    scored = full.batched_distance(labels) if batched is not None and full is matcher else None
    final = scored(x) if scored is not None else None
    final = (per_restart(x.detach(), full) if final is None else final).detach()  # without TV
    winner = int(final.argmin())
    trace = torch.stack(traces)[:, winner].tolist() if traces else []
    extras = {"precision": matcher.precision, **stopping.extras()}
    if orders is not None:
        extras.update(visiting_orders=len({tuple(torch.cat(o).tolist()) for o in orders}),
                      order=torch.cat(orders[winner]).tolist())
    return Reconstruction(knowledge.to_unit(x[winner].detach()), labels.detach(), trace,
                          float(final[winner]), final.tolist(), extras=extras)


@dataclass
class Stopping:
    """What ended signed_adam's loop: `iterations` (the cap), `converged` (the tolerance) or `time`."""
    by: str = "iterations"
    iterations: int = 0

    def extras(self) -> dict:
        return {"stopped_by": self.by, "iterations_run": self.iterations}


def signed_adam(x: torch.Tensor, objective, knowledge, c: IGConfig, budget: Budget, name: str, progress: bool,
                batched=None, stopping: Stopping | None = None) -> tuple[list[torch.Tensor], object]:
    """IG's optimisation of the restarts x (R, ...) in place: Adam (lr c.lr) on the sign of the image gradient,
    LR ×0.1 at 3/8, 5/8 and 7/8 of the iterations, x clamped to the image box after every step.
    `objective(x)` is each restart's objective (R,); `batched(x)`, when given, returns (gradient, objective)
    for all restarts at once, or None to hand over to `objective` for good. Returns the objective per
    iteration and `batched` as it ended (None once it declined).

    With c.tolerance > 0 (options of IGConfig; other configs run the fixed count) the LR decays at plateaus
    instead: when the best objective over the restarts gained less than `tolerance` (relative) over the last
    `window` iterations, the LR drops ×0.1 (three times, as the fixed schedule) and the next such plateau
    stops the loop; c.time_limit > 0 stops it after that many seconds. `stopping` records which did."""
    stopping = stopping if stopping is not None else Stopping()
    tolerance, window = getattr(c, "tolerance", 0.0), getattr(c, "window", 50)
    time_limit = getattr(c, "time_limit", 0.0)
    decays_left = 3 if c.lr_decay else 0
    started, best, since = time.perf_counter(), [], 0
    low, high = knowledge.box(x.device)
    optimiser = torch.optim.Adam([x], lr=c.lr)
    milestones = [int(budget.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)] if c.lr_decay and not tolerance else []
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.1)
    traces = []
    bar = progress_bar(range(budget.iterations), desc=name, enabled=progress)
    for it in bar:
        optimiser.zero_grad()
        step = batched(x) if batched is not None else None
        if step is not None:
            x.grad, value = step
        else:
            batched = None  # the batch declined (a layer the tape cannot split): the loop from here on
            value = objective(x)
            # restarts are independent: the sum's gradient is each one's. inputs=[x]: without it
            # autograd also differentiates w.r.t. the replayed parameters (two convolutions a layer)
            value.sum().backward(inputs=[x])
        if c.signed:
            x.grad.sign_()
        optimiser.step()
        scheduler.step()
        if c.boxed:
            with torch.no_grad():
                x.data = torch.maximum(torch.minimum(x, high), low)
        traces.append(value.detach().cpu())
        stopping.iterations = it + 1
        if progress and it % 50 == 0:
            bar.set_postfix(loss=f"{value.min().item():.4f}")
        if tolerance:
            current = float(value.detach().min())
            best.append(min(current, best[-1]) if best else current)
            since += 1
            if since > window and best[-1 - window] - best[-1] <= tolerance * abs(best[-1 - window]):
                if not decays_left:
                    stopping.by = "converged"
                    break
                decays_left, since = decays_left - 1, 0
                for group in optimiser.param_groups:
                    group["lr"] *= 0.1
        if time_limit and time.perf_counter() - started > time_limit:
            stopping.by = "time"
            break
    return traces, batched
