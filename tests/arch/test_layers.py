"""The package's layers: imports point down only, and ``import coarsegrad`` stays light.

Each top-level unit of ``src/coarsegrad`` has a rank; a module may import (at module level
or inside a function) only from units of a lower rank or from its own unit. The ranks are
the architecture in docs/architecture.md, low to high.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "coarsegrad"

RANKS = {
    "errors": 0,
    "validate": 1,
    "quant": 2,
    "config": 3,
    "models": 4,
    "io": 5,
    "data": 6,
    "parallel": 7, "training": 7,
    "export": 8, "theory": 8,
    "bench": 9,
    "experiments": 10,
    "sweep": 11,
    "cli": 12,
    "__init__": 13,
}


def _unit(module: str) -> str:
    """'coarsegrad.io.checkpoint' -> 'io'; 'coarsegrad.errors' -> 'errors'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "coarsegrad":
                found += [(node.lineno, f"coarsegrad.{a.name}") for a in node.names]
            elif node.module.startswith("coarsegrad."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("coarsegrad.")]
    return found


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        here = _module_name(path)
        unit = "__init__" if here in ("coarsegrad", "coarsegrad.__init__") else _unit(here)
        if unit not in RANKS:
            problems.append(f"{path.relative_to(SRC)}: unit {unit!r} has no rank")
            continue
        for line, target in _imports(path):
            other = _unit(target)
            if other == unit:
                continue
            if other not in RANKS or RANKS[other] >= RANKS[unit]:
                problems.append(f"{path.relative_to(SRC)}:{line} imports {target} (rank {RANKS.get(other)} "
                                f">= {unit} rank {RANKS[unit]})")
    return problems


def test_no_upward_imports():
    assert upward_imports() == []


def test_top_level_is_folders_and_a_few_modules():
    modules = sorted(p.name for p in SRC.glob("*.py"))
    assert len(modules) <= 6, modules


@pytest.mark.parametrize("banned", ["coarsegrad.cli", "coarsegrad.training.run", "coarsegrad.experiments",
                                    "coarsegrad.sweep", "coarsegrad.bench"])
def test_import_coarsegrad_loads_no_orchestration(banned):
    code = ("import sys, coarsegrad; "
            f"print(sorted(m for m in sys.modules if m == {banned!r} or m.startswith({banned!r} + '.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
