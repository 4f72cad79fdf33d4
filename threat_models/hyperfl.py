"""The HyperFL protocol (Guo et al., AAAI 2025, §3 and Alg. 1; methods.md §9) as a threat model.

A client holds a private embedding v and a private classifier head; the feature extractor is
θ = h(v; φ). One round, from the global hypernetwork φ̄ (official `cnn/methods/hyperfl.py`):

1. `head_epochs` epochs on the head alone (θ fixed): SGD `head_lr`, momentum, weight decay;
2. `training.epochs` epochs on (φ, v) through the generated θ: SGD `training.lr`, same momentum
   and weight decay, each group's gradient clipped to `clip_norm` (φ and v separately);
3. the client sends Δφ = φ_K − φ̄; the server averages the Δφ (weighted by data size).

The observation is therefore the hypernetwork update only (kind "hypernetwork-update", one tensor per φ
entry); v, the head and θ never leave the client. A non-adaptive attacker replays the round with
the public initial embedding/head of the architecture in place of the client's unknown ones
(that is what plain IG does against this threat model); attacks/hyperfl_leak.py knows better."""
from __future__ import annotations

import torch

from fedleak.core.components import HYPERNETWORK_UPDATE
from fedleak.core.errors import ConfigError
from fedleak.defenses.base import Defense, ShareContext, share_update
from fedleak.threat_models.base import ThreatModel
from fedleak.threat_models.hyperfl_protocol import (ClientState, HyperFLProtocol, _cross_entropy, client_round,
                                                    hypernetwork_phase, public_state)
from fedleak.threat_models.hyperfl_victim import build_hyperfl_victim
from fedleak.threat_models.knowledge import KnowledgeFlags
from fedleak.threat_models.observation import Observation


class HyperFL(ThreatModel):
    """Clients share only Δφ of the hypernetwork (see module docstring). Options (threat_model.options)
    are the fields of HyperFLProtocol; threat_model.lr/epochs/local_batch_size drive phase 2."""
    name, kind = "hyperfl", HYPERNETWORK_UPDATE
    options_class = HyperFLProtocol

    @property
    def protocol(self) -> HyperFLProtocol:
        return self.options

    def build_victim(self, spec, data, defense: Defense, progress: bool = False):
        return build_hyperfl_victim(spec, data, self.protocol, progress)

    def client_update(self, model, params, buffers, x, y, defense, seed=0, state: ClientState | None = None):
        if defense.gradient_fn() is not None:
            raise ConfigError(f"threat model 'hyperfl' does not run per-step gradient defenses (defense '{defense.name}')")
        update, _ = client_round(model, params, state or public_state(model), x, y, self.protocol, self.training)
        return update

    def replay(self, model, params, buffers, x, y, knowledge):
        """The defense-unaware replay: the client's v and head are unknown, so the public initial
        ones stand in; without the hyperparameters, Δφ is read as one negative gradient."""
        guess = public_state(model)
        if knowledge.local_training is None:
            phi = {k: p.detach().requires_grad_(True) for k, p in params.items()}
            loss = _cross_entropy(model.logits(model.generate(phi, guess.embedding), guess.head, x), y)
            return [-g for g in torch.autograd.grad(loss, list(phi.values()), create_graph=True)]
        phi_k, _ = hypernetwork_phase(model, params, guess.embedding, guess.head, x, y, model.protocol,
                                      knowledge.local_training, create_graph=True)
        return [phi_k[k] - params[k] for k in params]

    def observe(self, victim, x, y, defense: Defense, flags: KnowledgeFlags, seed: int = 0, client_id: int = 0,
                round: int = 0):
        """As ThreatModel.observe, but the attacked client trains with its own private state."""
        x_norm = victim.normalise(x)
        update = self.client_update(victim.model, victim.params, victim.buffers, x_norm, y, defense,
                                    state=victim.client(client_id))
        names = list(victim.params)
        shared, public = share_update(defense, update, ShareContext(names, x.shape[0], client_id, round, seed))
        public = {**public, "bytes_sent": defense.bytes_sent(shared)}
        observation = Observation(self.name, self.kind, shared, names, victim.params, victim.buffers, x.shape[0],
                                  client_id, round, public, defense.decode(shared, public), seed)
        return observation, self.knowledge(victim, x_norm, y, defense, flags)
