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
        where = f"line {getattr(node, 'lineno', '?')}"
        match node:
            case ast.Call(func=ast.Attribute(attr=attr) as func) if attr in WRITES:
                found.append(f"{ast.unparse(func)}() at {where}")
            case ast.Name(id="store_dask"):
                found.append(f"store_dask at {where}")
            case ast.Delete(targets=targets):
                found += [f"del {ast.unparse(t)} at {where}" for t in targets]
            case ast.Attribute(value=ast.Name(id="tx"), attr="group" | "session"):
                found.append(f"{ast.unparse(node)} at {where}")
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
