import shutil

import av
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from embstore.errors import BadInputError
from embstore.extraction.convert import convert_dicom
from embstore.extraction.decode import SingleFrameError, frame_rate, is_dicom, read_dicom_frames
from embstore.testing import make_dicom

PHOTOMETRIC = ["RGB", "YBR_FULL", "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"]


@pytest.mark.parametrize("photometric", PHOTOMETRIC, ids=PHOTOMETRIC)
def test_synthetic_multiframe_dicoms_decode_to_rgb(tmp_path, photometric):
    expected = make_dicom(tmp_path / "x.dcm", photometric=photometric, frames=5)
    frames, fps, labels = read_dicom_frames(tmp_path / "x.dcm")
    assert frames.dtype == np.uint8 and frames.shape == (5, 40, 48, 3)
    np.testing.assert_array_equal(frames, expected)
    assert fps == pytest.approx(25.0) and labels == {}


def test_real_jpeg_baseline_ybr422_cine_from_pydicom_data():
    path = get_testdata_file(
        "color3d_jpeg_baseline.dcm"
    )  # 120-frame ultrasound, YBR_FULL_422, JPEG
    frames, fps, _ = read_dicom_frames(path)
    assert frames.shape == (120, 480, 640, 3) and fps == pytest.approx(1000 / 33.333, rel=1e-3)
    # converted once (pydicom already returns RGB): a grey-ish image keeps R ~ G ~ B, a double
    # conversion would push green far away from red and blue
    assert abs(float(frames[..., 1].mean()) - float(frames[..., 0].mean())) < 20


def test_pydicom_example_ybr_color():
    frames, _, _ = read_dicom_frames(get_testdata_file("examples_ybr_color.dcm"))
    assert frames.shape == (30, 240, 320, 3)


@pytest.mark.parametrize("name", ["CT_small.dcm", "examples_palette.dcm"], ids=["ct", "palette"])
def test_single_frame_stills_are_refused_as_stills(name):
    with pytest.raises(SingleFrameError):
        read_dicom_frames(get_testdata_file(name))


def test_dicom_without_suffix_is_found_by_its_preamble(tmp_path):
    make_dicom(tmp_path / "noext")
    (tmp_path / "notes.txt").write_text("x" * 200)
    assert is_dicom(tmp_path / "noext") and not is_dicom(tmp_path / "notes.txt")


def test_frame_rate_fallbacks():
    class Header(dict):
        pass

    assert frame_rate(Header(FrameTime="20")) == 50
    assert frame_rate(Header(RecommendedDisplayFrameRate="24")) == 24
    assert frame_rate(Header(CineRate="15")) == 15
    assert frame_rate(Header()) == 30


def test_convert_dicom_writes_mp4s_that_decode_back(tmp_path):
    src = tmp_path / "in" / "p10" / "p10000001" / "s1"
    src.mkdir(parents=True)
    make_dicom(src / "cine.dcm", frames=12, frame_time_ms=40.0)
    make_dicom(
        src / "odd", frames=7, rows=41, columns=45, frame_time_ms=None
    )  # no suffix, no FrameTime
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "still.dcm")
    (src / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    report = convert_dicom(tmp_path / "in", tmp_path / "out", target_size=64)
    assert sorted(report.converted) == ["p10/p10000001/s1/cine.dcm", "p10/p10000001/s1/odd"]
    assert report.stills == ["p10/p10000001/s1/still.dcm"]
    assert [f.endswith("broken.dcm") for f, _ in report.failed] == [True]
    for name, frames, fps in (("cine.mp4", 12, 25), ("odd.mp4", 7, 30)):
        with av.open(str(tmp_path / "out" / "p10" / "p10000001" / "s1" / name)) as container:
            stream = container.streams.video[0]
            decoded = list(container.decode(stream))
            assert len(decoded) == frames and (decoded[0].width, decoded[0].height) == (64, 64)
            assert float(stream.average_rate) == pytest.approx(fps)
    fixed = convert_dicom(tmp_path / "in", tmp_path / "out", fps=10, limit=1)
    assert len(fixed.converted) == 1


def test_convert_rejects_odd_target_size(tmp_path):
    with pytest.raises(BadInputError, match="even"):
        convert_dicom(tmp_path, tmp_path / "o", target_size=255)


def test_jpeg_ybr_frames_decoded_by_libjpeg_equal_pydicoms_conversion():
    """The fast path (libjpeg's own YCbCr -> RGB) gives pydicom's pixels on a real echo cine."""
    from pydicom.pixels import iter_pixels

    path = get_testdata_file("color3d_jpeg_baseline.dcm")
    wanted = [40, 0, 7, 7, 119]
    frames, _, _ = read_dicom_frames(path, select=lambda n: np.array(wanted))
    unique = sorted(set(wanted))
    by_pydicom = dict(zip(unique, iter_pixels(path, indices=unique), strict=True))
    np.testing.assert_array_equal(frames, np.stack([by_pydicom[i] for i in wanted]))
