"""The ``pt`` format (``{path: tensor}`` written by ``torch.save``): the shared round trip, and
the dict a user loads."""

from pathlib import Path

import numpy as np
import torch

import embstore
from embstore.testing.roundtrip import FormatRoundTripTests


class TestPtRoundTrip(FormatRoundTripTests):
    format = "pt"
    keeps_any_key = True

    def exported_keys(self, out: Path) -> list[str]:
        return list(torch.load(out, weights_only=True))


def test_pt_export_is_a_path_to_tensor_dict(pt_file, tmp_path):
    file, data = pt_file
    embstore.ingest([file], store=tmp_path / "s.zarr", layout="mimic-echo")
    embstore.export(tmp_path / "s.zarr", tmp_path / "out.pt", format="pt")
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    assert sorted(loaded) == sorted(data)
    for key, vector in data.items():
        np.testing.assert_array_equal(loaded[key].numpy(), vector)
