"""The one exception hierarchy of embstore.

Every error a user can cause (bad input, a wrong store, a typo in a subject id) is an
:class:`EmbstoreError`, so the CLI can print it as one line and exit non-zero. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


class EmbstoreError(Exception):
    """Base class of every error a user can cause."""


class BadInputError(EmbstoreError):
    """A source file (or one of its rows) cannot be ingested; the message names the file."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # survives a trip between processes
        return (type(self), (self.source, self.problem))


class StoreError(EmbstoreError):
    """The store is missing, is not an embstore store, or its state forbids the operation."""


class DamagedStoreError(StoreError):
    """An object of the store (ref, snapshot, manifest, chunk) is lost, garbled or replaced.

    Nothing is written to a store in this state; ``embstore validate --deep`` names the
    damaged object and the intact versions, ``embstore restore`` goes back to one.
    """


class SchemaError(StoreError):
    """The store does not conform to its schema."""


class StaleVariableError(EmbstoreError):
    """A derived variable's inputs changed since it was computed, and freshness matters."""


class DuplicatePathError(EmbstoreError):
    """A row's ``path`` is already in the store and duplicates were asked to be rejected."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a library's exception text, for a one-line message about bad input:
    terminal escapes and control characters dropped, at most ``limit`` characters."""
    text = _ANSI.sub("", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = "".join(c for c in line if c.isprintable())
    return line if len(line) <= limit else line[: limit - 3] + "..."
