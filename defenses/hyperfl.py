"""HyperFL (Guo et al., AAAI 2025) as a row of the attack × defense matrix.

HyperFL is not a transform of an update but a different protocol: clients share only the
hypernetwork φ that generates their feature extractor (threat_models/hyperfl.py). This defense
therefore changes nothing in what is sent; it names the protocol it needs, so that
`defense = "hyperfl"` under any threat model other than `hyperfl` is a ConfigError instead of a
silently undefended FedSGD run. The protocol's options live in `threat_model.options`."""
from __future__ import annotations

from fedleak.defenses.base import Defense


class HyperFLDefense(Defense):
    name = "hyperfl"
    requires_threat_model = "hyperfl"

    def describe(self) -> dict:
        return {"protocol": "hyperfl"}
