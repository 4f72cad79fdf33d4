"""Validation of defense options: every bad value becomes a one-line ConfigError that names the
defense and the option, so `fedleak` can print it and exit."""
from __future__ import annotations

import numbers

from fedleak.core.errors import ConfigError


def number(defense: str, option: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A real number in [low, high] (open at either end when asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise ConfigError(f"defense '{defense}': {option} must be a number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            span = f"{'>' if low_open else '>='} {low:g}"
        elif low is None:
            span = f"{'<' if high_open else '<='} {high:g}"
        else:
            span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"defense '{defense}': {option} must be {span}, got {value!r}")
    return float(value)


def integer(defense: str, option: str, value, *, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"defense '{defense}': {option} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"defense '{defense}': {option} must be >= {low}, got {value!r}")
    return int(value)


def choice(defense: str, option: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"defense '{defense}': {option} must be one of {', '.join(allowed)}, got {value!r}")
    return value
