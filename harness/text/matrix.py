"""The text matrix: every text attack against every update-level defense, per threat model and batch size,
beside the same attacks without a defense, and one verdict per (threat model, B, defense setting).

Verdict (the image matrix's rule, docs/verdict.md, read for text): the unit of harm is one person's
sequence. For each private sequence the attacker's best attack counts (the most leaked ROUGE-L over
attacks, metrics.record); the defense's figure is its worst case, the most exposed sequence.
* LEAKS: that worst case reaches `max_rougeL`.
* PROTECTS: it stays below, and the same attacks on the same threat model and B without the defense
  leak (the positive control).
* INCONCLUSIVE: it stays below, but so does the control: the attacks show nothing in this context.
* GAP: an attack errored on the defense (the error is in the rows and the report): never "protects".
Rows (one per private sequence and attack) are kept in `rows.csv`; the report is a view of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedleak.core.errors import ConfigError
from fedleak.core.io import read_toml
from fedleak.harness.text.run import TextRun, run_text

PRESET = Path(__file__).parent.parent / "presets" / "matrix-text.toml"
_KEYS = {"seed", "seq_len", "batch_sizes", "batches", "max_rougeL", "threat_models", "attacks", "defenses", "presets"}


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
    return TextMatrix(_entries(table.get("threat_models"), "threat_models"), _entries(table.get("attacks"), "attacks"),
                      defenses, tuple(sizes), ints["seq_len"], ints["batches"], ints["seed"], float(limit))


def applicable(attack: str, threat_model: str) -> str | None:
    """Why `attack` does not run on `threat_model` (its kind), or None."""
    from fedleak.attacks.text import build_text_attack
    from fedleak.threat_models.text import TEXT_THREAT_MODELS
    kind = TEXT_THREAT_MODELS.get(threat_model).kind
    runs_on = build_text_attack(attack).applies_to
    return None if kind in runs_on else f"{attack} runs on {', '.join(runs_on)}; {threat_model} shares '{kind}'"


def run_text_matrix(matrix: TextMatrix, progress=None, checkpoint=None) -> list[dict]:
    """Every row of the matrix (the shipped LM is trained or read from the cache once); `checkpoint(rows)`
    after every cell, so an interrupted matrix keeps what it finished."""
    from fedleak.harness.text.run import shipped_lm
    data, model = shipped_lm()
    rows = []
    for tm in matrix.threat_models:
        for B in matrix.batch_sizes:
            for defense in matrix.defenses:
                for attack in matrix.attacks:
                    if applicable(attack.name, tm.name):
                        continue
                    run = TextRun(attack.name, attack.options, tm.name, tm.options, defense.name, defense.options,
                                  B, matrix.seq_len, matrix.batches, matrix.seed)
                    got = run_text(run, data, model)
                    for r in got:
                        r.update(threat_model_label=tm.label(), defense_label=defense.label(), attack_label=attack.label())
                    rows.extend(got)
                    if checkpoint:
                        checkpoint(rows)
                    if progress:
                        progress(f"{tm.label()} B={B} {defense.label()} {attack.label()}: "
                                 f"ROUGE-L {sum(r['rougeL'] for r in got) / len(got):.3f}, "
                                 f"{sum(r['wall_time_s'] for r in got) / B:.1f} s")
    return rows


@dataclass(frozen=True)
class TextVerdict:
    threat_model: str
    batch_size: int
    defense: str
    verdict: str               # LEAKS | PROTECTS | INCONCLUSIVE | GAP
    worst_rougeL: float        # the most exposed sequence, best attack
    exact_share: float         # share of sequences some attack rebuilt token for token
    control_rougeL: float      # the same without the defense
    best_attack: str
    errors: int
    worst_private: str
    worst_reconstructed: str


def text_verdicts(rows: list[dict], max_rougeL: float) -> list[TextVerdict]:
    import pandas as pd
    from fedleak.metrics.record import METRICS
    rougeL = METRICS["rougeL"]
    frame = pd.DataFrame(rows)
    out = []
    keys = ["threat_model_label", "batch_size", "defense_label"]
    per_sequence = frame.assign(rougeL=frame["rougeL"].fillna(0.0), exact_sequence=frame["exact_sequence"].fillna(0.0))
    control = {}
    for (tm, B, defense), group in per_sequence.groupby(keys, sort=False):
        # per private sequence (batch, sequence): the attacker's best attack
        best = group.loc[group.groupby(["batch", "sequence"])["rougeL"].idxmax()]
        worst = best.loc[rougeL.most_leaked_index(best["rougeL"])]
        figure = (float(worst["rougeL"]), float(group.groupby(["batch", "sequence"])["exact_sequence"].max().mean()),
                  str(worst["attack_label"]), int(group["error"].notna().sum()), worst["private_text"], worst["reconstructed_text"])
        if defense == "none":
            control[(tm, B)] = figure[0]
        out.append((tm, B, defense, figure))
    verdicts = []
    for tm, B, defense, (worst, exact, attack, errors, private, rebuilt) in out:
        ctrl = control.get((tm, B), float("nan"))
        if rougeL.leaks_beyond(worst, max_rougeL) or worst == max_rougeL:
            verdict = "LEAKS"
        elif errors:
            verdict = "GAP"
        elif ctrl >= max_rougeL:
            verdict = "PROTECTS"
        else:
            verdict = "INCONCLUSIVE"
        verdicts.append(TextVerdict(tm, int(B), defense, verdict, worst, exact, ctrl, attack, errors, private, rebuilt))
    return verdicts
