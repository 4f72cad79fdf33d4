"""Attacks, registered by name. A new attack is one file plus one line below."""
from fedleak.core.registry import Registry
from fedleak.attacks.base import Attack, Budget, Reconstruction
from fedleak.attacks.dlg import DLG, IDLG
from fedleak.attacks.inverting_gradients import InvertingGradients
from fedleak.attacks.hyperfl_leak import HyperFLLeak
from fedleak.attacks.embedding_inversion import EmbeddingDecoder, EmbeddingInversion
from fedleak.attacks.ggl import GGL
from fedleak.attacks.gifd import GIFD
from fedleak.attacks.dia import DropoutInversion, DropoutInversionOracle
from fedleak.attacks.order_invariant import OrderInvariant

ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.register("dlg", DLG)
ATTACKS.register("idlg", IDLG)
ATTACKS.register("ig", InvertingGradients)
ATTACKS.register("hyperfl-leak", HyperFLLeak)
ATTACKS.register("embedding-inversion", EmbeddingInversion)
ATTACKS.register("embedding-decoder", EmbeddingDecoder)
ATTACKS.register("ggl", GGL)
ATTACKS.register("gifd", GIFD)
ATTACKS.register("dia", DropoutInversion)
ATTACKS.register("dia-oracle", DropoutInversionOracle)
ATTACKS.register("order-invariant", OrderInvariant)


def build_attack(name: str, **options) -> Attack:
    """An attack from its registry name and options; options of attacks that declare a
    `config_class` are type-checked against it, and errors name `attack.options.<key>`."""
    from fedleak.core.options import call_with_options, from_dict
    factory = ATTACKS.get(name)
    config_class = getattr(factory, "config_class", None)
    if config_class is not None:
        return factory(from_dict(config_class, options, "attack.options"))
    return call_with_options(factory, options, f"attack '{name}'")


__all__ = ["ATTACKS", "Attack", "Budget", "Reconstruction", "build_attack"]
