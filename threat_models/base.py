"""Threat models: what a client shares in one round, and the attacker's differentiable replay.

`observe` is the data path from victim to attack input:
victim batch -> true client update -> defense.share -> Observation (+ AttackerKnowledge).
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import asdict

import torch

from fedleak.core.components import GRADIENT, UPDATE, Component, NoOptions
from fedleak.core.options import describe_options
from fedleak.defenses.base import Defense, ReceivedModel, ShareContext, share_update
from fedleak.models.functional import loss_gradient, local_update
from fedleak.threat_models.knowledge import AttackerKnowledge, KnowledgeFlags
from fedleak.models.functional import LocalTraining
from fedleak.threat_models.observation import Observation


class ThreatModel(Component, ABC):
    """`kind` is what one client shares (core.components.KINDS): the defenses and attacks that
    declare it in their `applies_to` run under this threat model. Protocol options (the
    threat_model.options table) are the fields of `options_class`; the local hyperparameters are
    `training`. Capability flags tell an attack what it may assume of `replay`."""
    name: str
    kind: str
    section = "threat_model"
    options_class = NoOptions
    # replay runs the victim model itself on (params, buffers), so any module computing the same
    # function may stand in for it (attacks.objective.FastGradientMatcher's faster replay model)
    replays_plain_model: bool = False
    # the replayed update is the mean-loss gradient of the parameters, nothing more (gradient tape)
    replay_is_loss_gradient: bool = False
    # the server may send a model of its own making (architecture and weights) instead of the global
    # model: an attack that crafts one (`Attack.crafts_model`) runs only under such a threat model
    server_crafts_model: bool = False

    def __init__(self, training: LocalTraining | None = None, options=None, **values):
        super().__init__(options, **values)
        self.training = training or LocalTraining()

    @abstractmethod
    def client_update(self, model, params, buffers, x, y, defense: Defense) -> list[torch.Tensor]:
        """The client's true update (before the defense shapes what is sent)."""

    @abstractmethod
    def replay(self, model, params, buffers, x, y, knowledge: AttackerKnowledge) -> list[torch.Tensor]:
        """The attacker's differentiable model of `client_update` for trial inputs x (normalised)."""

    def observe(self, victim, x: torch.Tensor, y: torch.Tensor, defense: Defense, flags: KnowledgeFlags,
                seed: int = 0, client_id: int = 0, round: int = 0) -> tuple[Observation, AttackerKnowledge]:
        """`victim` is what the server sent the attacked client (`sent_model`)."""
        x_norm = victim.normalise(x)
        names = list(victim.params)
        context = ShareContext(names, x.shape[0], client_id, round, seed)
        shared, public, decoded = self.client_round(victim, x_norm, y, defense, context)
        observation = Observation(self.name, self.kind, shared, names, victim.params, victim.buffers,
                                  x.shape[0], client_id, round, public, decoded, seed)
        return observation, self.knowledge(victim, x_norm, y, defense, flags)

    def client_round(self, victim, x_norm, y, defense: Defense, context: ShareContext):
        """One client's round on the model it received: (what it sends, the public metadata, the
        server's decoding). A defense's model check runs first; a model it refuses is not trained
        on, and the client sends zeros (it drops out of the round)."""
        verdict = defense.check_model(ReceivedModel(victim.model, victim.params, victim.buffers,
                                                    victim.prescribed.model, victim.previous_round, x_norm))
        model = defense.prepare_model(victim.model)
        if verdict is not None and verdict.refuse:
            update = [torch.zeros_like(p) for p in victim.params.values()]
        else:
            update = self.client_update(model, victim.params, victim.buffers, x_norm, y, defense)
        shared, public = share_update(defense, update, context)
        public = {**public, "bytes_sent": defense.bytes_sent(shared)}
        if verdict is not None:
            public["model_check"] = verdict.as_public()
        return shared, public, defense.decode(shared, public)

    def sent_model(self, victim, attack, batch_size: int, flags: KnowledgeFlags, seed: int = 0):
        """What the server sends this round: the global model (`victim`) unless the protocol lets
        the server craft it (`server_crafts_model`) and the attack does (threat_models.malicious)."""
        return victim

    def build_victim(self, spec, data, defense: Defense, progress: bool = False):
        """The victim as this protocol trains it (FedAvg rounds here; HyperFL and VFL differ)."""
        from fedleak.threat_models.victim import build_victim
        return build_victim(spec, data, progress=progress)

    def local_steps(self, num_examples: int) -> int:
        """Gradient steps in one client round on `num_examples` (what a per-step DP defense composes
        over in the attacked round)."""
        return 1

    def private_input(self, x: torch.Tensor) -> torch.Tensor:
        """The part of the victim images the attacked client holds: what a reconstruction is
        scored against (all of it here; one party's columns in vertical FL)."""
        return x

    def knowledge(self, victim, x_norm, y, defense: Defense, flags: KnowledgeFlags) -> AttackerKnowledge:
        data = victim.data
        local_training = self.training if flags.hyperparameters else None
        return AttackerKnowledge(
            flags=flags, num_images=x_norm.shape[0], image_shape=tuple(x_norm.shape[1:]),
            num_classes=data.num_classes, mean=tuple(data.mean), std=tuple(data.std),
            labels=y.clone() if flags.labels else None,
            local_training=local_training, threat_model=self.attacker_view(local_training),
            bn_statistics=batch_norm_statistics(victim.model, victim.params, victim.buffers, x_norm) if flags.bn_statistics else None,
            auxiliary_images=data.train_images if flags.auxiliary_data else None,
            auxiliary_labels=data.train_labels if flags.auxiliary_data else None,
            defense=defense if flags.defense else None,
            dropout_masks=_recorded_dropout_masks(defense) if flags.dropout_masks else None,
        )

    def attacker_view(self, local_training: LocalTraining | None) -> "ThreatModel":
        """This protocol as the attacker knows it: its options (the server runs it) and the local
        hyperparameters only where the knowledge grants them (None otherwise). `replay` reads
        the hyperparameters from the knowledge, never from `training`."""
        view = copy.copy(self)
        view.training = local_training
        return view

    def describe(self) -> dict:
        """name, local training and protocol options: `THREAT_MODELS.get(name).from_options(
        options, where, LocalTraining(**training))` rebuilds it."""
        return {"name": self.name, "training": None if self.training is None else asdict(self.training),
                "options": describe_options(self.options)}


class FedSGD(ThreatModel):
    """The client shares one gradient of the mean loss over its batch of B images."""
    name, kind = "fedsgd", GRADIENT
    replays_plain_model = replay_is_loss_gradient = True

    def client_update(self, model, params, buffers, x, y, defense):
        step = defense.gradient_fn()
        return step(model, params, buffers, x, y) if step else loss_gradient(model, params, buffers, x, y)

    def replay(self, model, params, buffers, x, y, knowledge):
        step = _replay_step(knowledge)
        return step(model, params, buffers, x, y) if step else loss_gradient(model, params, buffers, x, y, create_graph=True)


class FedAvg(ThreatModel):
    """The client shares θ_K − θ_0 after K local SGD steps (epochs × mini-batches, fixed order).

    An attacker that knows the hyperparameters unrolls the K steps differentiably (IG's FedAvg
    reconstructor); one that does not treats −Δθ as a single gradient (cosine distance makes the
    unknown lr·K scale irrelevant)."""
    name, kind = "fedavg", UPDATE
    replays_plain_model = True

    def client_update(self, model, params, buffers, x, y, defense):
        return local_update(model, params, buffers, x, y, self.training, gradient_fn=defense.gradient_fn())

    def local_steps(self, num_examples: int) -> int:
        return self.training.steps(num_examples)

    def replay(self, model, params, buffers, x, y, knowledge):
        step = _replay_step(knowledge)
        if knowledge.local_training is None:
            grads = step(model, params, buffers, x, y) if step else loss_gradient(model, params, buffers, x, y, create_graph=True)
            return [-g for g in grads]
        return local_update(model, params, buffers, x, y, knowledge.local_training, create_graph=True, gradient_fn=step)


def _replay_step(knowledge: AttackerKnowledge):
    """The known defense's noiseless per-step gradient (DP-SGD's per-example clipping), or None."""
    return knowledge.defense.replay_gradient_fn() if knowledge.defense is not None else None


def _recorded_dropout_masks(defense: Defense) -> list[list[torch.Tensor]]:
    """Oracle knowledge: the dropout masks of the update the client just shared (defenses/dropout.py)."""
    from fedleak.defenses.dropout import recorded_masks  # lazy: defenses import threat_models
    return recorded_masks(defense)


def batch_norm_statistics(model, params, buffers, x) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-BN-layer (mean, var) of the client's batch: what a statistics-informed attacker gets."""
    stats = []

    def record(module, inputs, output):
        x = inputs[0].detach()
        stats.append((x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)))
    hooks = [m.register_forward_hook(record)
             for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            torch.func.functional_call(model, (params, buffers), (x,))
    finally:
        for h in hooks:
            h.remove()
    return stats
