import pytest

from embstore.errors import BadInputError
from embstore.labels import BABYVIEW, MIMIC_ECHO, get_layout


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "ball/00270001_12_month_level_avg.npy",
            {"category": "ball", "subject": "00270001", "age_mo": 12},
        ),
        (
            "a/b/S00560001_6_month_level_avg.npy",
            {"category": "b", "subject": "S00560001", "age_mo": 6},
        ),
    ],
    ids=["plain", "nested-root"],
)
def test_babyview_layout_keeps_leading_zeros(path, expected):
    assert BABYVIEW.parse(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "p10036337/s91664836/94106955_0001.mp4",
        "files/p10/p10036337/s91664836/94106955_0001.mp4",
        "/data/mimic/files/p10/p10036337/s91664836/94106955_0001.dcm",
    ],
    ids=["bare", "files-prefix", "absolute"],
)
def test_mimic_echo_layout(path):
    assert MIMIC_ECHO.parse(path) == {"subject": "p10036337", "study": "s91664836"}
    assert MIMIC_ECHO.canonical(path) == "p10036337/s91664836/94106955_0001"


@pytest.mark.parametrize(
    "path",
    [
        "ball/00270001_month_level_avg.npy",
        "00270001_12_month_level_avg.npy",
        "ball/x_twelve_month_level_avg.npy",
    ],
    ids=["no-age", "no-category", "age-not-int"],
)
def test_unparseable_path_names_the_path(path):
    with pytest.raises(BadInputError, match="does not match the 'babyview' layout") as info:
        BABYVIEW.parse(path)
    assert info.value.source == path


def test_pattern_groups_become_labels_and_age_is_int():
    layout = get_layout(pattern=r"(?P<site>[a-z]+)/(?P<subject>\d+)-(?P<age_mo>\d+)\.npy$")
    assert layout.parse_columns(["x/a/7-3.npy"]) == (
        {"site": ["a"], "subject": ["7"], "age_mo": [3]},
        {},
    )


@pytest.mark.parametrize(
    "pattern",
    [r"(?P<path>.*)", r"(?P<embedding>.*)", r"(?P<1x>.*)", r"(unclosed"],
    ids=["reserved-path", "reserved-embedding", "bad-name", "bad-regex"],
)
def test_bad_patterns_are_refused(pattern):
    with pytest.raises(BadInputError):
        get_layout(pattern=pattern)


def test_unknown_layout_lists_choices():
    with pytest.raises(BadInputError, match="babyview"):
        get_layout("nope")
