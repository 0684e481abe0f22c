"""The layering of docs/architecture.md, enforced: every import of every module is read (with ``ast``,
nothing is imported) and checked against the rules.

- a layer imports only the layers below it: data < runtime < calibration / train < export, with the
  ``edgereid`` command (cli, report) on top;
- ``data`` needs only numpy and Pillow at module level; ``runtime`` never imports torch, timm,
  torchvision or safetensors, not even inside a function;
- no import cycle between modules (imports inside functions count: a cycle there is still two
  modules that each need the other);
- no private name (``_x``) is imported from another module;
- no module cites a file the repository does not have.

Imports under ``if TYPE_CHECKING:`` are for type checkers only and are not counted.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# layer -> the layers it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "data": {"data"},
    "runtime": {"data", "runtime"},
    "calibration": {"data", "runtime", "calibration"},
    "train": {"data", "runtime", "train"},
    "export": {"data", "runtime", "calibration", "train", "export"},
    "edgereid": {"data", "runtime", "calibration", "train", "export", "edgereid"},
}
NO_TORCH = {"torch", "timm", "torchvision", "safetensors"}
DATA_THIRD_PARTY = {"numpy", "PIL"}  # at module level; tqdm and scipy only inside the functions that use them
ABSENT_FILES = ("ALGORITHMS.md", "TOOLCHAIN.md", "DESIGN.md", "docs/install.md")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (a package for ``from package import name`` of a non-module name)
    names: tuple[str, ...]  # the names taken by ``from ... import``
    line: int
    top_level: bool  # at module level (not inside a function or class body)


def package_dirs() -> dict[str, Path]:
    """``edgereid.X`` -> its folder, from pyproject.toml's package-dir (the layout the build uses)."""
    line = next(x for x in (REPO / "pyproject.toml").read_text().splitlines() if x.startswith("package-dir"))
    return {name: REPO / folder for name, folder in re.findall(r'"(edgereid[\w.]*)"\s*=\s*"([\w/]+)"', line)}


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    dirs = package_dirs()
    for pkg, folder in dirs.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            if any(name.startswith(other + ".") and other != pkg and len(other) > len(pkg) for other in dirs):
                continue  # a subpackage mapped on its own
            out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    base = name if is_package else name.rpartition(".")[0]
    found: list[Import] = []

    def resolve(level: int, module: str | None) -> str:
        if level == 0:
            return module or ""
        parts = base.split(".")
        parts = parts[: len(parts) - (level - 1)]
        return ".".join(parts + ([module] if module else []))

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(name, alias.name, (), child.lineno, top))
            elif isinstance(child, ast.ImportFrom):
                target = resolve(child.level, child.module)
                names = tuple(a.name for a in child.names)
                submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
                for sub in submodules:
                    found.append(Import(name, sub, (), child.lineno, top))
                rest = tuple(n for n in names if f"{target}.{n}" not in known)
                if rest or not submodules:
                    found.append(Import(name, target, rest, child.lineno, top))
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            visit(child, inner)

    visit(tree, True)
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "edgereid"


MODULES = modules()
IMPORTS = [imp for name, path in sorted(MODULES.items()) for imp in imports_of(name, path, set(MODULES))]


def test_the_walk_sees_every_layer_and_its_imports():
    layers = {layer(m) for m in MODULES}
    assert layers == set(ALLOWED)
    assert len(MODULES) > 100 and len(IMPORTS) > 500
    assert any(i.module == "edgereid.export.bundle" and i.target == "edgereid.runtime.bundle" for i in IMPORTS)


def upward(imports: list[Import]) -> list[str]:
    return [f"{i.module}:{i.line} imports {i.target}" for i in imports
            if i.target.startswith("edgereid.") and layer(i.target) not in ALLOWED[layer(i.module)]]


def heavy(imports: list[Import]) -> list[str]:
    """torch & co. anywhere in runtime; anything but numpy/Pillow/stdlib at module level in data."""
    stdlib = set(sys.stdlib_module_names)
    out = [f"{i.module}:{i.line} imports {i.target}" for i in imports
           if layer(i.module) == "runtime" and i.target.split(".")[0] in NO_TORCH]
    out += [f"{i.module}:{i.line} imports {i.target}" for i in imports
            if layer(i.module) == "data" and i.top_level and i.target.split(".")[0] not in stdlib | DATA_THIRD_PARTY
            and not i.target.startswith("edgereid.data")]
    return out


def private(imports: list[Import]) -> list[str]:
    return [f"{i.module}:{i.line} takes {n} from {i.target}" for i in imports if i.target.startswith("edgereid")
            and i.target != i.module for n in i.names if n.startswith("_") and not n.startswith("__")]


def test_no_layer_imports_upward():
    bad = upward(IMPORTS)
    assert not bad, "imports against the layering (data < runtime < calibration/train < export < edgereid):\n" + \
        "\n".join(bad)


def test_runtime_never_imports_torch_and_data_needs_only_numpy_and_pillow():
    assert not heavy(IMPORTS), heavy(IMPORTS)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles():
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if i.target not in MODULES or i.target == i.module:
            continue
        edges[i.module].add(i.target)
        # importing a.b.c runs the package a.b first (unless the importer lives in it: then it is running already)
        parent = i.target.rpartition(".")[0]
        while parent in MODULES and not i.module.startswith(parent + "."):
            edges[i.module].add(parent)
            parent = parent.rpartition(".")[0]
    cycles = _cycles(edges)
    assert not cycles, "modules that import each other (directly or around a loop):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module():
    bad = private(IMPORTS)
    assert not bad, "private names imported across modules (make them public, or move the code):\n" + "\n".join(bad)


def test_the_checks_catch_each_kind_of_violation(tmp_path):
    """Each rule fails on a module that breaks it (the walk of the real code finds none)."""
    pkg = tmp_path / "runtime"
    pkg.mkdir()
    (pkg / "cli.py").write_text("from edgereid.runtime import bench\n")
    (pkg / "bench.py").write_text("import numpy\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                  "    from edgereid.export import bundle\n\n"
                                  "def run():\n    import torch\n    from .cli import _embedder, main\n"
                                  "    from edgereid.train.engine import fit\n")
    known = {"edgereid.runtime.cli", "edgereid.runtime.bench", "edgereid.runtime"}
    imports = [*imports_of("edgereid.runtime.cli", pkg / "cli.py", known),
               *imports_of("edgereid.runtime.bench", pkg / "bench.py", known)]
    assert upward(imports) == ["edgereid.runtime.bench:9 imports edgereid.train.engine"]  # not the TYPE_CHECKING one
    assert heavy(imports) == ["edgereid.runtime.bench:7 imports torch"]
    assert private(imports) == ["edgereid.runtime.bench:8 takes _embedder from edgereid.runtime.cli"]
    edges = {"edgereid.runtime.cli": {"edgereid.runtime.bench"}, "edgereid.runtime.bench": {"edgereid.runtime.cli"}}
    assert {i.target for i in imports if i.module == "edgereid.runtime.cli"} == {"edgereid.runtime.bench"}
    assert _cycles(edges) == [["edgereid.runtime.bench", "edgereid.runtime.cli"]]


@pytest.mark.parametrize("where", ["modules", "project files"])
def test_nothing_cites_files_the_repository_does_not_have(where):
    files = list(MODULES.values()) if where == "modules" else [
        REPO / "Makefile", REPO / "pyproject.toml", REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "bench").glob("*.py")), *sorted((REPO / "tests").glob("*.py"))]
    pattern = re.compile("|".join(re.escape(n) for n in ABSENT_FILES))
    bad = [f"{p.relative_to(REPO)}:{n}: {line.strip()[:100]}" for p in files if p != Path(__file__)
           for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not bad, "cites a file that is not in the repository (say it in the project's own words or docs):\n" + \
        "\n".join(bad)
