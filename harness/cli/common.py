"""What the subcommands share: KEY=VALUE options, the figure flags, the one-line summary of a run."""
from __future__ import annotations

import argparse
import sys

from fedleak.harness.matrix.config import PRESETS as BUDGETS  # smoke | ci | paper


def parse_set_items(items: list[str], flag: str) -> dict:
    """KEY=VALUE strings -> {KEY: VALUE parsed as TOML}."""
    import tomllib
    from fedleak.core.errors import ConfigError
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            values[key.strip()] = text  # bare strings need no quotes
    return values


def figure_flags(parser) -> None:
    parser.add_argument("--format", default="png", metavar="png,pdf,svg",
                        help="figure files besides the PNG the pages show: any of png, pdf, svg (default png)")
    parser.add_argument("--dpi", type=int, default=100, help="figure resolution (default 100; 300 for print)")


def figure_options(args):
    from fedleak.reports.document import FigureOptions
    return FigureOptions(tuple(f.strip().lower() for f in args.format.split(",") if f.strip()), args.dpi)


def print_summary(result) -> None:
    f = result.rows
    print(f"  median PSNR {f['psnr'].median():.2f} dB, SSIM {f['ssim'].median():.3f}, LPIPS {f['lpips'].median():.3f}, "
          f"label accuracy {f['label_correct'].mean():.0%}  ->  {result.directory / 'report.md'}", flush=True)


class _DeprecatedPreset(argparse.Action):
    """`--preset`, the budget flag's old name: still read for one release, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"fedleak: {option_string} is deprecated and goes in the next release; use --budget {values}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def budget_flags(parser, help: str, default: str | None = None) -> None:
    """`--budget smoke|ci|paper`: how much effort each attack gets (the matrix config's `preset`, each
    attack's `budgets`); `--preset` is its deprecated alias, hidden from the help."""
    parser.add_argument("--budget", choices=BUDGETS, default=default, help=help)
    parser.add_argument("--preset", dest="budget", choices=BUDGETS, default=argparse.SUPPRESS, action=_DeprecatedPreset,
                        help=argparse.SUPPRESS)
