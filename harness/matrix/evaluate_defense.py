"""`fedleak evaluate-defense`: a user's defense class joins a matrix (by default the ci matrix)
next to no defense and the built-in defenses; every attack runs against it non-adaptive and
adaptive; the verdict is one screen, the full report sits beside the results.

Every registered attack takes part, the matrix's own with its options and budgets, any other with
its defaults, under every threat model of the matrix that shares what it runs on. An attack that
does not run in this setting by its own declaration (NotApplicableError: it needs an oracle flag or
one example per update), or that fails here without any defense too, is listed as not applicable; so
is the defense under a threat model whose observations it does not declare (`Defense.applies_to`).
Any other error against the defense, a plugin's own included, is a failed cell: counted, gated, and
the exit status (harness.matrix.results.inapplicable_keys, docs/verdict.md)."""
from __future__ import annotations

from dataclasses import replace

from fedleak.harness.matrix.cells import UNDEFENDED
from fedleak.harness.matrix.config import AttackEntry, DefenseEntry, MatrixConfig, load_matrix, with_preset
from fedleak.harness.matrix.run import prepare_matrix
from fedleak.harness.run.plugins import load_plugin, load_plugins
from fedleak.harness.verdict.gate import DEFAULT_GATE


def evaluation_matrix(base_path, plugin: str, options: dict, preset: str,
                      attack_builtins: bool = False) -> tuple[MatrixConfig, str, list[str]]:
    """The matrix to run, the defense's registered name, and why the threat models its declaration
    rules out were left out (`Defense.applies_to`: a gradient defense never runs on VFL embeddings;
    without it nothing there concerns this defense, so none of their cells is computed). The
    built-in defenses are reference points for utility; with `attack_builtins` every attack runs
    against them too."""
    from fedleak.core.errors import ConfigError
    from fedleak.threat_models import not_applicable
    base = with_preset(load_matrix(base_path), preset)
    load_plugins(base.plugins)
    cls = load_plugin(plugin)
    cls.from_options(options, "defense.options")  # --option values, checked before anything is built
    skipped = [reason for t in base.threat_models if (reason := not_applicable(t.name, cls))]
    threat_models = [t for t in base.threat_models if not_applicable(t.name, cls) is None]
    if not threat_models:
        raise ConfigError(f"defense '{cls.name}': {'; '.join(skipped)}; the matrix has no threat model it applies to")
    if len(threat_models) < len(base.threat_models):
        kept = {t.name for t in threat_models}
        restrict = lambda entries: [replace(e, threat_models=[n for n in e.threat_models if n in kept])  # noqa: E731
                                    for e in entries if not e.threat_models or set(e.threat_models) & kept]
        base = replace(base, threat_models=threat_models, attacks=restrict(base.attacks), defenses=restrict(base.defenses))
    listed = {a.name for a in base.attacks}
    attacks = [replace(a, adaptive=[False, True]) for a in base.attacks]
    attacks += [AttackEntry(name) for name in registered_attacks() if name not in listed]
    label = cls.name + (f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else "")
    others = [replace(d, utility_only=not attack_builtins) for d in base.defenses if d.name not in (UNDEFENDED, cls.name)]
    defenses = [DefenseEntry(UNDEFENDED), DefenseEntry(cls.name, options, label=label), *others]
    gate = base.gate if base.gate.enabled else DEFAULT_GATE
    matrix = replace(base, attacks=attacks, defenses=defenses, plugins=[*base.plugins, plugin],
                     gate=replace(gate, defenses=[cls.name]))
    return prepare_matrix(matrix), cls.name, [f"{reason}: not evaluated there" for reason in skipped]


def registered_attacks() -> list[str]:
    from fedleak.attacks import ATTACKS
    return ATTACKS.names()
