"""Cells on a Ray cluster, for matrices that outgrow one machine (optional: pip install 'fedleak[ray]').

Each cell is one Ray task asking for one CPU, and one GPU when the cluster has GPUs (Ray then
sets CUDA_VISIBLE_DEVICES, so the cell's "auto" device is that GPU). Tasks return the cell's files
as bytes: worker machines need fedleak (and any plugin) installed, but no shared disk."""
from __future__ import annotations

import contextlib
import os

from fedleak.core.errors import ConfigError
from fedleak.harness.matrix.cell_worker import CellOutcome, WorkerSetup, run_task


@contextlib.contextmanager
def loopback_ray():
    """A Ray instance started inside this block listens on 127.0.0.1 only.

    Ray binds its servers (GCS, raylet, object manager, workers) to the node's address, which it
    takes to be the machine's network address unless clusters are "disabled" (its rule for macOS
    and Windows): then the node is 127.0.0.1 and every server listens on loopback alone. A private
    instance has no other node to reach, so nothing else need hear it. Joining a cluster
    (`--address`) is left alone."""
    from ray._private import ray_constants
    saved_env = os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"  # for the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False                     # for this one, which imported ray already
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved_env


CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A cluster's head answers within `timeout`, or one line says it does not. ray.init itself
    retries an unreachable head for minutes, printing warnings, before it gives up."""
    import socket
    if address in ("auto", "local"):
        return  # Ray finds the address itself (a running local instance, RAY_ADDRESS)
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--address {address}: expected host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: no Ray head answers there within {timeout:g} s "
                          f"({e.strerror or type(e).__name__})") from None


class RayBackend:
    def __init__(self, setup: WorkerSetup, workers: int | None, address: str | None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray: Ray is not installed; pip install 'fedleak[ray]'") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            if address is not None:
                check_reachable(address)
            try:
                # address None starts a private local instance (on loopback); "auto" or host:port joins a cluster
                with loopback_ray() if address is None else contextlib.nullcontext():
                    ray.init(address=address, num_cpus=workers if address is None and workers else None,
                             include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ConfigError(f"--address {address}: cannot connect to Ray: {str(e).splitlines()[0]}") from None
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.slots = workers or max(1, gpus or int(resources.get("CPU", 1)))
        self.remote = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(run_task)
        self.setup = setup
        self.running: dict = {}

    def submit(self, task) -> None:
        self.running[self.remote.remote(task, self.setup)] = task.key

    def wait(self, timeout: float | None) -> list[CellOutcome]:
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)
        if ready:  # collect everything else that is done too, without waiting
            ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        outcomes = []
        for ref in ready:
            key = self.running.pop(ref)
            try:
                outcomes.append(self.ray.get(ref))
            except self.ray.exceptions.RayError as e:  # the worker died or the task was lost
                outcomes.append(CellOutcome(key, error=f"ray task failed: {str(e).splitlines()[0]}"))
        return outcomes

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self.running:
                self.ray.cancel(ref, force=True)
        if self.started_here:
            self.ray.shutdown()
