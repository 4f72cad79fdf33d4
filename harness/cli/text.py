"""`fedleak text-matrix`: the text matrix (harness/text/matrix.py) with its verdicts and report; with
`--defense MODULE:CLASS` a user's defense joins the shipped ones (evaluate-defense for text)."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from fedleak.harness.cli.common import budget_flags


def add_command(sub) -> None:
    p = sub.add_parser("text-matrix", help="DAGER and TAG against the shipped text LM under every update defense "
                                           "(full FedSGD and LoRA), with verdicts and a report")
    p.add_argument("--config", help="a text matrix TOML (default: the shipped matrix-text.toml)")
    budget_flags(p, "attack budget: smoke | ci | paper (default: the config's `preset`)")
    p.add_argument("--defense", metavar="MODULE:CLASS", help="your Defense subclass, evaluated beside the shipped ones")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="an option of your defense")
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
    """`fedleak matrix text [--budget ci] [--output DIR]`: the text matrix through the matrix command."""
    from fedleak.core.errors import ConfigError
    from fedleak.harness.run.config import resolve_preset
    if getattr(args, "gate", False) or getattr(args, "baseline", None):
        raise ConfigError("--gate / --baseline: the text matrix has no gate or baseline comparison yet (docs/text.md)")
    args.config = str(resolve_preset(args.config, "matrix"))
    args.defense, args.option = None, []
    args.output = args.output or "runs/text"
    return cmd_text_matrix(args)


def cmd_text_matrix(args) -> int:
    import pandas as pd
    import torch
    from fedleak.core.io import atomic_write, check_writable
    from fedleak.harness.cli.common import parse_set_items
    from fedleak.harness.text.matrix import Entry, load_text_matrix, run_text_matrix, text_verdicts
    from fedleak.reports.text_report import write_text_report
    extra = None
    if args.defense:
        from fedleak.harness.run.plugins import load_plugin
        cls = load_plugin(args.defense)
        extra = Entry(cls.name, parse_set_items(args.option, "--option"))
    matrix = load_text_matrix(args.config, args.budget, extra)
    # the text LM is small: one thread beats several on shared cores (pretraining: 0.17 s a step
    # against 0.5-1.3 s with two threads on the 2-core test machine)
    torch.set_num_threads(1)
    out = Path(args.output)
    check_writable(out, "--output")
    out.mkdir(parents=True, exist_ok=True)
    def checkpoint(rows):
        atomic_write(out / "rows.csv", pd.DataFrame(rows).to_csv(index=False))
    rows = run_text_matrix(matrix, progress=lambda line: print(line, file=sys.stderr, flush=True), checkpoint=checkpoint)
    verdicts = text_verdicts(rows, matrix.max_rougeL)
    md, _ = write_text_report([asdict(v) for v in verdicts], out, "fedleak text matrix", matrix.max_rougeL)
    for v in verdicts:
        print(f"{v.threat_model:22s} B={v.batch_size:<2d} {v.defense:28s} "
              f"{'control' if v.defense == 'none' else v.verdict:12s} worst ROUGE-L {v.worst_rougeL:.3f} "
              f"exact {v.exact_share:.2f} ({v.best_attack})")
    print(f"report: {md}")
    return 0
