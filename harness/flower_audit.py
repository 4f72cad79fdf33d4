"""Audit a Flower app: simulate it, record what its server saw, attack every client update with a
fedleak attack and score the reconstructions against the clients' private data.

    app (ServerApp + ClientApp + auditor hooks) -> harness.flower_simulation.simulate -> ClientUpdates
      -> threat_models.flower_observation -> Observation (+ AttackerKnowledge from the hooks)
      -> attack -> scores -> rows (harness.results) -> grid + report (reports.flower_report)

The auditor's hooks are names in a module (docs/flower.md, examples/flower_app/task.py):
`build_model()`, `private_data(partition_id, num_partitions)`, `normalisation()`, and optionally
`local_training()`, `auxiliary_data()`, `NUM_CLIENTS`, `DATASET`.

Attack seeds follow `harness.runner` (seed·7919 + batch number, with the client's partition as the
batch number), so a client of the example app gets the same attack as fedleak's own FedAvg run over
the same images."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

from fedleak.attacks import Budget, build_attack
from fedleak.defenses.base import NoDefense
from fedleak.core.errors import ConfigError, DataError
from fedleak.core.io import check_writable, digest
from fedleak.harness.plugins import import_user_module
from fedleak.harness.provenance import row_provenance
from fedleak.harness.results import ResultLog, RunResult, attack_and_score
from fedleak.harness.runner import resolve_device
from fedleak.threat_models import build_threat_model, check_applies
from fedleak.threat_models.flower_observation import explained_by, observation_from_update
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.models.functional import LocalTraining

EXAMPLE = "fedleak.examples.flower_app"


@dataclass(frozen=True)
class FlowerAudit:
    server_app: object = f"{EXAMPLE}.server_app:app"   # "module:attr" or a flwr ServerApp
    client_app: object = f"{EXAMPLE}.client_app:app"   # "module:attr" or a flwr ClientApp
    hooks: object = f"{EXAMPLE}.task"                  # module name or module
    clients: int | None = None                         # simulated nodes; default hooks.NUM_CLIENTS
    shares: str = "weights"                            # what a client replies with: weights | gradient
    training: LocalTraining | None = None              # hyperparameters the auditor is told; default hooks.local_training()
    knowledge: str | dict = "informed"
    attack: str = "ig"
    attack_options: dict = field(default_factory=dict)
    iterations: int = 200
    restarts: int = 1
    seed: int = 0
    device: str = "cpu"
    cpus: int = 2                                      # simulated clients training at once
    output: str = "runs/flower-audit"

    def describe(self) -> dict:
        values = asdict(self)
        for key in ("server_app", "client_app", "hooks"):
            values[key] = _name(getattr(self, key))
        return values

    def digest(self) -> str:
        return digest({k: v for k, v in self.describe().items() if k not in ("output", "device", "cpus")}, 12)


@dataclass
class FlowerAuditResult(RunResult):
    updates: list = field(default_factory=list)  # threat_models.flower.ClientUpdate, as recorded


def run_flower_audit(audit: FlowerAudit, progress: bool = False) -> FlowerAuditResult:
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ConfigError("audit-flower needs Flower: pip install 'fedleak[flower]'") from None
    from fedleak.harness.flower_simulation import simulate
    out = Path(audit.output)
    check_writable(out)
    hooks = _module(audit.hooks)
    clients = audit.clients or getattr(hooks, "NUM_CLIENTS", None)
    if not clients:
        raise ConfigError("clients: how many simulated clients? pass --clients or set NUM_CLIENTS in the hooks module")
    training = audit.training or (hooks.local_training() if hasattr(hooks, "local_training") else None)
    flags = knowledge_flags(audit.knowledge)
    if flags.hyperparameters and training is None:
        raise ConfigError("knowledge grants the local hyperparameters, but the auditor was not told them: pass "
                          "--lr/--epochs/--local-batch-size, define local_training() in the hooks, or use a preset without them")
    attack = build_attack(audit.attack, **audit.attack_options)
    budget = Budget(audit.iterations, audit.restarts)
    threat = build_threat_model(explained_by(audit.shares).name, training or LocalTraining())
    check_applies(threat.name, attack)
    device = resolve_device(audit.device)

    updates = simulate(_component(audit.server_app), _component(audit.client_app), clients, audit.cpus, quiet=not progress)
    if not updates:
        raise DataError("the Flower run produced no train reply with arrays: nothing to attack")
    updates.sort(key=lambda u: (u.round, -1 if u.partition_id is None else u.partition_id, u.client_id))

    model = hooks.build_model().to(device).eval()
    mean, std = hooks.normalisation()
    provenance = {"config_hash": audit.digest(), "config": audit.describe(), "seed": audit.seed,
                  **row_provenance(device), "knowledge": flags.as_dict(),
                  "attack": attack.name, "attack_params": attack.describe(), "defense": "none", "defense_params": {},
                  "threat_model": threat.name, "dataset": getattr(hooks, "DATASET", "flower-app"),
                  "model": getattr(hooks, "MODEL", type(model).__name__), "model_options": {}, "victim_state": "flower",
                  "victim_accuracy": None, "iterations": budget.iterations, "restarts": budget.restarts,
                  "flower_server_app": _name(audit.server_app), "flower_client_app": _name(audit.client_app)}
    log = ResultLog(out)
    for number, update in enumerate(updates):
        if update.partition_id is None:
            raise DataError(f"reply from node {update.client_id} carries no partition id: was the ClientApp wrapped?")
        x, y = hooks.private_data(update.partition_id, clients)
        if len(x) != update.num_examples:
            raise DataError(f"client {update.partition_id} reported {update.num_examples} examples, "
                            f"but private_data() gives {len(x)}")
        x, y = x.to(device), y.to(device)

        def observe():
            observation = observation_from_update(update, model, audit.shares).to(device)
            knowledge = threat.knowledge(_audited(model, observation, x, mean, std, hooks), _normalise(x, mean, std), y,
                                         NoDefense(), flags)
            return observation, knowledge

        scored = attack_and_score(observe, attack, model, budget, seed=audit.seed * 7919 + update.partition_id,
                                  truth=x, labels=y, progress=progress)
        log.add([{**provenance, "batch": number, "client_id": update.client_id, "partition_id": update.partition_id,
                  "round": update.round, "batch_size": len(x), "image_index": i, **row} for i, row in enumerate(scored.rows)],
                scored)
    run = log.result()
    result = FlowerAuditResult(run.rows, run.directory, run.ground_truth, run.reconstructions, updates)
    from fedleak.reports.flower_report import write_flower_report
    write_flower_report(result)
    return result


def _audited(model, observation, x, mean, std, hooks) -> SimpleNamespace:
    """The parts of a `threat_models.victim.Victim` that `ThreatModel.knowledge` reads."""
    with torch.no_grad():
        num_classes = model(_normalise(x[:1], mean, std)).shape[-1]
    aux_x, aux_y = hooks.auxiliary_data() if hasattr(hooks, "auxiliary_data") else (None, None)
    data = SimpleNamespace(num_classes=num_classes, mean=mean, std=std, train_images=aux_x, train_labels=aux_y)
    return SimpleNamespace(model=model, params=observation.global_params, buffers=observation.buffers, data=data)


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean, device=x.device).view(-1, 1, 1)) / torch.tensor(std, device=x.device).view(-1, 1, 1)


def _module(hooks) -> ModuleType:
    if isinstance(hooks, ModuleType):
        return hooks
    module = import_user_module(hooks, "hooks")
    missing = [n for n in ("build_model", "private_data", "normalisation") if not hasattr(module, n)]
    if missing:
        raise ConfigError(f"hooks module '{hooks}' lacks {', '.join(missing)} (see docs/flower.md)")
    return module


def _component(spec):
    """A ServerApp/ClientApp object, or one named "package.module:attribute"."""
    if not isinstance(spec, str):
        return spec
    module_name, sep, attribute = spec.partition(":")
    if not sep or not attribute:
        raise ConfigError(f"Flower app {spec!r}: expected 'package.module:attribute'")
    try:
        return getattr(import_user_module(module_name, "Flower app"), attribute)
    except AttributeError:
        raise ConfigError(f"Flower app {spec!r}: module '{module_name}' has no attribute '{attribute}'") from None


def _name(component) -> str:
    if isinstance(component, str):
        return component
    if isinstance(component, ModuleType):
        return component.__name__
    return f"{type(component).__module__}.{type(component).__qualname__}"
