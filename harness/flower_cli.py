"""`fedleak audit-flower`: argument parsing and what it prints; the work is harness.flower_audit.
Importing this module does not import Flower (the core CLI runs without it)."""
from __future__ import annotations

from fedleak.harness.flower_audit import EXAMPLE


def add_command(sub) -> None:
    audit = sub.add_parser("audit-flower", help="simulate a Flower app, record what its server sees and attack every "
                                                "client update (needs fedleak[flower])")
    audit.add_argument("--server-app", default=f"{EXAMPLE}.server_app:app", metavar="MODULE:ATTR",
                       help="the ServerApp (default: the built-in example on the embedded digits)")
    audit.add_argument("--client-app", default=f"{EXAMPLE}.client_app:app", metavar="MODULE:ATTR", help="the ClientApp")
    audit.add_argument("--hooks", metavar="MODULE", help="the auditor's hooks: build_model, private_data, normalisation "
                                                          f"(default: {EXAMPLE}.task for the example, else the ClientApp's module)")
    audit.add_argument("--clients", type=int, help="simulated clients (default: the hooks' NUM_CLIENTS)")
    audit.add_argument("--shares", choices=("weights", "gradient"), default="weights",
                       help="what a client replies with: weights after local training (default) or a gradient")
    audit.add_argument("--lr", type=float, help="the clients' local learning rate, if the auditor is told it")
    audit.add_argument("--epochs", type=int, default=1, help="local epochs (with --lr)")
    audit.add_argument("--local-batch-size", type=int, help="local mini-batch size (with --lr; default full batch)")
    audit.add_argument("--knowledge", default="informed", help="attacker knowledge preset (default informed)")
    audit.add_argument("--attack", default="ig")
    audit.add_argument("--iterations", type=int, default=200)
    audit.add_argument("--restarts", type=int, default=1)
    audit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an attack option (value parsed as TOML)")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--device", default="cpu")
    audit.add_argument("--cpus", type=int, default=2, help="simulated clients training at once (default 2)")
    audit.add_argument("--output", default="runs/flower-audit")
    audit.add_argument("--overwrite", action="store_true", help="replace the results a different audit left in --output")
    audit.set_defaults(func=cmd_audit_flower)


def cmd_audit_flower(args) -> int:
    from fedleak.harness.cli import parse_set_items, print_summary
    from fedleak.harness.flower_audit import FlowerAudit, run_flower_audit
    from fedleak.models.functional import LocalTraining
    hooks = args.hooks or (f"{EXAMPLE}.task" if args.client_app.startswith(f"{EXAMPLE}.") else args.client_app.partition(":")[0])
    training = LocalTraining(args.lr, args.epochs, args.local_batch_size) if args.lr is not None else None
    audit = FlowerAudit(server_app=args.server_app, client_app=args.client_app, hooks=hooks, clients=args.clients,
                        shares=args.shares, training=training, knowledge=args.knowledge, attack=args.attack,
                        attack_options=parse_set_items(args.set, "--set"), iterations=args.iterations,
                        restarts=args.restarts, seed=args.seed, device=args.device, cpus=args.cpus, output=args.output)
    from pathlib import Path

    from fedleak.harness.logs import progress_enabled
    from fedleak.harness.run_folder import check_run_folder
    check_run_folder(Path(audit.output), audit.digest(), args.overwrite)
    result = run_flower_audit(audit, progress=progress_enabled())
    per_update = result.rows.groupby(["round", "partition_id"])[["psnr", "lpips"]].median()
    for (rnd, partition), r in per_update.iterrows():
        print(f"  round {rnd} client {partition}: median PSNR {r['psnr']:.2f} dB, LPIPS {r['lpips']:.3f}")
    print_summary(result)
    return 0
