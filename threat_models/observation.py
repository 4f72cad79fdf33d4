"""What an honest-but-curious server holds after a client's round: the only input of an attack
besides the attacker's knowledge."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedleak.core.components import HYPERNETWORK_UPDATE, UPDATE
from fedleak.core.errors import NumericalError


@dataclass
class Observation:
    threat_model: str                  # name in THREAT_MODELS (a record: attacks get the protocol in their knowledge)
    kind: str                          # what was shared: one of core.components.KINDS
    shared: list[torch.Tensor]         # what arrived, one tensor per entry of param_names
    param_names: list[str]
    global_params: dict[str, torch.Tensor]  # weights the client started from (the server sent them)
    buffers: dict[str, torch.Tensor]        # BN running statistics etc. of the global model
    num_examples: int
    client_id: int = 0
    round: int = 0
    public: dict = field(default_factory=dict)  # defense metadata the server legitimately sees
    decoded: list[torch.Tensor] | None = None  # the server's protocol decoding of `shared` (param-shaped)
    seed: int = 0  # the round's PUBLIC seed (ShareContext.seed): an attacker replays `share` with it

    def __post_init__(self):
        if self.decoded is None:
            self.decoded = self.shared
        names = self.param_names if len(self.shared) == len(self.param_names) else [f"shared[{i}]" for i in range(len(self.shared))]
        for name, t in zip(names, self.shared):
            if not torch.isfinite(t).all():
                bad = "NaN" if torch.isnan(t).any() else "Inf"
                raise NumericalError(f"observation from client {self.client_id} has {bad} in '{name}'; refusing to attack a corrupt update")

    def to(self, device) -> "Observation":
        move = lambda d: {k: v.to(device) for k, v in d.items()}
        return Observation(self.threat_model, self.kind, [t.to(device) for t in self.shared], list(self.param_names),
                           move(self.global_params), move(self.buffers), self.num_examples,
                           self.client_id, self.round, dict(self.public), [t.to(device) for t in self.decoded], self.seed)

    @property
    def descent_step(self) -> bool:
        """Whether what was shared is θ_K − θ_0 of local SGD (FedAvg Δθ, HyperFL Δφ): minus a
        sum of gradients, where a gradient has the opposite sign."""
        return self.kind in (UPDATE, HYPERNETWORK_UPDATE)

    @property
    def update(self) -> list[torch.Tensor]:
        """Param-shaped update as the server reads it (what a defense-unaware attack matches)."""
        return self.decoded
