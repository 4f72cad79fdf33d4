"""`fedleak matrix`, `fedleak report` and `fedleak evaluate-defense`: argument parsing and what
they print. The work happens in harness.matrix.run, reports.matrix_report, harness.matrix.evaluate_defense."""
from __future__ import annotations

import sys
from pathlib import Path

from fedleak.core.errors import ConfigError
from fedleak.harness.run.logs import progress_enabled
from fedleak.harness.cli.common import budget_flags, figure_flags, figure_options

DEFAULT_MATRIX = "ci"


def add_commands(sub) -> None:
    matrix = sub.add_parser("matrix", help="run an attack × defense matrix (resumable) and write results + report")
    matrix.add_argument("config", help="a matrix TOML file, or a shipped matrix by name (`ci`; `fedleak list presets`)")
    budget_flags(matrix, "attack budget: smoke | ci | paper (default: the config's `preset`)")
    matrix.add_argument("--gate", action="store_true", help="exit 1 when a defended cell breaks the config's [gate]")
    matrix.add_argument("--output", help="results folder (default runs/<config name>); rerun to resume")
    matrix.add_argument("--baseline", metavar="DIR", help="a stored run to compare this one with (as `fedleak compare "
                                                          "DIR OUTPUT`): exit 1 when a cell leaks more")
    _tolerance_flags(matrix)
    _executor_flags(matrix)
    matrix.set_defaults(func=cmd_matrix)

    compare = sub.add_parser("compare", help="per-cell deltas of every metric between two stored runs; exit 1 when a "
                                             "cell leaks more than the tolerance allows")
    compare.add_argument("before", help="the earlier run's results folder (the baseline)")
    compare.add_argument("after", help="the later run's results folder")
    compare.add_argument("--output", help="where compare.md, compare.html, compare.csv go (default AFTER/compare)")
    _tolerance_flags(compare)
    compare.set_defaults(func=cmd_compare)

    report = sub.add_parser("report", help="write report.md + report.html of a matrix's results folder")
    report.add_argument("results", help="a matrix results folder (or its results.parquet)")
    report.add_argument("--output", help="report folder (default RESULTS/report)")
    figure_flags(report)
    report.set_defaults(func=cmd_report)

    evaluate = sub.add_parser("evaluate-defense", help="every attack, non-adaptive and adaptive, against your defense "
                                                       "class, next to no defense and the built-in defenses")
    evaluate.add_argument("defense", metavar="MODULE:CLASS", help="import path of a fedleak.defenses.base.Defense subclass")
    evaluate.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                          help="an option of your defense's __init__ (value parsed as TOML)")
    budget_flags(evaluate, "attack budget: smoke | ci | paper (default ci)", default="ci")
    evaluate.add_argument("--matrix", default=DEFAULT_MATRIX, help="the matrix your defense joins: a TOML file or a "
                                                                       "shipped matrix by name (default: ci)")
    evaluate.add_argument("--attack-builtins", action="store_true",
                          help="attack the built-in defenses too (default: only their utility is measured)")
    evaluate.add_argument("--output", help="results folder (default runs/evaluate-<defense name>)")
    evaluate.add_argument("--gate", action="store_true", help="exit 1 when your defense's verdict leaks (junit.xml "
                                                              "and summary.json are written either way)")
    _executor_flags(evaluate)
    evaluate.set_defaults(func=cmd_evaluate_defense)


def _tolerance_flags(parser) -> None:
    from fedleak.harness.verdict.compare import DEFAULT_TOLERANCE, STATISTICS
    defaults = ", ".join(f"{k}={v:g}" for k, v in DEFAULT_TOLERANCE.items())
    parser.add_argument("--tolerance", action="append", default=[], metavar="METRIC=VALUE",
                        help=f"how far a cell may move towards more leakage (defaults {defaults}; METRIC=none: not judged)")
    parser.add_argument("--statistic", choices=STATISTICS, default="median",
                        help="per cell, over its images (default median)")


def _executor_flags(parser) -> None:
    figure_flags(parser)
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", dest="existing", action="store_const", const="resume", default="same",
                          help="the output folder holds a different matrix: add this one to it (stored cells are reused)")
    existing.add_argument("--overwrite", dest="existing", action="store_const", const="overwrite",
                          help="the output folder holds a different run: replace it (its stored cells too)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--address", help="Ray cluster address (default: a private local Ray instance)")
    parser.add_argument("--workers", type=int, help="cells at once (default: one per GPU, else per core; "
                                                    "0 runs them in this process)")


def cmd_matrix(args) -> int:
    from fedleak.harness.cli.text import cmd_matrix_text, is_text_matrix
    if is_text_matrix(args.config):
        return cmd_matrix_text(args)  # `fedleak matrix text`: harness/text/matrix.py
    from fedleak.harness.verdict.gate import describe_gate, failures_table, gate_failures
    from fedleak.reports.document import table_text
    from fedleak.harness.matrix.run import prepare_matrix
    matrix = prepare_matrix(args.config, args.budget)
    if args.gate and not matrix.gate.enabled:
        raise ConfigError(f"--gate: {args.config} has no [gate] thresholds (max_psnr, max_ssim, min_lpips)")
    from fedleak.harness.run.config import resolve_preset
    name = resolve_preset(args.config, "matrix").stem
    output = Path(args.output or Path("runs") / name)
    run = _run(matrix, output, args)
    if run is None:
        return 130
    print_verdicts(run)
    status = _print_run(run)
    if args.baseline:
        status = max(status, _compare(args.baseline, output, args, output / "compare"))
    if args.gate:
        from fedleak.harness.matrix.ci_outputs import write_ci_outputs
        document = write_ci_outputs(run, name)
        failures = gate_failures(run.verdicts)
        missing = missing_verdicts(run)
        errors = [f for f in document["failed"] if f.get("gated")]  # summary.json's and junit.xml's errors
        if failures or missing or errors:
            print(f"gate FAILED: {len(failures) + len(missing)} gated verdicts fail {describe_gate(matrix.gate)}"
                  + (f"; {len(errors)} gated tasks did not run" if errors else "") + ":")
            if failures:
                print(table_text(failures_table(failures, matrix.gate)))
            for label in missing:
                print(f"  {label}: no verdict (its cells did not run; see the failures)")
            for f in errors:
                print(f"  {f['task']}: did not run ({f['error']})")
            return 1
        print(f"gate passed: {len([v for v in run.verdicts if v.gated])} gated verdicts meet {describe_gate(matrix.gate)}")
    return status


def print_verdicts(run, only: str | None = None) -> None:
    """Per context, one line per defense setting (`only`: that defense's and none's): the verdict."""
    from fedleak.reports.document import table_text
    from fedleak.reports.matrix_tables import context_title, threat_model_label
    from fedleak.reports.verdicts import verdict_table
    utility = _utility_by_label(run)
    groups: dict[tuple, list] = {}
    for v in run.verdicts:
        if only is None or v.defense in (only, "none") or v.defense_label == only:
            groups.setdefault(tuple(v.context.values()), []).append(v)
    # a threat model run with several option sets (secagg over 1 and 4 clients) is named with them, as in the report
    sets: dict[str, set] = {}
    for v in run.verdicts:
        sets.setdefault(v.context["threat_model"], set()).add(v.context.get("threat_model_params"))
    for verdicts in groups.values():
        context = dict(verdicts[0].context)
        context["threat_model_label"] = threat_model_label(context["threat_model"], context["threat_model_params"],
                                                           len(sets[context["threat_model"]]))
        print(f"\n{context_title(context)}: verdict per defense setting (each image's strongest attack)")
        print(table_text(verdict_table(verdicts, utility), indent="  "))
    print()


def print_verdict(run, name: str) -> None:
    """The verdict tables of `name` (next to none's), then one line: the most alarming status of its
    gated verdicts (reports.verdicts.STATUSES) and why."""
    from fedleak.harness.verdict.gate import describe_gate
    from fedleak.reports.verdicts import headline
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


def missing_verdicts(run) -> list[str]:
    """Gated defense settings that have no verdict at all (every cell failed): the gate fails closed."""
    from fedleak.harness.verdict.judge import gated
    have = {v.defense_label for v in run.verdicts}
    want = {c.labels["defense_label"] for c in run.cells
            if gated(c.config.defense.name, c.labels["defense_label"], run.matrix.gate)}
    return sorted(want - have)


def _utility_by_label(run) -> dict[str, dict]:
    from fedleak.harness.matrix.cell_store import CellStore
    from fedleak.harness.matrix.results import merge_utility
    frame = merge_utility(run.utility, CellStore(run.output))
    return {} if frame.empty else {r["defense_label"]: r for r in frame.to_dict("records")}


def cmd_compare(args) -> int:
    return _compare(args.before, args.after, args, Path(args.output) if args.output else Path(args.after) / "compare")


def _compare(before, after, args, folder: Path) -> int:
    """Compare, print the regressions, write the tables (and the step summary): 1 if a cell regressed."""
    import os

    from fedleak.harness.matrix.ci_outputs import append_step_summary
    from fedleak.harness.verdict.compare import compare_folders, parse_tolerances, write_comparison
    from fedleak.reports.compare import comparison_document, delta_table
    from fedleak.reports.document import table_text, to_markdown
    comparison = compare_folders(before, after, parse_tolerances(args.tolerance), args.statistic)
    markdown, page, _ = write_comparison(comparison, folder, str(before), str(after))
    regressions = comparison.regressions
    word = "REGRESSED" if len(comparison.regressions) or len(comparison.only_before) else \
        "NOT JUDGED" if comparison.failed else "no regression"
    print(f"compare: {word}: {len(regressions)} of {len(comparison.table)} cells leak more than the tolerance "
          f"({comparison.statistic} per cell)" + (f", {len(comparison.only_before)} cells missing" if len(comparison.only_before) else "")
          + (f", {len(comparison.only_after)} new" if len(comparison.only_after) else "") + f"  ->  {markdown}")
    if len(regressions):
        print(table_text(delta_table(regressions, comparison.metrics, comparison.tolerance), indent="  "))
    unjudged = comparison.unjudged
    if comparison.missing or len(unjudged):
        print("compare: FAILED: not judged: "
              + "; ".join([*comparison.missing, *(f"{r['defense_label']} / {r['attack_label']} (seed {r['seed']}): "
                                                  f"{r['unjudged_metrics']}" for _, r in unjudged.head(5).iterrows())])
              + (f" and {len(unjudged) - 5} more cells" if len(unjudged) > 5 else "")
              + " (missing or NaN scores are a failure, not a pass)")
    if os.environ.get("GITHUB_STEP_SUMMARY"):  # the regressions and missing cells; every cell is in the files
        doc = comparison_document(comparison.table, comparison.metrics, comparison.tolerance, comparison.statistic,
                                  comparison.only_before, comparison.only_after, str(before), str(after), every_cell=False)
        append_step_summary(Path(os.environ["GITHUB_STEP_SUMMARY"]), "#" + to_markdown(doc, folder) + "\n")
    return 1 if comparison.failed else 0


def cmd_report(args) -> int:
    from fedleak.harness.matrix.results import report_matrix_folder
    markdown, page = report_matrix_folder(args.results, args.output, figure_options(args))
    print(f"report: {markdown}\n        {page}")
    return 0


def cmd_evaluate_defense(args) -> int:
    from fedleak.harness.cli.text import cmd_evaluate_text, is_text_matrix
    if is_text_matrix(args.matrix):
        return cmd_evaluate_text(args)  # `--matrix text`: the text matrix, the defense gated alone
    from fedleak.harness.cli.common import parse_set_items
    from fedleak.harness.matrix.evaluate_defense import evaluation_matrix
    matrix, name, skipped = evaluation_matrix(args.matrix, args.defense, parse_set_items(args.option, "--option"),
                                              args.budget, args.attack_builtins)
    run = _run(matrix, Path(args.output or Path("runs") / f"evaluate-{name}"), args, skipped)
    if run is None:
        return 130
    print_verdict(run, name)
    from fedleak.harness.matrix.ci_outputs import write_ci_outputs
    summary = write_ci_outputs(run, f"evaluate-{name}", user_errors_apply=False)
    status = _print_run(run, verdict_printed=True)
    if args.gate and not summary["gate"]["passed"]:
        return 1
    return status


def _run(matrix, output: Path, args, not_applicable=()):
    """Run, then report whatever is stored; None when interrupted (what finished is kept)."""
    from fedleak.harness.matrix.run import run_matrix
    from fedleak.harness.matrix.results import report_matrix_folder
    figures = figure_options(args)  # a bad --format is said before the run
    try:
        run = run_matrix(matrix, output, args.executor, args.workers, args.address, progress=progress_enabled(),
                         not_applicable=tuple(not_applicable), existing=args.existing)
    except KeyboardInterrupt:
        print(f"fedleak: interrupted; finished cells are stored in {output}; run the same command to resume",
              file=sys.stderr)
        return None
    if len(run.results):
        run.report = report_matrix_folder(output, figures=figures)
    return run


def failed_image_lines(results) -> list[str]:
    """One line per cell whose attack failed on some of its images (the rest were scored)."""
    if results is None or results.empty or "image_error" not in results:
        return []
    broken = results[results["image_error"].fillna("") != ""]
    return [f"{rows['attack_label'].iloc[0]} ({'adaptive' if rows['adaptive'].iloc[0] else 'non-adaptive'}) vs "
            f"{rows['defense_label'].iloc[0]} [{cell}]: {len(rows)} of "
            f"{int((results['cell'] == cell).sum())} images: {rows['image_error'].iloc[0]}"
            for cell, rows in broken.groupby("cell", sort=False)]


def _print_run(run, verdict_printed: bool = False) -> int:
    """The run's numbers; exit status 1 if a task failed. After a verdict, a cell that is not applicable
    (the attack fails without the defense too: harness.matrix.results.inapplicable_keys) is listed with
    the verdict, not a failure; any other error, a plugin's own included, is a failed task."""
    from fedleak.harness.matrix.ci_outputs import not_applicable_keys
    s = run.schedule
    skipped = not_applicable_keys(run) if verdict_printed else set()
    crashed = {k: o for k, o in s.failed.items() if k not in skipped}
    inapplicable = len(s.failed) - len(crashed)
    checks = len(run.tasks) - len(run.cells) - len(run.utility)
    print(f"matrix: {len(run.cells)} cells + {len(run.utility)} utility measurements + {checks} checks: "
          f"{len(s.computed)} computed, {s.reused} already stored, {len(crashed)} failed"
          + (f", {inapplicable} not applicable" if inapplicable else "") + f"  ->  {run.output / 'results.parquet'}")
    failed_images = failed_image_lines(run.results)
    if failed_images:
        print(f"{len(failed_images)} cells failed on some of their images (no scores there; image_error in "
              f"{run.output / 'results.parquet'}):", file=sys.stderr)
        for line in failed_images:
            print(f"  {line}", file=sys.stderr)
    if run.not_applicable:
        print(f"{len(run.not_applicable)} attack/defense and threat model pairs not applicable (what each "
              f"component declares it applies to), listed in {run.output / 'matrix.json'}")
    from fedleak.harness.matrix.cells import false_passthroughs
    for line in false_passthroughs(run.matrix):
        print(line)
    if run.stale:
        print(run.stale)
    if run.report:
        print(f"report: {run.report[0]}\n        {run.report[1]}")
    if crashed:
        print(f"{len(crashed)} tasks failed (retried on the next run):", file=sys.stderr)
        by_key = {t.key: t for t in run.tasks}
        for key, outcome in sorted(crashed.items()):
            print(f"  {by_key[key].describe()} [{key}]: {outcome.error}", file=sys.stderr)
        return 1
    return 0
