"""The row-key policy: what a row's ``path`` may be. Pure functions, no I/O.

A row key is a relative POSIX path: ``/``-separated components, none of them empty, ``.`` or
``..``; no leading ``/``; no NUL or other control character; valid UTF-8 (a ``str`` holding
surrogate escapes, as ``os.fsdecode`` makes of a non-UTF-8 file name, is not); each component
at most 255 bytes in UTF-8 (the usual file-name limit). Keys that pass can be exported as a
file tree on any POSIX file system, whatever the folder they are exported into.

The policy is enforced where rows come in (ingest from every format, extraction); exports
check their own targets independently, because a store made elsewhere can hold anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BadInputError

#: Longest component, in UTF-8 bytes (``NAME_MAX`` on Linux, macOS and Windows file systems).
MAX_COMPONENT_BYTES = 255
#: C0 controls (NUL included), DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot be a row key, or ``None`` when it can.

    Examples
    --------
    >>> key_problem("p10/s1/a.mp4") is None
    True
    >>> key_problem("a/../b")
    "component '..' is not allowed"
    """
    if not isinstance(key, str):
        return f"is a {type(key).__name__}, not a string"
    if not key:
        return "is empty"
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    control = _CONTROL.search(key)
    if control:
        return f"holds the control character {control.group()!r}"
    if key.startswith("/"):
        return "is absolute (starts with '/')"
    for part, raw in zip(key.split("/"), encoded.split(b"/"), strict=True):
        if part in ("", ".", ".."):
            return "has an empty component" if not part else f"component {part!r} is not allowed"
        if len(raw) > MAX_COMPONENT_BYTES:
            return f"has a component of {len(raw)} bytes (at most {MAX_COMPONENT_BYTES})"
    return None


def describe(key: object, limit: int = 80) -> str:
    """A one-line ``repr`` of a key for messages: controls escaped, long keys shortened."""
    text = repr(key)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


@dataclass(frozen=True)
class KeyViolation:
    """A row key that breaks the policy: its position in the batch, the key and why."""

    index: int
    key: object
    problem: str

    def __str__(self) -> str:
        return f"row key {describe(self.key)} {self.problem}"


def check_keys(
    keys: Sequence[object], *, source: str, skip_bad: bool = False
) -> list[KeyViolation]:
    """Check ``keys`` against the policy; return the violations to skip.

    Parameters
    ----------
    keys
        Row keys, as read from ``source``.
    source
        The file (or folder) the keys come from, named in the error.
    skip_bad
        ``False`` (default): raise :class:`BadInputError` on the first violation, naming
        ``source`` and the key. ``True``: return every violation; the caller drops those rows
        and lists them.
    """
    found = []
    for i, key in enumerate(keys):
        problem = key_problem(key)
        if problem is None:
            continue
        violation = KeyViolation(i, key, problem)
        if not skip_bad:
            raise BadInputError(source, str(violation))
        found.append(violation)
    return found


#: A MIMIC-IV-Echo file key in any of its spellings: ``[files/][pNN/]p<subject>/s<study>/<name>``.
_ECHO_KEY = re.compile(r"^(?:.*/)?(?P<key>p(?P<subject>\d+)/s\d+/[^/]+?)(?:\.[A-Za-z0-9]+)?$")


def echo_key(key: str, *, suffix: str = ".mp4") -> str:
    """The ``.pt`` shards' key of a MIMIC-IV-Echo row: ``p<subject>/s<study>/<name><suffix>``.

    ``extract`` keys DICOM rows by their path under the tree it walked
    (``p10/p10002221/s94106955/94106955_0001.dcm`` or with ``files/`` in front) while the
    published ``.pt`` shards key the same clips ``p10002221/s94106955/94106955_0001.mp4``.
    This maps any of those spellings to the shards' one, so two stores of the same studies
    line up (``store_a.path.values`` mapped and compared, or a relabel/join by this key).

    Examples
    --------
    >>> echo_key("files/p10/p10002221/s94106955/94106955_0001.dcm")
    'p10002221/s94106955/94106955_0001.mp4'
    >>> echo_key("p10002221/s94106955/94106955_0001.mp4")
    'p10002221/s94106955/94106955_0001.mp4'
    """
    match = _ECHO_KEY.match(key)
    if match is None:
        raise BadInputError(key, "not a MIMIC-IV-Echo key (p<subject>/s<study>/<file>)")
    return match.group("key") + suffix


def echo_dicom_key(key: str) -> str:
    """The inverse of :func:`echo_key`: the key ``extract`` gives a DICOM of the MIMIC tree,
    ``p<NN>/p<subject>/s<study>/<name>.dcm`` (``NN``: the subject id's first two digits).

    >>> echo_dicom_key("p10002221/s94106955/94106955_0001.mp4")
    'p10/p10002221/s94106955/94106955_0001.dcm'
    """
    match = _ECHO_KEY.match(key)
    if match is None:
        raise BadInputError(key, "not a MIMIC-IV-Echo key (p<subject>/s<study>/<file>)")
    return f"p{match.group('subject')[:2]}/{match.group('key')}.dcm"
