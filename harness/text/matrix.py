"""The text matrix: every text attack against every update-level defense, per threat model and batch size,
beside the same attacks without a defense, and one verdict per (threat model, B, defense setting).

Verdicts: harness.verdict.judge.compute_text_verdicts, the image verdict's logic over private sequences (the
most exposed sequence, the share recovered, the positive control, failed cells as gaps; docs/text.md).
Rows (one per private sequence and attack) are kept in `rows.csv`; the report is a view of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedleak.core.errors import ConfigError
from fedleak.core.io import read_toml
from fedleak.harness.text.run import TextRun, check_text_model, run_text

PRESET = Path(__file__).parent.parent / "presets" / "matrix-text.toml"
_KEYS = {"seed", "seq_len", "batch_sizes", "batches", "max_rougeL", "threat_models", "attacks", "defenses", "presets", "model"}


@dataclass(frozen=True)
class Entry:
    name: str
    options: dict = field(default_factory=dict)

    def label(self) -> str:
        return self.name + "".join(f" {k}={v}" for k, v in sorted(self.options.items()))


@dataclass(frozen=True)
class TextMatrix:
    threat_models: tuple[Entry, ...]
    attacks: tuple[Entry, ...]
    defenses: tuple[Entry, ...]
    batch_sizes: tuple[int, ...] = (1, 4)
    seq_len: int = 16
    batches: int = 2
    seed: int = 0
    max_rougeL: float = 0.5
    model: str = "gpt2"       # the victim (harness.text.run.TEXT_MODELS)


def _entries(value, key: str) -> tuple[Entry, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a non-empty list of {{ name = ..., options = {{...}} }}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or set(item) - {"name", "options"}:
            raise ConfigError(f"{key}[{i}]: expected {{ name = \"...\", options = {{...}} }}, got {item!r}")
        if not isinstance(item.get("options", {}), dict):
            raise ConfigError(f"{key}[{i}].options: expected a table, got {item['options']!r}")
        out.append(Entry(item["name"], dict(item.get("options", {}))))
    return tuple(out)


def load_text_matrix(path: str | Path | None = None, preset: str | None = None, extra_defense: Entry | None = None) -> TextMatrix:
    """The matrix of `path` (default: the shipped one), with the budget preset `preset` applied."""
    table = read_toml(path or PRESET, "a text matrix config")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"text matrix: unknown key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(_KEYS))})")
    presets = table.pop("presets", {})
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"--budget: '{preset}' is not one of {', '.join(sorted(presets)) or 'none'}")
        bad = set(presets[preset]) - _KEYS
        if bad:
            raise ConfigError(f"presets.{preset}: unknown key '{sorted(bad)[0]}'")
        table.update(presets[preset])
    defenses = _entries(table.get("defenses", [{"name": "none"}]), "defenses")
    if extra_defense is not None:
        defenses = (*defenses, extra_defense)
    if not any(d.name == "none" for d in defenses):
        defenses = (Entry("none"), *defenses)  # the positive control is never optional
    ints = {}
    for key, default in (("seq_len", 16), ("batches", 2), ("seed", 0)):
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
        ints[key] = value
    sizes = table.get("batch_sizes", [1, 4])
    if not isinstance(sizes, list) or not sizes or not all(isinstance(b, int) and b >= 1 for b in sizes):
        raise ConfigError(f"batch_sizes: expected a list of integers >= 1, got {sizes!r}")
    limit = table.get("max_rougeL", 0.5)
    if not isinstance(limit, (int, float)) or not 0 < limit <= 1:
        raise ConfigError(f"max_rougeL: expected a number in (0, 1], got {limit!r}")
    model = table.get("model", "gpt2")
    check_text_model(model, "model")
    return TextMatrix(_entries(table.get("threat_models"), "threat_models"), _entries(table.get("attacks"), "attacks"),
                      defenses, tuple(sizes), ints["seq_len"], ints["batches"], ints["seed"], float(limit), model)


def applicable(attack: str, threat_model: str) -> str | None:
    """Why `attack` does not run on `threat_model` (its kind), or None."""
    from fedleak.attacks.text import build_text_attack
    from fedleak.threat_models.text import TEXT_THREAT_MODELS
    kind = TEXT_THREAT_MODELS.get(threat_model).kind
    runs_on = build_text_attack(attack).applies_to
    return None if kind in runs_on else f"{attack} runs on {', '.join(runs_on)}; {threat_model} shares '{kind}'"


def _modes(attacks, defense: Entry):
    """Every attack non-adaptive, and adaptive (it gets a copy of the defense) against every defense but none
    where it has an adaptive mode: the evaluator builds the adaptive attack, the defense's author does not."""
    from fedleak.attacks.text import build_text_attack
    for attack in attacks:
        yield attack, False
        if defense.name != "none" and build_text_attack(attack.name, **attack.options).adaptive:
            yield attack, True


def run_text_matrix(matrix: TextMatrix, progress=None, checkpoint=None, defenses: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(every row of the matrix, the cells that did not run); the shipped LM is trained or read from the
    cache once; `checkpoint(rows, failed)` after every cell, so an interrupted matrix keeps what it finished.
    `defenses`: defense name -> a class (a user's plugin) built with the entry's options instead of the
    registry's. A cell that raises (a defense's share, the threat model) is a failed cell: recorded with
    its error, counted by the verdict, never dropped and never the end of the matrix."""
    from fedleak.harness.text.run import shipped_lm
    data, model = shipped_lm(model=matrix.model)
    rows, failed = [], []
    for tm in matrix.threat_models:
        for B in matrix.batch_sizes:
            for defense in matrix.defenses:
                for attack, adaptive in _modes(matrix.attacks, defense):
                    if applicable(attack.name, tm.name):
                        continue
                    run = TextRun(attack.name, attack.options, tm.name, tm.options, defense.name, defense.options,
                                  B, matrix.seq_len, matrix.batches, matrix.seed, adaptive=adaptive, model=matrix.model)
                    labels = {"threat_model_label": tm.label(), "batch_size": B, "defense_label": defense.label(),
                              "attack_label": attack.label() + (" (adaptive)" if adaptive else "")}
                    names = {"defense": defense.name}
                    try:
                        instance = None
                        if defenses and defense.name in defenses:
                            instance = defenses[defense.name].from_options(defense.options, "defense.options")
                        got = run_text(run, data, model, defense=instance)
                    except Exception as e:  # noqa: BLE001 - a failed cell is a gap to report, never a row to drop
                        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        failed.append({"labels": {**labels, **names}, "error": error, "task": " ".join(map(str, labels.values())),
                                       "key": "/".join(map(str, labels.values())), "user_error": False, "context": None})
                        if progress:
                            progress(f"{tm.label()} B={B} {defense.label()} {labels['attack_label']}: FAILED ({error})")
                        if checkpoint:
                            checkpoint(rows, failed)
                        continue
                    for r in got:
                        r.update(labels)
                    rows.extend(got)
                    if checkpoint:
                        checkpoint(rows, failed)
                    if progress:
                        progress(f"{tm.label()} B={B} {defense.label()} {labels['attack_label']}: "
                                 f"ROUGE-L {sum(r['rougeL'] for r in got) / len(got):.3f}, "
                                 f"{sum(r['wall_time_s'] for r in got) / B:.1f} s")
    return rows, failed


def text_verdicts(rows: list[dict], matrix: TextMatrix, failed: list[dict] | None = None, gated_defenses=None) -> list:
    """The verdicts of the matrix's rows: harness.verdict.judge's logic (worst sequence, share recovered, positive
    control, failed cells), judged on ROUGE-L against `max_rougeL` over the most exposed sequence."""
    from fedleak.harness.verdict.judge import compute_text_verdicts
    from fedleak.metrics.record import METRICS
    return compute_text_verdicts(rows, [(METRICS["rougeL"], matrix.max_rougeL)], "worst", gated_defenses, failed)
