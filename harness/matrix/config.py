"""Typed attack × defense matrix configuration, loaded from TOML and validated on load.

    preset          default budget preset: smoke | ci | paper (the CLI's --budget wins)
    seeds           attack seeds; every seed is one more independent attempt per image
    plugins         "package.module:Class" defenses/attacks to import and register first
    [images]        held-out victim indices (or the preset's count from 0) and batch size B
    [[datasets]]    name, root, options
    [[victims]]     model and victim state (threat_models.victim.VictimSpec: rounds 0 = untrained)
    [[threat_models]]  fedsgd | fedavg | hyperfl | vfl, local hyperparameters, knowledge, protocol options
    [[attacks]]     name, options, adaptive = [false, true], per-preset budgets (default: the attack's
                    own, `Attack.budgets`), threat_models (default: every one that shares a kind
                    of observation the attack declares in `applies_to`)
    [[defenses]]    name, options, sweep = { option = [values...] } (one setting per combination),
                    threat_models (default: as for attacks, `Defense.applies_to`), utility_only
                    (a reference: measured, not attacked)
    [budgets.<preset>]  iterations / restarts / images for every attack under that preset
    [gate]          leakage thresholds that `fedleak matrix --gate` enforces on defended cells
    [utility]       whether and how to measure each defense setting's accuracy
    ladder          true: also each multi-step FedAvg context's easier settings, undefended (harness/matrix/ladder.py)

Errors name the key (`defenses[2].sweep.noise: expected a list`), like harness.run.config.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedleak.attacks.base import PresetBudget
from fedleak.core.io import read_toml
from fedleak.core.options import LIMITS, check_size, from_dict
from fedleak.core.errors import ConfigError
from fedleak.harness.run.config import LocalTrainingOptions
from fedleak.harness.verdict.gate import GateConfig
from fedleak.threat_models.victim import VictimSpec

PRESETS = ("smoke", "ci", "paper")


# smoke: the whole pipeline in seconds (tests); ci: CPU job in minutes; paper: GPU, published budgets.
DEFAULT_BUDGETS = {
    "smoke": PresetBudget(iterations=2, restarts=1, images=1),
    "ci": PresetBudget(iterations=100, restarts=1, images=4),
    "paper": PresetBudget(iterations=1000, restarts=1, images=16),
}


@dataclass(frozen=True)
class PresetBudgets:
    """Budget per preset, for one attack or (as the matrix's own) for every attack; None: the default."""
    smoke: PresetBudget | None = None
    ci: PresetBudget | None = None
    paper: PresetBudget | None = None


@dataclass(frozen=True)
class ImagesConfig:
    indices: list[int] = field(default_factory=list)  # held-out victims; empty: the preset's count from 0
    batch_size: int = 1                               # B images per client update; one cell per batch


@dataclass(frozen=True)
class DatasetEntry:
    name: str = "digits"
    root: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ThreatModelEntry(LocalTrainingOptions):
    name: str = "fedsgd"
    knowledge: str | dict = "informed"  # preset name or flags table; flags.defense is set per attack mode
    options: dict = field(default_factory=dict)  # protocol options (hyperfl, vfl)
    # fields of every [[victims]] spec that differ under this protocol, e.g. { rounds = 1 } for HyperFL,
    # whose first round carries no data (docs/matrix.md)
    victim: dict = field(default_factory=dict)

    def victim_spec(self, spec: VictimSpec) -> VictimSpec:
        return replace(spec, **self.victim) if self.victim else spec


@dataclass(frozen=True)
class AttackEntry:
    name: str
    options: dict = field(default_factory=dict)
    adaptive: list[bool] = field(default_factory=lambda: [False, True])  # KnowledgeFlags.defense per mode
    label: str | None = None
    budgets: PresetBudgets = field(default_factory=PresetBudgets)
    threat_models: list[str] = field(default_factory=list)  # names it runs under; empty: all it applies to

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class DefenseEntry:
    name: str
    options: dict = field(default_factory=dict)
    sweep: dict = field(default_factory=dict)   # option -> list of values
    label: str | None = None
    utility_only: bool = False                  # a reference point: its utility is measured, it is not attacked
    threat_models: list[str] = field(default_factory=list)  # names it runs under; empty: all it applies to

    def settings(self) -> list["DefenseSetting"]:
        keys = sorted(self.sweep)
        combos = itertools.product(*(self.sweep[k] for k in keys)) if keys else [()]
        out = []
        for values in combos:
            options = {**self.options, **dict(zip(keys, values))}
            swept = ", ".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values))
            label = self.label or self.name
            out.append(DefenseSetting(self.name, options, f"{label} ({swept})" if swept else label,
                                      list(self.threat_models)))
        return out


@dataclass(frozen=True)
class DefenseSetting:
    name: str
    options: dict
    label: str
    threat_models: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UtilityConfig:
    enabled: bool = True
    options: dict = field(default_factory=dict)  # harness.matrix.utility.measure_utility options, e.g. rounds


@dataclass(frozen=True)
class MatrixConfig:
    attacks: list[AttackEntry]
    defenses: list[DefenseEntry]
    datasets: list[DatasetEntry] = field(default_factory=lambda: [DatasetEntry()])
    victims: list[VictimSpec] = field(default_factory=lambda: [VictimSpec(model="lenet")])
    threat_models: list[ThreatModelEntry] = field(default_factory=lambda: [ThreatModelEntry()])
    images: ImagesConfig = field(default_factory=ImagesConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str = "ci"
    device: str = "auto"
    plugins: list[str] = field(default_factory=list)
    budgets: PresetBudgets = field(default_factory=PresetBudgets)
    gate: GateConfig = field(default_factory=GateConfig)
    utility: UtilityConfig = field(default_factory=UtilityConfig)
    # the leakage ladder (harness/matrix/ladder.py): each multi-step FedAvg context's easier settings, undefended
    ladder: bool = False

    def budget(self, attack: AttackEntry, preset: str) -> PresetBudget:
        """Most specific first: the entry's own preset budget, the matrix's, the one the attack
        class declares (`Attack.budgets`: the published one under paper), then the defaults."""
        chain = [getattr(attack.budgets, preset), getattr(self.budgets, preset), declared_budget(attack.name, preset)]
        budget = DEFAULT_BUDGETS[preset]
        for level in reversed([c for c in chain if c is not None]):
            budget = level.over(budget)
        return budget

    def defense_settings(self, utility_only: bool = False) -> list[DefenseSetting]:
        """The attacked settings; with utility_only, the reference settings (measured, not attacked) too."""
        return [s for entry in self.defenses if utility_only or not entry.utility_only for s in entry.settings()]


def declared_budget(attack: str, preset: str) -> PresetBudget | None:
    """The budget a registered attack declares for `preset` (None: unregistered or none declared)."""
    from fedleak.attacks import ATTACKS
    own = ATTACKS.get(attack).budgets.get(preset) if attack in ATTACKS else None
    return own


def load_matrix(path: str | Path) -> MatrixConfig:
    """A matrix TOML file, or the name of a shipped matrix (`ci`)."""
    from fedleak.harness.run.config import resolve_preset
    return matrix_from_dict(read_toml(resolve_preset(path, "matrix"), "matrix config"))


def matrix_from_dict(table: dict) -> MatrixConfig:
    for required in ("attacks", "defenses"):
        if required not in table:
            raise ConfigError(f"{required}: missing; a matrix needs at least one [[{required}]] entry")
    return validate(from_dict(MatrixConfig, table, ""))


def validate(config: MatrixConfig) -> MatrixConfig:
    """Checks that need no registry (names are checked after plugins load: harness.matrix_check)."""
    if config.preset not in PRESETS:
        raise ConfigError(f"preset: expected one of {', '.join(PRESETS)}, got '{config.preset}'")
    for i, threat in enumerate(config.threat_models):
        if threat.victim:
            for victim in config.victims:  # every field known and well typed, as in [[victims]]
                from_dict(VictimSpec, {**dataclasses.asdict(victim), **threat.victim}, f"threat_models[{i}].victim")
    for axis in ("attacks", "defenses", "datasets", "victims", "threat_models", "seeds"):
        if not getattr(config, axis):
            raise ConfigError(f"{axis}: empty; the matrix would have no cells")
    for i, seed in enumerate(config.seeds):
        check_size(f"seeds[{i}]", seed, "seed", low=0)
    if len(config.images.indices) > LIMITS["images"]:
        raise ConfigError(f"images.indices: at most {LIMITS['images']:,} images, got {len(config.images.indices):,}")
    if config.images.batch_size < 1:
        raise ConfigError(f"images.batch_size: must be >= 1, got {config.images.batch_size}")
    if config.images.indices and len(config.images.indices) % config.images.batch_size:
        raise ConfigError(f"images.indices: {len(config.images.indices)} images do not split into batches "
                          f"of {config.images.batch_size}")
    for i, attack in enumerate(config.attacks):
        if not attack.adaptive or len(set(attack.adaptive)) != len(attack.adaptive):
            raise ConfigError(f"attacks[{i}].adaptive: expected a non-empty list of distinct true/false, "
                              f"got {attack.adaptive}")
    for i, defense in enumerate(config.defenses):
        for key, values in defense.sweep.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"defenses[{i}].sweep.{key}: expected a non-empty list of values, got {values!r}")
            if key in defense.options:
                raise ConfigError(f"defenses[{i}].sweep.{key}: also set in defenses[{i}].options; set it in one place")
    if not config.defense_settings():
        raise ConfigError("defenses: every entry is utility_only; the matrix would attack nothing")
    labels = [s.label for s in config.defense_settings(utility_only=True)]
    duplicates = sorted({l for l in labels if labels.count(l) > 1})
    if duplicates:
        raise ConfigError(f"defenses: settings share the label '{duplicates[0]}'; give each entry a distinct label")
    attack_labels = [a.display for a in config.attacks]
    duplicates = sorted({l for l in attack_labels if attack_labels.count(l) > 1})
    if duplicates:
        raise ConfigError(f"attacks: entries share the label '{duplicates[0]}'; give each entry a distinct label")
    if config.utility.enabled and "rounds" not in config.utility.options and any(v.rounds == 0 for v in config.victims):
        raise ConfigError("utility.options.rounds: some victims are untrained (rounds = 0); set how many FedAvg "
                          "rounds utility is measured after, or [utility] enabled = false")
    known = {d.name for d in config.defenses} | set(labels)
    for i, name in enumerate(config.gate.defenses):
        if name not in known:
            raise ConfigError(f"gate.defenses[{i}]: '{name}' is neither a defense name nor a setting label of this "
                              f"matrix; settings: {', '.join(labels)}")
    for preset in PRESETS:
        for where, budget in [(f"budgets.{preset}", getattr(config.budgets, preset))] + [
                (f"attacks[{i}].budgets.{preset}", getattr(a.budgets, preset)) for i, a in enumerate(config.attacks)]:
            for key in ("iterations", "restarts", "images"):
                value = getattr(budget, key) if budget else None
                if value is not None and value < 1:
                    raise ConfigError(f"{where}.{key}: must be >= 1, got {value}")
    return config


def with_preset(config: MatrixConfig, preset: str | None) -> MatrixConfig:
    if preset is None:
        return config
    if preset not in PRESETS:
        raise ConfigError(f"--budget: expected one of {', '.join(PRESETS)}, got '{preset}'")
    return replace(config, preset=preset)


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
