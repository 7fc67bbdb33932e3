"""The ``embstore`` command line: each command parses its arguments and calls one library function.

Errors a user or the environment can cause (bad input, a missing file, a full disk, a denied
permission) print as one line (``error: <file>: <problem>``) with exit code 1; ``--debug``
shows their traceback instead. ``--quiet`` silences progress bars and summaries. Only typer,
rich and the light ``embstore.errors`` / ``embstore.labels`` / ``embstore.formats`` registry are
imported here, so ``--help`` and argument errors answer at once; array libraries load when a
command runs (``embstore`` itself is lazy). The commands live in ``embstore/_cli/``.
"""

import sys

from embstore._cli.app import _sigterm_interrupts, app, one_line  # importing _cli registers all
from embstore._cli.extract import Family, parse_devices, parse_shard

__all__ = [
    "Family",
    "_sigterm_interrupts",
    "app",
    "main",
    "one_line",
    "parse_devices",
    "parse_shard",
]


def main() -> None:
    """Entry point of the ``embstore`` command."""
    sys.exit(app())


if __name__ == "__main__":
    main()
