"""Digests of the code that produces a result, so a stored result is never reused by other code.

A stored matrix cell (harness.matrix.cell_store), a utility measurement and a victim trained with a defense
are keyed by their config; that alone let an edited plugin reuse cells its old code computed (a
defense changed to send the raw update still printed "holds", issue #12). Their keys therefore also
cover:

* `package_digest()`: fedleak's version and every source and data file of the installed package
  (the layers' `*.py`, the shipped weights and presets; not tests, benchmarks, tools or docs);
* `module_digest(cls)`: the source of the module that defines a class and of every other loaded
  module of the same top-level package (a plugin's helpers), unless that package is fedleak
  (covered by `package_digest`)."""
from __future__ import annotations

import functools
import hashlib
import inspect
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent  # the repository root is the `fedleak` package
# what the package is made of (pyproject.toml: packages and package-data); nothing else changes a result
LAYERS = ("core", "data", "models", "metrics", "defenses", "threat_models", "attacks", "reports", "harness",
          "examples")
DATA_SUFFIXES = (".py", ".pt", ".json", ".toml")


@functools.lru_cache(maxsize=1)
def package_digest() -> str:
    """fedleak's version and a digest of its source and data files (once per process)."""
    from fedleak import __version__
    digest = hashlib.sha256(f"fedleak {__version__}\n".encode())
    files = [ROOT / "__init__.py"]
    for layer in LAYERS:
        files += sorted(p for p in (ROOT / layer).rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file()
                        and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:16]}"


def module_digest(cls: type) -> str:
    """A digest of the source of the module defining `cls` and of the other loaded modules of its
    top-level package; "" for a class without a source file (built in a REPL)."""
    module = sys.modules.get(cls.__module__)
    top = cls.__module__.split(".")[0]
    names = [cls.__module__] if top == "fedleak" else sorted(
        n for n in sys.modules if n == top or n.startswith(top + "."))
    digest = hashlib.sha256()
    found = False
    for name in names:
        path = _source_file(sys.modules.get(name) if name != cls.__module__ else module)
        if path is not None:
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
            found = True
    return digest.hexdigest()[:16] if found else ""


def _source_file(module: ModuleType | None) -> Path | None:
    try:
        path = inspect.getsourcefile(module) if module is not None else None
    except TypeError:  # a built-in module
        return None
    return Path(path) if path and Path(path).is_file() else None
