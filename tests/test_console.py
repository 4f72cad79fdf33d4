"""What the command line writes: -q/-v on every command, --version, progress bars on a terminal only
(a log file gets no carriage return and no colour code, `make demo > log 2>&1` on the demo's own code
path, tiny budgets), no traceback on a closed pipe or Ctrl-C, and the provenance every row carries."""
import argparse
import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pandas as pd
import pytest

from fedleak.harness.cli.main import build_parser, main
from procfs import ctrl_c_delivered

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO.parent)}

# the demo command as `make demo` runs it, its two presets cut to a few iterations of one image
TINY_DEMO = ("import sys\n"
             "import fedleak.harness.run.config as config\n"
             "load = config.load_config\n"
             "config.load_config = lambda name, overrides=None: load(name, {**(overrides or {}),\n"
             "    'attack.iterations': 3, 'attack.restarts': 1, 'data.num_victims': 1})\n"
             "from fedleak.harness.cli.main import main\n"
             "sys.exit(main(['demo', '--output', sys.argv[1], *sys.argv[2:]]))\n")


def _leaves(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


def test_every_command_takes_quiet_and_verbose():
    leaves = list(_leaves(build_parser()))
    assert {p[0] for p, _ in leaves} >= {"attack", "demo", "list", "matrix", "report", "evaluate-defense",
                                         "audit-flower", "prior", "compare"}
    for path, parser in leaves:
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, path


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("fedleak 0.")


def test_closed_pipe_ends_quietly():
    process = subprocess.Popen([sys.executable, "-m", "fedleak.harness.cli", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=ENV, cwd=REPO)
    process.stdout.close()  # the reader is gone before fedleak writes its first line (`fedleak list | true`)
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141  # 128 + SIGPIPE, as a shell tool stopped by the pipe
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_ctrl_c_is_one_line_no_traceback(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "fedleak.harness.cli", "attack", "--config", "demo-ig",
                                "--iterations", "100000", "--output", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=REPO, preexec_fn=ctrl_c_delivered)
    try:
        _wait_until(lambda: (tmp_path / "out").exists(), 120)  # running: its output folder is made
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err.decode() and "interrupted" in err.decode()


def test_demo_log_has_no_carriage_return_or_colour(tmp_path):
    log = tmp_path / "log"
    with log.open("wb") as sink:  # make demo > log 2>&1
        done = subprocess.run([sys.executable, "-c", TINY_DEMO, str(tmp_path / "demo")], stdout=sink, stderr=sink,
                              env=ENV, cwd=REPO, timeout=600)
    text = log.read_bytes()
    assert done.returncode == 0, text.decode()
    assert b"\r" not in text and b"\x1b" not in text, text[:2000]
    assert b"[demo-dlg]" in text and b"median PSNR" in text and b"report:" in text


def test_on_a_terminal_bars_are_live(tmp_path):
    """The same attack on a terminal (100 columns) redraws its bar in place: the check above can fail."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "fedleak.harness.cli", "attack", "--config", "demo-dlg",
                                "--iterations", "3", "--victims", "1", "--output", str(tmp_path / "out")],
                               stdout=slave, stderr=slave, env=ENV, cwd=REPO)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 600)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:  # the terminal closed: the process has exited
            chunk = b""
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0, seen.decode(errors="replace")
    assert b"it/s]\r" in seen or b"it/s]\x1b" in seen, seen  # a tqdm frame, then the next one over it


def test_quiet_prints_results_only(tmp_path, capfd):
    code = main(["attack", "--attack", "idlg", "--model", "mlp", "--set", "victim.options.width=8", "--iterations", "2",
                 "--victims", "1", "-q", "--output", str(tmp_path / "out")])
    captured = capfd.readouterr()
    assert code == 0 and captured.err == "" and "median PSNR" in captured.out


def test_rows_carry_provenance(tmp_path):
    from fedleak.harness.run.provenance import LIBRARIES
    argv = ["attack", "--attack", "idlg", "--model", "mlp", "--set", "victim.options.width=8", "--iterations", "2",
            "--victims", "1", "-q", "--output", str(tmp_path / "out")]
    assert main(argv) == 0
    rows = pd.read_parquet(tmp_path / "out" / "results.parquet")
    row = rows.iloc[0]
    assert row["command"] == "fedleak " + " ".join(argv)
    assert row["fedleak_version"] and row["host_cpu"] and row["gpu"] == "" and row["device"] == "cpu"
    import json
    versions = json.loads(row["versions"])
    assert set(LIBRARIES) <= set(versions)
    import torch
    assert versions["torch"] == torch.__version__
    # a checkout records its commit (this test runs from one when .git is there)
    if (REPO / ".git").exists():
        assert len(row["fedleak_commit"].split("+")[0]) == 40


def _wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.2)


def test_a_different_run_into_a_used_folder_refuses(tmp_path, capsys):
    out = str(tmp_path / "out")
    base = ["attack", "--attack", "idlg", "--model", "mlp", "--set", "victim.options.width=8", "--victims", "1", "-q",
            "--output", out]
    assert main([*base, "--iterations", "2"]) == 0
    assert main([*base, "--iterations", "2"]) == 0  # the same run again: redone, as always
    before = pd.read_parquet(tmp_path / "out" / "results.parquet")
    capsys.readouterr()
    assert main([*base, "--iterations", "3"]) == 2  # a different one: refused, the rows kept
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds the results of a different run" in err and "--overwrite" in err
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "results.parquet"), before)
    assert main([*base, "--iterations", "3", "--overwrite"]) == 0
    assert set(pd.read_parquet(tmp_path / "out" / "results.parquet")["iterations"]) == {3}


def test_a_different_matrix_into_a_used_folder_refuses(tmp_path, capsys):
    from test_matrix import smoke_matrix, write_toml
    one = write_toml(tmp_path / "one.toml", smoke_matrix(images={"indices": [1]}, defenses=[{"name": "none"}]))
    two = write_toml(tmp_path / "two.toml", smoke_matrix(images={"indices": [2]}, defenses=[{"name": "none"}]))
    out = str(tmp_path / "out")
    run = lambda config, *flags: main(["matrix", str(config), "--workers", "0", "-q", "--output", out, *flags])
    assert run(one) == 0 and run(one) == 0  # rerunning the same matrix resumes it
    capsys.readouterr()
    assert run(two) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a different matrix (images differs; 1 of its cells" in err
    assert set(pd.read_parquet(tmp_path / "out" / "results.parquet")["image_index"]) == {1}
    assert run(two, "--resume") == 0  # added: image 1's cell stays stored, the results are this matrix's
    assert set(pd.read_parquet(tmp_path / "out" / "results.parquet")["image_index"]) == {2}
    attack_cells = lambda: len(list((tmp_path / "out" / "cells").glob("*/images.pt")))  # not the check cells
    assert attack_cells() == 2
    assert run(one, "--overwrite") == 0
    assert attack_cells() == 1
    # a matrix grown by a defense setting loses no row: it goes on in the folder (more images are another
    # image set, one cell per set: that needs --resume, since the old set's rows leave the results)
    grown = write_toml(tmp_path / "grown.toml", smoke_matrix(images={"indices": [1]},
                                                             defenses=[{"name": "none"}, {"name": "prune", "options": {"ratio": 0.5}}]))
    assert run(grown) == 0
    assert set(pd.read_parquet(tmp_path / "out" / "results.parquet")["defense"]) == {"none", "prune"}
    assert run(write_toml(tmp_path / "both.toml", smoke_matrix(images={"indices": [1, 2]}, defenses=[{"name": "none"}]))) == 2
    # a CI cache restores only cells/: that folder holds no earlier run
    for path in (tmp_path / "out").iterdir():
        if path.name != "cells":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert run(two) == 0


def test_a_folder_of_the_users_own_files_is_refused_whatever_the_flags(tmp_path, capsys):
    """Issue 19 defect 3: a folder holding the user's own report.md/results.csv is not fedleak's."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my notes\n")
    (out / "results.csv").write_text("a,b\n1,2\n")
    base = ["attack", "--attack", "idlg", "--model", "mlp", "--set", "victim.options.width=8", "--victims", "1", "-q",
            "--iterations", "2", "--output", str(out)]
    for flags in ([], ["--overwrite"]):
        capsys.readouterr()
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "holds files fedleak did not write (report.md, results.csv)" in err
    assert (out / "report.md").read_text() == "my notes\n" and (out / "results.csv").read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.csv"]


def test_every_writing_command_refuses_another_commands_folder(tmp_path, capsys):
    """One rule: a run's folder given to a matrix (and back) says which flag applies."""
    from test_matrix import smoke_matrix, write_toml
    out = str(tmp_path / "out")
    attack = ["attack", "--attack", "idlg", "--model", "mlp", "--set", "victim.options.width=8", "--victims", "1", "-q",
              "--iterations", "2", "--output", out]
    assert main(attack) == 0
    config = write_toml(tmp_path / "one.toml", smoke_matrix(images={"indices": [1]}, defenses=[{"name": "none"}]))
    capsys.readouterr()
    assert main(["matrix", str(config), "--workers", "0", "-q", "--output", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds the results of `fedleak attack`, not of `fedleak matrix`; pass --overwrite" in err
    assert main(["matrix", str(config), "--workers", "0", "-q", "--output", out, "--resume"]) == 2  # not a matrix
    assert main(["matrix", str(config), "--workers", "0", "-q", "--output", out, "--overwrite"]) == 0
    assert not (tmp_path / "out" / "images.pt").exists()
    capsys.readouterr()
    assert main(attack) == 2
    assert "holds the results of `fedleak matrix`, not of `fedleak attack`" in capsys.readouterr().err


def test_after_a_full_disk_the_same_matrix_command_goes_on(tmp_path, capsys, monkeypatch):
    """Issue 19 defect 4: a matrix stopped by a full disk after its first results were merged (no
    matrix.json yet) is taken up by the same command, its finished cells kept; the message says so."""
    import errno

    import fedleak.harness.matrix.results as matrix_results
    from fedleak.core.errors import StorageError
    from test_matrix import smoke_matrix, write_toml
    config = write_toml(tmp_path / "m.toml", smoke_matrix(images={"indices": [1]}, defenses=[{"name": "none"}]))
    out = tmp_path / "out"
    real = matrix_results.write_json

    def full_disk(path, value, *a, **k):
        if Path(path).name == "matrix.json":
            raise StorageError(f"cannot write {path}: {os.strerror(errno.ENOSPC)} (free some space and run the same "
                               "command again; finished results are kept)")
        return real(path, value, *a, **k)
    monkeypatch.setattr(matrix_results, "write_json", full_disk)
    run = lambda *flags: main(["matrix", str(config), "--workers", "0", "-q", "--output", str(out), *flags])
    assert run() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run the same command again" in err and "--resume" in err
    assert (out / "results.parquet").is_file() and not (out / "matrix.json").exists()
    cells = sorted(p.name for p in (out / "cells").iterdir() if not p.name.startswith("."))
    monkeypatch.undo()
    assert run() == 0
    assert " 0 computed" in capsys.readouterr().out  # every finished cell reused
    assert sorted(p.name for p in (out / "cells").iterdir() if not p.name.startswith(".")) == cells
