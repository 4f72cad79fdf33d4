"""The layers at file level: no import cycle between fedleak's modules, counting the imports inside
functions that import-linter's package contract does not see (a cycle hidden in a function still
means neither module can be read, tested or moved without the other).

The graph is read from the source with `ast`, not by importing it, so the check runs on any
checkout: FEDLEAK_ARCHITECTURE_ROOT=/path/to/a/checkout runs it against that tree instead of this one."""
from __future__ import annotations

import ast
import os
from pathlib import Path


ROOT = Path(os.environ.get("FEDLEAK_ARCHITECTURE_ROOT") or Path(__file__).resolve().parents[1])
PACKAGES = ("core", "data", "models", "metrics", "defenses", "threat_models", "attacks", "reports", "harness",
            "examples")


def module_files(root: Path) -> dict[str, Path]:
    """fedleak's module names and their files (a package is its __init__.py)."""
    modules = {"fedleak": root / "__init__.py"}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(("fedleak", *parts))] = path
    return modules


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def raw_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every absolute name `name` imports anywhere in its file (module level, in functions, in
    methods), except under `if TYPE_CHECKING:`, which never runs; `from a import b` is `a.b` where
    that is one of `modules`, else `a`."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fedleak modules `name` imports (raw_imports, each cut to its longest prefix that is one of
    fedleak's modules)."""
    resolved = set()
    for target in raw_imports(name, path, modules):
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_checker_finds_a_cycle_hidden_in_a_function():
    """The checker itself: a cycle made only of a function-level import is found, a TYPE_CHECKING
    import is not an edge, and a relative import resolves to its module."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "__init__.py").write_text("")
        (root / "core").mkdir()
        (root / "core" / "__init__.py").write_text("")
        (root / "core" / "a.py").write_text("from fedleak.core.b import g\n")
        (root / "core" / "b.py").write_text("def g():\n    from .a import x\n")
        (root / "core" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                            "    from fedleak.core.d import y\n")
        (root / "core" / "d.py").write_text("import fedleak.core.c\n")
        assert cycles(import_graph(root)) == [["fedleak.core.a", "fedleak.core.b"]]


def test_no_module_import_cycle():
    graph = import_graph(ROOT)
    assert len(graph) > 100, f"no fedleak modules under {ROOT}"
    found = cycles(graph)
    assert not found, "import cycles between fedleak's modules (function-level imports included):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_scripts_sit_above_the_package():
    """tools/ and benchmarks/ are the top layer, above the harness (pyproject.toml's contracts cover
    the package only): they may import any of fedleak, and no fedleak module imports them, or any
    module of theirs by its bare name (benchmarks/conftest.py puts its folder on sys.path)."""
    modules = module_files(ROOT)
    scripts = {p.stem for folder in ("tools", "benchmarks") for p in (ROOT / folder).glob("*.py")}
    assert scripts, f"no tools/ or benchmarks/ scripts under {ROOT}"
    wrong = sorted(f"{name} imports {target}" for name, path in modules.items()
                   for target in raw_imports(name, path, modules)
                   if target.split(".")[0] in ("tools", "benchmarks") or target.split(".")[0] in scripts)
    assert not wrong, wrong


def test_a_component_registers_under_its_own_name():
    """The name is written once, in the class: `register(cls)` reads `cls.name`; every built-in
    component is registered under its class's name; a class without one is refused."""
    from fedleak.attacks import ATTACKS
    from fedleak.core.registry import Registry
    from fedleak.defenses import DEFENSES
    from fedleak.threat_models import THREAT_MODELS

    class Thing:
        name = "thing"

    registry = Registry("thing")
    assert registry.register(Thing) is Thing and registry.get("thing") is Thing
    assert registry.register(type("Other", (), {"name": "other"})).name == "other"
    try:
        registry.register(type("Nameless", (), {}))
    except ValueError as e:
        assert "class attribute `name`" in str(e)
    else:
        raise AssertionError("a class without a name was registered")
    for components in (ATTACKS, DEFENSES, THREAT_MODELS):
        for name in components.names():
            assert components.get(name).name == name
    for package in ("attacks", "defenses", "threat_models"):
        assert '.register("' not in (ROOT / package / "__init__.py").read_text(), package
