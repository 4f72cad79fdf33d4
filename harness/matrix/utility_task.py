"""What a defense setting costs (harness.matrix.utility.measure_utility: accuracy next to the undefended
run, bytes sent, ε where the defense is DP), stored like a matrix cell, so the report's
privacy-utility view reads stored numbers and a resumed matrix never measures twice.

One task per (dataset, victim, defense setting): utility is the victim's FedAvg training with the
defense, whatever the attacked round's threat model, attack, attack mode or images."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

from fedleak.core.components import UPDATE, applicability
from fedleak.core.io import digest, json_bytes
from fedleak.harness.run.config import DataConfig, DefenseConfig, RunConfig
from fedleak.harness.matrix.cells import cell_key, code_of

UTILITY_FILE = "utility.json"


@dataclass(frozen=True)
class UtilityTask:
    key: str
    config: RunConfig   # dataset, victim and defense; the attack fields play no part
    labels: dict
    options: dict
    code: dict = field(default_factory=dict)  # what computes it (harness.matrix.cells.code_of); part of the key
    files: ClassVar[tuple[str, ...]] = (UTILITY_FILE,)

    def describe(self) -> str:
        return f"utility of {self.labels['defense_label']} ({self.config.data.name}/{self.config.victim.model})"

    def run(self, gpu: int | None):
        config = self.config
        if config.device == "auto" and gpu is not None:
            config = replace(config, device=f"cuda:{gpu}")
        values = measure(config, self.options)
        headline = {k: values[k] for k in ("accuracy", "accuracy_drop", "epsilon") if k in values}
        return {UTILITY_FILE: json_bytes({"labels": self.labels, **values})}, headline, config.device

    def record(self) -> dict:
        return {"kind": "utility", "key": self.key, "labels": self.labels, "config": self.config.to_dict(),
                "options": self.options, "config_hash": self.config_hash, "code": self.code}

    @property
    def config_hash(self) -> str:
        blob = {"data": asdict(self.config.data), "victim": asdict(self.config.victim),
                "defense": asdict(self.config.defense), "options": self.options}
        return digest(blob, 12)


def utility_tasks(matrix) -> list[UtilityTask]:
    """One task per (dataset, victim, defense setting) of a MatrixConfig, utility-only settings included."""
    tasks: dict[str, UtilityTask] = {}
    options = dict(matrix.utility.options)
    for dataset in matrix.datasets:
        for victim in matrix.victims:
            for setting in matrix.defense_settings(utility_only=True):
                if not measurable(setting.name):
                    continue  # measure_utility trains FedAvg; a protocol's own defense has no utility there
                config = RunConfig(data=DataConfig(name=dataset.name, root=dataset.root, options=dict(dataset.options)),
                                   victim=victim, defense=DefenseConfig(setting.name, dict(setting.options)),
                                   device=matrix.device)
                labels = {"defense_label": setting.label, "defense": setting.name, "dataset": dataset.name,
                          "model": victim.model, "victim_state": victim.state}
                task = UtilityTask("", config, labels, options, code_of(defense=setting.name))
                key = cell_key(task.config_hash, task.code, prefix="u")
                tasks.setdefault(key, replace(task, key=key, config=replace(config, output=f"cells/{key}")))
    return list(tasks.values())


def measurable(defense: str) -> bool:
    """Whether a defense shapes FedAvg updates, which is what utility is measured on (an
    unregistered name is left to fail where it runs)."""
    from fedleak.defenses import DEFENSES
    return defense not in DEFENSES or applicability(DEFENSES.get(defense), UPDATE) is None


def measure(config: RunConfig, options: dict) -> dict:
    from fedleak.defenses import build_defense
    from fedleak.data.datasets import load_dataset
    from fedleak.harness.matrix.utility import measure_utility
    data = load_dataset(config.data.name, root=config.data.root, **config.data.options)
    defense = build_defense(config.defense.name, **config.defense.options)
    return _numbers(measure_utility(data, config.victim, defense, **options))


TEXT = ("neighbouring", "accountant")  # what an ε means, kept as text next to it


def _numbers(result: dict) -> dict:
    """The scalar measurements as floats (None and NaN dropped: "not defined"; inf stays inf), and
    the text that says what ε means."""
    out = {}
    for name, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value)):
            out[name] = float(value)
        elif name in TEXT and isinstance(value, str):
            out[name] = value
    return out
