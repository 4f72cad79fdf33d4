"""`fedleak text-matrix`: the text matrix (harness/text/matrix.py) with its verdicts and report; with
`--defense MODULE:CLASS` a user's defense joins the shipped ones (evaluate-defense for text)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fedleak.harness.cli.common import budget_flags


def add_command(sub) -> None:
    p = sub.add_parser("text-matrix", help="DAGER and TAG against the shipped text LM under every update defense "
                                           "(full FedSGD and LoRA), with verdicts and a report")
    p.add_argument("--config", help="a text matrix TOML (default: the shipped matrix-text.toml)")
    budget_flags(p, "attack budget: smoke | ci | paper (default: the config's `preset`)")
    p.add_argument("--defense", metavar="MODULE:CLASS", help="your Defense subclass, evaluated beside the shipped ones")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an option of your defense")
    p.add_argument("--gate", action="store_true", help="exit 1 unless every gated verdict holds (summary.json, junit.xml)")
    p.add_argument("--output", default="runs/text-matrix")
    p.set_defaults(func=cmd_text_matrix)


def is_text_matrix(spec) -> bool:
    """Whether `fedleak matrix SPEC` names a text matrix (its threat models are text-*): `fedleak matrix text`."""
    from fedleak.core.errors import FedleakError
    from fedleak.core.io import read_toml
    from fedleak.harness.run.config import resolve_preset
    try:
        table = read_toml(resolve_preset(spec, "matrix"), "a matrix config")
    except FedleakError:
        return False  # the image matrix's loader says what is wrong with it
    models = table.get("threat_models")
    return isinstance(models, list) and any(isinstance(m, dict) and str(m.get("name", "")).startswith("text-") for m in models)


def cmd_matrix_text(args) -> int:
    """`fedleak matrix text [--budget ci] [--gate] [--output DIR]`: the text matrix through the matrix command."""
    from fedleak.core.errors import ConfigError
    from fedleak.harness.run.config import resolve_preset
    if getattr(args, "baseline", None):
        raise ConfigError("--baseline: the text matrix has no baseline comparison yet (docs/text.md)")
    args.config = str(resolve_preset(args.config, "matrix"))
    args.defense, args.option = None, []
    args.output = args.output or "runs/text"
    return cmd_text_matrix(args)


def cmd_evaluate_text(args) -> int:
    """`fedleak evaluate-defense MODULE:CLASS --matrix text`: the user's defense joins the text matrix, gated
    alone (the shipped defenses are reference rows, not gated)."""
    from fedleak.harness.run.config import resolve_preset
    args.config = str(resolve_preset(args.matrix, "matrix"))
    args.output = args.output or None
    return cmd_text_matrix(args, evaluate=True)


def cmd_text_matrix(args, evaluate: bool = False) -> int:
    """Rows, verdicts, report; with `--gate` (evaluate-defense: always) summary.json and junit.xml; with `--gate`
    exit status 1 where the gate fails: a gated verdict that is not "holds", or a gated cell that did not run
    (fails closed)."""
    import pandas as pd
    import torch
    from fedleak.core.errors import ConfigError
    from fedleak.core.io import atomic_write, check_writable
    from fedleak.harness.cli.common import parse_set_items
    from fedleak.harness.text.matrix import Entry, load_text_matrix, run_text_matrix, text_verdicts
    from fedleak.reports.text_report import write_text_report
    extra, plugins = None, {}
    if args.defense:
        from fedleak.harness.run.plugins import load_plugin
        cls = load_plugin(args.defense)
        options = parse_set_items(args.option, "--option")
        cls.from_options(options, "defense.options")  # --option values, checked before anything runs
        if "gradient" not in cls.applies_to:
            raise ConfigError(f"defense '{cls.name}' applies to {', '.join(cls.applies_to)}; the text matrix's threat "
                              "models share 'gradient' (text-fedsgd, text-lora)")
        extra, plugins = Entry(cls.name, options), {cls.name: cls}
    matrix = load_text_matrix(args.config, args.budget, extra)
    gated_defenses = [extra.name] if evaluate and extra is not None else None
    gate = bool(getattr(args, "gate", False))
    # the text LM is small: one thread beats several on shared cores (pretraining: 0.17 s a step
    # against 0.5-1.3 s with two threads on the 2-core test machine)
    torch.set_num_threads(1)
    out = Path(args.output or (f"runs/evaluate-{extra.name}-text" if evaluate and extra else "runs/text-matrix"))
    check_writable(out, "--output")
    out.mkdir(parents=True, exist_ok=True)

    def checkpoint(rows, failed):
        atomic_write(out / "rows.csv", pd.DataFrame(rows).to_csv(index=False))
        atomic_write(out / "failures.json", json.dumps(failed, indent=1) + "\n")

    rows, failed = run_text_matrix(matrix, progress=lambda line: print(line, file=sys.stderr, flush=True),
                                   checkpoint=checkpoint, defenses=plugins)
    verdicts = text_verdicts(rows, matrix, failed, gated_defenses)
    md, _ = write_text_report([v.to_dict() for v in verdicts], out, "fedleak text matrix", matrix.max_rougeL)
    for v in verdicts:
        status = "control" if v.defense == "none" and not v.gated else v.status
        print(f"{v.context['threat_model']:22s} B={v.context['batch_size']:<2d} {v.defense_label:28s} {status:12s} "
              f"worst ROUGE-L {v.worst['rougeL']:.3f}, {v.recovered} of {v.n_sequences} recovered, control "
              f"{'–' if v.control_recovered is None else f'{v.control_recovered:.0%}'} ({v.best_attack})"
              + (f": {'; '.join(v.reasons)}" if v.gated and v.reasons else ""))
    for f in failed:
        print(f"did not run: {f['task']}: {f['error']}")
    print(f"report: {md}")
    if not (gate or evaluate):  # evaluate-defense writes them either way, as for images
        return 0
    document = write_text_ci_outputs(out, verdicts, failed, matrix, gated_defenses,
                                     f"evaluate-{extra.name}" if evaluate and extra else Path(args.config).stem,
                                     args.budget or "ci")
    summary = document["gate"]
    print(f"gate {'passed' if summary['passed'] else 'FAILED'}: {summary['failed_verdicts']} of {summary['gated_verdicts']} "
          f"gated verdicts fail (ROUGE-L of the most exposed sequence < {matrix.max_rougeL:g}, positive control)"
          + (f"; {summary['errors']} gated cells did not run" if summary["errors"] else ""))
    return 1 if gate and not summary["passed"] else 0


def write_text_ci_outputs(out: Path, verdicts: list, failed: list[dict], matrix, gated_defenses, name: str, preset: str) -> dict:
    """summary.json and junit.xml of a gated text run, by the image run's views (reports.ci): one verdict
    record per (threat model, B, defense setting), the failed cells with whether the gate counts them."""
    from fedleak.core.io import atomic_write, json_bytes
    from fedleak.harness.run.provenance import fedleak_commit, fedleak_version
    from fedleak.reports.ci import junit_xml, summary_document
    records = []
    for v in verdicts:
        record = v.to_dict()
        record.pop("per_sequence")
        records.append({**record, "n_images": v.n_sequences})
    for f in failed:
        name, label = f["labels"]["defense"], f["labels"]["defense_label"]
        f["gated"] = (name in gated_defenses or label in gated_defenses) if gated_defenses is not None else name != "none"
    description = f"ROUGE-L (worst sequence) < {matrix.max_rougeL:g}, every sequence recovered undefended"
    gate = {"thresholds": {"max_rougeL": matrix.max_rougeL}, "statistic": "worst",
            "defenses": list(gated_defenses or []), "description": description}
    document = summary_document({"name": name, "preset": preset, "output": str(out),
                                 "fedleak": {"version": fedleak_version(), "commit": fedleak_commit()}},
                                gate, records, [], failed)
    atomic_write(out / "summary.json", json_bytes(document))
    atomic_write(out / "junit.xml", junit_xml(f"fedleak {name}", records, failed, description))
    return document
