"""A malicious server: it sends the clients a model of its own making (architecture and weights)
instead of the global model, and receives their FedSGD gradients, through secure aggregation of N
clients (`clients`; 1: none). Fowl et al., "Robbing the Fed", ICLR 2022; Boenisch et al., "When the
Curious Abandon Honesty", EuroS&P 2023; Zhao et al., "LOKI", IEEE S&P 2024.

The attack owns the modification: an attack that declares `crafts_model` builds what the server sends
(`Attack.craft(victim, ServerRound)` returns a CraftedVictim) and reconstructs from the gradients of
that model. The observation records it as what the server sent: its `global_params` and
`param_names` are the crafted model's, and the runner hands the attack the crafted architecture. A
client-side model check (a defense's `check_model`) sees the crafted model next to the model its own
code prescribes and the global model of the round before. An attack that crafts nothing (IG) gets the
global model: the threat model is then secure aggregation with an honest server."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fedleak.threat_models.knowledge import KnowledgeFlags
from fedleak.threat_models.secure_aggregation import SecAggOptions, SecureAggregation
from fedleak.threat_models.victim import Victim


@dataclass(frozen=True)
class ServerRound:
    """What the server knows when it crafts this round's model."""
    clients: int             # N: the updates secure aggregation sums
    batch_size: int          # B, examples per client (public: FedAvg weights updates by them)
    flags: KnowledgeFlags    # with auxiliary_data, the server has images to calibrate its model on
    seed: int


@dataclass
class CraftedVictim(Victim):
    """The model a malicious server sent client 0 (the attacked one); `variants[c]` is what client c
    got when the server sends each client its own (LOKI), and `prescribed_victim` the model the
    protocol prescribes (the client's own architecture, this round's global weights)."""
    crafted_by: str = ""
    prescribed_victim: Victim | None = None
    variants: tuple["CraftedVictim", ...] = ()

    def for_client(self, client: int) -> Victim:
        return self.variants[client] if self.variants else self

    @property
    def prescribed(self) -> Victim:
        return self.prescribed_victim

    def previous_round(self):
        return self.prescribed_victim.previous_round()


def crafted(victim: Victim, by: str, model: torch.nn.Module, params: dict, buffers: dict) -> CraftedVictim:
    """`victim`'s round with the server's own model (architecture `model`, weights `params`, `buffers`)."""
    return CraftedVictim(model.eval(), params, buffers, victim.data, victim.spec, victim.accuracy,
                         crafted_by=by, prescribed_victim=victim.prescribed)


@dataclass(frozen=True)
class MaliciousOptions(SecAggOptions):
    clients: int = 1          # 1: the server sees the client's own gradient; N > 1: through secure aggregation


class MaliciousServer(SecureAggregation):
    """The server crafts the model it sends; the clients' gradients reach it through secure
    aggregation of `clients` (module docstring)."""
    name = "malicious"
    options_class = MaliciousOptions
    server_crafts_model = True

    def sent_model(self, victim, attack, batch_size: int, flags: KnowledgeFlags, seed: int = 0):
        if not getattr(attack, "crafts_model", False):
            return victim
        return attack.craft(victim, ServerRound(self.options.clients, batch_size, flags, seed))
