"""HyperFL (Guo et al., AAAI 2025) as a row of the attack × defense matrix.

HyperFL is not a transform of an update but a different protocol: clients share only the
hypernetwork φ that generates their feature extractor (threat_models/hyperfl.py). This defense
therefore changes nothing in what is sent; it applies only to what that protocol shares (Δφ), so
that `defense = "hyperfl"` under any other threat model is a ConfigError (or, in a matrix, a pair
listed as not applicable) instead of a silently undefended FedSGD run. The protocol's options live
in `threat_model.options`."""
from __future__ import annotations

from fedleak.core.components import HYPERNETWORK_UPDATE, NoOptions
from fedleak.defenses.base import Defense


class HyperFLDefense(Defense):
    name = "hyperfl"
    options_class = NoOptions
    applies_to = (HYPERNETWORK_UPDATE,)
    passthrough = True
