"""The command line's help and its import cost: answering --help or a usage error loads no
array library."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from embstore.labels import LAYOUTS

HEAVY = ("xarray", "dask", "zarr", "torch", "numpy", "pandas", "matplotlib")
COMMANDS = ["ingest", "normalize", "info", "export", "validate", "inspect", "extract", "demo"]


def _loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; return the heavy modules it imported, and its rc."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parent)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    return {"heavy": json.loads(done.stdout.strip().splitlines()[-1]), "rc": done.returncode}


def test_import_embstore_is_light():
    assert _loaded_after("import embstore") == {"heavy": [], "rc": 0}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["ingest", "--help"], ["inspect", "--help"], ["ingest"], ["inspect", "--bad"]],
    ids=["help", "ingest-help", "inspect-help", "missing-argument", "unknown-option"],
)
def test_help_and_usage_errors_import_no_array_library(argv):
    code = (
        f"sys.argv = ['embstore', *{argv!r}]\n"
        "import cli\n"
        "try:\n    cli.app()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "sys.stdout = sys.__stdout__"
    )
    found = _loaded_after(code)
    assert found["heavy"] == []


def test_a_public_name_still_loads_on_first_use():
    found = _loaded_after("import embstore\nassert callable(embstore.open)")
    assert found["rc"] == 0 and "xarray" in found["heavy"]


@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_help_shows_no_bool_placeholder_and_names_arguments(command):
    result = CliRunner().invoke(cli.app, [command, "--help"])
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "{sources}" not in result.output
    usage = result.output.splitlines()[0]
    assert usage == usage.replace("{store}", "")  # arguments are named in capitals
    if command not in ("extract", "demo"):
        assert "STORE" in usage or "SOURCE" in usage


def test_ingest_help_lists_each_layouts_filename_pattern():
    text = "".join(CliRunner().invoke(cli.app, ["ingest", "--help"]).output.split())
    for name, layout in LAYOUTS.items():
        assert f"{name}={layout.template}" in text
    assert "--skip-bad" in text and "--no-skip-bad" not in text
