"""`fedleak audit-updates` on updates saved by hand (no Flower): the folders it reads and writes."""
import numpy as np
import pytest
import torch

from fedleak.harness.cli.main import main
from fedleak.threat_models.update_files import ClientUpdate, load_updates, save_update


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


def _save(directory, node=1, round=1, num_examples=1):
    model = tiny_model()
    received = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    sent = {k: v + 0.01 * (node + 1) for k, v in received.items()}
    return save_update(ClientUpdate(node, round, sent, received, num_examples), directory)


def _audit(directory, output, *flags):
    return main(["audit-updates", str(directory), "--model", "test_saved_updates:tiny_model", "--mean", "0.5",
                 "--std", "0.5", "--image-shape", "1,2,2", "--lr", "0.1", "--iterations", "2", "-q",
                 "--output", str(output), *flags])


def test_audit_updates_into_another_audits_folder_refuses(tmp_path, capsys):
    """Issue 19 defect 2: a second audit with another attack replaced the first one's rows."""
    import pandas as pd
    _save(tmp_path / "saved")
    out = tmp_path / "out"
    assert _audit(tmp_path / "saved", out, "--attack", "ig") == 0
    assert _audit(tmp_path / "saved", out, "--attack", "ig") == 0  # the same audit again: redone
    capsys.readouterr()
    assert _audit(tmp_path / "saved", out, "--attack", "dlg") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds the results of a different run" in err and "--overwrite" in err
    assert set(pd.read_parquet(out / "results.parquet")["attack"]) == {"ig"}
    assert _audit(tmp_path / "saved", out, "--attack", "dlg", "--overwrite") == 0
    assert set(pd.read_parquet(out / "results.parquet")["attack"]) == {"dlg"}


def test_saved_updates_that_are_not_one_per_round_and_node_are_refused(tmp_path):
    """Two files for one client's round were merged without a word; a `global` reference names
    a file outside the folder; a client that trained on no example."""
    from fedleak.core.errors import DataError
    first = _save(tmp_path)
    first.rename(first.with_name("round-1-node-1.npz"))
    _save(tmp_path)
    with pytest.raises(DataError, match="round 1 node 1.*round-0001-node-1.npz.*round-1-node-1.npz|"
                                        "round 1 node 1.*round-1-node-1.npz.*round-0001-node-1.npz"):
        load_updates(tmp_path)


def test_a_saved_update_naming_a_global_outside_its_folder_is_refused(tmp_path):
    import io
    import json
    from fedleak.core.errors import DataError
    path = _save(tmp_path / "saved")
    outside = tmp_path / "outside.npz"
    outside.write_bytes(next((tmp_path / "saved" / "globals").iterdir()).read_bytes())
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["metadata"]))
    meta["global"] = "../../outside"
    arrays["metadata"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="global.*not a sha256"):
        load_updates(tmp_path / "saved")


def test_a_saved_update_of_no_examples_is_one_line(tmp_path, capsys):
    _save(tmp_path / "saved", num_examples=0)
    assert _audit(tmp_path / "saved", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "num_examples" in err and "round-0001-node-1.npz" in err


def test_save_updates_into_another_runs_updates_refuses_before_the_simulation(tmp_path, capsys, monkeypatch):
    """Issue 19 defect 2: --save-updates into a folder of another run's updates mixed the two runs."""
    import fedleak.harness.flower.audit as flower_audit

    def simulated(*args, **kwargs):
        raise AssertionError("the simulation ran")
    monkeypatch.setattr(flower_audit, "run_flower_audit", simulated)
    _save(tmp_path / "saved")
    argv = ["audit-flower", "--save-updates", str(tmp_path / "saved"), "--output", str(tmp_path / "out"), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--save-updates" in err and "different run" in err and "--overwrite" in err
    assert len(load_updates(tmp_path / "saved")) == 1
