"""The ``embstore`` command line, split by what the commands do; ``cli.py`` is its entry point.

Importing this package registers every command on ``app.app`` in the order ``--help`` lists them.
"""

from embstore._cli import app, data, demo, extract, history, look

#: The order ``embstore --help`` lists the commands in (registration order across modules).
COMMANDS = [
    "ingest",
    "normalize",
    "aggregate",
    "info",
    "export",
    "validate",
    "inspect",
    "label",
    "neighbors",
    "convert-dicom",
    "extract",
    "extract-images",
    "log",
    "tag",
    "tags",
    "index",
    "restore",
    "recover",
    "gc",
    "upgrade",
    "demo",
]
app.app.registered_commands.sort(key=lambda command: COMMANDS.index(command.name or ""))

__all__ = ["COMMANDS", "app", "data", "demo", "extract", "history", "look"]
