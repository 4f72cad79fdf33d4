"""Generative Gradient Leakage (Li et al., CVPR 2022): search only the latent space of a
generator trained on auxiliary data, so every candidate is a plausible image.

Following the official code (methods.md §5):
* loss: squared L2 between trial and observed gradients summed per layer and divided by the
  number of layers (`distance="l2"`); IG's global cosine is available (`distance="cosine"`);
* CMA-ES (the paper's optimiser; here Hansen's reference `cma` package) over z passed through
  tanh, started at 0 with step size 1 (nevergrad's defaults, which GGL used); one
  `budget.iterations` is one CMA-ES generation of `population` candidates;
* or Adam on z (no tanh) with GGL's 0.1 * KLD(N(mean z, std z^2) || N(0, 1)) prior term;
* the label comes from the update (iDLG rule) unless known; a class-conditional prior
  generates within that class;
* restarts are independent searches; the winner has the lowest gradient loss.
Every loss goes through `GradientMatcher`, so a known defense is simulated (adaptive attack)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction, attack_labels
from fedleak.attacks.generators.base import GenerativePrior
from fedleak.attacks.generators.binding import BoundPrior, bind_prior
from fedleak.attacks.objective import GradientMatcher
from fedleak.core.options import check_bool, check_choice, check_integer, check_number


@dataclass(frozen=True)
class GGLConfig:
    prior: str | GenerativePrior = "digits"
    optimizer: str = "cma"          # "cma" | "adam"
    distance: str = "l2"            # GGL's per-layer mean squared L2; or "cosine"
    population: int | None = None   # CMA-ES lambda; None: cma's default 4 + 3 ln(dim)
    sigma0: float = 1.0
    tanh: bool = True               # CMA-ES only: z = tanh(u), as in GGL's BigGAN path
    lr: float = 0.1                 # Adam only
    kld: float = 0.1                # Adam only

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, ("cma", "adam"))
        check_choice("distance", self.distance, ("l2", "cosine"))
        if self.population is not None:
            check_integer("population", self.population, low=2)
        check_number("sigma0", self.sigma0, low=0, low_open=True)
        check_bool("tanh", self.tanh)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("kld", self.kld, low=0)


class GGLObjective:
    """Gradient loss of latents: G(z) -> normalised input -> GradientMatcher (per-layer mean for l2)."""

    def __init__(self, matcher: GradientMatcher, bound: BoundPrior, labels: torch.Tensor, distance: str):
        self.matcher, self.bound, self.labels = matcher, bound, labels
        self.layers = len(matcher.target) if distance == "l2" else 1

    def images(self, z: torch.Tensor) -> torch.Tensor:
        """z (R, B, *latent) -> images (R, B, C, H, W) in [0,1]."""
        r, b = z.shape[:2]
        labels = self.labels.repeat(r)
        flat = z.reshape(r * b, *z.shape[2:])
        images = self.bound.generate(flat, labels)
        return images.view(r, b, *images.shape[1:])

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """One loss per restart/candidate along z's first axis."""
        x = self.bound.model_input(self.images(z))
        return torch.stack([self.matcher(xr, self.labels) / self.layers for xr in x])


class GGL(Attack):
    name = "ggl"
    options_class = GGLConfig
    budgets = {"ci": PresetBudget(iterations=20)}  # CMA-ES generations

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        c = self.options
        device = observation.shared[0].device
        bound = bind_prior(c.prior, knowledge, self.name, device)
        labels = attack_labels(observation, model, knowledge)
        objective = GGLObjective(GradientMatcher(observation, model, knowledge, c.distance), bound, labels, c.distance)
        search = _cma if c.optimizer == "cma" else _adam
        runs = [search(objective, c, budget.iterations, knowledge.num_images, seed * 1009 + r, device, progress)
                for r in range(budget.restarts)]
        losses = [run[1] for run in runs]
        winner = int(np.argmin(losses))
        z, loss, trace, evaluations = runs[winner]
        with torch.no_grad():
            images = objective.images(z.unsqueeze(0))[0].clamp(0, 1)
        return Reconstruction(images, labels.detach(), trace, loss, losses,
                              {"objective_evaluations": sum(r[3] for r in runs), "latent": z.cpu()})


def _cma(objective: GGLObjective, c: GGLConfig, generations: int, batch: int, seed: int, device, progress):
    """CMA-ES over u (z = tanh(u) if c.tanh). Returns (z, loss, trace, evaluations); the answer
    is the better of the best candidate seen and the final distribution mean."""
    import cma
    shape = (batch, *objective.bound.prior.latent_shape)
    dim = int(np.prod(shape))
    options = {"seed": seed + 1, "verbose": -9, "maxiter": generations}
    if c.population:
        options["popsize"] = c.population
    es = cma.CMAEvolutionStrategy(np.zeros(dim), c.sigma0, options)
    to_z = lambda u: _latent(np.asarray(u), shape, c.tanh, device)
    trace, evaluations = [], 0
    bar = tqdm(range(generations), desc="ggl-cma", disable=not progress, leave=False)
    for _ in bar:
        candidates = es.ask()
        losses = objective(torch.stack([to_z(u) for u in candidates])).detach().cpu().double().numpy()
        es.tell(candidates, losses.tolist())
        evaluations += len(candidates)
        trace.append(float(losses.min()))
        bar.set_postfix(loss=f"{trace[-1]:.4g}")
    finalists = [es.result.xbest if es.result.xbest is not None else es.mean, es.result.xfavorite]
    scores = objective(torch.stack([to_z(u) for u in finalists])).detach().cpu()
    evaluations += len(finalists)
    best = int(scores.argmin())
    return to_z(finalists[best]), float(scores[best]), trace, evaluations


def _latent(u: np.ndarray, shape, tanh: bool, device) -> torch.Tensor:
    z = torch.as_tensor(u, dtype=torch.float32, device=device).view(shape)
    return torch.tanh(z) if tanh else z


def _adam(objective: GGLObjective, c: GGLConfig, steps: int, batch: int, seed: int, device, progress):
    prior = objective.bound.prior
    z = prior.sample_latent(batch, torch.Generator().manual_seed(seed)).to(device).unsqueeze(0).requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=c.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, [int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)], 0.1)
    trace = []
    bar = tqdm(range(steps), desc="ggl-adam", disable=not progress, leave=False)
    for _ in bar:
        optimiser.zero_grad()
        loss = objective(z)[0]
        (loss + c.kld * kld(z[0])).backward()
        optimiser.step()
        scheduler.step()
        trace.append(float(loss.detach()))
    final = float(objective(z.detach())[0].detach())
    return z.detach()[0], final, trace, steps + 1


def kld(z: torch.Tensor) -> torch.Tensor:
    """GGL's prior term: KL(N(mean(z_i), std(z_i)^2) || N(0, 1)) summed over samples i."""
    flat = z.reshape(z.shape[0], -1)
    mean, var = flat.mean(1), flat.var(1)
    return (0.5 * (var + mean ** 2 - 1 - var.log())).sum()
