"""What an honest-but-curious Flower server records: every client's training reply, with the global
weights that client started from. Needs `flwr` (the optional `fedleak[flower]` extra); nothing in
the core package imports this module.

Three taps, one record type (`ClientUpdate`), none of them changing what the server computes; each
keeps the updates in a list (`updates`) or, with `save_to=DIR`, writes each one to disk as it arrives
(threat_models.update_files: the arrays and the global arrays they were computed from, for
`fedleak audit-updates DIR`) and keeps none in memory:

* `RecordingStrategy` wraps a Message-API strategy (`flwr.serverapp.strategy`, FedAvg and its
  subclasses): `configure_train` / `aggregate_train` / evaluation are delegated to it unchanged.
* `RecordingFitStrategy` does the same for a legacy strategy (`flwr.server.strategy`,
  `configure_fit` / `aggregate_fit`).
* `RecordingGrid` sits between any ServerApp and the SuperLink and sees the same messages on the
  wire: the audit uses it, because a ServerApp's strategy is usually a local variable of its main.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Message
from flwr.server.strategy import Strategy as FitStrategy
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedleak.threat_models.update_files import ClientUpdate, save_update

# Reply content the audit's client wrapper adds in simulation (harness/flower/simulation.py):
# which data partition a node ran. RecordingGrid removes it before the ServerApp sees the reply.
PARTITION_RECORD = "fedleak-audit"


class UpdateSink:
    """Where a tap puts what it records: a list, a folder (one file per update, nothing kept), or both."""

    def __init__(self, updates: list[ClientUpdate] | None, save_to: str | Path | None):
        self.save_to = None if save_to is None else Path(save_to)
        self.updates = updates if updates is not None else ([] if save_to is None else None)

    def add(self, update: ClientUpdate) -> None:
        if self.save_to is not None:
            save_update(update, self.save_to)
        if self.updates is not None:
            self.updates.append(update)


def record_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: _to_numpy(array) for key, array in record.items()}


def _to_numpy(array) -> np.ndarray:
    try:
        return array.numpy()
    except Exception:  # noqa: BLE001 - legacy Parameters on the wire carry np.save bytes without a dtype
        from flwr.common import bytes_to_ndarray
        return bytes_to_ndarray(array.data)


def _arrays_of(message: Message, key: str = "arrays") -> ArrayRecord | None:
    records = message.content.array_records
    if key in records:
        return records[key]
    return next(iter(records.values()), None) if len(records) == 1 else None


def _num_examples(message: Message, key: str) -> int:
    for record in message.content.metric_records.values():
        if key in record:
            return int(record[key])
    raise ValueError(f"reply from node {message.metadata.src_node_id} has no '{key}' metric")


def _metrics(message: Message) -> dict:
    return {k: v for record in message.content.metric_records.values() for k, v in record.items()}


def update_from_reply(instruction: Message, reply: Message, round: int, weight_key: str = "num-examples") -> ClientUpdate | None:
    """The record of one train reply, or None when the reply is an error or carries no arrays."""
    if reply.has_error():
        return None
    sent, received = _arrays_of(reply), _arrays_of(instruction)
    if sent is None or received is None:
        return None
    partition = reply.content.config_records.get(PARTITION_RECORD)
    return ClientUpdate(int(reply.metadata.src_node_id), round, record_arrays(sent), record_arrays(received),
                        _num_examples(reply, weight_key), _metrics(reply),
                        None if partition is None else int(partition["partition-id"]),
                        None if partition is None else int(partition["num-partitions"]))


class RecordingStrategy(Strategy):
    """A Message-API strategy that also keeps every client's train reply in `updates`.

    The wrapped strategy samples, configures and aggregates; this class only reads the messages
    going out and the replies coming back. `start` is the base class's loop calling these methods,
    so a strategy that overrides `start` itself is refused rather than silently run differently."""

    def __init__(self, strategy: Strategy, updates: list[ClientUpdate] | None = None, save_to: str | Path | None = None):
        if type(strategy).start is not Strategy.start:
            raise TypeError(f"{type(strategy).__name__} overrides Strategy.start; wrap the Grid instead (RecordingGrid)")
        self.strategy = strategy
        self._sink = UpdateSink(updates, save_to)
        self.updates = self._sink.updates  # None when saving to disk only
        self._instructions: dict[tuple[int, int], Message] = {}

    def __getattr__(self, name):
        return _delegate(self, name)

    def configure_train(self, server_round, arrays, config, grid) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._instructions = {(server_round, m.metadata.dst_node_id): m for m in messages}
        return messages

    def aggregate_train(self, server_round, replies):
        replies = list(replies)  # read twice: here and by the wrapped strategy
        key = getattr(self.strategy, "weighted_by_key", "num-examples")
        for reply in replies:
            instruction = self._instructions.get((server_round, reply.metadata.src_node_id))
            update = None if instruction is None else update_from_reply(instruction, reply, server_round, key)
            if update is not None:
                self._sink.add(update)
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()


class RecordingFitStrategy(FitStrategy):
    """The same for a legacy strategy (`flwr.server.strategy`, e.g. `FedAvg`): `FitIns` going out,
    `FitRes` coming back. Arrays are keyed "0", "1", ... in the order of the NDArrays list."""

    def __init__(self, strategy: FitStrategy, updates: list[ClientUpdate] | None = None, save_to: str | Path | None = None):
        self.strategy = strategy
        self._sink = UpdateSink(updates, save_to)
        self.updates = self._sink.updates
        self._sent_to: dict[tuple[int, str], list[np.ndarray]] = {}

    def __getattr__(self, name):
        return _delegate(self, name)

    def initialize_parameters(self, client_manager):
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round, parameters, client_manager):
        from flwr.common import parameters_to_ndarrays
        instructions = self.strategy.configure_fit(server_round, parameters, client_manager)
        self._sent_to = {(server_round, proxy.cid): parameters_to_ndarrays(ins.parameters) for proxy, ins in instructions}
        return instructions

    def aggregate_fit(self, server_round, results, failures):
        from flwr.common import parameters_to_ndarrays
        for proxy, res in results:
            received = self._sent_to.get((server_round, proxy.cid))
            if received is not None:
                self._sink.add(ClientUpdate(int(proxy.cid), server_round, _numbered(parameters_to_ndarrays(res.parameters)),
                                                 _numbered(received), int(res.num_examples), dict(res.metrics or {})))
        return self.strategy.aggregate_fit(server_round, results, failures)

    def configure_evaluate(self, server_round, parameters, client_manager):
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round, results, failures):
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round, parameters):
        return self.strategy.evaluate(server_round, parameters)


def _delegate(wrapper, name: str):
    # only reached for attributes the wrapper lacks (e.g. FedAvg.weighted_by_key); looked up in
    # __dict__ so that a half-built wrapper (copy, unpickling) raises AttributeError, not recursion
    strategy = wrapper.__dict__.get("strategy")
    if strategy is None:
        raise AttributeError(name)
    return getattr(strategy, name)


def _numbered(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {str(i): a for i, a in enumerate(arrays)}


class RecordingGrid(Grid):
    """A Grid that forwards everything to `grid` and records each train instruction with its reply.

    Rounds come from the "server-round" entry FedAvg-style strategies put in the train config (or
    a numeric `group_id`, as legacy strategies set); without either, each push of train messages
    counts as one round. The audit's partition tag is removed from replies here, so the ServerApp
    receives exactly what the client sent."""

    def __init__(self, grid: Grid, updates: list[ClientUpdate] | None = None, weight_key: str = "num-examples",
                 save_to: str | Path | None = None):
        self.grid = grid
        self._sink = UpdateSink(updates, save_to)
        self.updates = self._sink.updates
        self.weight_key = weight_key
        self._pending: dict[str, tuple[Message, int]] = {}
        self._pushes = 0

    def set_run(self, run) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self):
        return self.grid.get_node_ids()

    def get_nodes(self):
        return self.grid.get_nodes()

    def push_messages(self, messages):
        messages = list(messages)
        ids = list(self.grid.push_messages(messages))
        self._remember(messages)
        return ids

    def pull_messages(self, message_ids):
        return self._collect(self.grid.pull_messages(message_ids))

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = self.grid.send_and_receive(messages, timeout=timeout)
        self._remember(messages)  # the wrapped grid assigned their message ids while pushing
        return self._collect(replies)

    def _remember(self, messages: list[Message]) -> None:
        train = [m for m in messages if m.metadata.message_type.split(".")[0] == "train"]
        if train:
            self._pushes += 1
        for m in train:
            self._pending[m.metadata.message_id] = (m, _round_of(m, self._pushes))

    def _collect(self, replies) -> list[Message]:
        replies = list(replies)
        for reply in replies:
            instruction, round = self._pending.pop(reply.metadata.reply_to_message_id, (None, 0))
            if instruction is not None:
                update = update_from_reply(instruction, reply, round, self.weight_key)
                if update is not None:
                    self._sink.add(update)
            if not reply.has_error() and PARTITION_RECORD in reply.content:
                del reply.content[PARTITION_RECORD]
        return replies


def _round_of(message: Message, fallback: int) -> int:
    for record in message.content.config_records.values():
        if "server-round" in record:
            return int(record["server-round"])
    group = message.metadata.group_id
    return int(group) if group.isdigit() else fallback
