"""Sketched updates (Song, Wang, Yu, Zhang, "Sketching for first-order methods", ICML 2023; notes
§10): the client sends R·g with R ∈ ℝ^{s×d} drawn from the round's shared seed, the server
de-sketches with Rᵀ, so RᵀR·g (unbiased, E[RᵀR] = I) stands in for g.

`ratio` sets s = round(ratio·d) (or `size` sets s directly for one global sketch); with
`per_layer` every parameter tensor is sketched on its own with s_l = max(1, round(ratio·d_l)),
which is what makes a Gaussian sketch affordable on a convnet (Σ s_l·d_l ≪ s·d). The abstract's
DP variant adds Gaussian noise to the sketch: `noise_sigma` is its absolute per-coordinate std,
drawn from a private stream the server cannot regenerate.

The seed is public (the server needs R to decode), so the adaptive attacker matches in sketch
space: `simulate` sends the trial update through the very same R, and the attack compares
R·g̃ with the observed R·g (notes §15.2). The non-adaptive attacker matches RᵀR·g instead.

`privacy` stays None even with noise: an ε needs a bound on ‖R·g‖, i.e. clipping, which this
defense does not do (compose it with `dp` for that)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedleak.core.errors import ConfigError
from fedleak.core.options import OptionError, check_bool, check_choice, check_integer, check_number
from fedleak.defenses import seeding
from fedleak.defenses.base import Defense, ShareContext
from fedleak.defenses.sketch_operators import OPERATORS, SketchOperator


@dataclass(frozen=True)
class SketchOptions:
    """`ratio` defaults to 0.1 unless `size` is set."""
    kind: str = "gaussian"
    ratio: float | None = None
    size: int | None = None
    per_layer: bool = False
    noise_sigma: float = 0.0
    noise_seed: int = 0

    def __post_init__(self):
        check_choice("kind", self.kind, tuple(OPERATORS))
        if self.ratio is not None and self.size is not None:
            raise OptionError("size", "set ratio or size, not both")
        if self.size is not None:
            check_integer("size", self.size, low=1)
        else:
            object.__setattr__(self, "ratio", 0.1 if self.ratio is None else self.ratio)
            check_number("ratio", self.ratio, low=0, high=1, low_open=True)
        check_bool("per_layer", self.per_layer)
        if self.per_layer and self.size is not None:
            raise OptionError("size", "sets one global sketch; use ratio with per_layer")
        check_number("noise_sigma", self.noise_sigma, low=0)
        check_integer("noise_seed", self.noise_seed, low=0)


class Sketch(Defense):
    name = "sketch"
    options_class = SketchOptions

    def __init__(self, options: SketchOptions | None = None, **values):
        super().__init__(options, **values)
        self._operators_cache: tuple[tuple, list[SketchOperator]] | None = None

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        shapes = [list(u.shape) for u in update]
        operators = self._operators(context.seed, shapes)
        sent = [op.apply(v) for op, v in zip(operators, self._groups([u.detach() for u in update]))]
        o = self.options
        if o.noise_sigma > 0:
            gen = seeding.generator("sketch-noise", o.noise_seed, context.seed, context.client_id, context.round)
            sent = [y + o.noise_sigma * seeding.randn(y.shape, gen, y) for y in sent]
        public = {"seed": context.seed, "kind": o.kind, "per_layer": o.per_layer, "shapes": shapes,
                  "sizes": [op.s for op in operators], "noise_sigma": o.noise_sigma}
        return sent, public

    def decode(self, shared: list[torch.Tensor], public: dict) -> list[torch.Tensor]:
        shapes = public["shapes"]
        operators = self._operators(public["seed"], shapes)
        flat = [op.adjoint(y) for op, y in zip(operators, shared)]
        if self.options.per_layer:
            return [f.view(shape) for f, shape in zip(flat, shapes)]
        sizes = [math.prod(shape) for shape in shapes]
        return [part.view(shape) for part, shape in zip(flat[0].split(sizes), shapes)]

    def simulate(self, trial: list[torch.Tensor], observation) -> list[torch.Tensor]:
        operators = self._operators(observation.public["seed"], [list(t.shape) for t in trial])
        return [op.apply(v) for op, v in zip(operators, self._groups(trial))]

    def _groups(self, update: list[torch.Tensor]) -> list[torch.Tensor]:
        """The flat vectors that are sketched: one per parameter, or all of them concatenated."""
        flat = [u.reshape(-1) for u in update]
        return flat if self.options.per_layer else [torch.cat(flat)]

    def _operators(self, seed: int, shapes: list[list[int]]) -> list[SketchOperator]:
        key = (seed, tuple(map(tuple, shapes)))
        if self._operators_cache is None or self._operators_cache[0] != key:
            o = self.options
            dims = [math.prod(shape) for shape in shapes]
            make = OPERATORS[o.kind]
            if o.per_layer:
                ops = [make(d, max(1, round(o.ratio * d)), seeding.mix(seed, "layer", i)) for i, d in enumerate(dims)]
            else:
                d = sum(dims)
                s = o.size if o.size is not None else max(1, round(o.ratio * d))
                if s > d:
                    raise ConfigError(f"defense '{self.name}': size {s} exceeds the update's dimension d={d}")
                ops = [make(d, s, seeding.mix(seed, "global"))]
            self._operators_cache = (key, ops)
        return self._operators_cache[1]
