"""`fedleak evaluate-defense`: a user's defense class joins a matrix (by default the ci matrix)
next to no defense and the built-in defenses; every attack runs against it non-adaptive and
adaptive; the verdict is one screen, the full report sits beside the results.

Every registered attack takes part, the matrix's own with its options and budgets, any other with
its defaults, under every threat model of the matrix that shares what it runs on. An attack that
cannot run in this setting (it raises a FedleakError, e.g. it needs an oracle flag or a model with
dropout) is listed as not applicable instead of failing the run; so is the defense under a threat
model whose observations it does not declare (`Defense.applies_to`)."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from fedleak.harness.gate import check_gate, describe_gate
from fedleak.harness.matrix import UNDEFENDED
from fedleak.harness.matrix_config import AttackEntry, DefenseEntry, GateConfig, MatrixConfig, load_matrix, with_preset
from fedleak.harness.matrix_run import MatrixRun, prepare_matrix
from fedleak.harness.plugins import load_plugin, load_plugins
from fedleak.metrics.record import PSNR, REPORTED

# Used when the matrix has no [gate]: the CI gate's usual thresholds (docs/ci.md).
DEFAULT_GATE = GateConfig(max_psnr=18.0, min_lpips=0.3)


def evaluation_matrix(base_path, plugin: str, options: dict, preset: str,
                      attack_builtins: bool = False) -> tuple[MatrixConfig, str]:
    """The matrix to run and the defense's registered name. The built-in defenses are reference
    points for utility; with `attack_builtins` every attack runs against them too."""
    base = with_preset(load_matrix(base_path), preset)
    load_plugins(base.plugins)
    cls = load_plugin(plugin)
    cls.from_options(options, "defense.options")  # --option values, checked before anything is built
    listed = {a.name for a in base.attacks}
    attacks = [replace(a, adaptive=[False, True]) for a in base.attacks]
    attacks += [AttackEntry(name) for name in registered_attacks() if name not in listed]
    label = cls.name + (f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else "")
    others = [replace(d, utility_only=not attack_builtins) for d in base.defenses if d.name not in (UNDEFENDED, cls.name)]
    defenses = [DefenseEntry(UNDEFENDED), DefenseEntry(cls.name, options, label=label), *others]
    gate = base.gate if base.gate.enabled else DEFAULT_GATE
    matrix = replace(base, attacks=attacks, defenses=defenses, plugins=[*base.plugins, plugin],
                     gate=replace(gate, defenses=[cls.name]))
    return prepare_matrix(matrix), cls.name


def registered_attacks() -> list[str]:
    from fedleak.attacks import ATTACKS
    return ATTACKS.names()


def print_verdict(run: MatrixRun, name: str) -> None:
    from fedleak.reports.document import Table, table_text
    from fedleak.reports.matrix_tables import context_title, contexts, strongest_attack, with_utility
    from fedleak.reports.privacy_utility import point_label
    results, gate = run.results, run.matrix.gate
    print()
    if results.empty or name not in set(results["defense"]):
        print(f"verdict: no attack on '{name}' finished; see the failures below")
        return
    utility = _utility(run)
    for context, frame in contexts(results):
        summary = with_utility(strongest_attack(frame), utility, context)
        print(f"{context_title(context)}: strongest attack per image (median over images)")
        columns = ([m.name.upper() for m in REPORTED] + ["strongest", "adaptive gain"]
                   + (["accuracy"] if "accuracy" in summary else []))
        table = [[point_label(r), *(m.format(r[m.name]) for m in REPORTED),
                  r["strongest"] if pd.notna(r["psnr"]) else "(not attacked)",
                  "–" if pd.isna(r["adaptive_gain"]) else f"{r['adaptive_gain']:+.1f} dB"]
                 + ([f"{r['accuracy']:.3f}" if pd.notna(r["accuracy"]) else "–"] if "accuracy" in summary else [])
                 for _, r in summary.iterrows()]
        print(table_text(Table(["defense", *columns], table), indent="  "))
        print()
    violations = check_gate(results, gate)
    mine = results[results["defense"] == name]
    worst = mine.loc[PSNR.most_leaked_index(mine["psnr"])]
    mode = "adaptive" if worst["adaptive"] else "non-adaptive"
    if violations:
        cells = len({v.cell for v in violations})
        print(f"verdict: LEAKS. {cells} cell{'s' if cells > 1 else ''} break{'' if cells > 1 else 's'} "
              f"{describe_gate(gate)}; the worst, "
              f"{worst['attack_label']} ({mode}), rebuilt image {worst['image_index']} at {worst['psnr']:.1f} dB PSNR.")
    else:
        print(f"verdict: holds against {mine['attack_label'].nunique()} attacks × 2 modes at this budget: "
              f"{describe_gate(gate)}; best attempt {worst['psnr']:.1f} dB PSNR ({worst['attack_label']}, {mode}).")
    by_key = {c.key: c for c in run.cells}
    not_applicable = sorted({f"{by_key[k].labels['attack_label']}: {o.error}" for k, o in run.schedule.failed.items()
                             if o.user_error and k in by_key})
    not_applicable += [line for line in run.not_applicable if line.startswith(f"defense '{name}' ")]
    if not_applicable:
        print("not applicable here:")
        for line in not_applicable:
            print(f"  {line}")


def _utility(run: MatrixRun) -> pd.DataFrame:
    from fedleak.harness.matrix_results import merge_utility
    from fedleak.harness.cell_store import CellStore
    return merge_utility(run.utility, CellStore(run.output))
