"""Matrix progress: cells done / remaining and an ETA. A live bar on a terminal; in a CI log, one
line per finished cell (a carriage-return bar would be one unreadable line there)."""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


class MatrixProgress:
    def __init__(self, total: int, done: int, enabled: bool = True, stream=None):
        self.total, self.done, self.started_done = total, done, done
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.started = time.monotonic()
        self.bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            self.bar = tqdm(total=total, initial=done, file=self.stream, unit="cell", dynamic_ncols=True,
                            bar_format="{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} cells done{postfix} "
                                       "[{elapsed}, ETA {remaining}]")
            self.bar.set_postfix_str(f"{total - done} left")

    def eta(self) -> float | None:
        """Seconds left at this run's pace so far (cells stored by earlier runs are not pace)."""
        finished = self.done - self.started_done
        if finished <= 0:
            return None
        return (time.monotonic() - self.started) / finished * (self.total - self.done)

    def advance(self, message: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.total - self.done} left", refresh=False)
            self.bar.update(1)
        elif self.enabled:
            eta = self.eta()
            eta_text = tqdm.format_interval(eta) if eta is not None else "?"
            width = len(str(self.total))
            print(f"[{self.done:>{width}}/{self.total} done, {self.total - self.done} left, ETA {eta_text}] {message}",
                  file=self.stream, flush=True)

    def grow(self, tasks: int, done: int = 0) -> None:
        """More tasks than at the start (the budget check's, once their verdict's cells are done)."""
        if not tasks:
            return
        self.total += tasks
        self.done += done
        self.started_done += done
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.update(done)
            self.bar.set_postfix_str(f"{self.total - self.done} left")

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
