"""Defenses, registered by name. A new defense is one file plus one line below."""
from harness.registry import Registry
from defenses.base import Defense, NoDefense, ShareContext

DEFENSES: Registry[Defense] = Registry("defense")
DEFENSES.register("none", NoDefense)


def build_defense(name: str, **options) -> Defense:
    from harness.config import call_with_options
    return call_with_options(DEFENSES.get(name), options, f"defense '{name}'")


__all__ = ["DEFENSES", "Defense", "NoDefense", "ShareContext", "build_defense"]
