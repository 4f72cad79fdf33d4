"""Differential privacy: clipping plus Gaussian noise, at the user or at the example level.

* ``mode="update"`` (user level, DP-FedAvg of McMahan et al., ICLR 2018, §2 "clip the update to
  norm S, add N(0, σ²S²)"): the client clips its whole shared update to L2 norm `clip` and adds
  N(0, (σ·clip)²) to every coordinate before sending. The noise is added by the CLIENT, since the
  attacker here is the server itself; a server adding the noise to the aggregate would protect
  nothing against it. One round is one Gaussian mechanism with sensitivity `clip`
  (add/remove-one-user), accounted with sampling rate = fraction of clients per round.
* ``mode="dpsgd"`` (example level, Abadi et al., CCS 2016, Algorithm 1): every local step takes
  per-example gradients, clips each to `clip`, sums, adds N(0, σ²·clip²) and divides by the batch
  size (`gradient_fn`). What is sent is the plain result of local training.

Noise multiplier: `sigma` directly, or `target_epsilon` (+ `delta`, `steps`, `sampling_rate`)
calibrated by Opacus's `get_noise_multiplier`; ε of any run comes from an Opacus accountant
(`privacy`). The accountants assume Poisson sampling at rate `sampling_rate`; the harness's local
training walks mini-batches in a fixed order, so the reported ε is the usual DP-SGD reporting
convention, not a proof for that exact sampler. BatchNorm running statistics are not privatised
(Opacus refuses BN models for this reason); they are averaged in the clear by the victim's FedAvg.

Adaptive attack ("noise-aware", notes §12.1 and §15.2): the attacker knows `clip` and σ (they are
in `public`) but not the noise. `simulate` applies the same user-level clipping to the trial
update; for DP-SGD the attacker's replay clips per example (`replay_gradient_fn`, noiseless), so a
B>1 trial batch is shaped exactly like the client's. Noise cannot be simulated, so this module
leaves the distance to the attack: cosine (IG) is the robust choice because the noise is isotropic
and hurts only through the norm; with `l2` (DLG) the objective is already the Gaussian negative
log-likelihood of the observation up to the constant factor 1/(2·noise_std²), which is published
as `public["noise_std"]` for an attack that wants to weigh it against a prior."""
from __future__ import annotations

import math
import warnings

import torch

from fedleak.defenses import options, seeding
from fedleak.defenses.base import Defense, ShareContext
from fedleak.defenses.per_example import clip_per_example, clip_update, per_example_gradients
from fedleak.core.errors import ConfigError

ACCOUNTANTS = ("rdp", "prv")


class DifferentialPrivacy(Defense):
    """`sigma` is the noise multiplier (std = sigma·clip); with neither sigma nor target_epsilon it
    is 1.0. `steps` and `sampling_rate` only calibrate `target_epsilon`; `privacy()` takes the
    run's own. `privacy_unit` tells harness/utility.py how to count mechanisms."""
    name = "dp"

    def __init__(self, mode: str = "update", clip: float = 1.0, sigma: float | None = None,
                 target_epsilon: float | None = None, delta: float = 1e-5, steps: int = 1,
                 sampling_rate: float = 1.0, accountant: str = "rdp", noise_seed: int = 0):
        n = self.name
        self.mode = options.choice(n, "mode", mode, ("update", "dpsgd"))
        self.clip = options.number(n, "clip", clip, low=0, low_open=True)
        self.delta = options.number(n, "delta", delta, low=0, high=1, low_open=True, high_open=True)
        self.steps = options.integer(n, "steps", steps, low=1)
        self.sampling_rate = options.number(n, "sampling_rate", sampling_rate, low=0, high=1, low_open=True)
        self.accountant = options.choice(n, "accountant", accountant, ACCOUNTANTS)
        self.noise_seed = options.integer(n, "noise_seed", noise_seed, low=0)
        if sigma is not None and target_epsilon is not None:
            raise ConfigError(f"defense '{n}': set sigma or target_epsilon, not both")
        self.target_epsilon = None
        if target_epsilon is not None:
            self.target_epsilon = options.number(n, "target_epsilon", target_epsilon, low=0, low_open=True)
            self.sigma = self._calibrate()
        else:
            self.sigma = options.number(n, "sigma", 1.0 if sigma is None else sigma, low=0)
        # user level: one mechanism per shared update; example level: one per local step
        self.privacy_unit = "user" if self.mode == "update" else "example"
        self._calls = 0  # advances the private noise stream of gradient_fn

    @property
    def noise_std(self) -> float:
        return self.sigma * self.clip

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        public = {"mode": self.mode, "clip": self.clip, "sigma": self.sigma, "noise_std": self.noise_std}
        if self.mode == "dpsgd":
            return [u.detach().clone() for u in update], public
        clipped = clip_update([u.detach() for u in update], self.clip)
        gen = seeding.generator("dp-update", self.noise_seed, context.seed, context.client_id, context.round)
        return [c + self.noise_std * seeding.randn(c.shape, gen, c) for c in clipped], public

    def simulate(self, trial: list[torch.Tensor], observation) -> list[torch.Tensor]:
        return clip_update(trial, self.clip) if self.mode == "update" else trial

    def gradient_fn(self):
        if self.mode != "dpsgd":
            return None

        def private_step(model, params, buffers, x, y):
            self._calls += 1
            gen = seeding.generator("dp-sgd", self.noise_seed, self._calls)
            return self._mean_clipped_gradient(model, params, buffers, x, y, gen, create_graph=False)
        return private_step

    def replay_gradient_fn(self):
        if self.mode != "dpsgd":
            return None
        return lambda model, params, buffers, x, y: self._mean_clipped_gradient(model, params, buffers, x, y, None,
                                                                               create_graph=True)

    def _mean_clipped_gradient(self, model, params, buffers, x, y, gen, create_graph: bool) -> list[torch.Tensor]:
        """Abadi et al. Alg. 1 for one lot: (Σ_i clip(g_i) + N(0, σ²C²)) / B; no noise when gen is None."""
        clipped = clip_per_example(per_example_gradients(model, params, buffers, x, y, create_graph), self.clip)
        total = [g.sum(0) for g in clipped]
        if gen is not None and self.noise_std > 0:
            total = [t + self.noise_std * seeding.randn(t.shape, gen, t) for t in total]
        return [t / x.shape[0] for t in total]

    def privacy(self, steps: int, sampling_rate: float) -> dict | None:
        """(ε, δ) after `steps` Gaussian mechanisms at `sampling_rate`, from Opacus's accountant."""
        if self.sigma == 0:
            return {"epsilon": math.inf, "delta": self.delta}
        from opacus.accountants import create_accountant  # slow import; only when asked
        accountant = create_accountant(mechanism=self.accountant)
        accountant.history = [(self.sigma, float(sampling_rate), int(steps))]
        with warnings.catch_warnings():
            # tiny σ: the best RDP order is the smallest one tried; ε is astronomically large either way
            warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")
            epsilon = float(accountant.get_epsilon(delta=self.delta))
        return {"epsilon": epsilon, "delta": self.delta}

    def _calibrate(self) -> float:
        from opacus.accountants.utils import get_noise_multiplier
        try:
            return float(get_noise_multiplier(target_epsilon=self.target_epsilon, target_delta=self.delta,
                                              sample_rate=self.sampling_rate, steps=self.steps,
                                              accountant=self.accountant))
        except ValueError as e:
            raise ConfigError(f"defense '{self.name}': target_epsilon {self.target_epsilon} unreachable "
                              f"at delta {self.delta}, {self.steps} steps: {e}") from None

    def describe(self) -> dict:
        return {"mode": self.mode, "clip": self.clip, "sigma": self.sigma, "target_epsilon": self.target_epsilon,
                "delta": self.delta, "steps": self.steps, "sampling_rate": self.sampling_rate,
                "accountant": self.accountant, "noise_seed": self.noise_seed}
