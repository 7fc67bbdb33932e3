"""Echo keys from ``extract`` (DICOM tree) and from the ``.pt`` shards line up."""

import pytest

from embstore.errors import BadInputError
from embstore.keys import echo_dicom_key, echo_key
from embstore.labels import MIMIC_ECHO

SHARD = "p10002221/s94106955/94106955_0001.mp4"


@pytest.mark.parametrize(
    "key",
    [
        "p10/p10002221/s94106955/94106955_0001.dcm",
        "files/p10/p10002221/s94106955/94106955_0001.dcm",
        SHARD,
        "p10002221/s94106955/94106955_0001",
    ],
    ids=["extract", "files-prefix", "shard", "no-suffix"],
)
def test_every_spelling_maps_to_the_shard_key(key):
    assert echo_key(key) == SHARD
    assert MIMIC_ECHO.parse(key) == MIMIC_ECHO.parse(SHARD)  # same labels either way


def test_round_trip_and_bad_keys():
    assert echo_key(echo_dicom_key(SHARD)) == SHARD
    assert echo_dicom_key(SHARD) == "p10/" + SHARD.replace(".mp4", ".dcm")
    with pytest.raises(BadInputError, match="not a MIMIC-IV-Echo key"):
        echo_key("ball/00270001_12_month_level_avg.npy")
