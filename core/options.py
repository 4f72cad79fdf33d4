"""Options of every component: frozen dataclasses built from TOML tables, each key and its type
checked on load, errors naming the key (`attack.options.tv: expected float, got 'x'`)."""
from __future__ import annotations

import dataclasses
import types
import typing

from fedleak.core.errors import ConfigError


def nest_dotted(overrides: dict) -> dict:
    nested: dict = {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


def merge_tables(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = merge_tables(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
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
