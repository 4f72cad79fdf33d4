"""What produced a result row, beyond its config: the code (fedleak's version, and its git commit
when it runs from a checkout), the command line, the machine (CPU model, GPU model of the device
it ran on) and the versions of the libraries that shape a number (torch, opacus, lpips, flwr, ...).
docs/results.md lists every column. Computed once per process."""
from __future__ import annotations

import functools
import platform
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# the libraries whose version can change a number (flwr only for a Flower audit, but said always)
LIBRARIES = ("torch", "torchvision", "numpy", "opacus", "lpips", "flwr", "scikit-image")
NOT_INSTALLED = "not installed"

_command: str | None = None


def set_command(argv: list[str] | None) -> None:
    """The command line rows record (the CLI sets it; matrix workers get the parent's)."""
    global _command
    _command = None if argv is None else shlex.join(argv)


def command() -> str:
    return _command if _command is not None else shlex.join([Path(sys.executable).name, *sys.argv])


def fedleak_version() -> str:
    from fedleak import __version__
    return __version__


@functools.lru_cache(maxsize=1)
def fedleak_commit() -> str:
    """The git commit of the checkout fedleak runs from (with "+dirty" for uncommitted changes to
    it); "" when it is an installed package, not a checkout."""
    root = Path(__file__).resolve().parents[2]  # the repository root is the package
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
        if Path(top).resolve() != root:  # a package installed inside somebody else's repository
            return ""
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+dirty" if dirty else "")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu(device) -> str:
    """The GPU model of `device` ("" for the CPU)."""
    import torch
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else ""


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {"fedleak": fedleak_version(), "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name) if name != "torch" else __import__("torch").__version__  # +cpu / +cu121
        except PackageNotFoundError:
            out[name] = NOT_INSTALLED
    return out


def row_provenance(device) -> dict:
    """The columns every result row carries about what produced it."""
    return {"device": str(device), "versions": versions(), "fedleak_version": fedleak_version(),
            "fedleak_commit": fedleak_commit(), "command": command(), "host_cpu": host_cpu(), "gpu": gpu(device)}
