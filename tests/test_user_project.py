"""fedleak inside someone else's project: run from the user's own folder, which has packages of its
own named like fedleak's layers (`attacks/`), with worker processes; one line for a worker that
dies; and the wheel, which installs exactly one import name."""
import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

# The user's project: their own `attacks` package (what broke evaluate-defense workers before the
# one namespace: "ImportError: cannot import name 'ATTACKS'") and a package with their defense,
# which uses their own `attacks` package too.
USER_ATTACKS = "USER_ATTACKS = ['their own attack']\n"
USER_DEFENSE = '''import torch

from attacks import USER_ATTACKS  # the user's package of that name, not fedleak's
from fedleak.defenses.base import Defense

assert USER_ATTACKS == ["their own attack"]


class Blur(Defense):
    """Adds noise of std `noise` (seeded by the round and a client secret) to what the client sends."""
    name = "user-blur"

    def __init__(self, noise: float = 0.5):
        self.noise = float(noise)

    def share(self, update, context):
        generator = torch.Generator().manual_seed(7919 * context.round + context.client_id + 12345)
        return [u + self.noise * torch.randn(u.shape, generator=generator).to(u) for u in update], {}

    def describe(self):
        return {"noise": self.noise}
'''

MATRIX = '''preset = "smoke"
images = { indices = [1] }
utility = { enabled = false }
[[victims]]
model = "mlp"
options = { width = 16, depth = 1 }
[[attacks]]
name = "idlg"
[[attacks]]
name = "ig"
[[defenses]]
name = "none"
'''


def user_project(folder: Path) -> Path:
    (folder / "attacks").mkdir(parents=True)
    (folder / "attacks" / "__init__.py").write_text(USER_ATTACKS)
    (folder / "shields").mkdir()
    (folder / "shields" / "__init__.py").write_text("")
    (folder / "shields" / "blur.py").write_text(USER_DEFENSE)
    (folder / "matrix.toml").write_text(MATRIX)
    return folder


def fedleak(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The `fedleak` command as its console script runs it: -P keeps the working directory off
    sys.path (`python -m` would put it there), so only fedleak's own plugin import may add it."""
    return subprocess.run([sys.executable, "-P", "-m", "fedleak.harness.cli", *args], cwd=folder, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})


@pytest.mark.slow
def test_evaluate_defense_from_a_project_with_its_own_attacks_package(tmp_path):
    folder = user_project(tmp_path / "project")
    done = fedleak(folder, "evaluate-defense", "shields.blur:Blur", "--matrix", "matrix.toml", "--budget", "smoke",
                   "--workers", "2", "--quiet", "--output", "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "BrokenProcessPool" not in done.stderr
    assert "verdict:" in done.stdout
    results = pd.read_parquet(folder / "out" / "results.parquet")
    mine = results[results["defense"] == "user-blur"]
    assert set(zip(mine["attack_label"], mine["adaptive"])) >= {(a, m) for a in ("idlg", "ig") for m in (False, True)}
    assert not [line for line in done.stdout.splitlines() if "failed" in line and " 0 failed" not in line]


def test_no_fedleak_code_puts_the_working_directory_on_sys_path(tmp_path):
    """Importing and running fedleak's CLI from a folder leaves sys.path alone; only importing the
    user's own plugin adds the folder (as `python -m` would)."""
    folder = user_project(tmp_path / "project")
    script = ("import os, sys\n"
              "from fedleak.harness.cli.main import build_parser\n"
              "import fedleak.harness.matrix.run, fedleak.harness.matrix.executors, fedleak.harness.matrix.cell_worker\n"
              "build_parser()\n"
              "from fedleak.harness.matrix.cell_worker import WorkerSetup, prepare\n"
              "prepare(WorkerSetup())  # what every worker process does first\n"
              "assert os.getcwd() not in sys.path and '' not in sys.path, sys.path\n"
              "from fedleak.harness.run.plugins import load_plugin\n"
              "load_plugin('shields.blur:Blur')\n"
              "assert sys.path[0] == os.getcwd()\n"
              "import attacks\n"
              "assert attacks.USER_ATTACKS == ['their own attack']\n"
              "from fedleak.attacks import ATTACKS\n"
              "assert 'ig' in ATTACKS\n")
    done = subprocess.run([sys.executable, "-P", "-c", script], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


CRASHING_DEFENSE = '''import os
from pathlib import Path

from fedleak.defenses.base import Defense


class Crash(Defense):
    """Kills its worker process the first time it runs (as an out-of-memory kill would), then works."""
    name = "crash-once"

    def share(self, update, context):
        flag = Path(os.environ["CRASH_FLAG"])
        if not flag.exists():
            flag.write_text("crashed")
            os._exit(9)
        return super().share(update, context)
'''


@pytest.mark.slow
def test_a_worker_that_dies_is_one_line_and_the_matrix_goes_on(tmp_path):
    folder = user_project(tmp_path / "project")
    (folder / "crashing.py").write_text(CRASHING_DEFENSE)
    # idlg against none, then against crash-once in both modes: the first crash-once cell kills its worker
    (folder / "crash.toml").write_text('plugins = ["crashing:Crash"]\n' + MATRIX.replace('[[attacks]]\nname = "ig"\n', "")
                                       + '[[defenses]]\nname = "crash-once"\n')
    env_flag = tmp_path / "crashed"
    done = fedleak(folder, "matrix", "crash.toml", "--workers", "1", "--output", "out", "--quiet", CRASH_FLAG=str(env_flag))
    assert env_flag.exists(), done.stderr
    assert done.returncode == 1, done.stdout + done.stderr  # a task failed: retried on the next run
    assert "Traceback" not in done.stderr and "BrokenProcessPool" not in done.stderr, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("  ")]
    assert len(failed) == 1 and "worker process died" in failed[0], done.stderr
    # every task after the crash ran in a fresh pool: all but the one that died are computed
    counts = re.search(r"(\d+) cells \+ (\d+) utility measurements \+ (\d+) checks: (\d+) computed, 0 already stored, 1 failed",
                       done.stdout)
    assert counts, done.stdout
    cells, utility, checks, computed = map(int, counts.groups())
    assert computed == cells + utility + checks - 1, done.stdout


@pytest.mark.slow
def test_the_wheel_installs_one_import_name(tmp_path):
    """`pip install .` puts exactly `fedleak` into site-packages (not harness/, attacks/, ...), with
    its presets and weights, true requires-python, the license, and no unused dependency."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "build", "__pycache__", ".pytest_cache", ".benchmarks", "*.egg-info", ".whl"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("fedleak-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"fedleak"}, sorted(top)
    for needed in ("fedleak/harness/presets/matrix-ci.toml", "fedleak/metrics/weights/lpips_alexnet.pt",
                   "fedleak/attacks/generators/weights/prior_digits.pt", "fedleak/examples/flower_app/task.py",
                   "fedleak/core/io.py"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("fedleak/tests/", "fedleak/benchmarks/", "fedleak/tools/"))]
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = email.message_from_string(zipfile.ZipFile(wheel).read(info).decode())
    assert metadata["Requires-Python"] == ">=3.11"
    required = [r.split(";")[0] for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert not [r for r in required if r.lower().startswith(("scikit-learn", "sklearn"))]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
