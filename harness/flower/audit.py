"""Audit a Flower app: simulate it, record what its server saw, attack every client update with a
fedleak attack and score the reconstructions against the clients' private data.

    app folder (pyproject: components + run config) or ServerApp + ClientApp, + auditor hooks
      -> harness.flower.simulation.simulate (run config and node config in the contexts) -> ClientUpdates
      -> harness.flower.update_audit.attack_updates -> rows -> grid + report (reports.flower_report)

The auditor's hooks (docs/flower.md, examples/flower_app/task.py) are names in a module: the
ServerApp's and ClientApp's code is run as it is, and the hooks give what the wire does not carry."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import ModuleType

from fedleak.core.errors import ConfigError, DataError
from fedleak.core.io import check_writable, digest
from fedleak.harness.run.plugins import import_user_module
from fedleak.harness.flower.ladder import plan_ladder, run_ladder
from fedleak.harness.flower.update_audit import AttackSettings, Hooks, UpdatesAuditResult, attack_updates, import_attribute, \
    plan_attack, select_rounds, settings_digest

EXAMPLE = "fedleak.examples.flower_app"


@dataclass(frozen=True)
class FlowerAudit(AttackSettings):
    """What to simulate, on top of how to attack each update (`AttackSettings`: shares, training, knowledge,
    attack, budget, seed, device)."""
    app: str | None = None                             # an app folder; its pyproject names the components
    run_config: str | None = None                      # "k=v ..." overrides of the app's run config (--run-config)
    server_app: object = f"{EXAMPLE}.server_app:app"   # "module:attr" or a flwr ServerApp (without `app`)
    client_app: object = f"{EXAMPLE}.client_app:app"   # "module:attr" or a flwr ClientApp (without `app`)
    hooks: object = None                               # module (name); default: [tool.fedleak] hooks, else the ClientApp's module
    clients: int | None = None                         # simulated nodes; default hooks.NUM_CLIENTS or the app's num-supernodes
    cpus: int = 2                                      # simulated clients training at once
    output: str = "runs/flower-audit"
    save_updates: str | None = None                    # also write every recorded update here (audit-updates DIR)

    def settings(self) -> AttackSettings:
        return AttackSettings(**{f.name: getattr(self, f.name) for f in fields(AttackSettings)})

    def describe(self) -> dict:
        values = asdict(self)
        for key in ("server_app", "client_app", "hooks"):
            values[key] = _name(getattr(self, key))
        return values

    def digest(self) -> str:
        """What makes two audits the same run (not where it writes or runs): a different one refuses a used --output."""
        return digest({k: v for k, v in self.describe().items() if k not in ("output", "device", "cpus")}, 12)


FlowerAuditResult = UpdatesAuditResult


def run_flower_audit(audit: FlowerAudit, progress: bool = False, ladder: bool = False) -> UpdatesAuditResult:
    try:
        import flwr  # noqa: F401 - only whether Flower is installed
    except ImportError:
        raise ConfigError("audit-flower needs Flower: pip install 'fedleak[flower]'") from None
    from fedleak.harness.flower.simulation import simulate
    out = Path(audit.output)
    check_writable(out)
    server_spec, client_spec, run_config, app_clients, app_hooks = audit.server_app, audit.client_app, {}, None, None
    if audit.app is not None:
        from fedleak.harness.flower.app import load_app
        app = load_app(audit.app, audit.run_config)
        app.make_importable()
        server_spec, client_spec, run_config, app_clients, app_hooks = \
            app.server_app, app.client_app, app.run_config, app.num_supernodes, app.hooks
    elif audit.run_config:
        raise ConfigError("--run-config needs an app folder (fedleak audit-flower APP_DIR --run-config ...)")
    hooks_name = audit.hooks or app_hooks or _default_hooks(client_spec)
    module = hooks_name if isinstance(hooks_name, ModuleType) else import_user_module(hooks_name, "hooks")
    hooks = Hooks(module, run_config)
    hooks.require("build_model", "private_data", "normalisation")
    settings = audit.settings()
    plan_attack(hooks, settings)  # a knowledge the hooks cannot back is an error before the simulation, not after
    clients = audit.clients or hooks.value("NUM_CLIENTS") or app_clients
    if not clients:
        raise ConfigError("clients: how many simulated clients? pass --clients, set NUM_CLIENTS in the hooks module, or "
                          "num-supernodes in the app's default federation")
    updates = simulate(_component(server_spec), _component(client_spec), clients, audit.cpus, quiet=not progress,
                       run_config=run_config, save_to=audit.save_updates)
    if not updates:
        raise DataError("the Flower run produced no train reply with arrays: nothing to attack")
    updates.sort(key=lambda u: (u.round, -1 if u.partition_id is None else u.partition_id, u.client_id))
    updates = select_rounds(updates, settings.rounds)
    if any(u.partition_id is None for u in updates):
        raise DataError("a train reply carries no partition id: was the ClientApp wrapped?")
    provenance = {"config": audit.describe(),
                  "dataset": hooks.value("DATASET", "flower-app"), "model": hooks.value("MODEL"), "victim_state": "flower",
                  "flower_server_app": _name(server_spec), "flower_client_app": _name(client_spec),
                  "flower_run_config": dict(run_config)}
    if ladder:  # before the attacks: an app without what the ladder needs fails before any result is due
        plan_ladder(hooks, settings)
    result = attack_updates(updates, hooks, settings, out, provenance, progress=progress)
    from fedleak.reports.flower_report import write_flower_report
    write_flower_report(result)
    if ladder:
        run_ladder(updates, hooks, settings, out, provenance, progress, app_rows=result.rows)
    return result


def _default_hooks(client_spec) -> str:
    """The example's task module for the example, else the ClientApp's own module."""
    if not isinstance(client_spec, str):
        raise ConfigError("hooks: the ClientApp is an object, so name the auditor's hooks module (--hooks MODULE)")
    return f"{EXAMPLE}.task" if client_spec.startswith(f"{EXAMPLE}.") else client_spec.partition(":")[0]


def _component(spec):
    """A ServerApp/ClientApp object, or one named "package.module:attribute"."""
    return import_attribute(spec, "Flower app") if isinstance(spec, str) else spec


def _name(component) -> str | None:
    if component is None or isinstance(component, str):
        return component
    if isinstance(component, ModuleType):
        return component.__name__
    return f"{type(component).__module__}.{type(component).__qualname__}"


def run_updates_audit(directory: str, settings: AttackSettings, output: str, model: str | None = None,
                      hooks: str | None = None, app: str | None = None, run_config: str | None = None,
                      normalisation: tuple | None = None, image_shape: tuple[int, ...] | None = None,
                      progress: bool = False, ladder: bool = False, overwrite: bool = False) -> UpdatesAuditResult:
    """`fedleak audit-updates DIR`: attack saved client updates offline, no simulation. The model
    comes from `model` ("module:factory") or the hooks' build_model; the run config, where hooks
    take one, from the app folder as audit-flower reads it."""
    from fedleak.core.io import check_writable
    from fedleak.threat_models.update_files import load_updates
    out = Path(output)
    check_writable(out)
    config = {}
    if app is not None:
        from fedleak.harness.flower.app import load_app
        loaded = load_app(app, run_config)
        loaded.make_importable()
        config, hooks = loaded.run_config, hooks or loaded.hooks
    elif run_config:
        raise ConfigError("--run-config needs --app APP_DIR (the app whose [tool.flwr.app.config] it overrides)")
    overrides = {}
    if model is not None:
        overrides["build_model"] = import_attribute(model, "--model")
    if normalisation is not None:
        overrides["normalisation"] = lambda: normalisation
    auditor = Hooks(None if hooks is None else import_user_module(hooks, "hooks"), config, overrides)
    if not auditor.has("build_model"):
        raise ConfigError("--model: name the model's factory (module:function) or give hooks with build_model()")
    if not auditor.has("normalisation"):
        raise ConfigError("normalisation: pass --mean and --std, or give hooks with normalisation()")
    if settings.knowledge is None:
        settings = replace(settings, knowledge="informed" if auditor.has("private_data") else "parameter_aware")
    plan_attack(auditor, settings)  # before reading every file
    provenance = {"config": {"updates": str(directory), "model": model, "hooks": hooks, "app": app, "run_config": run_config,
                             **asdict(settings)},
                  "dataset": auditor.value("DATASET", "saved-updates"), "model": auditor.value("MODEL"),
                  "victim_state": "saved", "updates_directory": str(directory)}
    if ladder:
        plan_ladder(auditor, settings)
    from fedleak.harness.run.folder import check_run_folder
    check_run_folder(out, settings_digest(settings, provenance), overwrite, "audit-updates")
    updates = select_rounds(load_updates(directory), settings.rounds)
    result = attack_updates(updates, auditor, settings, out, provenance, image_shape, progress)
    from fedleak.reports.flower_report import write_flower_report
    write_flower_report(result)
    if ladder:
        run_ladder(updates, auditor, settings, out, provenance, progress, app_rows=result.rows)
    return result
