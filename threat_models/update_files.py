"""Client updates on disk: what a server recorded (threat_models.flower's taps, `save_to=`), kept
for an offline audit (`fedleak audit-updates DIR`). Needs no `flwr`.

    DIR/updates/round-0001-node-<node id>.npz   the arrays the client replied with + metadata
    DIR/globals/<sha256>.npz                    the global arrays it had been sent, stored once per
                                                content (every client of a round usually got the same)

Each file is a NumPy .npz of plain numeric arrays keyed "0", "1", ... in wire order, plus "metadata":
a JSON string (no pickle anywhere; core.io.read_npz refuses object arrays, never unpickles them):
{"format", "round", "node", "num_examples", "keys" (the arrays' names on the wire), "metrics",
"partition_id" and "num_partitions" (a simulation's ground truth, null from a deployment), "global"}."""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedleak.core.errors import DataError, UnreadableFileError
from fedleak.core.io import atomic_write, read_npz

FORMAT = "fedleak-client-update/1"
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class ClientUpdate:
    client_id: int                    # the node id the server knows the client by
    round: int                        # server round, from 1
    sent: dict[str, np.ndarray]       # the arrays the client replied with, in wire order
    received: dict[str, np.ndarray]   # the global arrays it was sent for this round
    num_examples: int
    metrics: dict = field(default_factory=dict)
    partition_id: int | None = None   # simulation only: the ground truth scoring needs
    num_partitions: int | None = None  # simulation only: how many partitions the clients' data was cut into


def save_update(update: ClientUpdate, directory: str | Path) -> Path:
    """Write one update (and its global arrays, unless already there); returns the update's file."""
    directory = Path(directory)
    blob = _npz(update.received, {"format": FORMAT, "keys": list(update.received)})
    digest = hashlib.sha256(blob).hexdigest()
    global_path = directory / "globals" / f"{digest}.npz"
    if not global_path.exists():
        atomic_write(global_path, blob)
    metadata = {"format": FORMAT, "round": int(update.round), "node": int(update.client_id),
                "num_examples": int(update.num_examples), "keys": list(update.sent), "metrics": _plain(update.metrics),
                "partition_id": update.partition_id, "num_partitions": update.num_partitions, "global": digest}
    path = directory / "updates" / f"round-{update.round:04d}-node-{update.client_id}.npz"
    atomic_write(path, _npz(update.sent, metadata))
    return path


def load_updates(directory: str | Path) -> list[ClientUpdate]:
    """Every update saved under `directory`, by round and node; a file that is not one is a DataError."""
    directory = Path(directory)
    files = sorted((directory / "updates").glob("*.npz"))
    if not files:
        raise DataError(f"{directory}: no saved client updates (expected {directory / 'updates'}/*.npz, written by a "
                        "recording tap with save_to=, or by audit-flower --save-updates)")
    updates, seen = [], {}
    for path in files:
        sent, meta = _read(path)
        # the global is named by its content's sha256: anything else could point outside the folder
        if not isinstance(meta.get("global"), str) or not SHA256.fullmatch(meta["global"]):
            raise DataError(f"{path}: its global reference {meta.get('global')!r} is not a sha256 (files under "
                            f"{directory / 'globals'} only)")
        global_path = directory / "globals" / f"{meta['global']}.npz"
        if not global_path.is_file():
            raise DataError(f"{path}: its global arrays {global_path} are missing")
        for key in ("round", "node", "num_examples"):
            if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool):
                raise DataError(f"{path}: metadata {key} must be an integer, got {meta.get(key)!r}")
        if meta["num_examples"] <= 0:
            raise DataError(f"{path}: num_examples must be >= 1 (the images the client trained on), got "
                            f"{meta['num_examples']}")
        key = (meta["round"], meta["node"])
        if key in seen:  # one client answers once per round: two files are two runs mixed, not one update
            raise DataError(f"{directory}: two saved updates for round {key[0]} node {key[1]}: {seen[key].name} and "
                            f"{path.name} (updates of two runs in one folder?)")
        seen[key] = path
        received, _ = _read(global_path)
        updates.append(ClientUpdate(meta["node"], meta["round"], sent, received, meta["num_examples"], meta["metrics"],
                                    meta["partition_id"], meta["num_partitions"]))
    return sorted(updates, key=lambda u: (u.round, u.client_id))


def _npz(arrays: dict[str, np.ndarray], metadata: dict) -> bytes:
    buffer = io.BytesIO()
    numbered = {str(i): np.ascontiguousarray(a) for i, a in enumerate(arrays.values())}
    np.savez(buffer, metadata=np.array(json.dumps(metadata)), **numbered)
    return buffer.getvalue()


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    npz = read_npz(path, "saved update")
    try:
        meta = json.loads(str(npz["metadata"]))
        if meta.get("format") != FORMAT:
            raise DataError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
        arrays = {key: npz[str(i)] for i, key in enumerate(meta["keys"])}
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
        raise UnreadableFileError(f"{path}: cannot read saved update: {type(e).__name__}: {e}") from None
    if any(a.dtype.kind not in "biuf" for a in arrays.values()):
        raise DataError(f"{path}: holds non-numeric arrays; a client update is numbers")
    return arrays, meta


def _plain(metrics: dict) -> dict:
    """Metrics as JSON can hold them (Flower metric values are numbers or lists of numbers)."""
    return {str(k): (v.tolist() if hasattr(v, "tolist") else v) for k, v in metrics.items()}
