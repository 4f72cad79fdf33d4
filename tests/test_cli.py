"""Every bad input: one clear line on stderr, exit code != 0, no traceback; finished rows kept."""
import subprocess
import sys

import pandas as pd
import pytest

from fedleak.harness.cli.main import main

FAST = ["--iterations", "2", "--victims", "1", "--quiet"]


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err.strip()


@pytest.mark.parametrize("args, message", [
    (["--attack", "nope"], "unknown attack 'nope'"),
    (["--model", "alexnet"], "unknown model 'alexnet'"),
    (["--dataset", "imagenet21k"], "unknown dataset 'imagenet21k'"),
    (["--defense", "magic"], "unknown defense 'magic'"),
    (["--threat-model", "fedprox"], "unknown threat model 'fedprox'"),
    (["--knowledge", "omniscient"], "unknown preset 'omniscient'"),
    (["--dataset", "cifar10"], "cifar10"),
    (["--model", "vit", "--set", "victim.options.patch_size=5"], "vit"),
    (["--set", "attack.options.tv=-"], "attack"),
])
def test_bad_inputs_are_one_line(capsys, tmp_path, args, message):
    code, err = run_cli(capsys, "attack", "--output", str(tmp_path / "out"), *FAST, *args)
    assert code == 2
    assert err.startswith("fedleak: error:") and message in err
    assert len(err.splitlines()) == 1


def test_malformed_toml(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[attack\nname=")
    code, err = run_cli(capsys, "attack", "--config", str(bad), *FAST)
    assert code == 2 and "malformed TOML" in err and len(err.splitlines()) == 1


def test_nan_gradient_is_refused_and_finished_rows_survive(capsys, tmp_path, monkeypatch):
    """A client whose update turns NaN (here: the second batch) fails that image, with one line and
    exit 1; the first batch's row is scored (issue 20: one image's failure is not the run's)."""
    from fedleak.defenses import DEFENSES, Defense

    class PoisonSecondClient(Defense):
        name = "poison-test"

        def share(self, update, context):
            if context.client_id == 1:
                update = [u * float("nan") for u in update]
            return update, {}

    monkeypatch.setitem(DEFENSES._items, "poison-test", PoisonSecondClient)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "attack", "--output", str(out), "--defense", "poison-test",
                        "--iterations", "2", "--victims", "2", "--quiet")
    assert code == 1 and "NaN" in err and len(err.splitlines()) == 1
    rows = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert rows["image_index"].tolist() == [0, 1]
    assert rows["image_error"].tolist()[0] == "" and "NaN" in rows["image_error"].tolist()[1]


def test_unwritable_output(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = run_cli(capsys, "attack", "--output", str(blocker / "sub"), *FAST)
    assert code == 2 and "cannot write" in err


def test_out_of_range_victim_is_said_before_anything_runs(capsys, tmp_path):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "attack", "--output", str(out), "--iterations", "2", "--quiet",
                        "--set", "data.victims=[0, 99999]")
    assert code == 2 and "99999" in err and len(err.strip().splitlines()) == 1
    assert not (out / "results.csv").exists()  # not one batch attacked, not one victim trained


def test_attack_writes_rows_grid_and_report(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "fedleak.harness.cli", "attack", "--attack", "ig", "--model", "convnet",
                           "--set", "victim.options.width=8", "--iterations", "3", "--victims", "2", "--quiet",
                           "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = pd.read_parquet(out / "results.parquet")
    assert len(rows) == 2
    for column in ("psnr", "ssim", "lpips", "label_correct", "config_hash", "seed", "versions", "device",
                   "wall_time_s", "knowledge", "victim_state"):
        assert column in rows.columns
    assert (out / "grid.png").stat().st_size > 1000
    assert "median" in (out / "report.md").read_text()
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--victims", "1000000000"], "data.num_victims: must be in [1, 1,000,000], got 1,000,000,000"),
    (["--victims", "200000"], "data.num_victims: 200,000 victims asked, but 'digits' holds"),
    (["--iterations", "100000000000000000000"], "attack.iterations: must be in [1, 10,000,000]"),
    (["--set", "attack.iterations=1e20"], "attack.iterations: expected int"),
    (["--seed", str(2**70)], "seed: must be in [0, 4,294,967,295]"),
    (["--set", f"seed={2**70}"], "seed: must be in [0, 4,294,967,295]"),
    (["--restarts", "1000000000000"], "attack.restarts: must be in [1, 1,000]"),
])
def test_sizes_are_checked_before_anything_is_allocated(capsys, tmp_path, args, message):
    """Issue 19 defect 5: a billion victims built the index list and was killed for memory; huge
    iterations and seeds gave tracebacks; a trillion restarts ran."""
    code, err = run_cli(capsys, "attack", "--attack", "idlg", "--model", "mlp", "--output", str(tmp_path / "out"),
                        "--iterations", "2", "--victims", "1", "-q", *args)
    assert code == 2 and err.startswith("fedleak: error:") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_matrix_sizes_are_checked_on_load(tmp_path):
    from fedleak.core.errors import ConfigError
    from fedleak.harness.matrix.config import matrix_from_dict
    base = {"attacks": [{"name": "idlg"}], "defenses": [{"name": "none"}]}
    with pytest.raises(ConfigError, match=r"seeds\[1\]: must be in \[0, 4,294,967,295\]"):
        matrix_from_dict({**base, "seeds": [0, 2**70]})
    with pytest.raises(ConfigError, match=r"budgets.ci.restarts: must be in \[1, 1,000\]"):
        matrix_from_dict({**base, "budgets": {"ci": {"restarts": 10**12}}})


@pytest.mark.parametrize("command", [["matrix", "ci"], ["evaluate-defense", "pkg.mod:Defense"], ["text-matrix"]])
def test_budget_flag_and_its_deprecated_alias(capsys, command):
    """One word for the attack budget: `--budget`; `--preset` still sets it for one release, says so on
    stderr, and is hidden from the help."""
    from fedleak.harness.cli.main import build_parser
    parser = build_parser()
    assert parser.parse_args([*command, "--budget", "paper"]).budget == "paper"
    capsys.readouterr()
    assert parser.parse_args([*command, "--preset", "smoke"]).budget == "smoke"
    err = capsys.readouterr().err
    assert "--preset is deprecated" in err and "use --budget smoke" in err
    default = parser.parse_args(command).budget
    assert default == ("ci" if command[0] == "evaluate-defense" else None)
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    assert "--budget" in sub.format_help() and "--preset" not in sub.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--budget", "huge"])
