"""Run a Flower app in Flower's simulation (Ray backend) and return what its server saw.

The ServerApp runs in this process (a thread of `flwr.simulation.run_simulation`) behind a
`RecordingGrid`; each ClientApp runs in a Ray actor. Needs `flwr[simulation]`; import lazily."""
from __future__ import annotations

import logging
import os

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.common.logger import update_console_handler
from flwr.serverapp import Grid, ServerApp

from fedleak.core.console import is_terminal
from fedleak.harness.matrix.ray_executor import loopback_ray
from fedleak.threat_models.flower import PARTITION_RECORD, ClientUpdate, RecordingGrid


class PartitionTaggedClientApp(ClientApp):
    """The user's ClientApp, run with the app's run config (as `flwr run` gives it), plus the
    partition id of the simulated node in each train reply.

    Node ids are random per simulation, so this is how the auditor learns which client's ground
    truth a reply belongs to; RecordingGrid strips the tag before the ServerApp sees the reply."""

    def __init__(self, app: ClientApp, run_config: dict | None = None):
        super().__init__()
        self.app = app
        self.run_config = dict(run_config or {})

    def __call__(self, message: Message, context: Context) -> Message:
        # Flower refuses a node context whose run config changed while the app ran, so it is given
        # back as it was once the app has read it
        own = context.run_config
        context.run_config = {**self.run_config, **own}
        try:
            reply = self.app(message, context)
        finally:
            context.run_config = own
        if message.metadata.message_type.split(".")[0] == "train" and not reply.has_error():
            reply.content[PARTITION_RECORD] = ConfigRecord({"partition-id": int(context.node_config["partition-id"]),
                                                            "num-partitions": int(context.node_config["num-partitions"])})
        return reply


def simulate(server_app: ServerApp, client_app: ClientApp, num_clients: int, cpus: int = 2,
             quiet: bool = False, run_config: dict | None = None, save_to=None) -> list[ClientUpdate]:
    """Every train reply of the run, in arrival order (and, with `save_to`, on disk too). The
    ServerApp's and every ClientApp's context carries `run_config`; the nodes' node config is
    Flower's simulation's own (`partition-id`, `num-partitions`)."""
    from flwr.simulation import run_simulation
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # nothing to reach offline; don't try
    updates: list[ClientUpdate] = []
    tapped = ServerApp()

    @tapped.main()
    def main(grid: Grid, context: Context) -> None:
        if run_config:
            context.run_config = {**run_config, **context.run_config}
        server_app(RecordingGrid(grid, updates, save_to=save_to), context)

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:
        flwr_logger.setLevel(logging.WARNING)
    update_console_handler(colored=is_terminal())  # Flower colours its lines; in a log file they are noise
    try:
        with loopback_ray():  # Flower starts a private Ray instance: nothing off this machine need reach it
            run_simulation(server_app=tapped, client_app=PartitionTaggedClientApp(client_app, run_config),
                           num_supernodes=num_clients, backend_config=backend_config(cpus))
    finally:
        flwr_logger.setLevel(level)
    return updates


def backend_config(cpus: int) -> dict:
    """One CPU per simulated client, `cpus` clients at a time, and a small object store (models
    here are kilobytes). Flower hands Ray workers this process's sys.path as PYTHONPATH, so an
    app importable here (the repository's `examples`, not opacus's) is importable there."""
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False, "object_store_memory": 128 * 1024 ** 2}}
