"""`mypy --strict` on what a plugin author touches (`make test`): the core (components, options,
registry, errors, files) and the three base classes. Everything else is read to check them against
(follow_imports = silent) but not itself held to strict typing.

The repository root is the package `fedleak`, so mypy is pointed at a folder holding one link named
`fedleak` to it: run from the root itself, mypy would name the modules after the checkout's folder."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["fedleak.core"]
MODULES = ["fedleak.defenses.base", "fedleak.attacks.base", "fedleak.threat_models.base"]


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "fedleak").symlink_to(ROOT, target_is_directory=True)
        command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                   "--cache-dir", str(ROOT / ".mypy_cache"), *(a for p in PACKAGES for a in ("-p", p)),
                   *(a for m in MODULES for a in ("-m", m))]
        return subprocess.run(command, cwd=folder, env={**os.environ, "MYPYPATH": folder}).returncode


if __name__ == "__main__":
    sys.exit(main())
