"""A Flower app folder as `flwr run APP_DIR --run-config "k=v ..."` reads it, without importing Flower:

    APP_DIR/pyproject.toml
      [tool.flwr.app.components]  serverapp = "pkg.server_app:app", clientapp = "pkg.client_app:app"
      [tool.flwr.app.config]      the run config (nested tables flattened with ".", as Flower does)
      [tool.flwr.federations]     default = "NAME"; [tool.flwr.federations.NAME.options] num-supernodes
      [tool.fedleak]              hooks = "pkg.audit" (optional: the auditor's hooks module)

`--run-config` overrides are `key=value` pairs separated by spaces, each value TOML (`lr=0.05
name="x" flag=true`); like Flower, a key the app's config does not have is an error."""
from __future__ import annotations

import importlib
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from fedleak.core.errors import ConfigError
from fedleak.core.io import read_toml

# key=value, the value quoted (with spaces inside) or up to the next space: flwr's own pattern
_PAIR = re.compile(r"(\S+?)=('[^']*'|\"[^\"]*\"|\S+)")


@dataclass(frozen=True)
class FlowerApp:
    directory: Path
    server_app: str                      # "module:attribute", importable with `directory` on sys.path
    client_app: str
    run_config: dict = field(default_factory=dict)  # defaults fused with the overrides, flat keys
    num_supernodes: int | None = None    # the default federation's simulation size, if the app sets one
    hooks: str | None = None             # [tool.fedleak] hooks

    def make_importable(self) -> None:
        """As `flwr run` does: the app's packages import from its folder. `flwr run` starts a fresh
        process; here an earlier audit in the same process may have imported another app's module of
        the same name (two apps' `fedleak_hooks`, two `flwr new` apps' `myapp`), and Python would hand
        back that one. So this folder goes first on sys.path and every cached module it shadows is dropped."""
        folder = self.directory.resolve()
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
        sys.path.insert(0, str(folder))
        own = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
        for name in list(sys.modules):
            top = name.partition(".")[0]
            if top in own and not _defined_in(sys.modules[name], folder):
                del sys.modules[name]
        importlib.invalidate_caches()


def _defined_in(module: object, folder: Path) -> bool:
    where = getattr(module, "__file__", None)
    return where is not None and Path(where).resolve().is_relative_to(folder)


def load_app(directory: str | Path, overrides: str | list[str] | None = None) -> FlowerApp:
    directory = Path(directory)
    path = directory / "pyproject.toml"
    if not directory.is_dir():
        raise ConfigError(f"Flower app: {directory} is not a folder")
    if not path.is_file():
        raise ConfigError(f"Flower app: {directory} has no pyproject.toml (a Flower app folder, as `flwr new` creates)")
    project = read_toml(path, "Flower app pyproject.toml")
    app = project.get("tool", {}).get("flwr", {}).get("app", {})
    components = app.get("components", {})
    for key in ("serverapp", "clientapp"):
        if not isinstance(components.get(key), str):
            raise ConfigError(f"{path}: [tool.flwr.app.components] {key} is missing (expected \"package.module:attribute\")")
    defaults = flatten(app.get("config", {}))
    run_config = dict(defaults)
    for key, value in parse_run_config(overrides).items():
        if key not in defaults:
            raise ConfigError(f"--run-config: key '{key}' is not in [tool.flwr.app.config] of {path} "
                              f"(known: {', '.join(defaults) or 'none'})")
        run_config[key] = value
    hooks = project.get("tool", {}).get("fedleak", {}).get("hooks")
    if hooks is not None and not isinstance(hooks, str):
        raise ConfigError(f"{path}: [tool.fedleak] hooks must be a module name, got {hooks!r}")
    return FlowerApp(directory, components["serverapp"], components["clientapp"], run_config,
                     _num_supernodes(project.get("tool", {}).get("flwr", {}).get("federations", {})), hooks)


def parse_run_config(overrides: str | list[str] | None) -> dict:
    """`"k=v k2=v2"` (or several such strings) -> {k: v} with TOML values, nested keys flattened."""
    if not overrides:
        return {}
    parsed: dict = {}
    for text in [overrides] if isinstance(overrides, str) else overrides:
        pairs = _PAIR.findall(text)
        if not pairs and text.strip():
            raise ConfigError(f"--run-config {text!r}: expected space-separated key=value pairs")
        for key, value in pairs:
            try:
                parsed.update(flatten(tomllib.loads(f"{key} = {value}")))
            except tomllib.TOMLDecodeError:
                raise ConfigError(f"--run-config: '{key}={value}': the value must be TOML (a number, true/false, "
                                  "or a quoted string)") from None
    return parsed


def flatten(table: dict, prefix: str = "") -> dict:
    """Nested tables as one level of "a.b" keys (flwr.common.config.flatten_dict)."""
    flat = {}
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _num_supernodes(federations: dict) -> int | None:
    default = federations.get("default")
    options = federations.get(default, {}).get("options", {}) if isinstance(default, str) else {}
    value = options.get("num-supernodes")
    return value if isinstance(value, int) and value > 0 else None
