"""The attack × defense matrix: a MatrixConfig expanded into cells, each one `RunConfig`.

One cell is the held-out images of the matrix (in client updates of B) attacked by one attack, in
one mode (non-adaptive: `KnowledgeFlags.defense` false; adaptive: true), against one defense
setting, for one dataset, victim state, threat model and seed. Every batch is attacked as the
round's first client with a round seed of its own first image (`DataConfig.batch_seed = "image"`), so
an image's result does not depend on which cell holds it, and a randomised defense is sampled afresh
per image; one cell per image set (not per image) pays a worker's set-up once.

A cell is keyed by `cell_key`: `RunConfig.digest()`, the hash of everything in its config that
determines its results, together with the code that computes them (fedleak's version and source,
the attack's and the defense's module: core.fingerprint). The same cell in two matrices (or two
runs of one) is computed once (harness.matrix.cell_store); the same config under changed code is a new
cell, and the run says which stored cells it no longer reuses."""
from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

from fedleak.core.errors import ConfigError, UnknownNameError
from fedleak.core.io import digest
from fedleak.harness.run.config import AttackConfig, DataConfig, DefenseConfig, RunConfig, ThreatModelConfig
from fedleak.harness.matrix.config import MatrixConfig
from fedleak.harness.verdict.judge import UNDEFENDED  # the baseline


@dataclass(frozen=True)
class Cell:
    key: str
    config: RunConfig
    labels: dict  # the cell's coordinates in the matrix, stored next to every result row
    code: dict = field(default_factory=dict)  # what computes it (code_of); part of the key
    files: ClassVar[tuple[str, ...]] = ("results.parquet", "images.pt")  # what later steps read back

    def describe(self) -> str:
        mode = "adaptive" if self.labels["adaptive"] else "non-adaptive"
        check = " [budget check]" if self.labels.get("check") else ""
        return (f"{self.labels['attack_label']} ({mode}) vs {self.labels['defense_label']}, images "
                f"{self.labels['images']}{check}")

    @property
    def config_hash(self) -> str:
        return self.config.digest()

    def run(self, gpu: int | None):
        from fedleak.harness.matrix.cell_worker import attack_cell
        return attack_cell(self.config, gpu)

    def record(self) -> dict:
        return {"kind": "attack", "key": self.key, "labels": self.labels, "config": self.config.to_dict(),
                "config_hash": self.config_hash, "code": self.code}


def expand(matrix: MatrixConfig) -> list[Cell]:
    """Every cell of the matrix under its preset, in config order, duplicates (same digest) once."""
    return expansion(matrix)[0]


def expansion(matrix: MatrixConfig) -> tuple[list[Cell], list[str]]:
    """(the cells, why each pair left out was not applicable). An attack or defense is paired with a
    threat model when its entry allows it (`threat_models`, empty: all) and the component declares
    the kind of observation that threat model shares (`applies_to`); a pair the declaration rules
    out is never run and is listed instead, once per component and threat model."""
    cells: dict[str, Cell] = {}
    skipped: dict[str, None] = {}
    axes = itertools.product(matrix.datasets, matrix.victims, matrix.threat_models, matrix.defense_settings(),
                             matrix.attacks)
    for dataset, victim, threat, defense, attack in axes:
        if not (runs_under(attack.threat_models, threat.name) and runs_under(defense.threat_models, threat.name)):
            continue
        reasons = [r for r in (excluded("attack", attack.name, threat.name),
                               excluded("defense", defense.name, threat.name)) if r]
        if reasons:
            skipped.update(dict.fromkeys(reasons))
            continue
        budget = matrix.budget(attack, matrix.preset)
        sends_update = passthrough(defense.name, defense.options)
        modes = [False] if sends_update else attack.adaptive
        if needs_defense(attack.name):
            modes = [m for m in modes if m]
            if not modes:
                skipped[f"attack '{attack.name}' runs the defense itself (adaptive mode only): not against "
                        f"'{defense.label}'{'' if sends_update else ' non-adaptive'}"] = None
                continue
        images = _victims(matrix, budget.images)
        for adaptive, seed in itertools.product(modes, matrix.seeds):
            config = RunConfig(
                data=DataConfig(name=dataset.name, root=dataset.root, victims=images, num_victims=len(images),
                                batch_size=matrix.images.batch_size, options=dict(dataset.options),
                                batch_seed="image"),
                victim=threat.victim_spec(victim),
                threat_model=ThreatModelConfig(**{**{f.name: getattr(threat, f.name) for f in fields(ThreatModelConfig)},
                                                  "knowledge": _knowledge(threat.knowledge, adaptive),
                                                  "options": dict(threat.options)}),
                defense=DefenseConfig(defense.name, dict(defense.options)),
                attack=AttackConfig(attack.name, budget.iterations, budget.restarts, dict(attack.options)),
                seed=seed, device=matrix.device)
            code = code_of(attack=attack.name, defense=defense.name)
            key = cell_key(config.digest(), code)
            labels = {"attack_label": attack.display, "adaptive": adaptive, "defense_label": defense.label,
                      "knowledge_preset": _preset(threat.knowledge), "images": images, "preset": matrix.preset}
            cells.setdefault(key, Cell(key, replace(config, output=cell_output(key)), labels, code))
    return list(cells.values()), list(skipped)


def code_of(attack: str | None = None, defense: str | None = None) -> dict:
    """The code a task's results depend on: fedleak's source, and the modules of its attack and
    defense (a plugin's own files; core.fingerprint). Names not registered are left out (check_names
    reports them)."""
    from fedleak.attacks import ATTACKS
    from fedleak.core.fingerprint import module_digest, package_digest
    from fedleak.defenses import DEFENSES
    code = {"fedleak": package_digest()}
    for role, registry, name in (("attack", ATTACKS, attack), ("defense", DEFENSES, defense)):
        if name is not None and name in registry:
            code[role] = f"{name}:{module_digest(registry.get(name))}"
    return code


def cell_key(config_hash: str, code: dict, prefix: str = "") -> str:
    """A task's key: its config's digest and the code that computes it."""
    return prefix + digest({"config": config_hash, "code": code}, 12 - len(prefix))


def needs_defense(attack: str) -> bool:
    """An attack that runs the defense's own share (Attack.needs_defense): adaptive mode only."""
    from fedleak.attacks import ATTACKS
    return attack in ATTACKS and ATTACKS.get(attack).needs_defense


def passthrough(defense: str, options: dict | None = None) -> bool:
    """A defense that sends the update as it is: adaptive and non-adaptive attacks coincide, so it
    is attacked once. The declaration (Defense.passthrough) is honoured only where the probe confirms
    it (passthrough_probe); a false one is reported (false_passthroughs) and attacked in both modes."""
    from fedleak.defenses import DEFENSES
    if defense == UNDEFENDED:
        return True
    if defense not in DEFENSES or not DEFENSES.get(defense).passthrough:
        return False
    return passthrough_probe(defense, options or {}) is None


def false_passthroughs(matrix: MatrixConfig) -> list[str]:
    """One line per defense setting of `matrix` that declares passthrough and does not send its input."""
    from fedleak.defenses import DEFENSES
    out = []
    for setting in matrix.defense_settings():
        if setting.name != UNDEFENDED and setting.name in DEFENSES and DEFENSES.get(setting.name).passthrough:
            why = passthrough_probe(setting.name, setting.options)
            if why:
                out.append(f"defense '{setting.label}' declares passthrough, but {why}: attacked adaptively too")
    return out


PROBE_SHAPES = ((6, 5), (6,), (3, 2, 2))


def passthrough_probe(defense: str, options: dict) -> str | None:
    """None when the configured defense's `share` returns its input exactly, on two random updates under
    two public contexts, each time on a fresh instance; else what it did instead. The author's
    `passthrough = True` switches every adaptive attack off, so it is checked, never taken on trust."""
    from fedleak.defenses import DEFENSES
    return _probe(DEFENSES.get(defense), json.dumps(options, sort_keys=True, default=str))


@functools.lru_cache(maxsize=256)
def _probe(cls: type, options: str) -> str | None:
    import torch

    from fedleak.defenses.base import ShareContext
    generator = torch.Generator().manual_seed(20)
    for round_ in (0, 1):
        update = [torch.randn(shape, generator=generator) for shape in PROBE_SHAPES]
        context = ShareContext([f"p{i}" for i in range(len(update))], 4, round_, round_, 1000 + round_)
        try:
            result = cls.from_options(json.loads(options), "defense.options").share([u.clone() for u in update], context)
        except Exception as e:  # noqa: BLE001 - any failure of the probe is a reason not to honour the claim
            return f"its share raised {type(e).__name__}: {e}"
        sent = result[0] if isinstance(result, tuple) else result
        if not (isinstance(sent, (list, tuple)) and len(sent) == len(update)
                and all(isinstance(s, torch.Tensor) and s.shape == u.shape and torch.equal(s, u) for s, u in zip(sent, update))):
            return "its share does not return its input (probed on a random update)"
    return None


def check_images(matrix: MatrixConfig) -> None:
    """Every victim index a cell would attack exists in every dataset, said before anything runs
    (a cell would find out only once its victim was trained)."""
    from fedleak.data.datasets import load_dataset
    wanted = sorted({i for attack in matrix.attacks for i in _victims(matrix, matrix.budget(attack, matrix.preset).images)})
    for k, dataset in enumerate(matrix.datasets):
        count = len(load_dataset(dataset.name, root=dataset.root, **dataset.options).victim_images)
        outside = [i for i in wanted if not 0 <= i < count]
        if outside:
            where = "images.indices" if matrix.images.indices else f"the {matrix.preset} preset's image count"
            raise ConfigError(f"{where}: victim {', '.join(map(str, outside[:5]))}{' ...' if len(outside) > 5 else ''} "
                              f"out of range for datasets[{k}] '{dataset.name}', which holds {count} victims (0..{count - 1})")


def runs_under(allowed: list[str], threat_model: str) -> bool:
    return not allowed or threat_model in allowed


def excluded(section: str, name: str, threat_model: str) -> str | None:
    """Why the registered attack/defense `name` does not run under `threat_model`, or None (also
    for a name not registered yet: check_names reports those)."""
    from fedleak.attacks import ATTACKS
    from fedleak.defenses import DEFENSES
    from fedleak.threat_models import THREAT_MODELS, not_applicable
    registry = ATTACKS if section == "attack" else DEFENSES
    if name not in registry or threat_model not in THREAT_MODELS:
        return None
    return not_applicable(threat_model, registry.get(name))


def _victims(matrix: MatrixConfig, count: int) -> list[int]:
    """The configured victims, or the preset's count from 0 rounded up to whole batches of B."""
    b = matrix.images.batch_size
    return list(matrix.images.indices) or list(range(-(-count // b) * b))


def cell_output(key: str) -> str:
    """Where a cell lives, relative to the matrix's output folder (what its rows record)."""
    return f"cells/{key}"


def _knowledge(spec: str | dict, adaptive: bool) -> dict:
    table = {"preset": spec} if isinstance(spec, str) else dict(spec)
    return {**table, "defense": adaptive}


def _preset(spec: str | dict) -> str:
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)


def check_names(matrix: MatrixConfig) -> None:
    """Every name resolves in its registry and every option is accepted (built the way the cells
    build them), before anything runs. Call after plugins are registered (harness.run.plugins)."""
    from fedleak.attacks import ATTACKS
    from fedleak.defenses import DEFENSES
    from fedleak.data.datasets import DATASETS
    from fedleak.threat_models import THREAT_MODELS
    from fedleak.threat_models.knowledge import knowledge_flags
    from fedleak.models.architectures import MODELS

    def named(registry, name, where):
        try:
            return registry.get(name)
        except UnknownNameError as e:
            raise ConfigError(f"{where}.name: {e}") from None

    for i, threat in enumerate(matrix.threat_models):
        cls = named(THREAT_MODELS, threat.name, f"threat_models[{i}]")
        try:
            training = threat.local_training()
        except ConfigError as e:
            raise ConfigError(str(e).replace("threat_model.", f"threat_models[{i}].", 1)) from None
        cls.from_options(threat.options, f"threat_models[{i}].options", training)
        try:
            knowledge_flags(threat.knowledge)
        except ConfigError as e:
            raise ConfigError(f"threat_models[{i}].knowledge: {str(e).split(': ', 1)[-1]}") from None
    for i, attack in enumerate(matrix.attacks):
        named(ATTACKS, attack.name, f"attacks[{i}]").from_options(attack.options, f"attacks[{i}].options")
    for i, entry in enumerate(matrix.defenses):
        cls = named(DEFENSES, entry.name, f"defenses[{i}]")
        for setting in entry.settings():
            try:
                cls.from_options(setting.options, f"defenses[{i}].options")
            except ConfigError as e:
                raise ConfigError(_swept_key(str(e), i, entry.sweep)) from None
    for i, dataset in enumerate(matrix.datasets):
        named(DATASETS, dataset.name, f"datasets[{i}]")
    for i, victim in enumerate(matrix.victims):
        try:
            MODELS.get(victim.model)
        except UnknownNameError as e:
            raise ConfigError(f"victims[{i}].model: {e}") from None
    present = {t.name for t in matrix.threat_models}
    for section, entries in (("attack", matrix.attacks), ("defense", matrix.defenses)):
        for i, entry in enumerate(entries):
            for name in entry.threat_models:
                where = f"{section}s[{i}].threat_models"
                if name not in present:
                    raise ConfigError(f"{where}: '{name}' is not a threat model of this matrix; "
                                      f"it has {', '.join(sorted(present))}")
                reason = excluded(section, entry.name, name)
                if reason:
                    raise ConfigError(f"{where}: {reason}")


def _swept_key(message: str, index: int, sweep: dict) -> str:
    """A bad value that came from `sweep` is reported under `defenses[i].sweep.<key>`."""
    prefix = f"defenses[{index}].options."
    key = message[len(prefix):].split(":", 1)[0] if message.startswith(prefix) else None
    return f"defenses[{index}].sweep.{message[len(prefix):]}" if key in sweep else message
