"""What a worker does with one cell: run it in a scratch folder and hand back the files.

Workers never write into the matrix's folder themselves: the run that claimed the cell stores
what they return (harness.matrix.cell_store). That keeps the claim and the commit in one process, and
lets a Ray worker on another machine, with no shared disk, compute cells too."""
from __future__ import annotations

import ctypes
import json
import os
import shlex
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from fedleak.core.errors import FedleakError, NotApplicableError, StorageError
from fedleak.core.io import read_frame
from fedleak.harness.run import provenance
from fedleak.harness.run.plugins import load_plugins
from fedleak.harness.run.results import write_frame
from fedleak.metrics.record import REPORTED

CELL_FILES = ("results.parquet", "results.csv", "images.pt")  # the matrix report draws its own grids


@dataclass
class CellOutcome:
    key: str
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None          # one line; set when the cell failed
    user_error: bool = False          # a FedleakError (bad combination or input), not a crash
    not_applicable: bool = False      # a NotApplicableError: the attack declares it needs what this setting lacks
    wall_time_s: float = 0.0
    device: str = ""
    scores: dict = field(default_factory=dict)  # medians, for the progress line


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs before its first cell: plugin imports (found from the working
    directory, harness.run.plugins) and its share of the cores."""
    plugins: tuple[str, ...] = ()
    threads: int = 1
    command: str | None = None  # the command line of the run, which its rows record (harness.run.provenance)


_READY: WorkerSetup | None = None
_GPU: int | None = None  # this worker's GPU (local process pool with GPUs); Ray and in-process: None


def prepare(setup: WorkerSetup) -> None:
    """Once per worker process: one thread (workers share the cores), plugins registered."""
    global _READY
    if _READY == setup:
        return
    torch.set_num_threads(setup.threads)
    if setup.command is not None:
        provenance.set_command(shlex.split(setup.command))
    # tqdm's default lock is a multiprocessing semaphore; a worker that is killed (out of memory)
    # would leave it to the resource tracker, which warns about it when the run ends. A worker's
    # bars are off and shared with no one: a thread lock does.
    from tqdm import tqdm
    tqdm.set_lock(threading.RLock())
    load_plugins(setup.plugins)
    _READY = setup


def run_task(task, setup: WorkerSetup) -> CellOutcome:
    """Run one task (a matrix cell, or a utility measurement: anything with `key` and `run(gpu)`);
    every error comes back as data, so one bad cell never stops a matrix."""
    started = time.perf_counter()
    try:
        prepare(setup)
        files, scores, device = task.run(_GPU)
        return CellOutcome(task.key, files, wall_time_s=time.perf_counter() - started, device=device, scores=scores)
    except FedleakError as e:  # a full disk is no property of the cell: it is retried like a crash
        # a FedleakError is the input's, not fedleak's bug; it is still a failed cell (harness.matrix.ci_outputs), unless
        # it is the attack's declared requirement (NotApplicableError) or the attack fails without the defense too
        return CellOutcome(task.key, error=str(e), user_error=not isinstance(e, StorageError),
                           not_applicable=isinstance(e, NotApplicableError), wall_time_s=time.perf_counter() - started)
    except Exception as e:  # noqa: BLE001 - a crash in one cell is reported with its cell, not raised
        where = traceback.extract_tb(e.__traceback__)[-1]
        return CellOutcome(task.key, error=f"{type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno})",
                           wall_time_s=time.perf_counter() - started)


def attack_cell(config, gpu: int | None) -> tuple[dict[str, bytes], dict, str]:
    """run_attack in a scratch folder: (its files, median scores, the device it ran on)."""
    from fedleak.harness.run.runner import run_attack
    if config.device == "auto" and gpu is not None:
        config = replace(config, device=f"cuda:{gpu}")
    with tempfile.TemporaryDirectory(prefix="fedleak-cell-") as scratch:
        rows = run_attack(replace(config, output=scratch), save_partial=False, report=False).rows
        _record_home(Path(scratch), config.output)
        files = {name: (Path(scratch) / name).read_bytes() for name in CELL_FILES if (Path(scratch) / name).exists()}
    return files, {m.name: float(rows[m.name].median()) for m in REPORTED}, config.device


def _record_home(scratch: Path, home: str) -> None:
    """Rows record the config they ran with; make its `output` the cell's home, not the scratch
    folder that no longer exists once the worker returns."""
    frame = read_frame(scratch / "results.parquet", "results")
    frame["config"] = [json.dumps({**json.loads(c), "output": home}, sort_keys=True) for c in frame["config"]]
    write_frame(frame, scratch)


def worker_initializer(setup: WorkerSetup, gpus) -> None:
    """ProcessPool initializer: take a GPU from the shared queue (one per worker) when there are any."""
    global _GPU
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle: it stops the pool
    if gpus is not None:
        _GPU = gpus.get()
    _die_with_parent()
    try:
        prepare(setup)
    except Exception:  # noqa: BLE001
        # a worker that died here would break the pool (every cell a BrokenProcessPool); run_task
        # calls prepare again and reports the error with each cell instead
        pass


def _die_with_parent() -> None:
    """A worker whose matrix run was killed (SIGKILL) stops too, instead of finishing a cell nobody
    will store."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the pool's own shutdown handles orderly exits
    if os.getppid() == 1:
        os._exit(1)
