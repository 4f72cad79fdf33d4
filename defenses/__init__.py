"""Defenses, registered by name. A new defense is one file plus one line below."""
from harness.registry import Registry
from defenses.base import Defense, NoDefense, ShareContext
from defenses.hyperfl import HyperFLDefense
from defenses.hashing import Hashing
from defenses.dropout import DropoutDefense
from defenses.dp import DifferentialPrivacy
from defenses.prune import Prune
from defenses.quantize import RandomizedQuantization
from defenses.sketch import Sketch

DEFENSES: Registry[Defense] = Registry("defense")
DEFENSES.register("none", NoDefense)
DEFENSES.register("hyperfl", HyperFLDefense)
DEFENSES.register("hashing", Hashing)
DEFENSES.register("dropout", DropoutDefense)
DEFENSES.register("dp", DifferentialPrivacy)
DEFENSES.register("sketch", Sketch)
DEFENSES.register("prune", Prune)
DEFENSES.register("quantize", RandomizedQuantization)


def build_defense(name: str, **options) -> Defense:
    from harness.config import call_with_options
    return call_with_options(DEFENSES.get(name), options, f"defense '{name}'")


__all__ = ["DEFENSES", "Defense", "NoDefense", "ShareContext", "build_defense"]
