"""Attacks, registered by name. A new attack is one file plus one line below."""
from harness.registry import Registry
from attacks.base import Attack, Budget, Reconstruction
from attacks.dlg import DLG, IDLG
from attacks.inverting_gradients import InvertingGradients

ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.register("dlg", DLG)
ATTACKS.register("idlg", IDLG)
ATTACKS.register("ig", InvertingGradients)


def build_attack(name: str, **options) -> Attack:
    from harness.config import call_with_options
    return call_with_options(ATTACKS.get(name), options, f"attack '{name}'")


__all__ = ["ATTACKS", "Attack", "Budget", "Reconstruction", "build_attack"]
