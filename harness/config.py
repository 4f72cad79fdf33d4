"""Typed run configuration, loaded from TOML and validated on load: errors name the key.

    [data]          dataset, which held-out victims, batch size B
    [victim]        model, options, trained rounds (threat_models.victim.VictimSpec)
    [threat_model]  fedsgd | fedavg, local hyperparameters, attacker knowledge
    [defense]       name + options
    [attack]        name, budget, options
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError
from threat_models.victim import VictimSpec


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    root: str | None = None
    victims: list[int] | None = None   # indices into the held-out split; default: the first num_victims
    num_victims: int = 8
    batch_size: int = 1                # B images per client update
    options: dict = field(default_factory=dict)

    def victim_indices(self) -> list[int]:
        return list(self.victims) if self.victims is not None else list(range(self.num_victims))


@dataclass(frozen=True)
class ThreatModelConfig:
    name: str = "fedsgd"
    knowledge: str | dict = "eavesdropper"
    lr: float = 0.1                    # fedavg: local SGD learning rate
    epochs: int = 1                    # fedavg: local epochs
    local_batch_size: int | None = None  # fedavg: mini-batch size (None = full batch)
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
        blob = {k: v for k, v in self.to_dict().items() if k not in ("output", "device")}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def validate(self) -> "RunConfig":
        if self.data.batch_size < 1:
            raise ConfigError(f"data.batch_size: must be >= 1, got {self.data.batch_size}")
        if not self.data.victim_indices():
            raise ConfigError("data: no victims to attack (num_victims must be >= 1, or victims a non-empty list)")
        if len(self.data.victim_indices()) % self.data.batch_size:
            raise ConfigError(f"data: {len(self.data.victim_indices())} victims do not split into batches of {self.data.batch_size}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device: expected auto|cpu|cuda, got '{self.device}'")
        return self


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Config from a TOML file (or defaults), with dotted-key overrides ('attack.options.tv')."""
    table = read_toml(path, "config file") if path is not None else {}
    return config_from_dict(table, overrides)


def read_toml(path: str | Path, what: str) -> dict:
    """A TOML file as a table; a missing file or a syntax error is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML: {e}") from None


def config_from_dict(table: dict, overrides: dict | None = None) -> RunConfig:
    return from_dict(RunConfig, _merge(table, _nest(overrides or {})), "").validate()


def _nest(overrides: dict) -> dict:
    nested: dict = {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def from_dict(cls, table: dict, where: str):
    """Build dataclass `cls` from a TOML table, checking every key and its type."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"{path}: unknown key; allowed: {', '.join(sorted(names))}")
        values[key] = _coerce(hints[key], value, path)
    return cls(**values)


def _coerce(hint, value, path):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        errors = []
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if errors else f"{path}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (object,)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is object or (isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{path}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def call_with_options(factory, options: dict, where: str):
    """Construct a component from user options; an unknown or bad option becomes a ConfigError."""
    try:
        return factory(**options)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        raise ConfigError(f"{where}: {e}") from None
