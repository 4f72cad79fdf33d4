"""The example's ServerApp: FedAvg over every client for NUM_ROUNDS rounds, no federated evaluation."""
from __future__ import annotations

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedleak.examples.flower_app import task

app = ServerApp()


def make_strategy() -> FedAvg:
    n = task.NUM_CLIENTS
    return FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)


@app.main()
def main(grid: Grid, context: Context) -> None:
    make_strategy().start(grid=grid, initial_arrays=ArrayRecord(task.build_model().state_dict()), num_rounds=task.NUM_ROUNDS)
