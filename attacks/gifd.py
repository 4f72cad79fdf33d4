"""GIFD: Generative gradient Inversion via Feature Domain optimisation (Fang et al., ICCV 2023).

Search the generator progressively deeper (methods.md §7):
* stage 0 optimises the latent, projected after every step back onto the sphere of its initial
  per-sample norm;
* stage s = 1..S optimises the intermediate feature h_s (the input of block s), started from
  where the previous stage ended (h_1 = features(1, z*), h_{s+1} = block(s, h_s*)), and after
  every step projects h_s − centre onto an L1 ball (per sample, Duchi et al.'s sort-based
  simplex projection) around that start. When later blocks read the latent (StyleGAN2's
  styles) it keeps being optimised too, inside its own L1 ball;
* every stage: fresh Adam (lr 0.1), linear warm-up over the first 5% of its steps and a cosine
  ramp-down over the last 75% (evaluated at mid-step, so no step has lr 0); loss = gradient
  distance (global cosine) + 1e-4 TV + 1e-6 ||x||_2 / (H W), all through `GradientMatcher`,
  so a known defense is simulated inside the loss;
* R restarts advance in lockstep; every stage's end is scored by the gradient loss alone and
  the (stage, restart) with the LOWEST loss is returned. (The official `choose_optimal`
  returns the last restart's image with the best restart's score; not copied.)

Scaling to fedleak's small priors. `budget.iterations` is the TOTAL number of Adam steps, split
evenly over the 1 + S stages (GIFD runs 1000 per stage for 13 BigGAN stages), so budgets
compare with IG's directly. S defaults to num_blocks − 1: like GIFD on BigGAN, the last block's
output (the input of the to-RGB head) is not searched, where the ball would let the search
leave the generator's range almost entirely. GIFD's radii are absolute L1 norms tuned for
BigGAN-deep-256 features of 3e4 to 4e6 entries (1000 growing to 7500, i.e. a shrinking budget
per entry); here a radius is a FRACTION of the stage-start feature's per-sample L1 norm, so it
transfers across generators and activation scales. `radii` (one per feature stage, the last
repeated) defaults to (0.3, 0.2, 0.1): on auxiliary-split pseudo-victims (never victims;
`tools/compare_generative.py --tune`, LeNet, 4 images) it beat (1, 1, 1), (0.1, 0.05, 0.03),
(0.03, 0.02, 0.01) and 0 without a defense, and in a 2-image check under top-10% pruning. Under
strong additive noise tighter radii do better: the deeper, looser stages fit the noise, lower the
gradient loss and so win the selection with worse images (docs/attacks.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction, attack_labels
from fedleak.attacks.generators.base import GenerativePrior, state_map, state_tensors
from fedleak.attacks.generators.binding import BoundPrior, bind_prior
from fedleak.attacks.objective import DISTANCES, GradientMatcher, total_variation
from fedleak.core.options import OptionError, check_choice, check_integer, check_number
from fedleak.attacks.projections import project_l1_ball, project_sphere


@dataclass(frozen=True)
class GIFDConfig:
    prior: str | GenerativePrior = "digits"
    distance: str = "cosine"
    lr: float = 0.1
    tv: float = 1e-4
    image_norm: float = 1e-6
    radii: tuple[float, ...] = (0.3, 0.2, 0.1)
    feature_stages: int | None = None   # S; None: num_blocks − 1
    warmup: float = 0.05
    rampdown: float = 0.75

    def __post_init__(self):
        check_choice("distance", self.distance, tuple(DISTANCES))
        check_number("lr", self.lr, low=0, low_open=True)
        for key in ("tv", "image_norm"):
            check_number(key, getattr(self, key), low=0)
        for key in ("warmup", "rampdown"):
            check_number(key, getattr(self, key), low=0, high=1)
        if not isinstance(self.radii, (list, tuple)) or not self.radii:
            raise OptionError("radii", f"must be a non-empty list of fractions >= 0, got {self.radii!r}")
        object.__setattr__(self, "radii", tuple(check_number(f"radii[{i}]", r, low=0) for i, r in enumerate(self.radii)))
        if self.feature_stages is not None:
            check_integer("feature_stages", self.feature_stages, low=0)


def stage_lr(lr: float, step: int, steps: int, warmup: float, rampdown: float) -> float:
    """StyleGAN2-projector schedule used by GIFD, evaluated at the middle of step `step`."""
    t = (step + 0.5) / steps
    ramp = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - t) / rampdown)) if rampdown > 0 else 1.0
    return lr * min(1.0, t / warmup if warmup > 0 else 1.0) * ramp


def split_iterations(total: int, stages: int) -> list[int]:
    """`total` steps over `stages` stages as evenly as possible, earlier stages first."""
    base, extra = divmod(total, stages)
    return [base + (1 if s < extra else 0) for s in range(stages)]


def select_lowest(losses: torch.Tensor) -> tuple[int, int]:
    """(stage, restart) of the smallest entry of a (stages, restarts) loss table; NaN never wins."""
    table = torch.nan_to_num(losses.double(), nan=float("inf"))
    flat = int(table.argmin())
    return divmod(flat, table.shape[1])


def relative_radius(centre: torch.Tensor, fraction: float) -> torch.Tensor:
    return fraction * centre.reshape(centre.shape[0], -1).abs().sum(1)


class _Objective:
    def __init__(self, matcher, bound: BoundPrior, labels, restarts, config: GIFDConfig):
        self.matcher, self.bound, self.labels, self.restarts, self.c = matcher, bound, labels, restarts, config
        self.flat_labels = labels.repeat(restarts)

    def images(self, k, h, latent):
        unit = self.bound.image(k, h, latent, self.flat_labels)
        return unit.view(self.restarts, -1, *unit.shape[1:])

    def gradient_loss(self, unit):
        return torch.stack([self.matcher(self.bound.model_input(u), self.labels) for u in unit])

    def regulariser(self, unit):
        x = self.bound.model_input(unit)
        pixels = x.shape[-1] * x.shape[-2]
        return torch.stack([self.c.tv * total_variation(xr) + self.c.image_norm * xr.norm() / pixels for xr in x])


class GIFD(Attack):
    name = "gifd"
    options_class = GIFDConfig
    budgets = {"ci": PresetBudget(iterations=50)}

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        c = self.options
        device = observation.shared[0].device
        bound = bind_prior(c.prior, knowledge, self.name, device)
        prior = bound.prior
        labels = attack_labels(observation, model, knowledge)
        restarts, batch = budget.restarts, knowledge.num_images
        objective = _Objective(GradientMatcher(observation, model, knowledge, c.distance), bound, labels, restarts, c)
        feature_stages = prior.num_blocks - 1 if c.feature_stages is None else min(c.feature_stages, prior.num_blocks)
        feature_stages = min(feature_stages, budget.iterations - 1)
        steps = split_iterations(budget.iterations, feature_stages + 1)
        cond = bound.condition(objective.flat_labels)

        latent = prior.sample_latent(restarts * batch, torch.Generator().manual_seed(seed)).to(device)
        norms = latent.reshape(len(latent), -1).norm(dim=1)
        h, traces, stage_losses, stage_images = None, [], [], []
        bar = tqdm(total=budget.iterations, desc=self.name, disable=not progress, leave=False)
        for stage in range(feature_stages + 1):
            with torch.no_grad():
                if stage == 1:
                    h = prior.features(1, latent, cond)
                elif stage > 1:
                    h = prior.block(stage - 1, h, latent, cond)
            h, latent, trace = self._optimise_stage(stage, h, latent, norms, objective, steps[stage], bar)
            traces += trace
            with torch.no_grad():
                unit = objective.images(stage, h if stage else prior.stem(latent, cond), latent)
            # the replay differentiates w.r.t. the weights, so it cannot run under no_grad
            stage_losses.append(objective.gradient_loss(unit).detach().cpu())
            stage_images.append(unit.clamp(0, 1))
        bar.close()
        losses = torch.stack(stage_losses)
        best_stage, best_restart = select_lowest(losses)
        trace = [float(t[best_restart]) for t in traces[:sum(steps[:best_stage + 1])]]
        return Reconstruction(stage_images[best_stage][best_restart], labels.detach(), trace,
                              float(losses[best_stage, best_restart]), losses.min(0).values.tolist(),
                              {"stage_losses": losses.tolist(), "chosen_stage": best_stage,
                               "chosen_restart": best_restart, "stage_iterations": steps,
                               "stage_images": torch.stack(stage_images).cpu()})  # (stages, R, B, C, H, W)

    def _optimise_stage(self, stage, h, latent, norms, objective: _Objective, steps, bar):
        c, prior = self.options, objective.bound.prior
        cond = objective.bound.condition(objective.flat_labels)
        fraction = c.radii[min(stage, len(c.radii)) - 1] if stage else None
        train_latent = stage == 0 or prior.latent_drives_blocks
        latent = latent.detach().clone().requires_grad_(train_latent)
        variables = [latent] if train_latent else []
        if stage:
            h = state_map(lambda t: t.detach().clone().requires_grad_(True), h)
            centres = [t.detach().clone() for t in state_tensors(h)]
            radii = [relative_radius(t, fraction) for t in centres]
            latent_centre = latent.detach().clone()
            variables += state_tensors(h)
        optimiser = torch.optim.Adam(variables, lr=c.lr)
        trace = []
        for step in range(steps):
            for group in optimiser.param_groups:
                group["lr"] = stage_lr(c.lr, step, steps, c.warmup, c.rampdown)
            optimiser.zero_grad()
            unit = objective.images(stage, h if stage else prior.stem(latent, cond), latent)
            loss = objective.gradient_loss(unit) + objective.regulariser(unit)
            loss.sum().backward()  # restarts are independent: the sum's gradient is each one's
            optimiser.step()
            with torch.no_grad():
                if stage == 0:
                    latent.copy_(project_sphere(latent, norms))
                else:
                    for t, centre, radius in zip(state_tensors(h), centres, radii):
                        t.copy_(centre + project_l1_ball(t - centre, radius))
                    if train_latent:
                        latent.copy_(latent_centre + project_l1_ball(latent - latent_centre,
                                                                     relative_radius(latent_centre, fraction)))
            trace.append(loss.detach().cpu())
            bar.update(1)
        return (state_map(lambda t: t.detach(), h) if stage else None), latent.detach(), trace
