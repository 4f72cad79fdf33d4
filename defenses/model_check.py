"""A client-side model check: before it trains, the client inspects the model the server sent and
refuses a round whose model shows the marks of a malicious server (threat_models/malicious.py).

No framework ships one; the survey of Guo et al. 2025 recommends it. Each check looks for what one
family of attacks needs, not for one attack's exact recipe:

* `architecture`: the parameters (names and shapes) differ from those of the model the client's own
  code prescribes. Robbing the Fed, trap weights and LOKI add a block in front of the model.
* `duplicate-rows`: a layer in which at least `duplicate_rows` rows point the same way (|cosine| ≥
  `duplicate_cosine`): Robbing the Fed's bins and LOKI's share one linear query, thresholded at
  different biases. Random initialisation and training do not make rows collinear.
* `zero-rows`: a weight tensor with rows that are exactly zero: LOKI's routing kernels leave every
  block but the client's own empty. No registered architecture initialises or trains a row to zero.
* `sparse-activation`: on the client's own batch of B (at least `min_batch` images), a layer in which
  at least `rare_share` of the units fire for at most max(1, B/8) images: trap weights are tuned to
  fire for about one image of the aggregated batch, so that a row's gradient is one image, where an
  honest layer's units fire for a good share of any batch. A unit "fires" on an image
  when its pre-activation is positive anywhere (any position or token). The model's output layer
  is left out: a trained classifier's logits are positive mostly for their own class.
* `classifier-rows`: the output layer's row norms spread by more than `classifier_ratio` (largest
  over median), or a row is zero: fishing (Wen et al., ICML 2022) scales class rows to magnify one
  image's gradient.
* `round-change`: against the global model the client kept from the round before, a parameter moved
  by more than `max_change` times its previous norm: one FedAvg round moves weights a little,
  a server that swaps weights in (fishing, trap rows written into a prescribed layer) moves them a lot.

A model any check flags is not trained on: the client sends a zero update (it drops out of the
round) and the verdict is public (`Observation.public["model_check"]`, the `model_flagged` column of
every result row), so a matrix measures the check's false-positive rate on honest models and its
detection rate on each malicious one. With `refuse = false` the client only records the verdict."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from fedleak.core.components import GRADIENT, UPDATE
from fedleak.core.options import OptionError, check_bool, check_integer, check_number
from fedleak.defenses.base import Defense, ModelVerdict, ReceivedModel

CHECKS = ("architecture", "duplicate-rows", "zero-rows", "sparse-activation", "classifier-rows", "round-change")
_CHUNK = 1024  # rows per block of the pairwise cosines (bounded memory on wide layers)
CHANGE_FLOOR = 0.05  # the RMS a parameter counts as having at least, for round-change


@dataclass(frozen=True)
class ModelCheckOptions:
    checks: list[str] = field(default_factory=lambda: list(CHECKS))
    refuse: bool = True               # a flagged model is not trained on; false: the verdict is only recorded
    duplicate_cosine: float = 0.999
    duplicate_rows: int = 4
    min_fan_in: int = 16              # rows shorter than this are left to chance (a 3-channel 1×1 kernel)
    rare_share: float = 0.5
    min_batch: int = 8
    classifier_ratio: float = 10.0
    max_change: float = 1.0

    def __post_init__(self):
        for i, name in enumerate(self.checks):
            if name not in CHECKS:
                raise OptionError(f"checks[{i}]", f"must be one of {', '.join(CHECKS)}, got {name!r}")
        check_bool("refuse", self.refuse)
        check_number("duplicate_cosine", self.duplicate_cosine, low=0, high=1, low_open=True)
        check_integer("duplicate_rows", self.duplicate_rows, low=2)
        check_integer("min_fan_in", self.min_fan_in, low=1)
        check_number("rare_share", self.rare_share, low=0, high=1, low_open=True)
        check_integer("min_batch", self.min_batch, low=2)
        check_number("classifier_ratio", self.classifier_ratio, low=1, low_open=True)
        check_number("max_change", self.max_change, low=0, low_open=True)


class ModelCheck(Defense):
    """The client inspects the model it received before training on it (module docstring)."""
    name = "model-check"
    options_class = ModelCheckOptions
    applies_to = (GRADIENT, UPDATE)

    def check_model(self, received: ReceivedModel) -> ModelVerdict:
        run = _Forward(received)
        reasons = tuple(r for name in self.options.checks
                        for r in getattr(self, "_" + name.replace("-", "_"))(received, run))
        return ModelVerdict(bool(reasons), reasons, refuse=bool(reasons) and self.options.refuse)

    # ------------------------------------------------------------------------------------ the checks
    def _architecture(self, received: ReceivedModel, run=None) -> list[str]:
        prescribed = {k: tuple(v.shape) for k, v in received.prescribed.named_parameters()}
        sent = {k: tuple(v.shape) for k, v in received.params.items()}
        if prescribed == sent:
            return []
        extra = sorted(set(sent) - set(prescribed))
        missing = sorted(set(prescribed) - set(sent))
        reshaped = sorted(k for k in set(sent) & set(prescribed) if sent[k] != prescribed[k])
        parts = [f"{len(v)} {what} ({v[0]}{', ...' if len(v) > 1 else ''})"
                 for what, v in (("extra", extra), ("missing", missing), ("reshaped", reshaped)) if v]
        return [f"architecture: parameters differ from the prescribed model's: {'; '.join(parts)}"]

    def _duplicate_rows(self, received: ReceivedModel, run=None) -> list[str]:
        o = self.options
        found = []
        for name, rows in _weight_rows(received.params, o.min_fan_in):
            largest = _largest_collinear_group(rows, o.duplicate_cosine)
            if largest >= o.duplicate_rows:
                found.append(f"duplicate-rows: {largest} rows of '{name}' point the same way (|cos| >= {o.duplicate_cosine:g})")
        return found

    def _zero_rows(self, received: ReceivedModel, run=None) -> list[str]:
        found = []
        for name, rows in _weight_rows(received.params, 1):
            zero = int((rows.abs().amax(1) == 0).sum())
            if zero:
                found.append(f"zero-rows: {zero} of {len(rows)} rows of '{name}' are zero")
        return found

    def _sparse_activation(self, received: ReceivedModel, run: "_Forward") -> list[str]:
        o = self.options
        if received.images is None or len(received.images) < o.min_batch:
            return []
        found = []
        batch = len(received.images)
        rare = max(1, batch // 8)
        for name, fired in run.units_fired().items():
            if fired.shape[0] < 16:
                continue
            share = float((fired <= rare).float().mean())
            if share >= o.rare_share:
                found.append(f"sparse-activation: {share:.0%} of the {fired.shape[0]} units of '{name}' fire for at most "
                             f"{rare} of {batch} images")
        return found

    def _classifier_rows(self, received: ReceivedModel, run: "_Forward") -> list[str]:
        layer = run.output_layer()
        if layer is None:
            return []
        weight = received.params.get(f"{layer}.weight")
        if weight is None or weight.dim() != 2 or len(weight) < 2:
            return []
        norms = weight.detach().float().norm(dim=1)
        median = float(norms.median())
        if float(norms.min()) == 0 or median == 0:
            return [f"classifier-rows: a row of '{layer}.weight' is zero"]
        spread = float(norms.max()) / median
        return [f"classifier-rows: the row norms of '{layer}.weight' spread {spread:.1f}x (largest over median)"] \
            if spread > self.options.classifier_ratio else []

    def _round_change(self, received: ReceivedModel, run=None) -> list[str]:
        previous = received.previous()
        if previous is None:
            return []
        before, _ = previous
        found = []
        for name, now in received.params.items():
            then = before.get(name)
            if then is None or then.shape != now.shape:
                continue  # a new parameter is the architecture check's business
            change = _relative_change(now, then)
            if change > self.options.max_change:
                found.append(f"round-change: '{name}' moved by {change:.3g}x its previous size since the last round")
        return found


def _relative_change(now: torch.Tensor, then: torch.Tensor) -> float:
    """How far a parameter moved, in root-mean-square entries, over its previous RMS, or over
    CHANGE_FLOOR where it was (near) zero (BatchNorm's shifts start at zero)."""
    moved = (now - then).float().pow(2).mean().sqrt()
    return float(moved / then.float().pow(2).mean().sqrt().clamp_min(CHANGE_FLOOR))


def _weight_rows(params: dict[str, torch.Tensor], min_fan_in: int):
    """(name, rows) of every weight with at least two dimensions: one row per output unit."""
    for name, p in params.items():
        if p.dim() >= 2 and p[0].numel() >= min_fan_in:
            yield name, p.detach().float().flatten(1)


def _largest_collinear_group(rows: torch.Tensor, cosine: float) -> int:
    """1 + the most rows any one row is collinear with (zero rows left out)."""
    norms = rows.norm(dim=1)
    unit = rows[norms > 0] / norms[norms > 0, None]
    largest = 1 if len(unit) else 0
    for start in range(0, len(unit), _CHUNK):
        close = (unit[start:start + _CHUNK] @ unit.T).abs() >= cosine
        largest = max(largest, int(close.sum(1).max()))
    return largest


class _Forward:
    """The received model run once on the client's batch, every linear and convolutional layer's
    output recorded (pre-activation), for the checks that look at what the model does."""

    def __init__(self, received: ReceivedModel):
        self.received = received
        self._outputs: dict[str, torch.Tensor] | None = None
        self._final = None

    def _run(self) -> dict[str, torch.Tensor]:
        if self._outputs is None:
            r = self.received
            self._outputs, hooks = {}, []
            for name, module in r.model.named_modules():
                if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                    hooks.append(module.register_forward_hook(
                        lambda m, i, out, name=name: self._outputs.__setitem__(name, out)))
            try:
                with torch.no_grad():
                    self._final = functional_call(r.model, (r.params, r.buffers), (r.images,))
            finally:
                for hook in hooks:
                    hook.remove()
        return self._outputs

    def output_layer(self) -> str | None:
        """The layer whose output is the model's output (the classifier)."""
        if self.received.images is None:
            return None
        return next((name for name, out in self._run().items() if out is self._final), None)

    def units_fired(self) -> dict[str, torch.Tensor]:
        """For every layer but the output layer: on how many images each unit's pre-activation is
        positive somewhere (any position or token)."""
        fired = {}
        for name, out in self._run().items():
            if out is self._final:
                continue
            linear = isinstance(self.received.model.get_submodule(name), nn.Linear)
            units = out.movedim(-1, 1) if linear else out  # units on dim 1
            positive = units > 0
            fired[name] = (positive.flatten(2).any(2) if positive.dim() > 2 else positive).sum(0)
        return fired
