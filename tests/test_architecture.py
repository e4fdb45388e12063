"""Imports run one way: layers -> model -> train / export / serve -> CLI (docs/architecture.md).

Reads every module of ember with `ast` (nothing is imported) and finds the imports that go from a
lower part to a higher one, and the import cycles. Type-only imports (`if TYPE_CHECKING:`) do not
count; an import inside a function counts unless a `# lazy:` comment on its line or the line
above says why it is deliberate (e.g. `Model.fit` starting a Trainer).

Run it as a script to print every such import in ember:
    PYTHONPATH=$PWD .venv/bin/python tests/test_architecture.py
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ember"

# Module prefix -> rank; the longest matching prefix wins. `ember.train.compile` and
# `ember.train.steps` (compile() and the default steps) are what the Model class builds on, so
# they belong to the model's rank and must not import the rest of ember.train.
RANKS = {
    "ember.layers": 0,
    "ember.activations": 0,
    "ember.losses": 0,
    "ember.metrics": 0,
    "ember.optimizers": 0,
    "ember.data": 0,
    "ember.summary": 0,
    # The package format takes any nn.Module and imports no other part of ember; the model layer
    # writes packages and registers how its architectures are rebuilt (register_architecture).
    "ember.package": 0,
    "ember.model": 1,
    "ember.train.compile": 1,
    "ember.train.steps": 1,
    "ember.train": 2,
    "ember.callbacks": 2,
    "ember.train_files": 2,
    "ember.report": 2,
    "ember.export": 2,
    "ember.serve": 2,
    "ember.loading": 2,
    "ember.demo": 2,
    "ember.cli": 3,
    "ember.cli_demo": 3,
    "ember": 3,  # the package's __init__: the public API re-exports everything
}
PART_NAMES = {0: "layers", 1: "model", 2: "train/export/serve", 3: "cli"}

# Where a new upward import or cycle fails the test (the rest is printed by the script).
CHECKED = ("ember.train", "ember.model", "ember.report", "ember.layers")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module
    line: int
    lazy: bool  # inside a function
    deliberate: bool  # marked with a `# lazy:` comment

    def where(self) -> str:
        return f"{self.source}:{self.line} -> {self.target}"


def module_names() -> dict[str, Path]:
    """Every module of ember: dotted name -> file."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def rank(module: str) -> int | None:
    best = max(
        (p for p in RANKS if module == p or module.startswith(p + ".")), key=len, default=None
    )
    return RANKS[best] if best is not None else None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool, known: set[str]):
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the source's package
        package = source.split(".") if is_package else source.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    # `from pkg import module` imports the module; `from module import name` the module itself.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def imports(modules: dict[str, Path]) -> list[Import]:
    """Every import between ember's modules, type-only ones left out."""
    known, found = set(modules), []
    for source, path in modules.items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        _visit(tree, False, source, path.name == "__init__.py", text.splitlines(), known, found)
    return sorted(set(found), key=lambda i: (i.source, i.line, i.target))


def _visit(node, lazy, source, is_package, lines, known, found) -> None:  # noqa: ANN001
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                _visit(other, lazy, source, is_package, lines, known, found)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            near = " ".join(lines[max(child.lineno - 2, 0) : child.end_lineno])
            for target in _targets(child, source, is_package, known):
                if target.split(".")[0] == "ember" and target != source:
                    marked = lazy and "# lazy:" in near
                    found.append(Import(source, target, child.lineno, lazy, marked))
            continue
        inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        _visit(child, inner, source, is_package, lines, known, found)


def upward(found: list[Import]) -> list[Import]:
    """Imports from a lower part to a higher one, deliberate lazy ones left out."""
    out = []
    for imp in found:
        low, high = rank(imp.source), rank(imp.target)
        if low is not None and high is not None and high > low and not imp.deliberate:
            out.append(imp)
    return out


def cycles(found: list[Import]) -> list[list[str]]:
    """Groups of modules that import each other (strongly connected, Tarjan), deliberate lazy
    imports left out."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        if not imp.deliberate:
            graph.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def _checked(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in CHECKED)


def _cycle_edges(group: list[str], found: list[Import]) -> list[str]:
    members = set(group)
    return [
        i.where() for i in found if i.source in members and i.target in members and not i.deliberate
    ]


def test_no_import_runs_back_up():
    bad = [i.where() for i in upward(imports(module_names())) if _checked(i.source)]
    assert not bad, (
        "These imports run from a lower part of ember to a higher one (layers -> model -> "
        "train/export/serve -> cli): pass a callable or use a registry instead, put type-only "
        "imports under TYPE_CHECKING, or, for a deliberate import inside a function, say why in "
        "a `# lazy:` comment. " + "; ".join(bad)
    )


def test_no_import_cycle():
    found = imports(module_names())
    bad = [g for g in cycles(found) if any(_checked(m) for m in g)]
    assert not bad, "Import cycles: " + " | ".join(", ".join(_cycle_edges(g, found)) for g in bad)


def test_the_checker_sees_an_upward_import_and_a_cycle():
    found = [
        Import("ember.layers.core", "ember.train.trainer", 3, lazy=False, deliberate=False),
        Import("ember.train.a", "ember.train.b", 1, lazy=False, deliberate=False),
        Import("ember.train.b", "ember.train.a", 1, lazy=True, deliberate=False),
        Import("ember.model", "ember.train.trainer", 9, lazy=True, deliberate=True),
    ]
    assert [i.where() for i in upward(found)] == ["ember.layers.core:3 -> ember.train.trainer"]
    assert cycles(found) == [["ember.train.a", "ember.train.b"]]


def test_type_checking_imports_do_not_count(tmp_path, monkeypatch):
    pkg = tmp_path / "ember"
    (pkg / "layers").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ember.train import trainer\n"
        "def f():\n    from ember import cli\n"
    )
    (pkg / "train").mkdir()
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "trainer.py").write_text("")
    (pkg / "cli.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    found = imports(module_names())
    assert [i.where() for i in upward(found)] == ["ember.layers:5 -> ember.cli"]


if __name__ == "__main__":
    found = imports(module_names())
    ups = upward(found)
    for imp in ups:
        print(
            f"upward  {imp.where()}  ({PART_NAMES[rank(imp.source)]} -> "
            f"{PART_NAMES[rank(imp.target)]}{', in a function' if imp.lazy else ''})"
        )
    for group in cycles(found):
        print("cycle   " + ", ".join(_cycle_edges(group, found)))
    print(f"{len(ups)} upward imports, {len(cycles(found))} cycles among {len(found)} imports")
