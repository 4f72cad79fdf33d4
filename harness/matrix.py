"""The attack × defense matrix: a MatrixConfig expanded into cells, each one `RunConfig`.

One cell is one batch of B held-out images attacked by one attack, in one mode (non-adaptive:
`KnowledgeFlags.defense` false; adaptive: true), against one defense setting, for one dataset,
victim state, threat model and seed. A cell is keyed by `RunConfig.digest()`, the hash of
everything that determines its results, so the same cell in two matrices (or two runs of one)
is computed once (harness.cell_store)."""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, replace

from fedleak.core.options import call_with_options
from fedleak.harness.config import AttackConfig, DataConfig, DefenseConfig, RunConfig, ThreatModelConfig
from fedleak.core.errors import ConfigError, UnknownNameError
from fedleak.harness.matrix_config import MatrixConfig

UNDEFENDED = "none"  # the baseline: adaptive and non-adaptive attacks coincide, so it runs once


@dataclass(frozen=True)
class Cell:
    key: str
    config: RunConfig
    labels: dict  # the cell's coordinates in the matrix, stored next to every result row

    def describe(self) -> str:
        mode = "adaptive" if self.labels["adaptive"] else "non-adaptive"
        return f"{self.labels['attack_label']} ({mode}) vs {self.labels['defense_label']}, images {self.labels['images']}"

    def run(self, gpu: int | None):
        from fedleak.harness.cell_worker import attack_cell
        return attack_cell(self.config, gpu)

    def record(self) -> dict:
        return {"kind": "attack", "key": self.key, "labels": self.labels, "config": self.config.to_dict()}


def expand(matrix: MatrixConfig) -> list[Cell]:
    """Every cell of the matrix under its preset, in config order, duplicates (same digest) once."""
    cells: dict[str, Cell] = {}
    axes = itertools.product(matrix.datasets, matrix.victims, matrix.threat_models, matrix.defense_settings(),
                             matrix.attacks)
    for dataset, victim, threat, defense, attack in axes:
        if not (runs_under(attack.threat_models, threat.name) and runs_under(defense.threat_models, threat.name)
                and required_threat_model(defense.name) in (None, threat.name)):
            continue
        budget = matrix.budget(attack, matrix.preset)
        modes = [False] if defense.name == UNDEFENDED else attack.adaptive
        for adaptive, seed, batch in itertools.product(modes, matrix.seeds, _batches(matrix, budget.images)):
            config = RunConfig(
                data=DataConfig(name=dataset.name, root=dataset.root, victims=batch, num_victims=len(batch),
                                batch_size=len(batch), options=dict(dataset.options)),
                victim=victim,
                threat_model=ThreatModelConfig(**{**asdict(threat), "knowledge": _knowledge(threat.knowledge, adaptive),
                                                  "options": dict(threat.options)}),
                defense=DefenseConfig(defense.name, dict(defense.options)),
                attack=AttackConfig(attack.name, budget.iterations, budget.restarts, dict(attack.options)),
                seed=seed, device=matrix.device).validate()
            key = config.digest()
            labels = {"attack_label": attack.display, "adaptive": adaptive, "defense_label": defense.label,
                      "knowledge_preset": _preset(threat.knowledge), "images": batch, "preset": matrix.preset}
            cells.setdefault(key, Cell(key, replace(config, output=cell_output(key)), labels))
    return list(cells.values())


def runs_under(allowed: list[str], threat_model: str) -> bool:
    return not allowed or threat_model in allowed


def required_threat_model(defense: str) -> str | None:
    """The protocol a defense exists in (`Defense.requires_threat_model`, e.g. hyperfl, vfl), or None:
    such a defense is paired with that threat model only."""
    from fedleak.defenses import DEFENSES
    return getattr(DEFENSES.get(defense), "requires_threat_model", None) if defense in DEFENSES else None


def _batches(matrix: MatrixConfig, count: int) -> list[list[int]]:
    """The configured victims, or the preset's count from 0 rounded up to whole batches of B."""
    b = matrix.images.batch_size
    indices = list(matrix.images.indices) or list(range(-(-count // b) * b))
    return [indices[i:i + b] for i in range(0, len(indices), b)]


def cell_output(key: str) -> str:
    """Where a cell lives, relative to the matrix's output folder (what its rows record)."""
    return f"cells/{key}"


def _knowledge(spec: str | dict, adaptive: bool) -> dict:
    table = {"preset": spec} if isinstance(spec, str) else dict(spec)
    return {**table, "defense": adaptive}


def _preset(spec: str | dict) -> str:
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)


def check_names(matrix: MatrixConfig) -> None:
    """Every name resolves in its registry and every option is accepted, before anything runs.
    Call after plugins are registered (harness.plugins)."""
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

    for i, attack in enumerate(matrix.attacks):
        call_with_options(named(ATTACKS, attack.name, f"attacks[{i}]"), attack.options, f"attacks[{i}].options")
    for i, entry in enumerate(matrix.defenses):
        factory = named(DEFENSES, entry.name, f"defenses[{i}]")
        for setting in entry.settings():
            call_with_options(factory, setting.options, f"defenses[{i}] '{setting.label}'")
    for i, dataset in enumerate(matrix.datasets):
        named(DATASETS, dataset.name, f"datasets[{i}]")
    for i, victim in enumerate(matrix.victims):
        try:
            MODELS.get(victim.model)
        except UnknownNameError as e:
            raise ConfigError(f"victims[{i}].model: {e}") from None
    present = {t.name for t in matrix.threat_models}
    for where, entries in (("attacks", matrix.attacks), ("defenses", matrix.defenses)):
        for i, entry in enumerate(entries):
            for name in entry.threat_models:
                if name not in present:
                    raise ConfigError(f"{where}[{i}].threat_models: '{name}' is not a threat model of this matrix; "
                                      f"it has {', '.join(sorted(present))}")
    for i, threat in enumerate(matrix.threat_models):
        named(THREAT_MODELS, threat.name, f"threat_models[{i}]")
        try:
            knowledge_flags(threat.knowledge)
        except ConfigError as e:
            raise ConfigError(f"threat_models[{i}].knowledge: {str(e).split(': ', 1)[-1]}") from None
