"""Defenses, registered by name. A new defense is one file plus one line below
(its class attribute `name` is the name it registers under)."""
from fedleak.core.registry import Registry
from fedleak.defenses.base import Defense, NoDefense, ShareContext
from fedleak.defenses.hyperfl import HyperFLDefense
from fedleak.defenses.hashing import Hashing
from fedleak.defenses.model_check import ModelCheck
from fedleak.defenses.dropout import DropoutDefense
from fedleak.defenses.dp import DifferentialPrivacy
from fedleak.defenses.prune import Prune
from fedleak.defenses.quantize import RandomizedQuantization
from fedleak.defenses.sketch import Sketch

DEFENSES: Registry[Defense] = Registry("defense")
DEFENSES.register(NoDefense)
DEFENSES.register(HyperFLDefense)
DEFENSES.register(Hashing)
DEFENSES.register(DropoutDefense)
DEFENSES.register(DifferentialPrivacy)
DEFENSES.register(Sketch)
DEFENSES.register(Prune)
DEFENSES.register(RandomizedQuantization)
DEFENSES.register(ModelCheck)


def build_defense(name: str, **options) -> Defense:
    """The registered defense `name` with `options`, checked (errors name `defense.options.<key>`)."""
    return DEFENSES.get(name).from_options(options, "defense.options")


__all__ = ["DEFENSES", "Defense", "NoDefense", "ShareContext", "build_defense"]
