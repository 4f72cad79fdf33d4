"""Options of every component: frozen dataclasses built from TOML tables, each key and its type
checked on load, errors naming the key (`attack.options.tv: expected float, got 'x'`).

Value checks live in the dataclass itself (`__post_init__`, with the `check_*` helpers below):
they raise `OptionError(key, ...)` with the key relative to the table, and `from_dict` prefixes
where the table came from (`defense.options.sigma`, `defenses[2].options.sigma`). A float option
is finite unless its field says otherwise (`field(metadata={"infinite": True})`); NaN never is."""
from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

from fedleak.core.errors import ConfigError

T = TypeVar("T")


class OptionError(ConfigError):
    """A bad option value; `key` is relative to the options table until `from_dict` prefixes it."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def under(self, where: str) -> "OptionError":
        return OptionError(f"{where}.{self.key}" if where else self.key, self.message)


def nest_dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


def merge_tables(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = merge_tables(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def from_dict(cls: type[T], table: dict[str, Any], where: str) -> T:
    """Build dataclass `cls` from a TOML table, checking every key, its type and (in the dataclass's
    own `__post_init__`) its value; every error is one ConfigError naming the full key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    values = {}
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "none (this component takes no options)"
            raise ConfigError(f"{path}: unknown key; allowed: {allowed}")
        values[key] = _coerce(hints[key], value, path)
    missing = [f.name for f in fields.values()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: missing" if where else f"{missing[0]}: missing")
    try:
        options = cls(**values)  # the dataclass's own checks first: their messages say the allowed range
    except OptionError as e:
        raise e.under(where) from None
    for key, value in values.items():
        if not fields[key].metadata.get("infinite", False):
            _check_finite(value, f"{where}.{key}" if where else key)
    return options


def option_values(options: Any) -> dict[str, Any]:
    """The fields of an options dataclass as they are (no copies: an option may hold an object)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def describe_options(options: Any) -> dict[str, Any]:
    """An options dataclass as a TOML-shaped table: `from_dict` rebuilds an equal one from it
    (tuples become lists; an object option is recorded by its own `describe()`)."""
    return {name: _plain(value) for name, value in option_values(options).items()}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return describe_options(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "describe") and callable(value.describe):
        return value.describe()
    return value


def _check_finite(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: must be finite, got {value}")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]")


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(typing.cast(Any, hint), value, path)
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
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{path}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (object,)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif args and len(args) != len(value):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, (item, v) in enumerate(zip(args or (object,) * len(value), value)))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is object or hint is typing.Any or not isinstance(hint, type):
        return value  # a type this parser does not know (a TypeVar, a Protocol...): the component checks it
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{path}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


# ---- value checks for __post_init__: each raises OptionError(key, ...) ----------------------------

def check_number(key: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, infinite: bool = False) -> float:
    """A real number in [low, high] (open at either end when asked); finite unless `infinite`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(key, f"must be a number, got {value!r}")
    value = typing.cast(float, value)  # a numbers.Real: compares with floats
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if math.isnan(value) or too_low or too_high or (not infinite and not math.isfinite(value)):
        if high is None and low is None:
            span = ""
        elif high is None:
            span = f"{'>' if low_open else '>='} {low:g}"
        elif low is None:
            span = f"{'<' if high_open else '<='} {high:g}"
        else:
            span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        finite = "finite" if not infinite and (low is None or high is None) else ""
        raise OptionError(key, f"must be {' and '.join(p for p in (finite, span) if p)}, got {value!r}")
    return float(value)


def check_integer(key: str, value: Any, *, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(key, f"must be an integer, got {value!r}")
    if low is not None and value < low:
        raise OptionError(key, f"must be >= {low}, got {value!r}")
    return int(value)


# Upper bounds of the sizes a user gives, checked when a config loads, before anything is allocated or
# run: far above any published budget (IG: 24,000 iterations x 8 restarts; ImageNet's 50,000 held-out
# images), low enough that a typo is refused instead of running for years or being killed for memory.
# A seed must fit the 64-bit generators after fedleak derives per-batch seeds from it (seed·7919 + batch).
LIMITS = {"iterations": 10_000_000, "restarts": 1_000, "images": 1_000_000, "seed": 2**32 - 1}


def check_size(key: str, value: Any, what: str, low: int = 1) -> int:
    """An integer in [low, LIMITS[what]], the bound stated in the error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(key, f"must be an integer, got {value!r}")
    value = typing.cast(int, value)  # a numbers.Integral
    if not low <= value <= LIMITS[what]:
        raise OptionError(key, f"must be in [{low}, {LIMITS[what]:,}], got {value:,}")
    return int(value)


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> str:
    if value not in allowed:
        raise OptionError(key, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return typing.cast(str, value)


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(key, f"must be true or false, got {value!r}")
    return value
