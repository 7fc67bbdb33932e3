"""embstore.quality has no import loop: each module imports only the layers below it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import embstore.quality

LAYERS = ["stats", "plots", "report", "inspect"]  # each may import only those before it
PACKAGE = Path(embstore.quality.__file__).parent


def _quality_imports(module: str) -> set[str]:
    """Sibling modules that ``module`` imports, at the top or inside functions."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
    return found & set(LAYERS)


@pytest.mark.parametrize("module", LAYERS, ids=LAYERS)
def test_each_layer_imports_only_the_ones_below(module):
    below = set(LAYERS[: LAYERS.index(module)])
    assert _quality_imports(module) <= below


def test_statistics_load_no_plotting_library():
    probe = (
        "import sys, embstore.quality.stats\n"
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'embstore.quality.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(PACKAGE.parent.parent)},
        check=True,
    ).stdout
    assert out.strip() == "['embstore.quality.stats']"
