"""Only ``embstore.store`` creates, replaces or commits arrays (issue 17, item 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import embstore

PACKAGE = Path(embstore.__file__).parent
#: Calls that create, replace, write into or commit arrays of a store.
WRITES = {"create_array", "create_group", "store_dask", "commit", "merge", "fork", "store"}


def _writes(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in WRITES:
                found.append(f"{ast.unparse(node.func)}() at line {node.lineno}")
        if isinstance(node, ast.Name) and node.id == "store_dask":
            found.append(f"store_dask at line {node.lineno}")
        if isinstance(node, ast.Delete):
            found += [f"del {ast.unparse(t)} at line {node.lineno}" for t in node.targets]
        if isinstance(node, ast.Attribute) and node.attr in ("group", "session"):
            if isinstance(node.value, ast.Name) and node.value.id == "tx":
                found.append(f"{ast.unparse(node)} at line {node.lineno}")
    return found


def test_no_module_outside_store_creates_replaces_or_commits_arrays():
    offenders = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        relative = file.relative_to(PACKAGE)
        if relative.parts[0] == "store":
            continue
        found = _writes(ast.parse(file.read_text(encoding="utf-8")))
        if found:
            offenders[str(relative)] = found
    assert offenders == {}


def test_the_walk_finds_what_normalize_did_before_the_move():
    before = """
def _write_variable(tx, name, values):
    for array in (name, f"{name}_mean"):
        if array in tx.group:
            del tx.group[array]
    target = tx.group.create_array(name, shape=values.shape)
    da.store(values, target, lock=False)
    tx.session.merge(store_dask(sources=[values], targets=[target]))
"""
    found = _writes(ast.parse(before))
    assert any("create_array" in f for f in found) and any(f.startswith("del") for f in found)
    assert any("merge" in f for f in found) and any("da.store" in f for f in found)
