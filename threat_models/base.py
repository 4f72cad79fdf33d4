"""Threat models: what a client shares in one round, and the attacker's differentiable replay.

`observe` is the data path from victim to attack input:
victim batch -> true client update -> defense.share -> Observation (+ AttackerKnowledge).
"""
from __future__ import annotations

import copy
import typing
from abc import ABC, abstractmethod
from dataclasses import asdict
from typing import Any, Callable, ClassVar

import torch

from fedleak.core.components import GRADIENT, UPDATE, Component, NoOptions
from fedleak.core.errors import ConfigError
from fedleak.core.options import describe_options
from fedleak.defenses.base import Defense, NoDefense, ReceivedModel, ShareContext, share_update
from fedleak.models.functional import LocalTraining, local_update, loss_gradient, shuffled_orders
from fedleak.threat_models.knowledge import AttackerKnowledge, KnowledgeFlags, told_training
from fedleak.threat_models.observation import Observation

# 1 − cos below which the attacker's replay counts as exact: float rounding between two runs of the same
# loop (another process, thread count or convolution algorithm) stays many orders of magnitude under it,
# a wrong optimiser or batch order far above (docs/flower.md)
REPLAY_EXACT_BELOW = 1e-6
Params = dict[str, torch.Tensor]  # parameters or buffers by name


class ThreatModel(Component, ABC):
    """`kind` is what one client shares (core.components.KINDS): the defenses and attacks that
    declare it in their `applies_to` run under this threat model. Protocol options (the
    threat_model.options table) are the fields of `options_class`; the local hyperparameters are
    `training`. Capability flags tell an attack what it may assume of `replay`."""
    name: ClassVar[str]
    kind: ClassVar[str]
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
    # runs LocalTraining's optimiser, order and BN-mode options (only fedavg); elsewhere they are refused
    local_optimizer: bool = False

    def __init__(self, training: LocalTraining | None = None, options: Any = None, **values: Any) -> None:
        super().__init__(options, **values)
        self.training: LocalTraining = training or LocalTraining()
        if not self.local_optimizer:
            _refuse_local_options(self.training, self.name)

    @abstractmethod
    def client_update(self, model: torch.nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor, defense: Defense,
                      seed: int = 0) -> list[torch.Tensor]:
        """The client's true update (before the defense shapes what is sent); `seed` draws whatever
        the client draws at random (a shuffling client's mini-batch order)."""

    @abstractmethod
    def replay(self, model: torch.nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
               knowledge: AttackerKnowledge) -> list[torch.Tensor]:
        """The attacker's differentiable model of `client_update` for trial inputs x (normalised)."""

    def observe(self, victim: Any, x: torch.Tensor, y: torch.Tensor, defense: Defense, flags: KnowledgeFlags,
                seed: int = 0, client_id: int = 0, round: int = 0) -> tuple[Observation, AttackerKnowledge]:
        """`victim` is what the server sent the attacked client (`sent_model`)."""
        x_norm = victim.normalise(x)
        names = list(victim.params)
        context = ShareContext(names, x.shape[0], client_id, round, seed)
        configured = configured_copy(defense) if flags.defense else None
        shared, public, decoded = self.client_round(victim, x_norm, y, defense, context)
        observation = Observation(self.name, self.kind, shared, names, victim.params, victim.buffers,
                                  x.shape[0], client_id, round, public, decoded, seed)
        return observation, self.knowledge(victim, x_norm, y, defense, flags, configured)

    def client_round(self, victim: Any, x_norm: torch.Tensor, y: torch.Tensor, defense: Defense,
                     context: ShareContext) -> tuple[list[torch.Tensor], dict[str, Any], list[torch.Tensor]]:
        """One client's round on the model it received: (what it sends, the public metadata, the
        server's decoding). A defense's model check runs first; a model it refuses is not trained
        on, and the client sends zeros (it drops out of the round)."""
        verdict = defense.check_model(ReceivedModel(victim.model, victim.params, victim.buffers,
                                                    victim.prescribed.model, victim.previous_round, x_norm))
        model = defense.prepare_model(victim.model)
        if verdict is not None and verdict.refuse:
            update = [torch.zeros_like(p) for p in victim.params.values()]
        else:
            update = self.client_update(model, victim.params, victim.buffers, x_norm, y, defense, seed=context.seed)
        shared, public = share_update(defense, update, context)
        public = {**public, "bytes_sent": defense.bytes_sent(shared)}
        if verdict is not None:
            public["model_check"] = verdict.as_public()
        return shared, public, defense.decode(shared, public)

    def sent_model(self, victim: Any, attack: Any, batch_size: int, flags: KnowledgeFlags, seed: int = 0) -> Any:
        """What the server sends this round: the global model (`victim`) unless the protocol lets
        the server craft it (`server_crafts_model`) and the attack does (threat_models.malicious)."""
        return victim

    def build_victim(self, spec: Any, data: Any, defense: Defense, progress: bool = False) -> Any:
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

    def knowledge(self, victim: Any, x_norm: torch.Tensor, y: torch.Tensor, defense: Defense, flags: KnowledgeFlags,
                  configured: Defense | None = None) -> AttackerKnowledge:
        """`configured`: the defense as it was when the round began (configured_copy), what an attacker who
        knows the defense knows of it; default `defense` itself (after the round)."""
        data = victim.data
        local_training = told_training(self.training, flags)
        return AttackerKnowledge(
            flags=flags, num_images=x_norm.shape[0], image_shape=typing.cast(tuple[int, int, int], tuple(x_norm.shape[1:])),
            num_classes=data.num_classes, mean=tuple(data.mean), std=tuple(data.std),
            labels=y.clone() if flags.labels else None,
            local_training=local_training, threat_model=self.attacker_view(local_training),
            bn_statistics=batch_norm_statistics(victim.model, victim.params, victim.buffers, x_norm) if flags.bn_statistics else None,
            auxiliary_images=data.train_images if flags.auxiliary_data else None,
            auxiliary_labels=data.train_labels if flags.auxiliary_data else None,
            defense=(configured or defense) if flags.defense else None,
            dropout_masks=_recorded_dropout_masks(defense) if flags.dropout_masks else None,
        )

    def replay_error(self, model: torch.nn.Module, params: Params, buffers: Params, x_norm: torch.Tensor, y: torch.Tensor,
                     knowledge: AttackerKnowledge,
                     update: list[torch.Tensor] | None = None, seed: int = 0) -> float | None:
        """How far the attacker's model of the client is from the client: 1 − cos (in float64)
        between `update` — by default the client's own update of (x_norm, y) without any defense,
        drawn with `seed` — and the replay of what the attacker was told, run on the client's true
        images in their stored order. Below REPLAY_EXACT_BELOW the replay is exact for this client.
        None where the replay has no such meaning (protocols with private client state)."""
        return None

    def attacker_view(self, local_training: LocalTraining | None) -> "ThreatModel":
        """This protocol as the attacker knows it: its options (the server runs it) and the local
        hyperparameters only where the knowledge grants them (None otherwise). `replay` reads
        the hyperparameters from the knowledge, never from `training`."""
        view = copy.copy(self)
        view.training = local_training  # type: ignore[assignment]  # None: the attacker was not told them
        return view

    def describe(self) -> dict[str, Any]:
        """name, local training and protocol options: `THREAT_MODELS.get(name).from_options(
        options, where, LocalTraining(**training))` rebuilds it."""
        return {"name": self.name, "training": None if self.training is None else asdict(self.training),
                "options": describe_options(self.options)}


class FedSGD(ThreatModel):
    """The client shares one gradient of the mean loss over its batch of B images."""
    name, kind = "fedsgd", GRADIENT
    replays_plain_model = replay_is_loss_gradient = True

    def client_update(self, model: torch.nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor, defense: Defense,
                      seed: int = 0) -> list[torch.Tensor]:
        step = defense.gradient_fn()
        return step(model, params, buffers, x, y) if step else loss_gradient(model, params, buffers, x, y)

    def replay_error(self, model: torch.nn.Module, params: Params, buffers: Params, x_norm: torch.Tensor, y: torch.Tensor,
                     knowledge: AttackerKnowledge,
                     update: list[torch.Tensor] | None = None, seed: int = 0) -> float | None:
        return _replay_error(self, model, params, buffers, x_norm, y, knowledge, update, seed)

    def replay(self, model: torch.nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
               knowledge: AttackerKnowledge) -> list[torch.Tensor]:
        step = _replay_step(knowledge)
        return step(model, params, buffers, x, y) if step else loss_gradient(model, params, buffers, x, y, create_graph=True)


class FedAvg(ThreatModel):
    """The client shares θ_K − θ_0 after K local optimiser steps (epochs × mini-batches; SGD with
    momentum/Nesterov/weight decay or Adam; shuffled or in the stored order; BatchNorm in eval or
    train mode: models.functional.LocalTraining).

    An attacker that knows the hyperparameters unrolls the K steps differentiably (IG's FedAvg
    reconstructor) in the stored order, the only one it can know; one that does not treats −Δθ as
    a single gradient (cosine distance makes the unknown lr·K scale irrelevant)."""
    name, kind = "fedavg", UPDATE
    replays_plain_model = True
    local_optimizer = True

    def client_update(self, model: torch.nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor, defense: Defense,
                      seed: int = 0) -> list[torch.Tensor]:
        return local_update(model, params, buffers, x, y, self.training, gradient_fn=defense.gradient_fn(),
                            orders=shuffled_orders(x.shape[0], self.training, seed))

    def local_steps(self, num_examples: int) -> int:
        return self.training.steps(num_examples)

    def replay(self, model: torch.nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
               knowledge: AttackerKnowledge, orders: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """`orders`: per epoch, which trial inputs the client visits in which order (an order-free
        attack's own copy of the images for every epoch); default: the stored order every epoch."""
        step = _replay_step(knowledge)
        if knowledge.local_training is None:
            grads = step(model, params, buffers, x, y) if step else loss_gradient(model, params, buffers, x, y, create_graph=True)
            return [-g for g in grads]
        return local_update(model, params, buffers, x, y, knowledge.local_training, create_graph=True, gradient_fn=step,
                            orders=orders)

    def replay_error(self, model: torch.nn.Module, params: Params, buffers: Params, x_norm: torch.Tensor, y: torch.Tensor,
                     knowledge: AttackerKnowledge,
                     update: list[torch.Tensor] | None = None, seed: int = 0) -> float | None:
        return _replay_error(self, model, params, buffers, x_norm, y, knowledge, update, seed)


def _replay_error(threat: ThreatModel, model: torch.nn.Module, params: Params, buffers: Params, x_norm: torch.Tensor, y: torch.Tensor,
                  knowledge: AttackerKnowledge, update: list[torch.Tensor] | None, seed: int) -> float:
    from dataclasses import replace
    if update is None:
        update = threat.client_update(model, params, buffers, x_norm, y, NoDefense(), seed=seed)
    with torch.enable_grad():
        told = threat.replay(model, params, buffers, x_norm, y, replace(knowledge, defense=None))
    told = [t.detach().double() for t in told]
    update = [u.detach().double() for u in update]
    dot = sum((a * b).sum() for a, b in zip(told, update))
    norms = torch.sqrt(typing.cast(torch.Tensor, sum(a.pow(2).sum() for a in told) * sum(b.pow(2).sum() for b in update)))
    return float(1 - dot / norms) if norms > 0 else 1.0


def configured_copy(defense: Defense) -> Defense | None:
    """A deep copy of the defense as the round begins (its configuration, and the state it carries into the
    round), taken before the client's round changes it: the instance the evaluator's replay runs the client's
    pipeline on (attacks/defense_replay.py). None where it cannot be copied (the replay then copies what it is
    given)."""
    try:
        return copy.deepcopy(defense)
    except Exception:  # noqa: BLE001 - a plugin's state that does not deep-copy: the replay's own fallback
        return None


def _refuse_local_options(training: LocalTraining, threat_model: str) -> None:
    """A threat model whose client does not run LocalTraining's loop must not silently ignore its
    optimiser, order or BN-mode options."""
    plain = LocalTraining(training.lr, training.epochs, training.batch_size)
    for key, value in training.describe().items():
        if value != getattr(plain, key):
            raise ConfigError(f"threat_model.{key}: the '{threat_model}' client does not run the local optimiser "
                              f"loop; its options need threat model 'fedavg'")


def _replay_step(knowledge: AttackerKnowledge) -> Callable[..., list[torch.Tensor]] | None:
    """The known defense's noiseless per-step gradient (DP-SGD's per-example clipping), or None."""
    return typing.cast(Defense, knowledge.defense).replay_gradient_fn() if knowledge.defense is not None else None


def _recorded_dropout_masks(defense: Defense) -> list[list[torch.Tensor]]:
    """Oracle knowledge: the dropout masks of the update the client just shared (defenses/dropout.py)."""
    from fedleak.defenses.dropout import recorded_masks  # lazy: defenses import threat_models
    return recorded_masks(defense)


def batch_norm_statistics(model: torch.nn.Module, params: Params, buffers: Params,
                          x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-BN-layer (mean, var) of the client's batch: what a statistics-informed attacker gets."""
    stats = []

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
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
