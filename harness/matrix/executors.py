"""Where cells run: in this process (workers 0, for debugging), in local worker processes (the
default: one per core, one thread each, one GPU each when there are GPUs), or on Ray
(harness.matrix.ray_executor). Every backend takes cells and hands back CellOutcomes; claiming and
storing stay with the run that owns the matrix (harness.matrix.scheduler)."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os

from fedleak.harness.matrix.cell_worker import CellOutcome, WorkerSetup, run_task, worker_initializer
from fedleak.core.errors import ConfigError


def available_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers() -> int:
    """One worker per GPU when there are GPUs, else one per core this process may use."""
    gpus = available_gpus()
    if gpus:
        return gpus
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


WORKER_DIED = ("a worker process died while this task was in the pool (killed, out of memory, or a crash in "
               "native code); it runs again on the next run")


class InlineBackend:
    """Cells run one by one in this process: a debugger and a traceback see everything."""
    slots = 1

    def __init__(self, setup: WorkerSetup):
        self.setup = setup
        self.finished: list[CellOutcome] = []

    def submit(self, task) -> None:
        self.finished.append(run_task(task, self.setup))

    def wait(self, timeout: float | None) -> list[CellOutcome]:
        finished, self.finished = self.finished, []
        return finished

    def close(self, cancel: bool = False) -> None:
        pass


class ProcessBackend:
    """A pool of spawned worker processes (fresh interpreters: no CUDA or thread state inherited).
    A worker that dies (killed, out of memory, a crash in native code) fails the tasks then in the
    pool, one line each; the next task starts a fresh pool."""

    def __init__(self, setup: WorkerSetup, workers: int):
        self.context = multiprocessing.get_context("spawn")
        self.gpus = available_gpus()
        self.slots = workers
        self.setup = setup
        self.running: dict[cf.Future, str] = {}
        self.pool = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        queue = None
        if self.gpus:
            queue = self.context.Queue()
            for i in range(self.slots):
                queue.put(i % self.gpus)
        return cf.ProcessPoolExecutor(self.slots, mp_context=self.context, initializer=worker_initializer,
                                      initargs=(self.setup, queue))

    def submit(self, task) -> None:
        try:
            future = self.pool.submit(run_task, task, self.setup)
        except cf.process.BrokenProcessPool:  # a worker died since the last submit; its tasks are failed
            self.pool.shutdown(wait=True, cancel_futures=True)  # its workers are gone; this frees its queues
            self.pool = self._start()
            future = self.pool.submit(run_task, task, self.setup)
        self.running[future] = task.key

    def wait(self, timeout: float | None) -> list[CellOutcome]:
        if not self.running:
            return []
        done, _ = cf.wait(self.running, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        outcomes = []
        for future in done:
            key = self.running.pop(future)
            try:
                outcomes.append(future.result())
            except cf.process.BrokenProcessPool:
                outcomes.append(CellOutcome(key, error=WORKER_DIED))
        return outcomes

    def close(self, cancel: bool = False) -> None:
        if cancel:  # Ctrl-C: drop the cells in flight (their claims are released by the caller)
            processes = list(getattr(self.pool, "_processes", {}).values())
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(timeout=10)
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


def make_backend(executor: str, setup: WorkerSetup, workers: int | None, address: str | None):
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers: must be >= 0, got {workers}")
    if executor == "local":
        if address:
            raise ConfigError("--address: only for --executor ray")
        workers = default_workers() if workers is None else workers
        return InlineBackend(setup) if workers == 0 else ProcessBackend(setup, workers)
    if executor == "ray":
        from fedleak.harness.matrix.ray_executor import RayBackend
        return RayBackend(setup, workers, address)
    raise ConfigError(f"--executor: expected local or ray, got '{executor}'")
