"""Attacks, registered by name. A new attack is one file plus one line below
(its class attribute `name` is the name it registers under)."""
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
ATTACKS.register(DLG)
ATTACKS.register(IDLG)
ATTACKS.register(InvertingGradients)
ATTACKS.register(HyperFLLeak)
ATTACKS.register(EmbeddingInversion)
ATTACKS.register(EmbeddingDecoder)
ATTACKS.register(GGL)
ATTACKS.register(GIFD)
ATTACKS.register(DropoutInversion)
ATTACKS.register(DropoutInversionOracle)
ATTACKS.register(OrderInvariant)
ATTACKS.register(DefenseLoop)
ATTACKS.register(AnalyticFC)
ATTACKS.register(LayerSubset)
ATTACKS.register(LearnToInvert)
ATTACKS.register(Imprint)
ATTACKS.register(TrapWeights)
ATTACKS.register(Loki)
ATTACKS.register(GradInversion)


def build_attack(name: str, **options) -> Attack:
    """The registered attack `name` with `options`, checked (errors name `attack.options.<key>`)."""
    return ATTACKS.get(name).from_options(options, "attack.options")


__all__ = ["ATTACKS", "Attack", "Budget", "PresetBudget", "Reconstruction", "build_attack"]
