"""Every format of the registry runs the shared round-trip tests (one module per format)."""

from pathlib import Path

import pytest

from embstore.formats import NAMES

HERE = Path(__file__).parent


@pytest.mark.parametrize("name", NAMES)
def test_every_format_has_a_module_running_the_shared_round_trip(name):
    module = HERE / f"test_{name.replace('-', '_')}.py"
    assert module.exists(), f"{module.name}: missing; subclass FormatRoundTripTests for {name!r}"
    text = module.read_text()
    assert "(FormatRoundTripTests):" in text and f'format = "{name}"' in text
