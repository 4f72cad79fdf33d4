"""Attacks, registered by name. A new attack is one file plus one line below."""
from fedleak.core.registry import Registry
from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction
from fedleak.attacks.dlg import DLG, IDLG
from fedleak.attacks.inverting_gradients import InvertingGradients
from fedleak.attacks.hyperfl_leak import HyperFLLeak
from fedleak.attacks.embedding_inversion import EmbeddingDecoder, EmbeddingInversion
from fedleak.attacks.ggl import GGL
from fedleak.attacks.gifd import GIFD
from fedleak.attacks.dia import DropoutInversion, DropoutInversionOracle
from fedleak.attacks.order_invariant import OrderInvariant
from fedleak.attacks.defense_loop import DefenseLoop
from fedleak.attacks.analytic_fc import AnalyticFC
from fedleak.attacks.layer_subset import LayerSubset
from fedleak.attacks.learn_to_invert import LearnToInvert
from fedleak.attacks.imprint import Imprint
from fedleak.attacks.trap_weights import TrapWeights
from fedleak.attacks.loki import Loki
from fedleak.attacks.gradinversion import GradInversion

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
ATTACKS.register("defense-loop", DefenseLoop)
ATTACKS.register("analytic-fc", AnalyticFC)
ATTACKS.register("layer-subset", LayerSubset)
ATTACKS.register("learn-to-invert", LearnToInvert)
ATTACKS.register("imprint", Imprint)
ATTACKS.register("trap-weights", TrapWeights)
ATTACKS.register("loki", Loki)
ATTACKS.register("gradinversion", GradInversion)


def build_attack(name: str, **options) -> Attack:
    """The registered attack `name` with `options`, checked (errors name `attack.options.<key>`)."""
    return ATTACKS.get(name).from_options(options, "attack.options")


__all__ = ["ATTACKS", "Attack", "Budget", "PresetBudget", "Reconstruction", "build_attack"]
