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
calibrated by Opacus's `get_noise_multiplier`. What ε means (`privacy`, docs/privacy.md):

* the neighbouring relation: user level (mode update), two datasets differ by one client's whole
  update; example level (dpsgd), by one example of one client's data (add/remove);
* at sampling rate 1 (every client in every round, or the attacked round itself: the server sees
  the update, so no amplification by sampling applies against it), `steps` Gaussian mechanisms of
  sensitivity `clip` and noise σ·clip compose exactly into one Gaussian mechanism of μ = √steps/σ
  (Dong, Roth & Su, "Gaussian Differential Privacy", JRSS-B 2022, Cor. 3.3), whose tight (ε, δ)
  is Balle & Wang's analytic Gaussian mechanism (ICML 2018, Thm. 8); both accountants return it;
* below rate 1, Opacus's accountant (`rdp`, or `prv` while its discretisation can hold ε: Opacus's
  PRV grid spans ±ε_RDP and its tail sums overflow float64 beyond e^709, so at σ = 0.01 it returned
  inf, or ran out of memory; there the RDP bound is reported and `accountant` says so).

The accountants assume Poisson sampling at rate `sampling_rate`; the harness's local training walks
mini-batches in a fixed order, so an ε below rate 1 is the usual DP-SGD reporting convention, not a
proof for that exact sampler. BatchNorm running statistics are not privatised (Opacus refuses BN
models for this reason); they are averaged in the clear by the victim's FedAvg.

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
from dataclasses import dataclass

import torch

from fedleak.core.options import OptionError, check_choice, check_integer, check_number
from fedleak.defenses import seeding
from fedleak.defenses.base import Defense, ShareContext
from fedleak.defenses.per_example import clip_per_example, clip_update, per_example_gradients

ACCOUNTANTS = ("rdp", "prv")
NEIGHBOURING = {"user": "add/remove one client's update (user level)",
                "example": "add/remove one example of a client's data (example level)"}
# Beyond this ε Opacus's PRV discretisation (a grid over ±ε_RDP, tail sums in float64) overflows or
# exhausts memory; the RDP bound stands in (measured: σ = 0.01 → inf; σ = 0.3, 10 steps → 40, fine)
PRV_LIMIT = 100.0


@dataclass(frozen=True)
class DPOptions:
    """`sigma` is the noise multiplier (std = sigma·clip); with neither sigma nor target_epsilon it
    is 1.0. `steps` and `sampling_rate` only calibrate `target_epsilon`; `privacy()` takes the
    run's own."""
    mode: str = "update"
    clip: float = 1.0
    sigma: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    steps: int = 1
    sampling_rate: float = 1.0
    accountant: str = "rdp"
    noise_seed: int = 0

    def __post_init__(self):
        check_choice("mode", self.mode, ("update", "dpsgd"))
        check_number("clip", self.clip, low=0, low_open=True)
        check_number("delta", self.delta, low=0, high=1, low_open=True, high_open=True)
        check_integer("steps", self.steps, low=1)
        check_number("sampling_rate", self.sampling_rate, low=0, high=1, low_open=True)
        check_choice("accountant", self.accountant, ACCOUNTANTS)
        check_integer("noise_seed", self.noise_seed, low=0)
        if self.sigma is not None and self.target_epsilon is not None:
            raise OptionError("target_epsilon", "set sigma or target_epsilon, not both")
        if self.target_epsilon is not None:
            check_number("target_epsilon", self.target_epsilon, low=0, low_open=True)
        elif self.sigma is None:
            object.__setattr__(self, "sigma", 1.0)
        else:
            check_number("sigma", self.sigma, low=0)


class DifferentialPrivacy(Defense):
    """`sigma` is the noise multiplier in use (calibrated from `target_epsilon` when that is set);
    `privacy_unit` tells harness/utility.py how to count mechanisms."""
    name = "dp"
    options_class = DPOptions

    def __init__(self, options: DPOptions | None = None, **values):
        super().__init__(options, **values)
        self.sigma = self.options.sigma if self.options.target_epsilon is None else self._calibrate()
        # user level: one mechanism per shared update; example level: one per local step
        self.privacy_unit = "user" if self.options.mode == "update" else "example"
        self._calls = 0  # advances the private noise stream of gradient_fn

    @property
    def noise_std(self) -> float:
        return self.sigma * self.options.clip

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        o = self.options
        public = {"mode": o.mode, "clip": o.clip, "sigma": self.sigma, "noise_std": self.noise_std}
        if o.mode == "dpsgd":
            return [u.detach().clone() for u in update], public
        clipped = clip_update([u.detach() for u in update], o.clip)
        gen = seeding.generator("dp-update", o.noise_seed, context.seed, context.client_id, context.round)
        return [c + self.noise_std * seeding.randn(c.shape, gen, c) for c in clipped], public

    def simulate(self, trial: list[torch.Tensor], observation) -> list[torch.Tensor]:
        return clip_update(trial, self.options.clip) if self.options.mode == "update" else trial

    def gradient_fn(self):
        if self.options.mode != "dpsgd":
            return None

        def private_step(model, params, buffers, x, y):
            self._calls += 1
            gen = seeding.generator("dp-sgd", self.options.noise_seed, self._calls)
            return self._mean_clipped_gradient(model, params, buffers, x, y, gen, create_graph=False)
        return private_step

    def replay_gradient_fn(self):
        if self.options.mode != "dpsgd":
            return None
        return lambda model, params, buffers, x, y: self._mean_clipped_gradient(model, params, buffers, x, y, None,
                                                                               create_graph=True)

    def _mean_clipped_gradient(self, model, params, buffers, x, y, gen, create_graph: bool) -> list[torch.Tensor]:
        """Abadi et al. Alg. 1 for one lot: (Σ_i clip(g_i) + N(0, σ²C²)) / B; no noise when gen is None."""
        clipped = clip_per_example(per_example_gradients(model, params, buffers, x, y, create_graph),
                                   self.options.clip)
        total = [g.sum(0) for g in clipped]
        if gen is not None and self.noise_std > 0:
            total = [t + self.noise_std * seeding.randn(t.shape, gen, t) for t in total]
        return [t / x.shape[0] for t in total]

    def privacy(self, steps: int, sampling_rate: float) -> dict | None:
        """(ε, δ) after `steps` Gaussian mechanisms at `sampling_rate`, the neighbouring relation they
        hold for, and the accountant that computed them (module docstring)."""
        delta = self.options.delta
        out = {"delta": delta, "neighbouring": NEIGHBOURING[self.privacy_unit], "steps": int(steps),
               "sampling_rate": float(sampling_rate)}
        if self.sigma == 0:
            return {**out, "epsilon": math.inf, "accountant": "none (no noise)"}
        if sampling_rate >= 1:
            return {**out, "epsilon": gaussian_epsilon(math.sqrt(steps) / self.sigma, delta),
                    "accountant": "exact (composed Gaussian mechanism)"}
        accountant = self.options.accountant
        if accountant == "prv" and _rdp_epsilon(self.sigma, sampling_rate, steps, delta) > PRV_LIMIT:
            accountant, note = "rdp", f"rdp (prv cannot hold ε > {PRV_LIMIT:g})"
        else:
            note = accountant
        epsilon = _rdp_epsilon(self.sigma, sampling_rate, steps, delta) if accountant == "rdp" else \
            _opacus_epsilon("prv", self.sigma, sampling_rate, steps, delta)
        return {**out, "epsilon": epsilon, "accountant": note}

    def _calibrate(self) -> float:
        from opacus.accountants.utils import get_noise_multiplier
        o = self.options
        try:
            return float(get_noise_multiplier(target_epsilon=o.target_epsilon, target_delta=o.delta,
                                              sample_rate=o.sampling_rate, steps=o.steps, accountant=o.accountant))
        except ValueError as e:
            raise OptionError("target_epsilon", f"{o.target_epsilon} unreachable at delta {o.delta}, "
                                                f"{o.steps} steps: {e}") from None


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The smallest ε for which a μ-GDP mechanism (one Gaussian mechanism of sensitivity Δ and noise
    Δ/μ) is (ε, δ)-DP: δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) (Balle & Wang, ICML 2018, Thm. 8;
    Dong et al. 2022, Cor. 2.13), solved by bisection in log space (exact at any μ, e.g. μ = 316)."""
    from scipy.special import log_ndtr
    if mu <= 0:
        return 0.0

    def excess(epsilon: float) -> float:  # δ(ε) − δ, decreasing in ε
        a, b = log_ndtr(-epsilon / mu + mu / 2), epsilon + log_ndtr(-epsilon / mu - mu / 2)
        return math.exp(a) * -math.expm1(b - a) - delta if b < a else -delta

    if excess(0.0) <= 0:
        return 0.0
    low, high = 0.0, mu * mu / 2 + mu * math.sqrt(2 * math.log(1 / delta)) + 1.0
    while excess(high) > 0:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if excess(middle) > 0 else (low, middle)
        if high - low <= 1e-9 * max(1.0, high):
            break
    return high


def _rdp_epsilon(sigma: float, sampling_rate: float, steps: int, delta: float) -> float:
    return _opacus_epsilon("rdp", sigma, sampling_rate, steps, delta)


def _opacus_epsilon(mechanism: str, sigma: float, sampling_rate: float, steps: int, delta: float) -> float:
    from opacus.accountants import create_accountant  # slow import; only when asked
    accountant = create_accountant(mechanism=mechanism)
    accountant.history = [(sigma, float(sampling_rate), int(steps))]
    with warnings.catch_warnings():
        # tiny σ: the best RDP order is the smallest one tried; ε is astronomically large either way
        warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")
        return float(accountant.get_epsilon(delta=delta))
