"""The one exception hierarchy of embstore.

Every error a user can cause (bad input, a wrong store, a typo in a subject id) is an
:class:`EmbstoreError`, so the CLI can print it as one line and exit non-zero. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


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


class SchemaError(StoreError):
    """The store does not conform to its schema."""


class DuplicatePathError(EmbstoreError):
    """A row's ``path`` is already in the store and duplicates were asked to be rejected."""
