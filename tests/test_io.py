"""The io layer: no file fedleak reads runs code when tampered with, a corrupt cache entry is rebuilt
(said once, never again), a corrupt user file is one line naming it, writes are atomic with the
mode a plain open() gives, and a full disk is one line.

Every file fedleak reads from a user's folder or its cache gets the same payload planted in it: an
object whose unpickling creates a marker file. The marker must never appear."""
import errno
import hashlib
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedleak.core.errors import ConfigError, DataError, StorageError, UnreadableFileError
from fedleak.core.io import atomic_write, cache_dir, digest, load_tensors, read_plain_pickle


class Payload:
    """Unpickling this calls open(marker, "w"): code run by whoever unpickles the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a planted pickle payload was executed"


def plant(path: Path, marker: Path) -> Path:
    """The payload in the form the file would take: a torch file for .pt (torch.save pickles the
    object), a plain pickle for everything else (JSON, Parquet, CSV, CIFAR, IDX, images)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pt":
        torch.save({"params": Payload(marker), "accuracy": 1.0}, path)
    else:
        path.write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0]}, protocol=2))
    return path


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """The check the tests below rely on: an ordinary unpickler does execute it."""
    target = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(target)))
    assert target.exists()
    target.unlink()
    torch.load(plant(tmp_path / "x.pt", target), weights_only=False)
    assert target.exists()


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------- user folders: datasets
def _cifar10(root: Path):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                                                  "labels": [1, 2]}, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return folder


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", "batches.meta"])
def test_tampered_cifar_file_is_refused_not_run(tmp_path, marker, name):
    from fedleak.data.datasets import load_dataset
    folder = _cifar10(tmp_path / "data")
    assert load_dataset("cifar10", root=tmp_path / "data").train_images.shape == (10, 3, 32, 32)
    plant(folder / name, marker)
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", root=tmp_path / "data")
    assert str(folder / name) in one_line(error) and "refused" in str(error.value)


def test_cifar_batch_of_python_objects_is_refused(tmp_path):
    folder = _cifar10(tmp_path)
    objects = np.array([1, 2, 3], dtype=object)  # plain ints, but an array that could hold anything
    (folder / "test_batch").write_bytes(pickle.dumps({"data": objects, "labels": [1, 2, 3]}))
    with pytest.raises(DataError, match="objects"):
        read_plain_pickle(folder / "test_batch", "batch")


def test_cifar_batch_that_is_not_a_batch_is_one_line(tmp_path):
    from fedleak.data.datasets import load_dataset
    folder = _cifar10(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [1, 2]}))
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", root=tmp_path)
    assert "data_batch_1" in one_line(error) and "3072" in str(error.value)
    (folder / "data_batch_1").write_bytes(b"\x80\x02junk")
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", root=tmp_path)
    assert "data_batch_1" in one_line(error)


def _mnist(root: Path) -> Path:
    import struct
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 4), ("t10k", 2)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, 28, 28) + bytes(n * 784))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + bytes(range(n)))
    return raw


@pytest.mark.parametrize("name, content", [
    ("train-images-idx3-ubyte", b"junk, not an idx file"),
    ("t10k-labels-idx1-ubyte", b""),
    ("train-images-idx3-ubyte", bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(10)),
    ("t10k-labels-idx1-ubyte", bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([0, 200])),
    ("t10k-images-idx3-ubyte", None),  # the pickle payload
])
def test_junk_mnist_file_is_one_line_naming_it(tmp_path, marker, name, content):
    from fedleak.data.datasets import load_dataset
    raw = _mnist(tmp_path)
    assert len(load_dataset("mnist", root=tmp_path).train_images) == 4
    if content is None:
        plant(raw / name, marker)
    else:
        (raw / name).write_bytes(content)
    with pytest.raises(DataError) as error:  # was a bare AssertionError from torchvision
        load_dataset("mnist", root=tmp_path)
    assert "mnist" in one_line(error) and name in str(error.value)


def test_tampered_image_in_an_image_folder_is_one_line(tmp_path, marker):
    from fedleak.data.datasets import load_dataset
    for split in ("train", "val"):
        (tmp_path / split / "ant").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / "ant" / "a.png")
    plant(tmp_path / "val" / "ant" / "b.png", marker)
    with pytest.raises(DataError) as error:
        load_dataset("imagefolder", root=tmp_path, size=8)
    assert "b.png" in one_line(error)


def test_tampered_config_file_is_one_line(tmp_path, marker):
    from fedleak.harness.run.config import load_config
    from fedleak.harness.matrix.config import load_matrix
    for load in (load_config, load_matrix):
        with pytest.raises(ConfigError) as error:
            load(plant(tmp_path / f"{load.__name__}.toml", marker))
        assert "malformed TOML" in one_line(error)


# --------------------------------------------------------------------------- user files: a prior
def test_tampered_prior_checkpoint_and_sidecar_are_one_line(tmp_path, marker):
    from fedleak.attacks.generators import DCGANConfig, DCGANGenerator, load_prior, save_prior
    from fedleak.attacks.generators.store import prior_metadata
    path = save_prior(DCGANGenerator(DCGANConfig(width=4)), tmp_path / "prior.pt", {"seed": 1})
    assert load_prior(path).config.width == 4 and prior_metadata(path)["seed"] == 1
    plant(tmp_path / "bad.pt", marker)
    with pytest.raises(ConfigError) as error:
        load_prior(tmp_path / "bad.pt")
    assert "bad.pt" in one_line(error) and "not unpickled" in str(error.value)
    plant(tmp_path / "prior.json", marker)
    with pytest.raises(DataError) as error:
        prior_metadata(path)
    assert "prior.json" in one_line(error)


# --------------------------------------------------------------------------- caches: rebuilt, once
def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fedleak" and r.levelno == logging.WARNING]


def test_tampered_victim_cache_is_rebuilt_once(digits, marker, caplog):
    from fedleak.defenses import NoDefense
    from fedleak.threat_models.victim import VictimSpec, _cache_key, build_victim
    spec = VictimSpec(model="mlp", options={"width": 8, "depth": 1}, rounds=1, clients=2, local_batch_size=500, seed=11)
    first = build_victim(spec, digits)
    entry = cache_dir() / "victims" / f"{_cache_key(spec, digits, NoDefense())}.pt"
    for content in ("payload", "truncated", "foreign"):
        if content == "payload":
            plant(entry, marker)
        elif content == "truncated":
            entry.write_bytes(entry.read_bytes()[:40])
        else:  # a readable tensor file that is not this model's state
            torch.save({"params": {"w": torch.zeros(2)}, "buffers": {}, "accuracy": 0.5}, entry)
        caplog.clear()
        again = build_victim(spec, digits)
        assert all(torch.equal(again.params[k], first.params[k]) for k in first.params)
        assert again.accuracy == first.accuracy
        assert len(_warnings(caplog)) == 1 and str(entry) in _warnings(caplog)[0]
        caplog.clear()
        build_victim(spec, digits)  # the rebuilt entry reads: nothing to say
        assert not _warnings(caplog)


def test_a_nan_victim_cache_entry_is_named_and_rebuilt(digits, caplog):
    """Issue 19 defect 8: a cached state with NaN weights failed every run with "observation from
    client 0 has NaN", never naming (or rebuilding) the cache file."""
    from fedleak.defenses import NoDefense
    from fedleak.threat_models.victim import VictimSpec, _cache_key, build_victim
    spec = VictimSpec(model="mlp", options={"width": 8, "depth": 1}, rounds=1, clients=2, local_batch_size=500, seed=12)
    first = build_victim(spec, digits)
    entry = cache_dir() / "victims" / f"{_cache_key(spec, digits, NoDefense())}.pt"
    state = torch.load(entry, weights_only=True)
    name = next(iter(state["params"]))
    state["params"][name] = torch.full_like(state["params"][name], float("nan"))
    torch.save(state, entry)
    caplog.clear()
    again = build_victim(spec, digits)
    assert all(torch.equal(again.params[k], first.params[k]) for k in first.params)
    (warning,) = _warnings(caplog)
    assert str(entry) in warning and f"params.{name} holds NaN or Inf" in warning and "rebuilding" in warning


@pytest.mark.parametrize("kind", ["hyperfl-victims", "vfl-victims", "hyperfl-fedavg-baseline"])
def test_tampered_protocol_cache_is_rebuilt(marker, caplog, kind):
    from fedleak.threat_models.cache import cached
    recipe, built = {"test": kind}, []

    def build():
        built.append(1)
        return {"params": {"w": torch.arange(3.0)}, "accuracy": 0.25}

    entry = cache_dir() / kind / f"{digest(recipe)}.pt"
    entry.unlink(missing_ok=True)  # a cache (FEDLEAK_CACHE) an earlier run left holds this entry already
    assert cached(kind, recipe, build, needs=("params", "accuracy"))["accuracy"] == 0.25
    plant(entry, marker)
    state = cached(kind, recipe, build, needs=("params", "accuracy"))
    assert torch.equal(state["params"]["w"], torch.arange(3.0)) and len(built) == 2
    torch.save({"params": {}}, entry)  # readable, but lacks what the protocol reads
    assert cached(kind, recipe, build, needs=("params", "accuracy"))["accuracy"] == 0.25 and len(built) == 3
    assert cached(kind, recipe, build, needs=("params", "accuracy"))["accuracy"] == 0.25 and len(built) == 3
    assert len(_warnings(caplog)) == 2


def test_tampered_utility_cache_is_rebuilt(digits, marker, caplog):
    from fedleak.defenses import build_defense
    from fedleak.harness.matrix.utility import _cache_key, measure_utility
    from fedleak.threat_models.victim import VictimSpec
    spec = VictimSpec(model="mlp", options={"width": 8, "depth": 1}, rounds=1, clients=2, local_batch_size=500, seed=12)
    defense = build_defense("prune", ratio=0.5)
    first = measure_utility(digits, spec, defense, timing_repeats=1)
    entry = cache_dir() / "utility" / f"{_cache_key(spec, digits, defense)}.json"
    plant(entry, marker)
    again = measure_utility(digits, spec, defense, timing_repeats=1)
    assert again["accuracy"] == first["accuracy"] and again["bytes_sent"] == first["bytes_sent"]
    assert json.loads(entry.read_text())["accuracy"] == first["accuracy"]
    assert len(_warnings(caplog)) == 1


# --------------------------------------------------------------------------- stored matrix cells
def _one_cell_matrix(**extra):
    from fedleak.harness.matrix.config import matrix_from_dict
    from fedleak.harness.matrix.run import prepare_matrix
    table = {"preset": "smoke", "images": {"indices": [1]}, "victims": [{"model": "mlp", "options": {"width": 16, "depth": 1}}],
             "attacks": [{"name": "idlg"}], "defenses": [{"name": "none"}], "utility": {"enabled": False}, **extra}
    return prepare_matrix(matrix_from_dict(table))


@pytest.mark.parametrize("name", ["results.parquet", "images.pt", "cell.json"])
def test_tampered_stored_cell_is_computed_again_once(tmp_path, marker, caplog, name):
    from fedleak.harness.matrix.run import run_matrix
    matrix, out = _one_cell_matrix(), tmp_path / "m"
    first = run_matrix(matrix, out, workers=0, progress=False)
    # the attack's cell; the label baseline and the data-dependence check are cells of their own
    (key,) = [k for k in first.schedule.computed if (out / "cells" / k / "images.pt").exists()]
    plant(out / "cells" / key / name, marker)
    caplog.clear()
    again = run_matrix(matrix, out, workers=0, progress=False)
    assert again.schedule.computed == [key] and not again.schedule.failed
    assert len(_warnings(caplog)) == 1 and name in _warnings(caplog)[0]
    assert again.results[["psnr", "lpips"]].equals(first.results[["psnr", "lpips"]])
    caplog.clear()
    third = run_matrix(matrix, out, workers=0, progress=False)
    assert third.schedule.computed == [] and third.schedule.reused == len(first.schedule.computed) and not _warnings(caplog)


def test_a_well_formed_but_edited_cell_is_computed_again_and_never_merged(tmp_path, caplog):
    """Issue 19 defect 7: a cell's results.parquet with psnr set to 99 (and one with renamed columns)
    was merged into the results and verdicts."""
    import pandas as pd
    from fedleak.core.errors import DataError
    from fedleak.harness.matrix.cell_store import CellStore
    from fedleak.harness.matrix.run import run_matrix
    matrix, out = _one_cell_matrix(), tmp_path / "m"
    first = run_matrix(matrix, out, workers=0, progress=False)
    (key,) = [k for k in first.schedule.computed if (out / "cells" / k / "images.pt").exists()]
    path = out / "cells" / key / "results.parquet"
    for edit in (lambda rows: rows.assign(psnr=99.0), lambda rows: rows.rename(columns={"psnr": "PSNR"})):
        edit(pd.read_parquet(path)).to_parquet(path)
        with pytest.raises(DataError, match=f"{path}: does not match the digest stored with it"):
            CellStore(out).rows(key)  # the merge's read
        caplog.clear()
        again = run_matrix(matrix, out, workers=0, progress=False)
        assert again.schedule.computed == [key] and str(path) in _warnings(caplog)[0]
        assert 99.0 not in set(again.results["psnr"]) and "PSNR" not in again.results.columns
        assert again.results[["psnr", "lpips"]].equals(first.results[["psnr", "lpips"]])


def test_tampered_stored_utility_is_measured_again(tmp_path, marker, caplog, monkeypatch):
    from fedleak.harness.matrix.run import run_matrix
    monkeypatch.setattr("fedleak.harness.matrix.utility.measure_utility",
                        lambda data, spec, defense, **_: {"accuracy": 0.5, "accuracy_baseline": 0.9, "bytes_sent": 10})
    matrix = _one_cell_matrix(utility={"options": {"rounds": 1}})
    first = run_matrix(matrix, tmp_path / "m", workers=0, progress=False)
    (task,) = first.utility
    plant(tmp_path / "m" / "cells" / task.key / "utility.json", marker)
    again = run_matrix(matrix, tmp_path / "m", workers=0, progress=False)
    assert again.schedule.computed == [task.key] and len(_warnings(caplog)) == 1


def test_tampered_failure_note_is_ignored(tmp_path, marker):
    from fedleak.harness.matrix.cell_store import CellStore
    store = CellStore(tmp_path)
    store.prepare()
    plant(store.error_path("abc"), marker)
    assert store.error("abc") is None


# --------------------------------------------------------------------------- a matrix folder, reported
@pytest.fixture(scope="module")
def matrix_folder(tmp_path_factory):
    from fedleak.harness.matrix.run import run_matrix
    tmp = tmp_path_factory.mktemp("reported")
    run_matrix(_one_cell_matrix(), tmp / "m", workers=0, progress=False)
    return tmp / "m"


@pytest.mark.parametrize("name", ["results.parquet", "utility.csv", "failures.json", "matrix.json", "cells/*/images.pt"])
def test_report_of_a_tampered_matrix_folder_is_one_line(matrix_folder, tmp_path, marker, capsys, name):
    import shutil

    from fedleak.harness.cli.main import main
    folder = tmp_path / "copy"
    shutil.copytree(matrix_folder, folder)
    target = next(folder.glob(name)) if "*" in name else folder / name
    plant(target, marker)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fedleak: error: ") and target.name in err, err
    assert "Traceback" not in err


def test_results_csv_is_read_without_pickle(matrix_folder, tmp_path, marker):
    from fedleak.harness.run.results import read_results
    assert len(read_results(matrix_folder / "results.csv")) == 1
    with pytest.raises(UnreadableFileError) as error:
        read_results(plant(tmp_path / "results.csv", marker))
    assert "results.csv" in one_line(error)


def test_report_into_an_existing_file_is_one_line(matrix_folder, tmp_path, capsys):
    from fedleak.harness.cli.main import main
    existing = tmp_path / "report.txt"
    existing.write_text("mine")
    assert main(["report", str(matrix_folder), "--output", str(existing)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is an existing file" in err and str(existing) in err
    assert existing.read_text() == "mine"


# --------------------------------------------------------------------------- writing
def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
        os.umask(0o077)
        atomic_write(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # mkstemp's files were 0600
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_digest_is_the_sha256_of_canonical_json():
    value = {"b": [1, 2.5], "a": {"z": None, "path": Path("x")}}
    expected = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    assert digest(value, 12) == expected[:12] and digest(value) == expected[:16]


@pytest.fixture
def disk_full(monkeypatch):
    """`disk_full(folder)`: from then on, every write into a file under `folder` fails with ENOSPC,
    as it would on a full disk (checked on the real file descriptor's path)."""
    real = os.write

    def arm(folder: Path):
        def write(fd, data):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, data)
        monkeypatch.setattr(os, "write", write)
    return arm


def test_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, disk_full):
    atomic_write(tmp_path / "results.csv", b"old")
    disk_full(tmp_path)
    with pytest.raises(StorageError) as error:
        atomic_write(tmp_path / "results.csv", b"new")
    assert "No space left on device" in one_line(error) and "results.csv" in str(error.value)
    assert (tmp_path / "results.csv").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_full_disk_during_an_attack_run_is_one_line(tmp_path, disk_full, capsys):
    from fedleak.harness.cli.main import main
    out = tmp_path / "run"
    disk_full(out)
    assert main(["attack", "--attack", "idlg", "--model", "mlp", "--iterations", "1", "--victims", "1", "--quiet",
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and str(out) in err, err
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_during_a_matrix_is_one_line(tmp_path, disk_full, capsys):
    from fedleak.harness.cli.main import main
    config = tmp_path / "m.toml"
    config.write_text('preset = "smoke"\nimages = { indices = [1] }\nutility = { enabled = false }\n'
                      '[[victims]]\nmodel = "mlp"\noptions = { width = 16, depth = 1 }\n'
                      '[[attacks]]\nname = "idlg"\n[[defenses]]\nname = "none"\n')
    out = tmp_path / "m"
    disk_full(out)
    assert main(["matrix", str(config), "--output", str(out), "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err, err


def test_load_tensors_refuses_objects(tmp_path, marker):
    with pytest.raises(UnreadableFileError) as error:
        load_tensors(plant(tmp_path / "x.pt", marker), "test file")
    assert "x.pt" in one_line(error)
    assert "x.pt" in one_line(error)


def test_tampered_saved_client_update_is_one_line(tmp_path, marker):
    """audit-updates reads folders a server wrote, perhaps copied from elsewhere: a pickle in place of an
    update, or an .npz whose array is a pickled object, is refused without being unpickled."""
    from fedleak.threat_models.update_files import ClientUpdate, load_updates, save_update
    arrays = {"w": np.zeros(3, np.float32)}
    path = save_update(ClientUpdate(1, 1, arrays, arrays, 2), tmp_path)
    with open(path, "wb") as f:
        np.savez(f, metadata=np.array("{}"), **{"0": np.array([Payload(marker)], dtype=object)})
    with pytest.raises(UnreadableFileError) as error:
        load_updates(tmp_path)
    assert path.name in one_line(error) and "saved update" in str(error.value)
    plant(path, marker)
    with pytest.raises(UnreadableFileError) as error:
        load_updates(tmp_path)
    assert path.name in one_line(error)
