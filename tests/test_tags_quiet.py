"""``embstore tags``, and what --quiet keeps: results (neighbors), one line (info), ids (log)."""

from typer.testing import CliRunner

import embstore
from cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_tags_library_and_command(store):
    assert embstore.tags(store) == []
    first = embstore.tag(store, "paper-v1")
    embstore.normalize_store(store)
    embstore.tag(store, "after-normalize")
    found = embstore.tags(store)
    assert [t.name for t in found] == ["after-normalize", "paper-v1"]
    assert found[1].version == first and found[1].rows == embstore.open(store).sizes["sample"]
    shown = run("tags", store)
    assert "paper-v1" in shown and first in shown
    assert run("tags", store, "-q").split() == ["after-normalize", "paper-v1"]
    assert '"name": "paper-v1"' in run("tags", store, "--json")


def test_quiet_keeps_results(store):
    path = embstore.open(store).path.values[0]
    table = run("neighbors", store, "-p", path, "-k", "2", "-q")
    assert path in table and "rank" in table
    info = run("info", store, "-q")
    assert "rows x" in info and "label" not in info
    ids = run("log", store, "-q").split()
    assert ids == [v.id for v in embstore.log(store)]
