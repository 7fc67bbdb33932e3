"""Labels from paths: the layouts that turn a relative path into ``subject``, ``age_mo``, ….

Everything here is pure (no I/O) so it can be unit-tested on strings, but for
:func:`read_categories`, which reads a categories file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInputError

#: Value stored in ``age_mo`` when the source gives no age (the coordinate stays integer).
MISSING_AGE = -1
#: Value stored in a string label when the source gives none.
MISSING_STR = ""


def missing_value(name: str) -> str | int:
    """The value label ``name`` holds where it is unknown (the one definition of "missing")."""
    return MISSING_AGE if name in INTEGER_LABELS else MISSING_STR


#: Names a label column cannot take: they are the store's own variables and dimensions.
RESERVED_NAMES = frozenset({"sample", "feature", "embedding", "path", "nonfinite"})
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

#: Integer labels: ages, and the row counts `embstore.aggregate` gives each group.
INTEGER_LABELS = frozenset({"age_mo", "count", "count_nonfinite"})


@dataclass(frozen=True)
class Layout:
    """How labels are read from a relative path.

    Parameters
    ----------
    name
        Short name recorded in the store's provenance.
    pattern
        Regular expression searched in the POSIX relative path; its named groups become labels
        (``age_mo`` is parsed as an integer, every other group is a string).
    join_key
        Optional expression whose named group ``key`` gives the canonical key used to join a
        ``--labels`` CSV; defaults to the whole path.
    template
        The file names it reads, for people (shown by ``embstore ingest --help``).
    """

    name: str
    pattern: str
    join_key: str | None = None
    template: str = ""

    def __post_init__(self) -> None:
        regex = _compile(self.pattern)
        for group in regex.groupindex:
            check_label_name(group)

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.pattern)  # re caches compiled patterns

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.regex.groupindex)

    def parse(self, path: str) -> dict[str, str | int]:
        """Return the labels of ``path``; raise :class:`BadInputError` if it does not match."""
        columns, failed = self.parse_columns([path])
        if failed:
            raise BadInputError(path, failed[0])
        return {name: values[0] for name, values in columns.items()}

    def parse_columns(
        self, paths: Sequence[str]
    ) -> tuple[dict[str, list[str | int]], dict[int, str]]:
        """Parse many paths at once: one list per label, plus the problem of each failed row.

        Failed rows hold a missing value in every column (the caller drops them).
        """
        regex = self.regex
        matches = [regex.search(p) for p in paths]
        failed = {
            i: f"path does not match the {self.name!r} layout ({self.pattern})"
            for i, m in enumerate(matches)
            if m is None
        }
        columns: dict[str, list[str | int]] = {}
        for name in regex.groupindex:
            values = [None if m is None else m.group(name) for m in matches]
            parse = int if name in INTEGER_LABELS else str
            columns[name] = [missing_value(name) if v is None else parse(v) for v in values]
        return columns, failed

    def canonical(self, path: str) -> str:
        """The key used to match ``path`` against a labels CSV."""
        if self.join_key is None:
            return path
        match = _compile(self.join_key).search(path)
        return path if match is None else match.group("key")


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        msg = f"invalid regular expression {pattern!r}: {exc}"
        raise BadInputError("pattern", msg) from exc


def check_name(name: str, *, what: str = "a label name", taken: Collection[str] = ()) -> str:
    """Return ``name`` if it can name a label or a variable, else raise :class:`BadInputError`.

    The one rule for names in a store: letters, digits and ``_``, starting with a letter; not
    one of :data:`RESERVED_NAMES` (the store's own variables and dimensions) nor of ``taken``
    (names already used for something else).
    """
    if not _NAME_RE.match(name) or name in RESERVED_NAMES or name in taken:
        shown = name if len(name) <= 60 else name[:57] + "..."
        msg = (
            f"{shown!r} cannot be {what} (letters, digits and _, starting with a letter; "
            f"not one of {sorted(RESERVED_NAMES | set(taken))})"
        )
        raise BadInputError("labels" if what == "a label name" else "name", msg)
    return name


def check_label_name(name: str) -> str:
    """Return ``name`` if it can be a label column, else raise :class:`BadInputError`."""
    return check_name(name)


#: ``<category>/<subject>_<age_mo>_month_level_avg.npy`` (the age-month normalization notebook).
BABYVIEW = Layout(
    name="babyview",
    pattern=r"(?:^|/)(?P<category>[^/]+)/(?P<subject>[^/_]+)_(?P<age_mo>\d+)_month_level_avg\.npy$",
    template="<category>/<subject>_<age_mo>_month_level_avg.npy",
)

#: ``[files/pNN/]p<subject>/s<study>/<file>`` (MIMIC-IV-Echo DICOMs, MP4s and the ``.pt`` keys).
MIMIC_ECHO = Layout(
    name="mimic-echo",
    pattern=r"^(?:.*/)?(?P<subject>p\d+)/(?P<study>s\d+)/[^/]+$",
    join_key=r"(?P<key>p\d+/s\d+/[^/]+?)(?:\.[A-Za-z0-9]+)?$",
    template="[files/pNN/]p<subject>/s<study>/<file>",
)

LAYOUTS: Mapping[str, Layout] = {layout.name: layout for layout in (BABYVIEW, MIMIC_ECHO)}


def get_layout(layout: str | Layout | None = None, *, pattern: str | None = None) -> Layout | None:
    """Resolve a layout name or a ``pattern`` regex into a :class:`Layout` (or ``None``)."""
    if layout is not None and pattern is not None:
        raise BadInputError("pattern", "give either a layout or a pattern, not both")
    if pattern is not None:
        return Layout(name="pattern", pattern=pattern)
    if layout is None or isinstance(layout, Layout):
        return layout
    try:
        return LAYOUTS[layout]
    except KeyError:
        msg = f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}"
        raise BadInputError("layout", msg) from None


#: Id labels that MIMIC writes two ways: the prefix of the folder names (``p13072354``,
#: ``s50000014``) and the bare number of its CSVs (``subject_id`` 13072354).
ID_PREFIXES: Mapping[str, str] = {"subject": "p", "subject_id": "p", "study": "s", "study_id": "s"}


def id_spellings(name: str, value: object) -> list[object]:
    """Every spelling of ``value`` that selecting rows by the label ``name`` matches.

    Layouts label MIMIC-IV-Echo rows with the folder names (``subject="p13072354"``,
    ``study="s50000014"``), while MIMIC's CSVs and users write the bare number
    (``13072354``). Selecting rows (``ds.emb.rows``, ``neighbors(where=...)``,
    ``export(where=...)``) therefore matches a subject or study id in both spellings; any
    other label or value matches as given.

    >>> id_spellings("subject", "13072354"), id_spellings("subject", 13072354)
    (['13072354', 'p13072354'], ['13072354', 'p13072354'])
    >>> id_spellings("study", "s50000014"), id_spellings("category", "ball")
    (['s50000014', '50000014'], ['ball'])
    """
    prefix = ID_PREFIXES.get(name)
    if prefix is None or isinstance(value, bool) or not isinstance(value, str | int):
        return [value]
    text = str(value)
    digits = text[len(prefix) :] if text.startswith(prefix) else text
    if not digits.isdigit() or not digits.isascii():
        return [value]
    other = digits if text.startswith(prefix) else prefix + digits
    return [text, other]


def parse_categories(text: str) -> list[str]:
    """Categories from a categories file's text: one per line; blanks and ``#`` comments skipped.

    >>> parse_categories("ball\\n# toys\\n\\ncup  # a comment\\n")
    ['ball', 'cup']
    """
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line))


def read_categories(categories: str | os.PathLike[str] | Iterable[str]) -> list[str]:
    """An allow-list of categories: a file (see :func:`parse_categories`) or the names."""
    if isinstance(categories, str | os.PathLike):
        try:
            text = Path(categories).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInputError(str(categories), f"unreadable categories file ({exc})") from exc
        names = parse_categories(text)
        if not names:
            raise BadInputError(str(categories), "the categories file lists no category")
        return names
    return list(dict.fromkeys(str(c) for c in categories))
