"""User components loaded by import path ("package.module:Class") and registered by name.

A plugin defense subclasses `fedleak.defenses.base.Defense` (docs/plugins.md); a plugin attack subclasses
`fedleak.attacks.base.Attack`. Both register under their class attribute `name`, so a matrix refers to
them like built-ins, and every worker process registers them again before its first cell."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys

from fedleak.core.components import KINDS
from fedleak.core.errors import ConfigError


def load_plugins(paths) -> list[type]:
    return [load_plugin(path) for path in paths]


def load_plugin(path: str) -> type:
    """Import, check and register one plugin class; registering the same class twice is a no-op."""
    from fedleak.attacks import ATTACKS
    from fedleak.attacks.base import Attack
    from fedleak.defenses import DEFENSES
    from fedleak.defenses.base import Defense
    cls = import_class(path)
    if isinstance(cls, type) and issubclass(cls, Defense):
        registry, kind = DEFENSES, "defense"
    elif isinstance(cls, type) and issubclass(cls, Attack):
        registry, kind = ATTACKS, "attack"
    else:
        raise ConfigError(f"plugin {path}: {getattr(cls, '__name__', cls)!s} is not a subclass of "
                          "fedleak.defenses.base.Defense or fedleak.attacks.base.Attack (see docs/plugins.md)")
    check_interface(cls, kind, path)
    name = cls.__dict__.get("name")
    if name in registry:
        if registry.get(name) is not cls:
            raise ConfigError(f"plugin {path}: {kind} name '{name}' is already taken by "
                              f"{_where(registry.get(name))}; set a different `name` on the class")
        return cls
    registry.register(name, cls)
    return cls


def import_user_module(module_name: str, what: str):
    """The user's own module (a plugin, a Flower app), found as `python -m` would find it: from the
    working directory first. The only place fedleak puts the working directory on sys.path; every
    fedleak module is `fedleak.*`, so a user's `attacks/` or `examples/` shadows nothing of ours."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what}: cannot import module '{module_name}': {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(f"{what}: importing '{module_name}' raised {type(e).__name__}: {e}") from None


def import_class(path: str):
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"plugin {path!r}: expected 'package.module:ClassName'")
    module = import_user_module(module_name, f"plugin {path}")
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"plugin {path}: module '{module_name}' has no attribute '{attribute}'") from None


def check_interface(cls: type, kind: str, path: str) -> None:
    """What the harness relies on beyond subclassing: a name of its own, overridable methods that
    keep the base signatures, and construction with no arguments (defaults for every option)."""
    from fedleak.attacks.base import Attack
    from fedleak.defenses.base import Defense
    base = Defense if kind == "defense" else Attack
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name or name == base.__dict__.get("name"):
        raise ConfigError(f"plugin {path}: set a class attribute `name = \"...\"` of its own (used in reports and configs)")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigError(f"plugin {path}: does not implement {missing}")
    for method in ("share", "simulate", "decode") if kind == "defense" else ("reconstruct",):
        expected = list(inspect.signature(getattr(base, method)).parameters)
        actual = list(inspect.signature(getattr(cls, method)).parameters)
        if actual[:len(expected)] != expected:
            raise ConfigError(f"plugin {path}: {method}{inspect.signature(getattr(cls, method))} does not match "
                              f"the interface {method}{inspect.signature(getattr(base, method))}")
    required = [p.name for p in inspect.signature(cls).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise ConfigError(f"plugin {path}: __init__ needs {', '.join(required)}; give every option a default")
    options = cls.options_type()
    if not dataclasses.is_dataclass(options) or not options.__dataclass_params__.frozen:
        raise ConfigError(f"plugin {path}: options_class must be a frozen dataclass (core.components)")
    unknown = [kind for kind in cls.applies_to if kind not in KINDS]
    if unknown:
        raise ConfigError(f"plugin {path}: applies_to names '{unknown[0]}', not a kind of observation; "
                          f"kinds: {', '.join(KINDS)}")


def _where(cls) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"
