"""The `fedleak` command line (cli.main), one module per group of subcommands. Nothing imports cli."""
from fedleak.harness.cli.main import main

__all__ = ["main"]
