"""Feature reconstruction from what a vertical-FL party sends (threat_models/vfl.py).

* `embedding-inversion` (white-box model inversion, as HashVFL's `target_reconstruct.py`, Qiu et
  al. TIFS 2024 §VI): optimise x̂ of the party's slice so that its bottom model reproduces the
  observed message. Real embeddings: normalised MSE. Hash codes (defenses/hashing.py), attacker
  who knows the defense: the message is sign(BN(f(x))), which has no useful gradient, so the
  objective is a sign-agreement loss on z = BN(f(x̂)) before the sign (methods.md §11 "adaptive
  attack"): a hinge mean max(0, m − code·z), or softplus(−code·z); an attacker who does not know it matches the raw bottom
  output to the ±1 code by MSE. Priors: TV and a pull towards the starting image, which is the
  mean auxiliary slice when the attacker has auxiliary data, else the constant 0.5 of HashVFL.
* `embedding-decoder` (learning-based inversion; He et al., ACSAC 2019): the attacker runs the
  bottom model (and codec) on its auxiliary images, trains a decoder message → slice on those
  pairs (attacks/decoders.py) and decodes the observed message. Against codes this is the best
  a `bits`-bit message allows in MSE: E[x | code] over the auxiliary distribution."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call
from tqdm.auto import tqdm

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction
from fedleak.attacks.decoders import fit_decoder
from fedleak.attacks.objective import total_variation
from fedleak.core.components import EMBEDDING
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_bool, check_integer, check_number


def _is_code(observation) -> bool:
    return "bits" in observation.public


def _message(model, observation, x, party: int, stage: str) -> torch.Tensor:
    return functional_call(model, (observation.global_params, observation.buffers), (x,), {"party": party, "stage": stage})


def _auxiliary_slices(model, knowledge, party: int, attack: str) -> torch.Tensor:
    if knowledge.auxiliary_images is None:
        raise ConfigError(f"attack '{attack}' needs auxiliary data (knowledge preset 'data_enhanced')")
    return model.party_slice(knowledge.auxiliary_images, party)


def _normalise(images, knowledge):
    m = torch.tensor(knowledge.mean, device=images.device).view(-1, 1, 1)
    s = torch.tensor(knowledge.std, device=images.device).view(-1, 1, 1)
    return (images - m) / s


@dataclass(frozen=True)
class EmbeddingInversionConfig:
    lr: float = 0.1
    tv: float = 0.05
    prior: float = 0.01       # weight of ‖x̂ − start‖² (per pixel) against real embeddings
    code_prior: float = 1.0   # ... against codes, which pin down little beyond the prior
    margin: float | None = 0.5  # codes: hinge max(0, margin − code·z); None: softplus(−code·z),
                                # which keeps pushing past agreement (digits: 10 dB vs 12.5 dB)
    noise: float = 0.1        # per-restart jitter of the start, in normalised units
    lr_decay: bool = True

    def __post_init__(self):
        check_number("lr", self.lr, low=0, low_open=True)
        for key in ("tv", "prior", "code_prior", "noise"):
            check_number(key, getattr(self, key), low=0)
        if self.margin is not None:
            check_number("margin", self.margin, low=0)
        check_bool("lr_decay", self.lr_decay)


class EmbeddingInversion(Attack):
    name = "embedding-inversion"
    options_class = EmbeddingInversionConfig
    applies_to = (EMBEDDING,)
    budgets = {"ci": PresetBudget(iterations=50)}

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        self.check_observation(observation)
        c, party = self.options, observation.public["party"]
        model.eval()
        device = observation.shared[0].device
        target = observation.update[0].detach()
        stage, distance = self._objective(observation, knowledge)
        prior = c.code_prior if _is_code(observation) else c.prior
        start = self._start(model, knowledge, party, device)
        generator = torch.Generator().manual_seed(seed)
        jitter = torch.randn((budget.restarts, *target.shape[:1], *knowledge.image_shape), generator=generator).to(device)
        jitter[0] = 0  # the first restart starts exactly at the prior image
        x = (start + c.noise * jitter).requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=c.lr)
        milestones = [int(budget.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)] if c.lr_decay else []
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.1)
        low, high = knowledge.box(device)
        match = lambda xs: torch.stack([distance(_message(model, observation, xr, party, stage), target) for xr in xs])
        traces = []
        for _ in tqdm(range(budget.iterations), desc=self.name, disable=not progress, leave=False):
            optimiser.zero_grad()
            regular = torch.stack([c.tv * total_variation(xr) + prior * (xr - start).pow(2).mean() for xr in x])
            objective = match(x) + regular
            objective.sum().backward()
            optimiser.step()
            scheduler.step()
            with torch.no_grad():
                x.data = torch.maximum(torch.minimum(x, high), low)
            traces.append(objective.detach().cpu())
        final = match(x.detach()).detach().cpu()
        winner = int(final.argmin())
        trace = torch.stack(traces)[:, winner].tolist() if traces else []
        return Reconstruction(knowledge.to_unit(x[winner].detach()), knowledge.labels.cpu(), trace, float(final[winner]),
                              final.tolist(), {"objective": stage})

    def _objective(self, observation, knowledge):
        """(which output of the party's model to compare, distance to the observed message)."""
        if not _is_code(observation):
            return "sent", lambda e, t: (e - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-12)
        if knowledge.defense is not None:
            if self.options.margin is not None:
                return "pre", lambda z, code: F.relu(self.options.margin - code * z).mean()
            return "pre", lambda z, code: F.softplus(-code * z).mean()
        return "raw", lambda e, code: (e - code).pow(2).mean()

    def _start(self, model, knowledge, party, device) -> torch.Tensor:
        if knowledge.auxiliary_images is not None:
            mean = model.party_slice(knowledge.auxiliary_images, party).mean(0).to(device)
        else:
            mean = torch.full(knowledge.image_shape, 0.5, device=device)  # HashVFL's start
        return _normalise(mean, knowledge).expand(knowledge.num_images, *knowledge.image_shape)


@dataclass(frozen=True)
class EmbeddingDecoderConfig:
    hidden: int = 512
    batch_size: int = 128
    lr: float = 1e-3

    def __post_init__(self):
        check_integer("hidden", self.hidden, low=1)
        check_integer("batch_size", self.batch_size, low=1)
        check_number("lr", self.lr, low=0, low_open=True)


class EmbeddingDecoder(Attack):
    """budget.iterations = decoder training steps; restarts are not used."""
    name = "embedding-decoder"
    options_class = EmbeddingDecoderConfig
    applies_to = (EMBEDDING,)
    budgets = {"ci": PresetBudget(iterations=50)}  # decoder training steps

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        self.check_observation(observation)
        c, party = self.options, observation.public["party"]
        model.eval()
        device = observation.shared[0].device
        aux = _auxiliary_slices(model, knowledge, party, self.name).to(device)
        with torch.no_grad():
            codes = torch.cat([_message(model, observation, _normalise(aux[s:s + 500], knowledge), party, "sent")
                               for s in range(0, len(aux), 500)])
        decode = fit_decoder(codes, aux, budget.iterations, seed=seed, hidden=c.hidden, batch_size=c.batch_size, lr=c.lr)
        target = observation.update[0].detach()
        images = decode(target)
        with torch.no_grad():
            again = _message(model, observation, _normalise(images, knowledge), party, "sent")
        # how well the estimate reproduces the message: bit errors for codes, relative MSE otherwise
        mismatch = (again != target).float().mean() if _is_code(observation) else (again - target).pow(2).sum() / target.pow(2).sum()
        return Reconstruction(images, knowledge.labels.cpu(), [], float(mismatch), [float(mismatch)], {})
