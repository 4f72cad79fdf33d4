"""`fedleak audit-flower` and `fedleak audit-updates`: argument parsing and what they print; the work
is harness.flower.audit and harness.flower.update_audit. Importing this module does not import Flower (the
core CLI runs without it, and audit-updates never needs it)."""
from __future__ import annotations

from fedleak.harness.flower.audit import EXAMPLE

# --flag -> LocalTraining field: what the auditor tells the attacker of the clients' local training
TRAINING_FLAGS = {"lr": ("lr", float, "the clients' local learning rate"),
                  "epochs": ("epochs", int, "local epochs"),
                  "local_batch_size": ("batch_size", int, "local mini-batch size (default full batch)"),
                  "optimizer": ("optimizer", str, "sgd | adam | adamw"),
                  "momentum": ("momentum", float, "SGD momentum"),
                  "weight_decay": ("weight_decay", float, "weight decay")}
TRAINING_SWITCHES = {"nesterov": "Nesterov momentum", "shuffle": "the clients shuffle their data every epoch",
                     "drop_last": "the clients drop a last partial mini-batch",
                     "train_mode": "the clients train BatchNorm in train mode"}


def add_command(sub) -> None:
    audit = sub.add_parser("audit-flower", help="simulate a Flower app, record what its server sees and attack every "
                                                "client update (needs fedleak[flower])")
    audit.add_argument("app", nargs="?", metavar="APP_DIR",
                       help="a Flower app folder: its pyproject.toml names the ServerApp and ClientApp "
                            "([tool.flwr.app.components]) and holds the run config, as `flwr run APP_DIR` reads it")
    audit.add_argument("--run-config", metavar='"K=V ..."', help="override the app's run config, as `flwr run --run-config`")
    audit.add_argument("--server-app", metavar="MODULE:ATTR",
                       help="without APP_DIR: the ServerApp (default: the built-in example on the embedded digits)")
    audit.add_argument("--client-app", metavar="MODULE:ATTR", help="without APP_DIR: the ClientApp")
    audit.add_argument("--hooks", metavar="MODULE", help="the auditor's hooks: build_model, private_data, normalisation "
                                                          "(default: [tool.fedleak] hooks of the app, else the ClientApp's module)")
    audit.add_argument("--clients", type=int, help="simulated clients (default: the hooks' NUM_CLIENTS, else the app's "
                                                   "num-supernodes)")
    audit.add_argument("--cpus", type=int, default=2, help="simulated clients training at once (default 2)")
    audit.add_argument("--save-updates", metavar="DIR", help="also write every recorded update to DIR (for audit-updates)")
    audit.add_argument("--output", default="runs/flower-audit")
    audit.add_argument("--overwrite", action="store_true", help="replace the results a different audit left in --output")
    _add_attack_arguments(audit, knowledge_default="informed")
    audit.set_defaults(func=cmd_audit_flower)

    offline = sub.add_parser("audit-updates", help="attack client updates a server saved to disk (a recording tap's "
                                                   "save_to, or audit-flower --save-updates): no simulation, no Flower")
    offline.add_argument("directory", metavar="DIR", help="the saved updates (DIR/updates/*.npz, DIR/globals/*.npz)")
    offline.add_argument("--model", metavar="MODULE:FACTORY", help="the model's architecture: a function returning "
                                                                   "the torch module (the weights come from DIR)")
    offline.add_argument("--hooks", metavar="MODULE", help="the auditor's hooks; with private_data() the reconstructions "
                                                           "are scored, without it they are not")
    offline.add_argument("--app", metavar="APP_DIR", help="the Flower app the updates come from: its run config "
                                                          "(for hooks that take one) and [tool.fedleak] hooks")
    offline.add_argument("--run-config", metavar='"K=V ..."', help="the run config overrides the updates were made with")
    offline.add_argument("--mean", type=_floats, metavar="M[,M...]", help="per-channel mean the clients normalise with")
    offline.add_argument("--std", type=_floats, metavar="S[,S...]", help="per-channel std the clients normalise with")
    offline.add_argument("--image-shape", type=_ints, metavar="C,H,W", help="input shape, where there is no private data")
    offline.add_argument("--output", default="runs/updates-audit")
    offline.add_argument("--overwrite", action="store_true", help="replace the results a different audit left in --output")
    _add_attack_arguments(offline, knowledge_default=None)
    offline.set_defaults(func=cmd_audit_updates)


def _add_attack_arguments(parser, knowledge_default: str | None) -> None:
    parser.add_argument("--shares", choices=("weights", "gradient"), default="weights",
                        help="what a client replies with: weights after local training (default) or a gradient")
    for flag, (_, kind, text) in TRAINING_FLAGS.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=f"{text}, if the auditor is told it")
    for flag, text in TRAINING_SWITCHES.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, action="store_true", default=None, help=text)
    parser.add_argument("--knowledge", default=knowledge_default,
                        help="attacker knowledge preset or TOML table (default informed"
                             + ("" if knowledge_default else " with private data, else parameter_aware") + ")")
    parser.add_argument("--attack", default="ig")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an attack option (value parsed as TOML)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ladder", action="store_true", help="also the leakage ladder: the same attack on the same images "
                        "from 1 image 1 step up to the app's own update (ladder.md, docs/flower.md)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=_ints, metavar="R[,R...]", help="attack only the updates of these server rounds "
                        "(1 = the first; default: every recorded round), e.g. the updates after k rounds of FedAvg")


def _settings(args, knowledge):
    from fedleak.harness.cli.common import parse_set_items
    from fedleak.harness.flower.update_audit import AttackSettings
    options = {field: getattr(args, flag) for flag, (field, _, _) in TRAINING_FLAGS.items() if getattr(args, flag) is not None}
    options.update({flag: True for flag in TRAINING_SWITCHES if getattr(args, flag)})
    return AttackSettings(shares=args.shares, training_options=options,
                          knowledge=None if knowledge is None else _knowledge(knowledge),
                          attack=args.attack, attack_options=parse_set_items(args.set, "--set"), iterations=args.iterations,
                          restarts=args.restarts, seed=args.seed, device=args.device,
                          rounds=None if args.rounds is None else tuple(args.rounds))


def _knowledge(text: str):
    """A preset name, or an inline TOML table ('{preset = "informed", optimizer = false}')."""
    if not text.lstrip().startswith("{"):
        return text
    import tomllib
    from fedleak.core.errors import ConfigError
    try:
        return tomllib.loads(f"knowledge = {text}")["knowledge"]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--knowledge {text!r}: not a preset name or a TOML inline table ({e})") from None


def cmd_audit_flower(args) -> int:
    from fedleak.core.errors import ConfigError
    from dataclasses import fields
    from fedleak.harness.flower.audit import FlowerAudit, run_flower_audit
    if args.app is not None and (args.server_app or args.client_app):
        raise ConfigError("--server-app/--client-app: the app folder's pyproject already names the components")
    settings = _settings(args, args.knowledge)
    audit = FlowerAudit(**{f.name: getattr(settings, f.name) for f in fields(settings)}, app=args.app,
                        run_config=args.run_config, server_app=args.server_app or f"{EXAMPLE}.server_app:app",
                        client_app=args.client_app or f"{EXAMPLE}.client_app:app", hooks=args.hooks, clients=args.clients,
                        cpus=args.cpus, output=args.output, save_updates=args.save_updates)
    from pathlib import Path

    from fedleak.harness.run.logs import progress_enabled
    from fedleak.harness.run.folder import check_run_folder
    check_run_folder(Path(audit.output), audit.digest(), args.overwrite, "audit-flower")
    if audit.save_updates:  # another run's updates there would be mixed with this one's
        from fedleak.harness.run.folder import Owner, claim_folder
        claim_folder(Path(audit.save_updates), Owner("audit-flower", "updates", audit.digest()),
                     "overwrite" if args.overwrite else "same", flag="--save-updates")
    _print(run_flower_audit(audit, progress=progress_enabled(), ladder=args.ladder))
    return 0


def cmd_audit_updates(args) -> int:
    from fedleak.core.errors import ConfigError
    from fedleak.harness.run.logs import progress_enabled
    from fedleak.harness.flower.audit import run_updates_audit
    if (args.mean is None) != (args.std is None):
        raise ConfigError("--mean and --std: give both (the clients' normalisation) or neither")
    result = run_updates_audit(args.directory, _settings(args, args.knowledge), args.output, model=args.model, hooks=args.hooks,
                               app=args.app, run_config=args.run_config,
                               normalisation=None if args.mean is None else (tuple(args.mean), tuple(args.std)),
                               image_shape=None if args.image_shape is None else tuple(args.image_shape),
                               progress=progress_enabled(), ladder=args.ladder, overwrite=args.overwrite)
    _print(result)
    return 0


def _print(result) -> None:
    from fedleak.harness.cli.common import print_summary
    if not result.scored:
        for (rnd, node), r in result.rows.groupby(["round", "client_id"])[["gradient_loss"]].first().iterrows():
            print(f"  round {rnd} node {node}: matching loss {r['gradient_loss']:.4f} (no ground truth, no scores)")
        print(f"  report -> {result.directory / 'report.md'}")
        return
    per_update = result.rows.groupby(["round", "partition_id"])[["psnr", "lpips"]].median()
    for (rnd, partition), r in per_update.iterrows():
        print(f"  round {rnd} client {partition}: median PSNR {r['psnr']:.2f} dB, LPIPS {r['lpips']:.3f}")
    print_summary(result)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]
