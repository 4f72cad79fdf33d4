"""Typed run configuration, loaded from TOML and validated on load: errors name the key.

    [data]          dataset, which held-out victims, batch size B
    [victim]        model, options, trained rounds (threat_models.victim.VictimSpec)
    [threat_model]  fedsgd | fedavg, local hyperparameters, attacker knowledge
    [defense]       name + options
    [attack]        name, budget, options
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from fedleak.attacks.base import Budget
from fedleak.core.errors import ConfigError
from fedleak.core.io import digest, read_toml
from fedleak.core.options import LIMITS, check_size, from_dict, merge_tables, nest_dotted
from fedleak.models.functional import LocalTraining
from fedleak.threat_models.victim import VictimSpec


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    root: str | None = None
    victims: list[int] | None = None   # indices into the held-out split; default: the first num_victims
    num_victims: int = 8
    batch_size: int = 1                # B images per client update
    options: dict = field(default_factory=dict)
    # "position": batch i is client i's update (round seed + i); "first": every batch is attacked as the
    # round's first client (seed + 0, client 0), so a batch's result does not depend on which other
    # batches share its run (a matrix cell groups all the images of an attack, mode and defense);
    # "image": as "first", but each batch's round seed comes from its first image (harness.run.runner.batch_seeds),
    # so a randomised defense draws afresh per image (the matrix's)
    batch_seed: str = "position"

    def victim_indices(self) -> list[int]:
        return list(self.victims) if self.victims is not None else list(range(self.num_victims))


def _local_training_options() -> type:
    """The clients' local training as config keys of a threat model: the fields of
    models.functional.LocalTraining (one source of truth: defaults, order and checks), with
    `batch_size` spelled `local_batch_size` (beside the matrix's own batch size B). Keyword-only, so
    that a threat model's own fields stay first (`ThreatModelConfig("fedavg")`)."""
    renamed = {"batch_size": "local_batch_size"}

    def local_training(self) -> LocalTraining:
        return LocalTraining(**{f.name: getattr(self, renamed.get(f.name, f.name)) for f in dataclasses.fields(LocalTraining)})

    fields = [(renamed.get(f.name, f.name), f.type, field(default=f.default)) for f in dataclasses.fields(LocalTraining)]
    return dataclasses.make_dataclass("LocalTrainingOptions", fields, frozen=True, kw_only=True, namespace={
        "local_training": local_training, "__doc__": _local_training_options.__doc__, "__module__": __name__})


LocalTrainingOptions = _local_training_options()


@dataclass(frozen=True)
class ThreatModelConfig(LocalTrainingOptions):
    name: str = "fedsgd"
    knowledge: str | dict = "eavesdropper"
    options: dict = field(default_factory=dict)  # protocol options of threat models that take them (hyperfl, vfl)


@dataclass(frozen=True)
class DefenseConfig:
    name: str = "none"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AttackConfig:
    name: str = "ig"
    iterations: int = 1000
    restarts: int = 1
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    victim: VictimSpec = field(default_factory=VictimSpec)
    threat_model: ThreatModelConfig = field(default_factory=ThreatModelConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    seed: int = 0
    device: str = "auto"
    output: str = "runs/latest"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Hash of everything that determines the results (not where they are written)."""
        return digest({k: v for k, v in self.to_dict().items() if k not in ("output", "device")}, 12)

    def __post_init__(self):
        # sizes first, before any list of victims is built or anything allocated (core.options.LIMITS)
        check_size("seed", self.seed, "seed", low=0)
        Budget(self.attack.iterations, self.attack.restarts)
        check_size("data.num_victims", self.data.num_victims, "images")
        if self.data.victims is not None and len(self.data.victims) > LIMITS["images"]:
            raise ConfigError(f"data.victims: at most {LIMITS['images']:,} images, got {len(self.data.victims):,}")
        if self.data.batch_size < 1:
            raise ConfigError(f"data.batch_size: must be >= 1, got {self.data.batch_size}")
        if self.data.batch_seed not in ("position", "first", "image"):
            raise ConfigError(f"data.batch_seed: expected position, first or image, got '{self.data.batch_seed}'")
        if not self.data.victim_indices():
            raise ConfigError("data: no victims to attack (num_victims must be >= 1, or victims a non-empty list)")
        if len(self.data.victim_indices()) % self.data.batch_size:
            raise ConfigError(f"data: {len(self.data.victim_indices())} victims do not split into batches of {self.data.batch_size}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device: expected auto|cpu|cuda, got '{self.device}'")
        self.threat_model.local_training()  # its one-line errors at load, not mid-run


SHIPPED = Path(__file__).parent.parent / "presets"
MATRIX_PREFIX = "matrix-"


def shipped_presets(kind: str) -> dict[str, Path]:
    """The configs that ship with fedleak, by name: kind "matrix" (matrix-<name>.toml) or "run"."""
    files = sorted(SHIPPED.glob("*.toml"))
    if kind == "matrix":
        return {f.stem[len(MATRIX_PREFIX):]: f for f in files if f.stem.startswith(MATRIX_PREFIX)}
    return {f.stem: f for f in files if not f.stem.startswith(MATRIX_PREFIX)}


def resolve_preset(spec: str | Path, kind: str) -> Path:
    """A config file's path, or the name of a shipped preset (`ci`, `demo-ig`): works from any folder."""
    path = Path(spec)
    if path.is_file():
        return path
    named = shipped_presets(kind)
    if str(spec) in named:
        return named[str(spec)]
    what = "matrix config" if kind == "matrix" else "config file"
    raise ConfigError(f"{what} not found: {spec} (neither a file nor a shipped preset; shipped: {', '.join(named)})")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Config from a TOML file or shipped preset name (or defaults), with dotted-key overrides
    ('attack.options.tv')."""
    table = read_toml(resolve_preset(path, "run"), "config file") if path is not None else {}
    return config_from_dict(table, overrides)


def config_from_dict(table: dict, overrides: dict | None = None) -> RunConfig:
    table = merge_tables(table, nest_dotted(overrides or {}))
    return from_dict(RunConfig, with_default_threat_model(table), "")


def with_default_threat_model(table: dict) -> dict:
    """A config that names no threat model runs under fedsgd where its attack runs there, else under
    the first (by name) threat model its attack's declarations allow: the malicious server for an
    attack that crafts the server's model, vfl for the embedding attacks."""
    threat = table.get("threat_model", {})
    attack = table.get("attack", {})
    if not isinstance(threat, dict) or "name" in threat or not isinstance(attack, dict):
        return table
    from fedleak.attacks import ATTACKS
    from fedleak.threat_models import runs_under
    name = attack.get("name", AttackConfig.name)
    fitting = runs_under(ATTACKS.get(name)) if isinstance(name, str) and name in ATTACKS else []
    if not fitting or ThreatModelConfig.name in fitting:
        return table
    return {**table, "threat_model": {**threat, "name": fitting[0]}}


