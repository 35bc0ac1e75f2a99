"""The import graph of ``src/coordgate`` runs one way, down the layers the README's
"Layout" lists, and no module imports another's private name."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"
PACKAGE = SOURCE / "coordgate"


def _layers() -> dict[str, int]:
    """Each unit (a module or package directly under coordgate, ``coordgate`` for the
    package root) and its layer, from the README's numbered list."""
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    return {
        name: int(level)
        for level, names in re.findall(r"^(\d+)\. (`.+)$", layout, re.M)
        for name in re.findall(r"`([^`]+)`", names)
    }


def _name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = SOURCE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> Iterator[tuple[str, str]]:
    """``(module, name)`` of every import in ``path`` (name "" for a plain import)."""
    package = _name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                if _is_module(f"{module}.{alias.name}"):
                    yield f"{module}.{alias.name}", ""
                else:
                    yield module, alias.name


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "coordgate"


MODULES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {
    (importer, module, name)
    for importer, path in MODULES.items()
    for module, name in _imports(path)
    if module.split(".")[0] == "coordgate"
}


def test_every_unit_has_a_layer():
    assert {_unit(m) for m in MODULES} - set(_layers()) == set(), "add it to README's layers"


def test_no_import_runs_up_the_layers():
    layer = _layers()
    upward = sorted(
        f"{importer} (layer {layer[_unit(importer)]}) imports {module} "
        f"(layer {layer[_unit(module)]})"
        for importer, module, _ in IMPORTS
        if layer[_unit(module)] > layer[_unit(importer)]
    )
    assert upward == []


def test_units_import_each_other_without_cycles():
    edges = {(_unit(i), _unit(m)) for i, m, _ in IMPORTS if _unit(i) != _unit(m)}
    closure = set(edges)
    while new := {(a, d) for a, b in closure for c, d in edges if b == c} - closure:
        closure |= new
    assert sorted(a for a, b in closure if a == b) == []


def test_no_module_imports_a_private_name():
    private = sorted(f"{i}: {m}.{n}" for i, m, n in IMPORTS if _private(n))
    assert private == []


def _owners(module: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The public modules that import ``module``, directly or through private modules."""
    owners = set()
    for importer in {i for i, m, _ in IMPORTS if m == module} - seen:
        if _private(importer.rsplit(".", 1)[-1]):
            owners |= _owners(importer, seen | {module})
        else:
            owners.add(importer)
    return owners


def test_a_private_module_serves_one_public_module_of_its_package():
    private = {m for m in MODULES if _private(m.rsplit(".", 1)[-1])}
    misplaced = {
        module: sorted(owners)
        for module in sorted(private)
        if len(owners := _owners(module)) > 1
        or any(not o.startswith(module.rsplit(".", 1)[0] + ".") for o in owners)
    }
    assert misplaced == {}


def test_test_modules_share_helpers_not_each_other():
    def imported(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        return [node.module or ""] if isinstance(node, ast.ImportFrom) else []

    tests = Path(__file__).parent
    crossing = sorted(
        f"{path.name}: {module}"
        for path in tests.glob("test_*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        for module in imported(node)
        if module.rsplit(".", 1)[-1].startswith("test_")
    )
    assert crossing == []
