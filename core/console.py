"""What fedleak writes to a console, and when: live progress bars only where a person watches a
terminal; in a log file or a CI log (not a terminal) no carriage-return frames and no colour codes,
since both turn a log into one unreadable line. The application (harness.run.logs) sets the level."""
from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import IO, Any

# CSI sequences (colours, cursor moves) and the two-byte escapes
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, desc: str, enabled: bool, **options: Any) -> Any:
    """A tqdm bar over `iterable` when `enabled` and stderr is a terminal; otherwise the plain
    iteration behind tqdm's interface (set_postfix does nothing)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, disable=not (enabled and is_terminal()), **{"leave": False, **options})


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)
