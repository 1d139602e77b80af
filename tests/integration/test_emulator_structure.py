"""The emulator's layering: state <- routes <- server, no import cycle, no private access across modules.

Checked two ways: statically (every import statement, including ones inside functions and
TYPE_CHECKING blocks) and dynamically (each module imported alone in a fresh interpreter).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_provider_empirical" / "emulator"
PREFIX = "airflow_provider_empirical.emulator"
# module -> the package modules it may import; anything else is a layering violation
ALLOWED = {
    "catalogue": set(),
    "models": {"catalogue"},
    "state": {"models", "catalogue"},
    "routes": {"models", "catalogue", "state"},
    "server": {"models", "routes"},
    "emulator": {"models", "state", "routes", "server"},
    "__init__": {"models", "emulator"},
    "__main__": {"emulator", "state"},
}


def module_names() -> list[str]:
    return sorted(path.stem for path in PACKAGE.glob("*.py"))


def package_imports(name: str) -> set[str]:
    """Package modules imported anywhere in a module (top level, functions, TYPE_CHECKING)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                found |= {node.module} if node.module else {alias.name for alias in node.names}
            elif node.level == 0 and (node.module or "").startswith(PREFIX + "."):
                found.add(node.module.removeprefix(PREFIX + ".").split(".")[0])  # type: ignore[union-attr]
            assert node.level <= 1, f"{name}: imports from outside the emulator package ({node.module})"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PREFIX + "."):
                    found.add(alias.name.removeprefix(PREFIX + ".").split(".")[0])
    return found


def test_every_module_is_in_the_layering_table() -> None:
    assert set(module_names()) == set(ALLOWED)


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_imports_follow_the_layers(name: str) -> None:
    assert package_imports(name) <= ALLOWED[name], name


def test_the_import_graph_has_no_cycle() -> None:
    graph = {name: package_imports(name) for name in module_names()}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for target in graph.get(node, ()):
            visit(target, (*path, node))
        done.add(node)

    for name in graph:
        visit(name, ())


def test_no_private_member_is_used_from_outside_its_own_object() -> None:
    """`x._name` is only allowed on self/cls (dunders are not private)."""
    offences = []
    for name in module_names():
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                offences.append(f"{name}.py:{node.lineno}: {ast.unparse(node)}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{name}.py imports private names {private}"
    assert offences == []


ISOLATED = """
import sys, types
# stand-in packages, so importing one module does not run the package's __init__ first
for name, path in {packages!r}.items():
    stub = types.ModuleType(name)
    stub.__path__ = [path]
    sys.modules[name] = stub
import importlib
importlib.import_module({module!r})
prefix = "airflow_provider_empirical.emulator."
print(sorted(m[len(prefix):] for m in sys.modules if m.startswith(prefix)))
heavy = ("http", "socketserver", "ssl", "airflow", "httpx")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


@pytest.mark.parametrize(
    ("module", "loaded"),
    [
        ("catalogue", {"catalogue"}),
        ("models", {"catalogue", "models"}),
        ("state", {"catalogue", "models", "state"}),
        ("routes", {"catalogue", "models", "state", "routes"}),
        ("server", {"catalogue", "models", "state", "routes", "server"}),
        ("emulator", {"catalogue", "models", "state", "routes", "emulator"}),
        ("__init__", {"catalogue", "models", "state", "routes", "emulator"}),
    ],
)
def test_each_layer_imports_alone(module: str, loaded: set[str]) -> None:
    """A layer loads only the layers below it; only the server loads http.server (on start())."""
    packages = {"airflow_provider_empirical": str(PACKAGE.parent)}
    if module == "__init__":
        target = PREFIX  # the package itself, as users import it
    else:
        target = f"{PREFIX}.{module}"
        packages[PREFIX] = str(PACKAGE)
    code = ISOLATED.format(packages=packages, module=target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules, heavy = (ast.literal_eval(line) for line in out.splitlines())
    assert set(modules) == loaded - {"__init__"}
    assert (heavy != []) == (module == "server")
    assert not {m for m in heavy if m.split(".")[0] in ("airflow", "httpx")}
