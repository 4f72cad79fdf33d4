"""The command line's console: one log level for every command (-q warnings and errors only, the
default adds progress, -v adds details), progress bars only on a terminal, no colour codes where
stderr is not one (Flower's coloured log lines included), and a quiet end when the reader of
stdout goes away (`fedleak list | head`).

Results (summaries, verdicts, the gate) go to stdout at every level; progress and notes go to
stderr through the `fedleak` logger."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from fedleak.core.console import is_terminal, strip_ansi

log = logging.getLogger("fedleak")


def verbosity_flags(parser: argparse.ArgumentParser) -> None:
    """-q/--quiet and -v/--verbose on one command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=0,
                       help="warnings and errors only: no progress (results still print)")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1,
                       help="details too (debug log, Flower's and Ray's info lines)")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """-q/-v on every command below `parser` (each leaf of its subcommands)."""
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not commands:
        verbosity_flags(parser)
        return
    for action in commands:
        for sub in dict.fromkeys(action.choices.values()):  # aliases name one parser twice
            add_verbosity(sub)


def level(verbosity: int) -> int:
    return {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[max(-1, min(1, verbosity))]


class ConsoleHandler(logging.StreamHandler):
    """Messages as they are (no level prefix: a warning says so itself), colour codes removed where
    the stream is not a terminal. The stream is looked up at each record (pytest swaps stderr)."""

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if is_terminal(self.stream) else strip_ansi(text)


def configure(verbosity: int) -> int:
    """Set the `fedleak` logger's level and console handler once per command; returns the level."""
    chosen = level(verbosity)
    log.setLevel(chosen)
    log.propagate = False
    if not any(isinstance(h, ConsoleHandler) for h in log.handlers):
        log.addHandler(ConsoleHandler())
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # Ray's coloured "(pid=...)" prefixes of forwarded lines
    return chosen


def progress_enabled() -> bool:
    """Progress (bars on a terminal, one line per finished cell elsewhere) is shown at the default level."""
    return log.isEnabledFor(logging.INFO)


class PlainStream:
    """A text stream whose writes lose their colour codes: stdout or stderr when it is not a terminal,
    so that what third parties print (Ray's forwarded worker lines) reaches a log file plain."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(strip_ansi(text))
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def plain_streams():
    """sys.stdout and sys.stderr as PlainStreams while a command runs, where they are not terminals."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if is_terminal(s) else PlainStream(s) for s in saved)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def closed_pipe() -> int:
    """stdout's reader went away (`fedleak list | head`): stop quietly, as a Unix tool does. Further
    writes (the interpreter's final flush too) go to /dev/null instead of raising again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a tool that a closed pipe stopped
