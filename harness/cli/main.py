"""`fedleak` command line. User errors print one line and exit 2; nothing finished is lost."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedleak.core.errors import FedleakError
from fedleak.harness.run.logs import log, progress_enabled
from fedleak.harness.cli.common import figure_options, parse_set_items, print_summary

# flag -> dotted config key; flags override the config file
ATTACK_FLAGS = {"attack": "attack.name", "iterations": "attack.iterations", "restarts": "attack.restarts",
                "model": "victim.model", "rounds": "victim.rounds", "dataset": "data.name", "data_root": "data.root",
                "victims": "data.num_victims", "batch_size": "data.batch_size", "defense": "defense.name",
                "threat_model": "threat_model.name", "knowledge": "threat_model.knowledge",
                "device": "device", "seed": "seed", "output": "output"}


def main(argv: list[str] | None = None) -> int:
    from fedleak.harness.run import logs, provenance
    provenance.set_command(["fedleak", *(sys.argv[1:] if argv is None else argv)])
    try:
        args = build_parser().parse_args(argv)
        logs.configure(args.verbosity)
        with logs.plain_streams():
            try:
                return args.func(args)
            except FedleakError as e:
                print(f"fedleak: error: {e}", file=sys.stderr)
                return 2
            finally:
                sys.stdout.flush()  # a closed pipe is found here, inside the handlers below
    except KeyboardInterrupt:
        print("fedleak: interrupted; results of finished batches are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return logs.closed_pipe()


def build_parser() -> argparse.ArgumentParser:
    from fedleak import __version__
    from fedleak.harness.run.logs import add_verbosity
    from fedleak.harness.cli.common import figure_flags
    from fedleak.harness.run.provenance import fedleak_commit
    parser = argparse.ArgumentParser(prog="fedleak", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fedleak {__version__}" + (
        f" ({commit})" if (commit := fedleak_commit()) else ""))
    sub = parser.add_subparsers(dest="command", required=True)

    attack = sub.add_parser("attack", help="run one attack on one victim and write results + report")
    attack.add_argument("--config", help="a TOML run config, or a shipped one by name (`fedleak list presets`)")
    for flag in ATTACK_FLAGS:
        kind = int if flag in ("iterations", "restarts", "rounds", "victims", "batch_size", "seed") else str
        attack.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind)
    attack.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set attack.options.tv=0.01 (value parsed as TOML)")
    attack.add_argument("--overwrite", action="store_true", help="replace the results a different run left in --output")
    figure_flags(attack)
    attack.set_defaults(func=cmd_attack)

    demo = sub.add_parser("demo", help="DLG and IG against held-out victims of the embedded digits (CPU, minutes)")
    demo.add_argument("--output", default="runs/demo")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--overwrite", action="store_true", help="replace the results a different run left in --output")
    figure_flags(demo)
    demo.set_defaults(func=cmd_demo)

    lister = sub.add_parser("list", help="list registered attacks, defenses, threat models, models, datasets, presets")
    lister.add_argument("what", nargs="?", choices=LISTS, help="only this list")
    lister.set_defaults(func=cmd_list)

    from fedleak.harness.cli.prior import add_prior_parser
    add_prior_parser(sub)  # prior train, prior eval

    from fedleak.harness.cli.matrix import add_commands
    add_commands(sub)  # matrix, report, evaluate-defense

    from fedleak.harness.cli.flower import add_command as add_flower_command
    add_flower_command(sub)  # audit-flower (Flower itself is imported only when it runs)
    from fedleak.harness.cli.text import add_command as add_text_command
    add_text_command(sub)  # text-matrix (transformers is imported only when it runs)
    add_verbosity(parser)  # -q / -v on every command
    return parser


def parse_overrides(args) -> dict:
    overrides = {key: getattr(args, flag) for flag, key in ATTACK_FLAGS.items() if getattr(args, flag) is not None}
    overrides.update(parse_set_items(args.set, "--set"))
    return overrides


def cmd_attack(args) -> int:
    from fedleak.harness.run.config import load_config
    from fedleak.harness.run.runner import run_attack
    from fedleak.harness.run.folder import check_run_folder
    config = load_config(args.config, parse_overrides(args))
    check_run_folder(Path(config.output), config.digest(), args.overwrite, "attack")
    result = run_attack(config, progress=progress_enabled(), figures=figure_options(args))
    print_summary(result)
    return failed_images_status(result.rows)


def failed_images_status(rows) -> int:
    """1, with one line, when some images failed (their rows say why: image_error), else 0: a failed
    image is a result that is missing, never a silent gap."""
    if "image_error" not in rows:
        return 0
    failed = rows[rows["image_error"].fillna("") != ""]
    if failed.empty:
        return 0
    print(f"fedleak: {len(failed)} of {len(rows)} images failed (image_error in the results): "
          f"{failed['image_error'].iloc[0]}", file=sys.stderr)
    return 1


def cmd_demo(args) -> int:
    from fedleak.harness.run.config import load_config
    from fedleak.harness.run.runner import run_attack
    from fedleak.harness.run.folder import Owner, check_run_folder, claim_folder
    from fedleak.reports.run_report import write_index
    configs = {preset: load_config(preset, {"output": str(Path(args.output) / preset), "device": args.device})
               for preset in ("demo-dlg", "demo-ig")}
    # the demo's folder: its report.md and the two runs' folders
    claim_folder(Path(args.output), Owner("demo", "demo", "demo"), "overwrite" if args.overwrite else "same")
    for config in configs.values():  # both folders before either run
        check_run_folder(Path(config.output), config.digest(), args.overwrite, "demo")
    results = []
    for preset, config in configs.items():
        log.info(f"[{preset}] {config.attack.name} on {config.victim.model} / {config.data.name}, "
                 f"{len(config.data.victim_indices())} victims")
        results.append(run_attack(config, progress=progress_enabled(), figures=figure_options(args)))
        print_summary(results[-1])
    index = write_index(results, Path(args.output))
    print(f"report: {index}")
    return 0


LISTS = ("attacks", "defenses", "threat-models", "knowledge", "models", "datasets", "presets")


def cmd_list(args) -> int:
    from fedleak.attacks import ATTACKS
    from fedleak.data.datasets import DATASETS
    from fedleak.defenses import DEFENSES
    from fedleak.harness.run.config import shipped_presets
    from fedleak.models.architectures import MODELS
    from fedleak.threat_models import THREAT_MODELS
    from fedleak.threat_models.knowledge import KNOWLEDGE_PRESETS
    lists = {"attacks": ATTACKS.names(), "defenses": DEFENSES.names(), "threat-models": THREAT_MODELS.names(),
             "knowledge": list(KNOWLEDGE_PRESETS), "models": MODELS.names(), "datasets": DATASETS.names()}
    if args.what != "presets":
        for what in [args.what] if args.what else lists:
            print(f"{what.replace('-', ' ')}: {', '.join(lists[what])}")
    if args.what in (None, "presets"):
        print(f"matrix presets (fedleak matrix NAME): {', '.join(shipped_presets('matrix'))}")
        print(f"run presets (fedleak attack --config NAME): {', '.join(shipped_presets('run'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
