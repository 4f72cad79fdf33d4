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

import math
from dataclasses import replace

from fedleak.harness.matrix.cells import UNDEFENDED
from fedleak.harness.matrix.config import AttackEntry, DefenseEntry, GateConfig, MatrixConfig, load_matrix, with_preset
from fedleak.harness.matrix.run import MatrixRun, prepare_matrix
from fedleak.harness.run.plugins import load_plugin, load_plugins

# Used when the matrix has no [gate]: the shipped ci matrix's (docs/ci.md): no image rebuilt more than 3 dB above
# what its label alone gives. The worst image, not the median: one person's data rebuilt is the harm, and a
# median over 8 images hides three images sent raw (issue #20).
DEFAULT_GATE = GateConfig(max_psnr_over_label=3.0, statistic="worst")


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


def print_verdict(run: MatrixRun, name: str) -> None:
    """The verdict tables of `name` (next to none's), then one line: the most alarming status of its
    gated verdicts (reports.verdicts.STATUSES) and why."""
    from fedleak.harness.verdict.gate import describe_gate
    from fedleak.harness.cli.matrix import print_verdicts
    from fedleak.reports.verdicts import STATUSES
    mine = [v for v in run.verdicts if v.defense == name]
    if not mine:
        print(f"\nverdict: FAILED: no attack on '{name}' finished; see the failures below")
        return
    print_verdicts(run, only=name)
    gate = run.matrix.gate
    judged = [v for v in mine if v.status]
    worst = min(judged, key=lambda v: STATUSES.index(v.status)) if judged else None
    rows = sum(v.attacks for v in mine)
    where = lambda v: f"{v.context['threat_model']}"  # noqa: E731
    if worst is None or worst.status == "holds":
        best = max(mine, key=lambda v: v.worst_psnr)
        print(f"verdict: holds against {rows} attack rows (attack × mode) in {len(mine)} context"
              f"{'s' if len(mine) > 1 else ''}: {describe_gate(gate)}; {headline(best)}; strongest: {best.best_attack} "
              f"({where(best)}).")
    elif worst.status == "DEGENERATE":
        print(f"verdict: DEGENERATE ({where(worst)}): what '{name}' sends does not depend on the client's data and the "
              f"attacks recovered no image, so they measured nothing ({headline(worst)}); see its accuracy: a defense "
              "that sends nothing of the data also trains nothing.")
    else:
        print(f"verdict: {worst.status} ({where(worst)}): {headline(worst)}; {'; '.join(worst.reasons)}; strongest: "
              f"{worst.best_attack}.")
    from fedleak.harness.matrix.ci_outputs import not_applicable_keys
    by_key = {c.key: c for c in run.cells}
    not_applicable = sorted({f"{by_key[k].labels['attack_label']}: {run.schedule.failed[k].error}"
                             for k in not_applicable_keys(run) if k in by_key})
    not_applicable += [line for line in run.not_applicable if line.startswith(f"defense '{name}' ")]
    if not_applicable:
        print("not applicable here:")
        for line in not_applicable:
            print(f"  {line}")


def headline(v) -> str:
    """The verdict's numbers in the order they matter: the worst image, the share recovered, then the median."""
    over = "" if math.isnan(v.worst_psnr_over_label) else f" ({v.worst_psnr_over_label:+.1f} dB above its label)"
    return (f"worst image {v.worst_psnr:.1f} dB{over}, {v.recovered} of {v.n_images} images recovered, "
            f"median {v.psnr:.1f} dB {_fixed_interval(v.psnr_interval)}")


def _fixed_interval(interval) -> str:
    return f"[{interval[0]:.1f}, {interval[1]:.1f}]"
