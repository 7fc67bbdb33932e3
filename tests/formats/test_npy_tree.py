"""The ``npy-tree`` format (one ``.npy`` file per row at the row's path): the shared round trip;
the hostile keys it refuses are in tests/test_hostile_export.py."""

from pathlib import Path

from embstore.testing.roundtrip import FormatRoundTripTests, files_under


class TestNpyTreeRoundTrip(FormatRoundTripTests):
    format = "npy-tree"
    keeps_any_key = False  # keys become file paths: "..", "/", NUL and clashes are refused

    def exported_keys(self, out: Path) -> list[str]:
        return files_under(out)
