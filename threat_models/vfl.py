"""Vertical FL (HashVFL, Qiu et al., TIFS 2024, §III threat model; methods.md §11) as a threat model.

Two passive parties hold the left and right column slices of every image; the active party holds
the top model and the labels, receives each party's message (embedding, or hash code under the
`hashing` defense) and is the attacker. What it observes of the victim party for a batch is that
party's messages: kind "embedding", shared = [(B, width) tensor].

White-box assumption (as HashVFL's own `target_reconstruct.py`): the observation carries the
trained bottom models and codecs (`global_params`, `buffers`), so the attacker can run the
victim party's bottom model on trial inputs. Messages of the attacked batch are computed in eval
mode (BN running statistics): inference after training, where a batch of one is well defined.

A defense plugs into the protocol through three optional hooks (defenses/hashing.py has them):
`embedding_width(width)`, `codec(width)` (a module on the bottom output) and
`training_loss(sent, labels, num_classes)`; any other defense only shapes the sent messages."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.func import functional_call

from fedleak.core.components import EMBEDDING
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_choice, check_integer, check_number
from fedleak.defenses.base import Defense, ShareContext, share_update
from fedleak.threat_models.base import ThreatModel
from fedleak.threat_models.knowledge import KnowledgeFlags
from fedleak.threat_models.observation import Observation
from fedleak.threat_models.vfl_nets import split_columns


@dataclass(frozen=True)
class VFLProtocol:
    split: float = 0.5          # fraction of the columns held by party 0 (the left one)
    victim_party: int = 0       # whose messages the attacker inverts
    embedding_width: int = 64   # bottom output width when no codec defense sets it
    train_epochs: int = 5       # VFL training on the train split (HashVFL: 30)
    train_lr: float = 1e-3      # Adam, as HashVFL
    train_batch_size: int = 128
    weight_decay: float = 5e-4

    def __post_init__(self):
        check_number("split", self.split, low=0, high=1, low_open=True, high_open=True)
        check_choice("victim_party", self.victim_party, (0, 1))
        for key in ("embedding_width", "train_batch_size"):
            check_integer(key, getattr(self, key), low=1)
        check_integer("train_epochs", self.train_epochs, low=0)
        check_number("train_lr", self.train_lr, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0)


class VFL(ThreatModel):
    """Options (threat_model.options) are the fields of VFLProtocol; lr/epochs/local_batch_size
    of the threat-model table do not apply (there is no local training round to replay)."""
    name, kind = "vfl", EMBEDDING
    options_class = VFLProtocol

    @property
    def protocol(self) -> VFLProtocol:
        return self.options

    def build_victim(self, spec, data, defense: Defense, progress: bool = False):
        from fedleak.threat_models.vfl_victim import build_vfl_victim
        return build_vfl_victim(spec, data, self.protocol, defense, progress)

    def private_input(self, x: torch.Tensor) -> torch.Tensor:
        a, b = split_columns(x.shape[-1], self.protocol.split)[self.protocol.victim_party]
        return x[..., a:b]

    def client_update(self, model, params, buffers, x, y, defense, seed=0):
        """The victim party's messages for full (normalised) images x."""
        if defense.gradient_fn() is not None:
            raise ConfigError(f"threat model 'vfl' has no local gradient step for defense '{defense.name}' to act on")
        return self.replay(model, params, buffers, self.private_input(x), y, None)

    def replay(self, model, params, buffers, x, y, knowledge):
        """Messages for trial inputs of the victim party's slice (differentiable; sign via STE)."""
        model.eval()
        return [functional_call(model, (params, buffers), (x,), {"party": self.protocol.victim_party})]

    def observe(self, victim, x: torch.Tensor, y: torch.Tensor, defense: Defense, flags: KnowledgeFlags,
                seed: int = 0, client_id: int = 0, round: int = 0):
        x_norm = victim.normalise(x)
        with torch.no_grad():
            sent = self.client_update(victim.model, victim.params, victim.buffers, x_norm, y, defense)
        party = self.protocol.victim_party
        names = [f"party{party}.message"]
        shared, public = share_update(defense, sent, ShareContext(names, x.shape[0], client_id, round, seed))
        public = {**public, "bytes_sent": defense.bytes_sent(shared), "party": party,
                  "columns": list(victim.model.columns[party])}
        observation = Observation(self.name, self.kind, shared, names, victim.params, victim.buffers, x.shape[0],
                                  client_id, round, public, defense.decode(shared, public), seed)
        return observation, self.knowledge(victim, x_norm, y, defense, flags)

    def knowledge(self, victim, x_norm, y, defense, flags):
        """The active party holds the labels by definition of the protocol; the image to rebuild
        is the victim party's slice (auxiliary images stay whole: the attack slices them)."""
        base = super().knowledge(victim, x_norm, y, defense, flags)
        return dataclasses.replace(base, labels=y.clone(), image_shape=tuple(self.private_input(x_norm).shape[1:]))
