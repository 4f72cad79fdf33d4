"""The defense in the attacker's loop: the defense's own `share`, run by the attacker with the round's
public context, made differentiable where it is not, averaged over randomness the attacker draws itself.

An evaluation is only as strong as an attack designed by someone trying to break the defense (Tramèr,
Carlini, Brendel, Madry, NeurIPS 2020); the author's `simulate` is one such model, written by the party
with the least interest in a strong attack. This module needs nothing from the author but `share`:

* **the client's pipeline** (`client_copy`): a deep copy of the user's configured instance (as the round
  began: threat_models.base.configured_copy), on which the client's steps run as the client runs them:
  `check_model` on the model the server sent, `prepare_model` (state a `share` may need), then `share`
  on the update the threat model's replay computes (with the defense's `gradient_fn` modelled by its
  `replay_gradient_fn`). Only where the instance cannot be copied is the class rebuilt from its options
  (`attacker_copy`).
* **private randomness** (`private_attributes`): what the client keeps secret is not the attacker's. An
  option or attribute named in the class's `private_attributes`, or by default any int/str/generator
  one whose name contains seed, secret, key, private, rng or generator, is replaced by the attacker's
  own draw, and the global torch/numpy/random streams are forked and reseeded around every call. The
  public context (`ShareContext`: round seed, client id, round) is the observation's.
* **EOT** (Athalye, Carlini, Wagner, ICML 2018, §4.3 "Expectation over Transformation"): the trial is
  sent through `draws` independent private draws, fresh at every call, and the attack compares their
  mean. Where the private randomness is additive (share(u; r) − share(0; r) does not depend on r), the
  attacker's noise is cancelled exactly by that difference (common random numbers) and the mean of
  many draws at 0 is added back: the noiseless map, whatever the noise.
* **BPDA** (ibid. §4.1): the forward pass is always the real `share`. The backward pass is autograd
  through `share` itself, run on tensors whose `detach` keeps the graph and whose rounding, floor,
  ceil, trunc and sign are straight-through (identity backward); where that gives no gradient (no
  graph: `torch.no_grad`, numpy, integer casts), a straight-through estimator for the whole defense
  when what it sends is shaped like the update (sent_i ≈ u_i in the backward pass); otherwise the
  author's `simulate`; and if that fails too, the identity against the server's decoding.
  `path` says which ran, `notes` why.

`invert` is the attacker's own decoder: argmin_u ‖E share(u) − observed‖² by steepest descent with an
exact step for linear maps (one step for a permutation, rotation or public-seed noise); it gives the
analytic and layer-subset attacks a parameter-shaped update whatever the defense sends."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import math
import random
import re
import warnings

import numpy as np
import torch
from torch._C import DisableTorchFunctionSubclass

from fedleak.core.errors import FedleakError
from fedleak.defenses.base import Defense, ShareContext
from fedleak.defenses.seeding import mix

PRIVATE_NAME = re.compile(r"seed|secret|key|private|rng|generator", re.IGNORECASE)
PATHS = ("autograd", "straight-through", "simulate", "identity")
BPDA = ("auto", "straight-through", "simulate")  # what the attacker asks for: auto tries autograd first


def attacker_copy(defense: Defense) -> tuple[Defense, str]:
    """(a copy the attacker can build, "rebuilt" | "copied"): a class with an options dataclass from its
    options (`describe()` rebuilds it, core.components); a plugin written the plain way from the attributes
    named like its `__init__` parameters; a deep copy where neither works."""
    cls = type(defense)
    try:
        if cls.declares_options() and dataclasses.is_dataclass(getattr(defense, "options", None)):
            return cls.from_options(defense.describe(), "defense.options"), "rebuilt"
        kwargs = {}
        for name, parameter in list(inspect.signature(cls.__init__).parameters.items())[1:]:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if hasattr(defense, name):
                kwargs[name] = getattr(defense, name)
            elif parameter.default is parameter.empty:
                raise TypeError(name)
        return cls(**kwargs), "rebuilt"
    except Exception:  # noqa: BLE001 - any failure to rebuild: the deep copy is the fallback
        return copy.deepcopy(defense), "copied"


def client_copy(defense: Defense, observation=None, model: torch.nn.Module | None = None) -> tuple[Defense, str, dict]:
    """(a deep copy of `defense` with the client's pipeline run on it up to `share`, how it was made:
    "copied" | "rebuilt", notes): `check_model` on what the server sent (`model`, the observation's
    weights; the client's images are not the attacker's, so none), then `prepare_model(model)`. A step
    that raises is noted, not fatal: `share` is what the replay needs, and it says whether it runs."""
    try:
        copied, how = copy.deepcopy(defense), "copied"
    except Exception:  # noqa: BLE001 - state that does not deep-copy: rebuilt from its options
        copied, how = attacker_copy(defense)
    notes: dict = {}
    if model is None or observation is None:
        return copied, how, notes
    from fedleak.defenses.base import ReceivedModel
    steps = []
    try:
        received = ReceivedModel(model, dict(observation.global_params), dict(observation.buffers), model, lambda: None)
        verdict = copied.check_model(received)
        steps.append("check_model")
        if verdict is not None and verdict.refuse:
            notes["model_check"] = "the client's check refuses the model the server sent"
        copied.prepare_model(model)
        steps.append("prepare_model")
    except Exception as e:  # noqa: BLE001
        notes["pipeline_error"] = f"{type(e).__name__}: {e}"
    notes["pipeline"] = steps
    return copied, how, notes


def private_attributes(defense: Defense) -> list[str]:
    """The names (instance attributes, or fields of the options dataclass) of the client's secrets."""
    declared = getattr(type(defense), "private_attributes", None)
    options = getattr(defense, "options", None)
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)} if dataclasses.is_dataclass(options) else {}
    if declared is not None:
        return [name for name in declared if hasattr(defense, name) or name in fields]
    found = {name for name, value in {**fields, **vars(defense)}.items() if PRIVATE_NAME.search(name) and _redrawable(value)}
    return sorted(found)


def _redrawable(value) -> bool:
    return (isinstance(value, (int, str, bytes, torch.Generator, np.random.Generator, np.random.RandomState, random.Random))
            and not isinstance(value, bool))


def _redraw(value, seed: int):
    if isinstance(value, int):
        return seed % (2 ** 31)
    if isinstance(value, str):
        return f"attacker-{seed}"
    if isinstance(value, bytes):
        return seed.to_bytes(8, "little")
    if isinstance(value, torch.Generator):
        return torch.Generator(device=value.device).manual_seed(seed)
    if isinstance(value, np.random.Generator):
        return np.random.default_rng(seed)
    if isinstance(value, np.random.RandomState):
        return np.random.RandomState(seed % (2 ** 32))
    return random.Random(seed)


@contextlib.contextmanager
def _private_draw(defense: Defense, names: list[str], seed: int):
    """The attacker's own private randomness for one call of `share`; the global streams are restored after."""
    options = getattr(defense, "options", None)
    fields = {f.name for f in dataclasses.fields(options)} if dataclasses.is_dataclass(options) else set()
    redrawn = {}
    for name in names:
        if name in vars(defense):
            setattr(defense, name, _redraw(getattr(defense, name), mix(seed, name)))
        if name in fields:
            redrawn[name] = _redraw(getattr(options, name), mix(seed, name))
    if redrawn:  # the attacker's copy gets options of its own (frozen dataclasses: replaced, not changed)
        defense.options = dataclasses.replace(options, **redrawn)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % (2 ** 32))
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


_STRAIGHT_THROUGH = {torch.round, torch.Tensor.round, torch.floor, torch.Tensor.floor, torch.ceil, torch.Tensor.ceil,
                     torch.trunc, torch.Tensor.trunc, torch.fix, torch.Tensor.fix, torch.sign, torch.Tensor.sign,
                     torch.sgn, torch.Tensor.sgn}


class _Attached(torch.Tensor):
    """A tensor whose `detach` keeps the autograd graph and whose rounding/sign are straight-through: the
    input a defense's `share` gets when the attacker differentiates it (BPDA at the level of single ops)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.detach:
            with DisableTorchFunctionSubclass():
                return torch.Tensor.clone(args[0]).as_subclass(cls)
        if func in (torch.Tensor.detach_, torch.Tensor.requires_grad_):
            return args[0]
        if func in _STRAIGHT_THROUGH and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            with DisableTorchFunctionSubclass():
                x = args[0]
                return (x + (func(*args, **kwargs) - x).detach()).as_subclass(cls)
        return super().__torch_function__(func, types, args, kwargs)


class ShareFailed(FedleakError):
    """The defense's `share` raised or sent something the attacker cannot use."""


class DefenseReplay:
    """The attacker's differentiable, expectation-over-draws model of the defense's `share`.

    probes: two param-shaped updates of different trial inputs (the attack's replay at random images), used
    once to choose the path: whether `share` runs on the attacker's inputs, is random, depends on its
    input, is differentiable, is additive in its randomness. draws: private draws averaged per call."""

    def __init__(self, defense: Defense, observation, probes: list[list[torch.Tensor]], seed: int = 0,
                 draws: int = 1, bpda: str = "auto", model: torch.nn.Module | None = None):
        if bpda not in BPDA:
            raise ValueError(f"bpda must be one of {BPDA}, got {bpda!r}")
        self.defense, built, pipeline = client_copy(defense, observation, model)
        self.observation = observation
        self.private = private_attributes(self.defense)
        self.context = ShareContext(list(observation.param_names), observation.num_examples, observation.client_id,
                                    observation.round, getattr(observation, "seed", 0))
        self.seed, self.draws = seed, max(1, draws)
        self.calls = 0
        self.random = self.additive = self.shape_matched = self._broken = False
        self.depends_on_input = True
        self.connected: list[bool] = []
        self._baseline: list[torch.Tensor] | None = None
        self.noise_variance: list[torch.Tensor] | None = None  # per sent tensor, where the noise is additive
        self.offset: list[torch.Tensor] | None = None          # E share(0) where it is not zero
        self.expectation: list[float] | None = None           # α per sent tensor where E share(u) = α·u + E share(0)
        self.notes: dict = {"defense_copy": built, "private_attributes": self.private, **pipeline}
        self.path = self._choose(probes, bpda)
        self.notes["path"] = self.path

    # ------------------------------------------------------------------ one call of `share`
    def sample(self, update: list[torch.Tensor], draw: int, attached: bool = False) -> list[torch.Tensor]:
        """share(update) under private draw `draw`; differentiable (BPDA) when `attached`."""
        inputs = [u.as_subclass(_Attached) for u in update] if attached else [u.detach() for u in update]
        with _private_draw(self.defense, self.private, mix(self.seed, "draw", draw)), warnings.catch_warnings():
            # e.g. float() of an attached tensor: the defense's own business, not the user's
            warnings.simplefilter("ignore")
            try:
                result = self.defense.share(inputs, self.context)
            except FedleakError:
                raise
            except Exception as e:  # noqa: BLE001 - a plugin's failure on the attacker's inputs is data, not a crash
                raise ShareFailed(f"share raised {type(e).__name__}: {e}") from e
        sent = result[0] if isinstance(result, tuple) else result
        if not isinstance(sent, (list, tuple)) or not sent or not all(isinstance(s, torch.Tensor) for s in sent):
            raise ShareFailed("share did not return a list of tensors")
        sent = [s.as_subclass(torch.Tensor) if type(s) is not torch.Tensor else s for s in sent]
        if not all(s.is_floating_point() and torch.isfinite(s).all() for s in sent):
            raise ShareFailed("share sent a non-finite or non-float tensor for the attacker's input")
        return sent

    # ------------------------------------------------------------------ choosing the path
    def _choose(self, probes, bpda: str) -> str:
        first, second = probes[0], probes[1] if len(probes) > 1 else [2 * p for p in probes[0]]
        if bpda == "simulate":
            return self._fallback("asked for")
        try:
            a = self.sample(first, 0)
            self.random = not _same(a, self.sample(first, 1))
            self.depends_on_input = not _same(a, self.sample(second, 0))
            self.shape_matched = [s.shape for s in a] == [p.shape for p in first]
            if self.random:
                zero = [torch.zeros_like(p) for p in first]
                differences = [[x - z for x, z in zip(self.sample(p, d), self.sample(zero, d))] for p, d in ((first, 2), (first, 3))]
                self.additive = _same(*differences, tolerance=1e-5)
        except ShareFailed as e:
            self.notes["share_error"] = str(e)
            return self._fallback("share failed")
        self._measure_offset(first)
        if self.random and not self.additive and self.shape_matched:
            self._measure_expectation(first)
        self.notes.update(random=self.random, additive=self.additive, depends_on_input=self.depends_on_input)
        if bpda == "auto":
            connected = self._autograd_check(first, a)
            if connected is not None and all(connected):
                self.connected = connected
                return "autograd"
            if connected is not None and self.shape_matched:
                self.connected = connected  # the others straight-through
                return "autograd"
        if self.shape_matched:
            self.connected = [False] * len(first)
            return "straight-through"
        return self._fallback("share is neither differentiable nor shaped like the update")

    def _measure_offset(self, probe) -> None:
        """E share(0): what the defense sends for no update at all (public-seed noise, a constant, the mean of
        private noise). Distances compare share(u) − E share(0) with observed − E share(0): an offset that
        is known, however large, must not drown the update (a cosine of t + n with g + n is ≈ 1 for any t)."""
        zero = [torch.zeros_like(p) for p in probe]
        try:
            draws = [self.sample(zero, 1000 + d) for d in range(16 if self.random else 1)]
        except ShareFailed:
            return
        if [d.shape for d in draws[0]] != [s.shape for s in self.observation.shared]:
            return
        self._baseline = _mean(draws)
        if self.random:
            variances = [torch.stack(parts).var(0) for parts in zip(*draws)]
            # a mean within twice its standard error of zero is zero: an estimate of zero-mean noise would
            # otherwise add noise of its own (σ/4 from 16 draws) to every comparison
            self._baseline = [torch.zeros_like(b) if float(b.pow(2).sum()) <= 2 * float(v.sum()) / len(draws) else b
                              for b, v in zip(self._baseline, variances)]
            if self.additive:
                self.noise_variance = [v.mean() for v in variances]
        if any(bool(b.abs().max() > 0) for b in self._baseline):
            self.offset = self._baseline
            self.notes["offset"] = True

    def _measure_expectation(self, probe) -> None:
        """Whether E share(u) = α·u + E share(0), per sent tensor (an unbiased compressor: random-k rescaled by
        1/keep, stochastic rounding inside its clip range): the mean of 16 private draws departs from the
        fitted α·u by no more than twice its standard error. Then the expectation is that exact, smooth map,
        where a mean of a few draws of random masks would compare supports the client never drew."""
        try:
            draws = [self.sample(probe, 2000 + d) for d in range(16)]
        except ShareFailed:
            return
        baseline = self._baseline or [torch.zeros_like(p) for p in probe]
        scales = []
        for parts, p, b in zip(zip(*draws), probe, baseline):
            stacked = torch.stack(parts).double()
            mean, variance = stacked.mean(0) - b.double(), stacked.var(0)
            p = p.double()
            alpha = float((mean * p).sum() / (p * p).sum().clamp(min=1e-300))
            if float((mean - alpha * p).pow(2).sum()) > 2 * float(variance.sum()) / len(draws) + 1e-12 * float(mean.pow(2).sum()):
                return
            scales.append(alpha)
        self.expectation = scales
        self.notes["expectation"] = "linear"

    def _autograd_check(self, probe, expected) -> list[bool] | None:
        """Per sent tensor: does autograd through share reach the input with a non-zero gradient? None
        when the attached run fails or changes what is sent."""
        leaves = [p.detach().clone().requires_grad_(True) for p in probe]
        try:
            with torch.enable_grad():
                sent = self.sample(leaves, 0, attached=True)
        except ShareFailed as e:
            self.notes["autograd_error"] = str(e)
            return None
        if not _same(sent, expected, tolerance=1e-4):
            self.notes["autograd_error"] = "share sends different values when differentiated"
            return None
        connected = []
        generator = torch.Generator().manual_seed(0)
        for s in sent:
            if not s.requires_grad:
                connected.append(False)
                continue
            cotangent = torch.randn(s.shape, generator=generator).to(s)
            grads = torch.autograd.grad((s * cotangent).sum(), leaves, allow_unused=True, retain_graph=True)
            connected.append(any(g is not None and bool(g.abs().sum() > 0) for g in grads))
        # a sent tensor that varies with the input but carries no gradient can only go straight-through
        ok = [c or not self.depends_on_input for c in connected]
        if not any(ok) or (not all(ok) and not self.shape_matched):
            self.notes["autograd_error"] = "share gives no gradient for some sent tensors"
            return None
        return ok

    def _fallback(self, why: str) -> str:
        self.notes["fallback"] = why
        if type(self.defense).simulate is not Defense.simulate:
            return "simulate"
        return "identity"

    # ------------------------------------------------------------------ the differentiable map
    @property
    def target(self) -> list[torch.Tensor]:
        """What the attacker compares with: what was sent, or the server's decoding on the identity path."""
        return self.observation.update if self.path == "identity" else self.observation.shared

    def __call__(self, trial: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.moments(trial)[0]

    def moments(self, trial: list[torch.Tensor], draws: int | None = None, fixed: bool = False
                ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """(mean over draws of the differentiable share, per-coordinate variance of the raw draws or None).
        `fixed`: the same draws at every call (a deterministic map, for `invert`)."""
        if self.path == "identity" or self._broken:
            return trial, None
        if self.path == "simulate":
            return self.defense.simulate(trial, self.observation), None
        draws = draws or self.draws
        if self.expectation is not None:
            return self._expected(trial, draws if draws > 1 else 0, fixed)
        raw, centred = [], []
        for k in range(draws):
            draw = mix("fixed", k) if fixed else mix(self.calls, k)
            try:
                sent = self._one(trial, draw)
            except ShareFailed as e:
                return self._failed(trial, e), None
            raw.append(sent)
            if self.additive and self._baseline is not None:
                zero = self.sample([torch.zeros_like(t) for t in trial], draw)
                sent = [s - z + b for s, z, b in zip(sent, zero, self._baseline)]
            centred.append(sent)
        if not fixed:
            self.calls += 1
        variance = None
        if self.random and draws > 1:
            variance = [torch.stack([r[i].detach() for r in raw]).var(0) for i in range(len(raw[0]))]
        return _mean(centred), variance

    def _expected(self, trial, draws: int, fixed: bool):
        """The linear expectation α·u + E share(0); with `draws` > 1 also the per-coordinate variance of
        that many private draws (forward only)."""
        baseline = self._baseline or [torch.zeros_like(t) for t in trial]
        mean = [a * t + b for a, t, b in zip(self.expectation, trial, baseline)]
        variance = None
        if draws > 1:
            try:
                samples = [self.sample(trial, mix("fixed", k) if fixed else mix(self.calls, k)) for k in range(draws)]
            except ShareFailed as e:
                return self._failed(trial, e), None
            variance = [torch.stack(parts).var(0) for parts in zip(*samples)]
        if not fixed:
            self.calls += 1
        return mean, variance

    def _failed(self, trial, error: ShareFailed) -> list[torch.Tensor]:
        """share ran on the probes but not on this trial: the rest of the attack uses the author's model, or,
        where what is sent is shaped like the update, compares the trial itself with it (the old adaptive view)."""
        self.notes["failed_mid_run"] = str(error)
        if type(self.defense).simulate is not Defense.simulate:
            self.path = self.notes["path"] = "simulate"
            return self.defense.simulate(trial, self.observation)
        if not self.shape_matched:
            raise error
        self._broken = True
        self.notes["path"] = "trial itself (share failed mid-run)"
        return trial

    def _one(self, trial, draw) -> list[torch.Tensor]:
        if self.path == "autograd":
            sent = self.sample(trial, draw, attached=True)
            return [s if c else t + (s - t).detach() for s, t, c in zip(sent, trial, self.connected)]
        sent = self.sample(trial, draw)
        return [t + (s.to(t.dtype) - t).detach() for s, t in zip(sent, trial)]

    # ------------------------------------------------------------------ the attacker's decoder
    def invert(self, shared: list[torch.Tensor], start: list[torch.Tensor], iterations: int = 12) -> list[torch.Tensor]:
        """argmin_u ‖E share(u) − shared‖² from `start` (param-shaped), by steepest descent: the step
        α = ‖g‖²/‖J g‖² is exact for a linear share (J g from a finite difference), halved until the
        residual falls."""
        if self.path == "identity":
            return [t.detach() for t in (self.observation.update if shared is self.observation.shared else shared)]
        target = [s.detach() for s in shared]

        # common random numbers make an additive defense's map deterministic, and a linear expectation is
        # exact: one draw; otherwise the mean of 8 fixed draws
        exact = not self.random or (self.additive and self._baseline is not None) or self.expectation is not None
        draws = 1 if exact else 8

        def residual(u, grad: bool):
            with torch.set_grad_enabled(grad):
                mapped, _ = self.moments(u, draws=draws, fixed=True)
                if [m.shape for m in mapped] != [t.shape for t in target]:
                    raise ShareFailed("what share sends does not match the observation's shapes")
                return [m - t for m, t in zip(mapped, target)]

        u = [s.detach().clone() for s in start]
        current = _norm2(residual(u, False))
        floor = 1e-14 * _norm2(target)
        for _ in range(iterations):
            if current <= floor:
                break
            leaves = [x.clone().requires_grad_(True) for x in u]
            loss = 0.5 * sum((x * x).sum() for x in residual(leaves, True))
            if not loss.requires_grad:
                break  # what is sent does not depend on the update: nothing to invert
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            g = [torch.zeros_like(x) if d is None else d for x, d in zip(u, grads)]
            gg = _norm2(g)
            if gg == 0 or current == 0:
                break
            scale = math.sqrt(_norm2(u) / gg) if _norm2(u) > 0 else 1.0
            eps = 1e-3 * scale
            moved = residual([x + eps * d for x, d in zip(u, g)], False)
            base = residual(u, False)
            jg = _norm2([(m - b) / eps for m, b in zip(moved, base)])
            step = gg / jg if jg > 0 else 1.0
            for _ in range(8):
                candidate = [x - step * d for x, d in zip(u, g)]
                value = _norm2(residual(candidate, False))
                if value < current:
                    settled = value > 0.999 * current
                    u, current = candidate, value
                    break
                step /= 2
            else:
                break
            if settled:
                break
        return [x.detach() for x in u]

    def context_dependent(self, probe: list[torch.Tensor]) -> bool:
        """Whether what is sent, net of what is sent for a zero update, depends on the public context (round
        seed, client, round) beyond the private randomness: the change between two contexts exceeds 1.5× the
        change between two private draws. A model of the defense trained in one context (learn-to-invert)
        is reused in another only if not."""
        if self.path not in ("autograd", "straight-through"):
            return True
        other = ShareContext(self.context.param_names, self.context.num_examples, self.context.client_id + 7919,
                             self.context.round + 1, mix(self.context.seed, "other"))
        own, zero = self.context, [torch.zeros_like(p) for p in probe]
        # net of E share(0) in each context: a public-seed offset is removed before use, whatever the context
        centred = lambda draw: [s - z for s, z in zip(self.sample(probe, draw), self.sample(zero, draw))]
        try:
            a, b = centred(11), centred(12)
            self.context = other
            c = centred(13)
        except ShareFailed:
            return True
        finally:
            self.context = own
        if [x.shape for x in a] != [x.shape for x in c]:
            return True
        within = math.sqrt(_norm2([x - y for x, y in zip(a, b)]))
        between = math.sqrt(_norm2([x - y for x, y in zip(a, c)]))
        rounding = 1e-5 * math.sqrt(_norm2(self.sample(probe, 11)))  # (u + n) − n ≠ u in float32
        return between > 1.5 * within + rounding

    def describe(self) -> dict:
        return dict(self.notes)


def _same(a: list[torch.Tensor], b: list[torch.Tensor], tolerance: float = 0.0) -> bool:
    if [x.shape for x in a] != [y.shape for y in b]:
        return False
    if tolerance == 0:
        return all(torch.equal(x, y) for x, y in zip(a, b))
    a, b = [x.detach().double() for x in a], [y.detach().double() for y in b]
    scale = max(float(torch.sqrt(sum(x.pow(2).sum() for x in a))), 1e-12)
    return float(torch.sqrt(sum((x - y).pow(2).sum() for x, y in zip(a, b)))) <= tolerance * scale


def _mean(samples: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    if len(samples) == 1:
        return samples[0]
    return [sum(parts) / len(samples) for parts in zip(*samples)]


def _norm2(tensors: list[torch.Tensor]) -> float:
    return float(sum(t.detach().double().pow(2).sum() for t in tensors))
