"""The attack × defense matrix: expansion and hashing, resume after an interruption (a subset run,
SIGINT, SIGKILL), concurrent-run safety of the cell store, the CI gate, evaluate-defense with the
example plugin, Ray, and one clear line for every bad input. Smoke budgets throughout."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from fedleak.harness.cli.main import main
from procfs import children, ctrl_c_delivered, listening_addresses, loopback
from fedleak.core.errors import ConfigError
from fedleak.core.fingerprint import package_digest
from fedleak.harness.matrix.cells import cell_key, expand, expansion
from fedleak.attacks.base import PresetBudget
from fedleak.harness.matrix.config import matrix_from_dict
from fedleak.harness.matrix.run import prepare_matrix, run_matrix

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "fedleak.examples.my_defense:RandomKNoise"


def smoke_matrix(**extra) -> dict:
    """IG against no defense and the example plugin (both modes): 3 cells per image, tiny MLP."""
    table = {
        "preset": "smoke", "plugins": [PLUGIN],
        "images": {"indices": [1, 2]},
        "victims": [{"model": "mlp", "options": {"width": 32, "depth": 2}}],
        "attacks": [{"name": "ig"}],
        "defenses": [{"name": "none"}, {"name": "random-k-noise", "options": {"keep": 0.5, "noise": 0.5}}],
        "utility": {"enabled": False},
    }
    table.update(extra)
    return table


def write_toml(path: Path, table: dict) -> Path:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)
    path.write_text("\n".join(f"{json.dumps(k)} = {value(v)}" for k, v in table.items()) + "\n")
    return path


# ---------------------------------------------------------------------------------------- expansion
def test_expansion_covers_every_axis_once_with_config_digests():
    matrix = matrix_from_dict(smoke_matrix(seeds=[0, 1], attacks=[{"name": "idlg"}, {"name": "ig"}], defenses=[
        {"name": "none"}, {"name": "prune", "sweep": {"ratio": [0.1, 0.5]}}]))
    cells = expand(matrix)
    # none: 2 attacks x 1 mode x 2 seeds; prune: 2 settings x 2 attacks x 2 modes x 2 seeds; each cell both images
    assert len(cells) == 4 + 16
    assert len({c.key for c in cells}) == len(cells)
    for cell in cells:
        assert cell.key == cell_key(cell.config.digest(), cell.code)
        assert cell.code["fedleak"] == package_digest() and cell.code["attack"].startswith(cell.config.attack.name)
        assert cell.config.threat_model.knowledge["defense"] is cell.labels["adaptive"]
        assert cell.config.output == f"cells/{cell.key}"
        assert cell.config.data.victims == [1, 2] and cell.config.data.batch_size == 1
        assert cell.config.data.batch_seed == "image"  # an image's result does not depend on its cell-mates
    assert {c.labels["defense_label"] for c in cells} == {"none", "prune (ratio=0.1)", "prune (ratio=0.5)"}
    assert not any(c.labels["adaptive"] for c in cells if c.config.defense.name == "none")
    assert [c.key for c in expand(matrix)] == [c.key for c in cells]  # stable across expansions


def test_entries_run_only_under_their_threat_models():
    matrix = prepare_matrix(matrix_from_dict(smoke_matrix(
        threat_models=[{"name": "fedsgd"}, {"name": "vfl"}],
        attacks=[{"name": "ig", "threat_models": ["fedsgd"]}, {"name": "embedding-inversion", "threat_models": ["vfl"]}],
        defenses=[{"name": "none"}, {"name": "prune", "threat_models": ["fedsgd"]}, {"name": "hashing"}])))
    pairs = {(c.config.threat_model.name, c.config.attack.name, c.config.defense.name) for c in expand(matrix)}
    assert pairs == {("fedsgd", "ig", "none"), ("fedsgd", "ig", "prune"),          # hashing: vfl only, declared
                     ("vfl", "embedding-inversion", "none"), ("vfl", "embedding-inversion", "hashing")}


def test_declarations_pair_components_and_list_what_they_rule_out():
    """No entry names a threat model: each attack and defense runs where its `applies_to` says, the
    plugin (which declares nothing) on gradients and updates only, never on VFL embeddings."""
    matrix = prepare_matrix(matrix_from_dict(smoke_matrix(
        threat_models=[{"name": "fedsgd"}, {"name": "vfl"}],
        attacks=[{"name": "idlg"}, {"name": "embedding-inversion"}],
        defenses=[{"name": "none"}, {"name": "random-k-noise"}, {"name": "hashing"}])))
    cells, skipped = expansion(matrix)
    pairs = {(c.config.threat_model.name, c.config.attack.name, c.config.defense.name) for c in cells}
    assert pairs == {("fedsgd", "idlg", "none"), ("fedsgd", "idlg", "random-k-noise"),
                     ("vfl", "embedding-inversion", "none"), ("vfl", "embedding-inversion", "hashing")}
    assert set(skipped) == {
        "attack 'embedding-inversion' runs on embedding, not gradient, which threat model 'fedsgd' shares",
        "defense 'hashing' applies to embedding, not gradient, which threat model 'fedsgd' shares",
        "attack 'idlg' runs on gradient, update, not embedding, which threat model 'vfl' shares",
        "defense 'random-k-noise' applies to gradient, update, not embedding, which threat model 'vfl' shares"}
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.threat_models: 'fedavg' is not a threat model of this"):
        prepare_matrix(matrix_from_dict(smoke_matrix(attacks=[{"name": "ig", "threat_models": ["fedavg"]}])))


def test_an_attack_that_runs_the_defense_is_adaptive_only_and_not_against_none():
    """defense-loop needs the defense (Attack.needs_defense): no non-adaptive cell (it would fail for
    want of the knowledge flag), none against no defense; both are listed as not applicable."""
    matrix = prepare_matrix(matrix_from_dict(smoke_matrix(attacks=[{"name": "defense-loop"}, {"name": "idlg"}])))
    cells, skipped = expansion(matrix)
    modes = {(c.config.attack.name, c.config.defense.name, c.labels["adaptive"]) for c in cells}
    assert modes == {("defense-loop", "random-k-noise", True), ("idlg", "none", False),
                     ("idlg", "random-k-noise", False), ("idlg", "random-k-noise", True)}
    assert set(skipped) == {"attack 'defense-loop' runs the defense itself (adaptive mode only): not against 'none'"}
    only_plain = prepare_matrix(matrix_from_dict(smoke_matrix(attacks=[{"name": "defense-loop", "adaptive": [False]}])))
    assert expansion(only_plain)[0] == [] and "non-adaptive" in expansion(only_plain)[1][-1]


def test_digest_follows_results_not_placement():
    cell = expand(matrix_from_dict(smoke_matrix()))[0]
    assert replace(cell.config, output="elsewhere", device="cpu").digest() == cell.config_hash
    assert replace(cell.config, attack=replace(cell.config.attack, iterations=3)).digest() != cell.config_hash


def test_budget_precedence_and_presets():
    matrix = matrix_from_dict(smoke_matrix(budgets={"ci": {"iterations": 50, "images": 3}}, attacks=[
        {"name": "idlg", "budgets": {"ci": {"iterations": 7}}}, {"name": "ig"}, {"name": "dlg"}]))
    idlg, ig, dlg = matrix.attacks
    assert matrix.budget(idlg, "ci").iterations == 7          # the attack's own
    assert matrix.budget(ig, "ci").iterations == 50           # the matrix's
    assert matrix.budget(ig, "ci").images == 3
    assert matrix.budget(dlg, "paper").iterations == 300      # the published budget
    assert matrix.budget(ig, "paper").restarts == 8
    assert matrix.budget(ig, "smoke").iterations == 2         # the preset default
    bare = matrix_from_dict(smoke_matrix(attacks=[{"name": "dlg"}, {"name": "ig", "budgets": {"ci": {"restarts": 2}}}]))
    assert bare.budget(bare.attacks[0], "ci") == PresetBudget(iterations=10, restarts=1, images=4)  # DLG's own
    assert (bare.budget(bare.attacks[1], "ci").iterations, bare.budget(bare.attacks[1], "ci").restarts) == (200, 2)
    matrix = replace(matrix, images=replace(matrix.images, indices=[]), preset="ci")
    (cell,) = expand(replace(matrix, defenses=matrix.defenses[:1], attacks=[ig]))
    assert cell.config.data.victims == [0, 1, 2]  # 3 images, B=1, one cell


@pytest.mark.parametrize("change, key", [
    ({"attacks": [{"name": "ig", "adaptive": [True, True]}]}, "attacks[0].adaptive"),
    ({"defenses": [{"name": "prune", "sweep": {"ratio": 0.1}}]}, "defenses[0].sweep.ratio"),
    ({"images": {"indices": [1, 2, 3], "batch_size": 2}}, "images.indices"),
    ({"preset": "huge"}, "preset"),
    ({"gate": {"max_psnr": "high"}}, "gate.max_psnr"),
    ({"attack": []}, "attack: unknown key"),
    ({"utility": {"enabled": True}}, "utility.options.rounds"),
])
def test_config_errors_name_the_key(change, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        matrix_from_dict(smoke_matrix(**change))


@pytest.mark.parametrize("change, message", [
    ({"attacks": [{"name": "nope"}]}, r"attacks\[0\]\.name: unknown attack 'nope'; known: .*dlg"),
    ({"defenses": [{"name": "prune", "options": {"rate": 0.1}}]},
     r"defenses\[0\]\.options\.rate: unknown key; allowed: ratio, residual, scope"),
    ({"defenses": [{"name": "dp", "sweep": {"sigma": [0.1, float("inf")]}}]},
     r"defenses\[0\]\.sweep\.sigma: must be finite and >= 0, got inf"),
    ({"defenses": [{"name": "dp", "options": {"clip": float("inf")}}]},
     r"defenses\[0\]\.options\.clip: must be finite and > 0, got inf"),
    ({"attacks": [{"name": "ggl", "options": {"tempo": 1}}]}, r"attacks\[0\]\.options\.tempo: unknown key; allowed: "),
    ({"threat_models": [{"name": "vfl", "options": {"victim_party": 2}}]},
     r"threat_models\[0\]\.options\.victim_party: must be one of 0, 1, got 2"),
    ({"threat_models": [{"name": "fedsgd", "lr": 0}]}, r"threat_models\[0\]\.lr: must be > 0"),
    ({"threat_models": [{"name": "fedsgd"}, {"name": "vfl"}], "defenses": [{"name": "prune", "threat_models": ["vfl"]}]},
     r"defenses\[0\]\.threat_models: defense 'prune' applies to gradient, update, not embedding, which threat "
     r"model 'vfl' shares"),
    ({"victims": [{"model": "alexnet"}]}, r"victims\[0\]\.model: unknown model 'alexnet'"),
    ({"threat_models": [{"knowledge": "psychic"}]}, r"threat_models\[0\]\.knowledge: unknown preset 'psychic'"),
])
def test_unknown_names_and_options_are_refused_before_running(change, message):
    with pytest.raises(ConfigError, match=message):
        prepare_matrix(matrix_from_dict(smoke_matrix(**change)))


# ------------------------------------------------------------------------------------------- resume
def test_resume_computes_only_missing_cells_and_duplicates_nothing(tmp_path):
    out = tmp_path / "m"
    first = run_matrix(prepare_matrix(matrix_from_dict(smoke_matrix())), out, workers=0, progress=False)
    # 3 cells (none; the plugin in both modes), 1 label baseline, 2 data-dependence checks
    assert len(first.cells) == 3 and len(first.tasks) == 6
    assert len(first.schedule.computed) == 6 and not first.schedule.failed
    stamps = {k: (out / "cells" / k / "cell.json").stat().st_mtime_ns for k in first.schedule.computed}

    second = run_matrix(prepare_matrix(matrix_from_dict(smoke_matrix(attacks=[{"name": "ig"}, {"name": "idlg"}]))), out,
                        workers=0, progress=False)
    assert len(second.cells) == 6
    assert second.schedule.reused == 6  # the ig cells and every check
    assert set(second.schedule.computed) == {c.key for c in second.cells} - set(stamps)
    assert {k: (out / "cells" / k / "cell.json").stat().st_mtime_ns for k in stamps} == stamps  # untouched
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 12 and not results.duplicated(["cell", "image_index"]).any()
    assert set(results["cell"]) == {c.key for c in second.cells}
    assert json.loads(results["config"].iloc[0])["output"].startswith("cells/")  # not the scratch folder

    third = run_matrix(prepare_matrix(matrix_from_dict(smoke_matrix(attacks=[{"name": "ig"}, {"name": "idlg"}]))), out,
                       workers=0, progress=False)
    assert third.schedule.computed == [] and third.schedule.reused == 9


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_run_resumes(tmp_path, how):
    """A matrix run killed mid-way (SIGKILL: no clean-up at all; SIGINT: Ctrl-C) leaves only complete
    cells and no held claim; the same command then computes exactly the missing cells."""
    # cells long enough (~1 s each) that the signal lands while cells are still left to run
    config = write_toml(tmp_path / "m.toml", smoke_matrix(images={"indices": [1, 2, 3]},
                                                         attacks=[{"name": "ig", "budgets": {"smoke": {"iterations": 400}}}]))
    out = tmp_path / "out"
    # SIGKILL with a worker process (which must die with the run), SIGINT with cells in the run's own process
    workers = "1" if how == "SIGKILL" else "0"
    command = [sys.executable, "-m", "fedleak.harness.cli", "matrix", str(config), "--output", str(out), "--workers", workers]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=ctrl_c_delivered)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not list((out / "cells").glob("*/cell.json")):
        time.sleep(0.2)
    workers = children(process.pid)
    os.kill(process.pid, getattr(signal, how))
    _, stderr = process.communicate(timeout=60)
    if how == "SIGINT":
        assert process.returncode == 130 and "run the same command to resume" in stderr
    else:
        assert process.returncode == -signal.SIGKILL
        time.sleep(1)
        assert not [p for p in workers if _alive(p)], "workers outlived a killed matrix run"
    stored = [p.parent.name for p in (out / "cells").glob("*/cell.json")]
    assert 1 <= len(stored) < 6  # 3 cells (3 images each), a label baseline, 2 data-dependence checks
    for key in stored:  # complete: an attack cell's rows and images, or a check's result
        files = {p.name for p in (out / "cells" / key).iterdir()}
        assert {"results.parquet", "images.pt"} <= files or files & {"check.json", "baseline.json"}, files

    from fedleak.harness.matrix.cell_store import CellStore
    store = CellStore(out)
    claims = [store.claim(p.stem) for p in (out / ".locks").glob("*.lock")]
    assert all(claims), "a dead run still holds a claim"
    for claim in claims:
        claim.release()

    resumed = run_matrix(prepare_matrix(config), out, workers=0, progress=False)
    assert resumed.schedule.reused == len(stored)
    assert len(resumed.schedule.computed) == len(resumed.tasks) - len(stored) == 6 - len(stored)
    assert not list((out / "cells").glob(".staging-*"))
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 9 and not results.duplicated(["cell", "image_index"]).any()


def test_cell_store_claims_are_exclusive_and_first_commit_wins(tmp_path):
    from fedleak.harness.matrix.cell_store import CellStore
    one, two = CellStore(tmp_path), CellStore(tmp_path)  # as two runs would open it
    one.prepare()
    claim = one.claim("abc")
    assert claim is not None and two.claim("abc") is None
    claim.release()
    again = two.claim("abc")
    assert again is not None
    again.release()
    assert one.commit("abc", {"results.parquet": b"first"}, {"by": 1})
    assert not two.commit("abc", {"results.parquet": b"second"}, {"by": 2})
    assert (tmp_path / "cells" / "abc" / "results.parquet").read_bytes() == b"first"
    assert two.record("abc")["by"] == 1 and set(two.record("abc")["digests"]) == {"results.parquet"}
    assert not list((tmp_path / "cells").glob(".staging-*"))


# --------------------------------------------------------------------------------------------- gate
@pytest.mark.parametrize("defense, passes", [({"name": "random-k-noise", "options": {"keep": 1.0, "noise": 0.0}}, False),
                                             ({"name": "prune", "options": {"ratio": 0.001}}, True)])
def test_gate_fails_weak_defense_and_passes_strong_one(tmp_path, capsys, defense, passes):
    table = smoke_matrix(images={"indices": [2, 3]}, victims=[{"model": "lenet"}],
                         attacks=[{"name": "idlg", "budgets": {"smoke": {"iterations": 6}}}],
                         # none: the positive control (a verdict holds only where the attacks work undefended)
                         defenses=[{"name": "none"}, defense], gate={"max_psnr": 18.0, "min_images": 2})
    config = write_toml(tmp_path / "gate.toml", table)
    status = main(["matrix", str(config), "--gate", "--workers", "0", "--quiet", "--output", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    # the verdict, per defense setting: best attack, label baseline, converged, degenerate, n, interval
    assert "over label [95% CI]" in printed and "converged" in printed and "degenerate" in printed
    if passes:
        assert status == 0 and "gate passed: 1 gated verdicts meet" in printed, printed
    else:
        assert status == 1 and "gate FAILED" in printed
        table_lines = printed.split("gate FAILED", 1)[1].splitlines()
        assert any("random-k-noise" in line and "psnr" in line and "> 18" in line for line in table_lines)


# ---------------------------------------------------------------------------------- evaluate-defense
def test_evaluate_defense_runs_every_attack_in_both_modes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    # vfl: neither the plugin (gradients and updates) nor idlg/ig apply there, so it adds no cell, only a line
    base = smoke_matrix(plugins=[], images={"indices": [1]}, defenses=[{"name": "none"}, {"name": "prune"}],
                        utility={"options": {"rounds": 1}}, threat_models=[{"name": "fedsgd"}, {"name": "vfl"}])
    monkeypatch.setattr("fedleak.harness.matrix.utility.measure_utility", _stub_utility)
    monkeypatch.setattr("fedleak.harness.matrix.evaluate_defense.registered_attacks", lambda: ["idlg", "ig"])
    config = write_toml(tmp_path / "base.toml", base)
    status = main(["evaluate-defense", PLUGIN, "--option", "keep=0.1", "--matrix", str(config), "--budget", "smoke",
                   "--workers", "0", "--quiet", "--output", str(tmp_path / "eval")])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "verdict:" in printed and "random-k-noise (keep=0.1)" in printed and "report:" in printed
    assert "defense 'random-k-noise' applies to gradient, update, not embedding, which threat model 'vfl' shares" \
        in printed.split("not applicable here:", 1)[1]
    results = pd.read_parquet(tmp_path / "eval" / "results.parquet")
    mine = results[results["defense"] == "random-k-noise"]
    assert set(zip(mine["attack_label"], mine["adaptive"])) == {(a, m) for a in ("idlg", "ig") for m in (False, True)}
    assert set(results["defense_label"]) == {"none", "random-k-noise (keep=0.1)"}  # prune: a utility reference
    utility = pd.read_csv(tmp_path / "eval" / "utility.csv")
    assert set(utility["defense_label"]) == {"none", "random-k-noise (keep=0.1)", "prune"}
    assert (tmp_path / "eval" / "report" / "report.html").is_file()


def _stub_utility(data, victim_spec, defense, rounds=None, **_):
    """Stands in for FedAvg training: a made-up accuracy that falls with the defense's strength."""
    keep = defense.describe().get("keep", 1.0)
    return {"accuracy": 0.5 + 0.4 * keep, "accuracy_baseline": 0.9, "epsilon": None, "bytes_sent": 100}


# --------------------------------------------------------------------------------------------- ray
def test_ray_executor_on_a_local_instance(tmp_path):
    pytest.importorskip("ray", reason="ray not installed (pip install 'fedleak[ray]'; make test installs it)")
    matrix = prepare_matrix(matrix_from_dict(smoke_matrix(images={"indices": [1]})))
    run = run_matrix(matrix, tmp_path / "ray", executor="ray", workers=2, progress=False)
    assert not run.schedule.failed and len(run.schedule.computed) == len(run.tasks) == 6 and len(run.cells) == 3
    results = pd.read_parquet(tmp_path / "ray" / "results.parquet")
    assert len(results) == 3 and set(results["defense"]) == {"none", "random-k-noise"}


def test_an_unreachable_ray_address_fails_in_seconds(tmp_path):
    """Issue 19 defect 6: `--address 127.0.0.1:1` hung printing Ray's warnings."""
    pytest.importorskip("ray", reason="ray not installed (pip install 'fedleak[ray]'; make test installs it)")
    config = write_toml(tmp_path / "m.toml", smoke_matrix(images={"indices": [1]}, defenses=[{"name": "none"}]))
    command = [sys.executable, "-m", "fedleak.harness.cli", "matrix", str(config), "--executor", "ray", "--address",
               "127.0.0.1:1", "-q", "--output", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)  # a hang fails here
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert "--address 127.0.0.1:1: no Ray head answers there within 5 s" in err


def test_local_ray_instance_listens_on_loopback_only():
    pytest.importorskip("ray", reason="ray not installed (pip install 'fedleak[ray]'; make test installs it)")
    from fedleak.harness.matrix.cell_worker import WorkerSetup
    from fedleak.harness.matrix.ray_executor import RayBackend
    backend = RayBackend(WorkerSetup(), 1, None)
    try:
        listening = listening_addresses(os.getpid())
        assert listening, "found no Ray server sockets"
        assert all(loopback(a) for a in listening), f"a private Ray instance listens on {sorted(listening)}"
        assert backend.ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    finally:
        backend.close()


# --------------------------------------------------------------------------------------- bad inputs
def _one_line_error(capsys, argv) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedleak: error: "), captured.err
    return lines[0]


def test_bad_inputs_give_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = write_toml(tmp_path / "bad.toml", smoke_matrix(attacks=[{"name": "nope"}]))
    assert "unknown attack 'nope'" in _one_line_error(capsys, ["matrix", str(bad), "--output", str(tmp_path / "o")])
    assert "matrix config not found" in _one_line_error(capsys, ["matrix", str(tmp_path / "missing.toml")])

    good = write_toml(tmp_path / "good.toml", smoke_matrix())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "output: cannot write to" in _one_line_error(
        capsys, ["matrix", str(good), "--output", str(blocker / "sub"), "--workers", "0"])
    assert "has no [gate]" in _one_line_error(capsys, ["matrix", str(good), "--gate"])

    assert "cannot import module 'no_such_pkg.mod'" in _one_line_error(
        capsys, ["evaluate-defense", "no_such_pkg.mod:Thing", "--matrix", str(good)])
    assert "has no attribute 'Missing'" in _one_line_error(
        capsys, ["evaluate-defense", "fedleak.examples.my_defense:Missing", "--matrix", str(good)])
    assert "not a subclass of fedleak.defenses.base.Defense" in _one_line_error(
        capsys, ["evaluate-defense", "fedleak.examples.my_defense:_seed", "--matrix", str(good)])
    assert "expected 'package.module:ClassName'" in _one_line_error(
        capsys, ["evaluate-defense", "fedleak.examples.my_defense", "--matrix", str(good)])
    assert "keep must be in (0, 1]" in _one_line_error(
        capsys, ["evaluate-defense", PLUGIN, "--option", "keep=3", "--matrix", str(good)])


def test_image_indices_out_of_range_are_refused_before_anything_runs(tmp_path, capsys):
    config = write_toml(tmp_path / "m.toml", smoke_matrix(images={"indices": [1, 1000, 5000]}))
    line = _one_line_error(capsys, ["matrix", str(config), "--output", str(tmp_path / "out"), "--workers", "0"])
    assert "images.indices: victim 1000, 5000 out of range" in line and "'digits', which holds 1000 victims" in line
    assert not (tmp_path / "out" / "cells").exists()  # no cell ran, none was even scheduled


def test_share_that_returns_no_tuple_names_the_defense(tmp_path, monkeypatch, capsys):
    (tmp_path / "lazy_defense.py").write_text(
        "from fedleak.defenses.base import Defense\n"
        "class Lazy(Defense):\n    name = 'lazy'\n"
        "    def share(self, update, context):\n        return [u.clone() for u in update]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_toml(tmp_path / "m.toml", smoke_matrix(plugins=["lazy_defense:Lazy"], images={"indices": [1]},
                                                          defenses=[{"name": "lazy"}]))
    main(["matrix", str(config), "--output", str(tmp_path / "out"), "--workers", "0", "--quiet"])
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert failures and all("\n" not in f["error"] for f in failures)
    assert {f["error"] for f in failures} == {
        "defense 'lazy' (lazy_defense.Lazy): share() must return (shared, public), the list of tensors the client "
        "sends and a dict of public metadata; it returned list"}


@pytest.mark.parametrize("module, body, got", [
    ("too_few_defense", "return [u.clone() for u in update][:-1], {}", "got 2 (32, 784), (32, 32)"),  # was accepted
    ("flat_defense", "return [u.flatten() for u in update], {}", "got 3 (25088,), (1024,), (320,)"),  # accepted too
])
def test_share_that_sends_the_wrong_tensors_names_the_defense_and_the_shapes(tmp_path, monkeypatch, module, body, got):
    """Issue 19 defect 8: said where share() returns, naming the defense and the expected shapes."""
    (tmp_path / f"{module}.py").write_text(
        "from fedleak.defenses.base import Defense\n"
        f"class Short(Defense):\n    name = '{module}'\n"
        f"    def share(self, update, context):\n        {body}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_toml(tmp_path / "m.toml", smoke_matrix(plugins=[f"{module}:Short"], images={"indices": [1]},
                                                          defenses=[{"name": module}]))
    main(["matrix", str(config), "--output", str(tmp_path / "out"), "--workers", "0", "--quiet"])
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert failures and all("\n" not in f["error"] for f in failures)
    for f in failures:
        assert f["error"].startswith(f"defense '{module}' ({module}.Short): share() must send one tensor per parameter")
        assert "expected 3 tensors (32, 784), (32, 32), (10, 32)" in f["error"] and got in f["error"]


def test_plugin_interface_is_checked(tmp_path, monkeypatch):
    from fedleak.harness.run.plugins import load_plugin
    (tmp_path / "broken_defenses.py").write_text(
        "from fedleak.defenses.base import Defense\n"
        "class Nameless(Defense):\n    pass\n"
        "class NeedsArgs(Defense):\n    name = 'needs-args'\n    def __init__(self, strength):\n        pass\n"
        "class WrongShare(Defense):\n    name = 'wrong-share'\n    def share(self, update):\n        return update, {}\n"
        "class Clash(Defense):\n    name = 'prune'\n"
        "class Typo(Defense):\n    name = 'typo'\n    applies_to = ('gradients',)\n"
        "class Loose(Defense):\n    name = 'loose'\n    options_class = dict\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for cls, message in [("Nameless", "class attribute `name"), ("NeedsArgs", "needs strength"),
                         ("WrongShare", r"share\(self, update\) does not match"), ("Clash", "already taken"),
                         ("Typo", "applies_to names 'gradients', not a kind of observation; kinds: gradient, update"),
                         ("Loose", "options_class must be a frozen dataclass")]:
        with pytest.raises(ConfigError, match=message):
            load_plugin(f"broken_defenses:{cls}")
