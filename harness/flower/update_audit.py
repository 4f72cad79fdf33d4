"""Attack recorded client updates: the part of an audit after the recording, shared by
`fedleak audit-flower` (updates from a simulated run) and `fedleak audit-updates` (updates a server
saved to disk: threat_models.update_files). Needs no `flwr`.

    ClientUpdate -> threat_models.flower_observation -> Observation (+ AttackerKnowledge from the hooks)
      -> attack -> scores, when the auditor has the client's images -> rows (harness.run.results)

The auditor's hooks are names in a module (docs/flower.md): `build_model()`, `normalisation()`,
`private_data(partition_id, num_partitions)` (ground truth, for scoring), optionally
`local_training()`, `auxiliary_data()`, `IMAGE_SHAPE`; a hook that declares a `run_config`
parameter is given the app's run config. Attack seeds follow `harness.run.runner` (seed·7919 + batch
number, the client's partition as the batch number when it is known, else the update's number),
so the same update attacked live or from disk gives the same reconstruction."""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

from fedleak.attacks import Budget, build_attack
from fedleak.core.errors import ConfigError, DataError
from fedleak.core.io import digest
from fedleak.core.options import check_integer, check_size
from fedleak.defenses.base import NoDefense
from fedleak.harness.run.plugins import import_user_module
from fedleak.harness.run.results import ResultLog, RunResult, attack_and_score
from fedleak.models.functional import LocalTraining
from fedleak.threat_models import build_threat_model, check_applies
from fedleak.threat_models.flower_observation import SHARES, explained_by, observation_from_update
from fedleak.threat_models.knowledge import knowledge_flags

# hook -> what it gives the audit; the first three are needed whatever the attack
HOOKS = {"build_model": "build_model(): the model architecture (the server ships only its weights)",
         "normalisation": "normalisation(): the per-channel (mean, std) the clients apply to their images",
         "private_data": "private_data(partition_id, num_partitions): each client's images in [0,1] and labels, "
                         "the ground truth scoring needs"}


@dataclass(frozen=True)
class AttackSettings:
    """What attacks every update: the same for a live and an offline audit of the same updates."""
    shares: str = "weights"                # what a client replies with: weights | gradient
    training: LocalTraining | None = None  # the clients' local training as the auditor knows it; default: the hooks'
    training_options: dict = field(default_factory=dict)  # LocalTraining fields replacing those (command-line flags)
    knowledge: str | dict | None = "informed"  # None (audit-updates): informed with ground truth, else parameter_aware
    attack: str = "ig"
    attack_options: dict = field(default_factory=dict)
    iterations: int = 200
    restarts: int = 1
    seed: int = 0
    device: str = "cpu"
    rounds: tuple[int, ...] | None = None  # the server rounds whose updates are attacked (None: every one)

    def __post_init__(self):
        if self.shares not in SHARES:
            raise ConfigError(f"shares: expected one of {', '.join(SHARES)}, got {self.shares!r}")
        for r in self.rounds or ():
            check_integer("--rounds", r, low=1)
        check_size("--seed", self.seed, "seed", low=0)  # before any update is read
        Budget(self.iterations, self.restarts)


@dataclass
class UpdatesAuditResult(RunResult):
    updates: list = field(default_factory=list)  # the ClientUpdates attacked, in row order
    scored: bool = True                          # whether the auditor had ground truth


class Hooks:
    """The auditor's hooks module, each hook called with the app's run config where it takes one.
    A missing required hook is a one-line error naming it."""

    def __init__(self, module: ModuleType | None, run_config: dict | None = None, overrides: dict | None = None):
        self.module = module
        self.name = "(none)" if module is None else module.__name__
        self.run_config = dict(run_config or {})
        self.overrides = dict(overrides or {})  # hook name -> callable given on the command line

    def has(self, name: str) -> bool:
        return name in self.overrides or (self.module is not None and hasattr(self.module, name))

    def call(self, name: str, *args):
        hook = self.overrides.get(name) or (getattr(self.module, name) if self.has(name) else None)
        if hook is None:
            raise ConfigError(f"hooks module '{self.name}' has no {HOOKS.get(name, name + '()')} (docs/flower.md)")
        takes_config = "run_config" in inspect.signature(hook).parameters
        return hook(*args, run_config=self.run_config) if takes_config else hook(*args)

    def value(self, name: str, default=None):
        return getattr(self.module, name, default) if self.module is not None else default

    def require(self, *names: str) -> None:
        missing = [n for n in names if not self.has(n)]
        if missing:
            raise ConfigError(f"hooks module '{self.name}' lacks " + "; ".join(HOOKS.get(n, n) for n in missing)
                              + " (docs/flower.md)")


@dataclass
class AttackPlan:
    """`AttackSettings` checked against the hooks, before anything runs."""
    flags: object                          # threat_models.knowledge.KnowledgeFlags
    training: LocalTraining | None         # the clients' local training as the auditor knows it
    attack: object
    budget: Budget
    threat: object                         # the threat model that explains the updates
    scored: bool                           # ground truth available (a private_data hook)


def plan_attack(hooks: Hooks, settings: AttackSettings) -> AttackPlan:
    hooks.require("build_model", "normalisation")
    scored = hooks.has("private_data")
    flags = knowledge_flags(settings.knowledge)
    training = settings.training or (hooks.call("local_training") if hooks.has("local_training") else None)
    if settings.training_options:
        if training is None and "lr" not in settings.training_options:
            raise ConfigError("--lr: the clients' learning rate is needed with the other local-training flags "
                              "(no local_training() hook to take it from)")
        training = replace(training, **settings.training_options) if training else LocalTraining(**settings.training_options)
    if flags.hyperparameters and training is None:
        raise ConfigError("knowledge grants the local hyperparameters, but the auditor was not told them: pass "
                          "--lr/--epochs/--local-batch-size, define local_training() in the hooks, or use a preset without them")
    if not scored and (flags.labels or flags.bn_statistics):
        raise ConfigError("knowledge grants the true labels or BN statistics, but there is no ground truth (no private_data "
                          "hook): use a preset that infers them, e.g. --knowledge parameter_aware")
    attack = build_attack(settings.attack, **settings.attack_options)
    threat = build_threat_model(explained_by(settings.shares).name, training or LocalTraining())
    check_applies(threat.name, attack)  # before the simulation, not after it
    return AttackPlan(flags, training, attack, Budget(settings.iterations, settings.restarts), threat, scored)


def attack_updates(updates: list, hooks: Hooks, settings: AttackSettings, out: Path, provenance: dict,
                   image_shape: tuple[int, ...] | None = None, progress: bool = False) -> UpdatesAuditResult:
    """Attack every update in turn through the runner's scoring path (harness.run.results), writing rows
    and images after each (nothing finished is lost)."""
    from fedleak.harness.run.provenance import row_provenance
    from fedleak.harness.run.runner import resolve_device
    plan = plan_attack(hooks, settings)
    flags, training, attack, budget, threat, scored = (plan.flags, plan.training, plan.attack, plan.budget, plan.threat,
                                                       plan.scored)
    device = resolve_device(settings.device)
    model = hooks.call("build_model").to(device).eval()
    mean, std = hooks.call("normalisation")
    provenance = {**provenance, "config_hash": settings_digest(settings, provenance), "seed": settings.seed,
                  **row_provenance(device), "knowledge": flags.as_dict(), "attack": attack.name,
                  "attack_params": attack.describe(), "defense": "none", "defense_params": {}, "threat_model": threat.name,
                  "local_training": None if training is None else training.describe(),
                  "model": provenance.get("model") or type(model).__name__, "model_options": {},
                  "victim_accuracy": None, "iterations": budget.iterations, "restarts": budget.restarts}
    aux_x, aux_y = hooks.call("auxiliary_data") if flags.auxiliary_data and hooks.has("auxiliary_data") else (None, None)
    log = ResultLog(out)
    for number, update in enumerate(updates):
        x = y = None
        if scored:
            if update.partition_id is None:
                raise DataError(f"update of node {update.client_id} (round {update.round}) carries no partition id, so "
                                "private_data() cannot say whose images it holds (updates from a deployment have none)")
            x, y = hooks.call("private_data", update.partition_id, update.num_partitions or _partitions(updates))
            if len(x) != update.num_examples:
                raise DataError(f"client {update.partition_id} reported {update.num_examples} examples, "
                                f"but private_data() gives {len(x)}")
            x, y = x.to(device), y.to(device)
        shape = tuple(x.shape[1:]) if x is not None else image_shape or hooks.value("IMAGE_SHAPE")
        if shape is None:
            raise ConfigError("image shape: without private data, pass --image-shape C,H,W or set IMAGE_SHAPE in the hooks")
        # without ground truth only the shape of x_norm is read: plan_attack refused the knowledge
        # that would read its values (true labels, BN statistics)
        x_norm = _normalise(x, mean, std) if x is not None else torch.zeros((update.num_examples, *shape), device=device)
        with torch.no_grad():
            num_classes = model(x_norm[:1]).shape[-1]

        def observe(update=update, x_norm=x_norm, y=y):
            observation = observation_from_update(update, model, settings.shares).to(device)
            victim = _audited(model, observation, num_classes, tuple(mean), tuple(std), aux_x, aux_y)
            return observation, threat.knowledge(victim, x_norm, y, NoDefense(), flags)

        def replay_error(observation, knowledge, x_norm=x_norm, y=y):
            return threat.replay_error(model, observation.global_params, observation.buffers, x_norm, y, knowledge,
                                       update=observation.update)

        batch = update.partition_id if update.partition_id is not None else number
        result = attack_and_score(observe, attack, model, budget, seed=settings.seed * 7919 + batch, truth=x, labels=y,
                                  progress=progress, replay_error=replay_error if scored else None)
        log.add([{**provenance, "batch": number, "client_id": update.client_id, "partition_id": update.partition_id,
                  "round": update.round, "batch_size": update.num_examples, "image_index": i, **row}
                 for i, row in enumerate(result.rows)], result)
    run = log.result()
    return UpdatesAuditResult(run.rows, run.directory, run.ground_truth, run.reconstructions, list(updates), scored)


def select_rounds(updates: list, rounds: tuple[int, ...] | None) -> list:
    """The updates of `rounds` (an audit after k rounds of FedAvg attacks round k, not every round before it);
    a round with no recorded update is an error naming the rounds there are."""
    if rounds is None:
        return list(updates)
    recorded = sorted({u.round for u in updates})
    missing = [r for r in rounds if r not in recorded]
    if missing:
        raise DataError(f"--rounds {','.join(map(str, rounds))}: no recorded update of round {missing[0]}; the updates "
                        f"are of rounds {', '.join(map(str, recorded))}")
    return [u for u in updates if u.round in rounds]


def _audited(model, observation, num_classes: int, mean: tuple, std: tuple, aux_x, aux_y) -> SimpleNamespace:
    """The parts of a `threat_models.victim.Victim` that `ThreatModel.knowledge` reads."""
    data = SimpleNamespace(num_classes=num_classes, mean=mean, std=std, train_images=aux_x, train_labels=aux_y)
    return SimpleNamespace(model=model, params=observation.global_params, buffers=observation.buffers, data=data)


def settings_digest(settings: AttackSettings, provenance: dict) -> str:
    return digest({**{k: v for k, v in asdict(settings).items() if k != "device"},
                   **{k: v for k, v in provenance.items() if k not in ("versions", "device")}}, 12)


def import_attribute(spec: str, what: str):
    """The object named "package.module:attribute" (the user's module: harness.run.plugins.import_user_module)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not attribute:
        raise ConfigError(f"{what} {spec!r}: expected 'package.module:attribute'")
    try:
        return getattr(import_user_module(module_name, what), attribute)
    except AttributeError:
        raise ConfigError(f"{what} {spec!r}: module '{module_name}' has no attribute '{attribute}'") from None


def _partitions(updates: list) -> int:
    """How many partitions, where an update does not say: one per distinct partition id seen."""
    return len({u.partition_id for u in updates if u.partition_id is not None})


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean, device=x.device).view(-1, 1, 1)) / torch.tensor(std, device=x.device).view(-1, 1, 1)
