"""V-JEPA2 frozen-evaluation preprocessing, pinned to values checked beside the upstream code
(facebookresearch/vjepa2 ``loadvideo_decord`` and its eval transform, run on the same inputs)."""

import numpy as np
import pytest
import torch

from embstore.extraction.preprocess import ClipSpec, centered_indices, upstream_indices

PAD_28 = [28] * 9
INDICES = {
    # 30 frames < 16 x 4: linspace(0, 29, 7) capped at 28, padded with 28
    "short": (30, 1, [[0, 4, 9, 14, 19, 24, 28, *PAD_28]]),
    # exactly 16 x 4: still the short branch, linspace(0, 63, 15) capped at 62, one pad
    "exact": (64, 1, [[0, 4, 9, 13, 18, 22, 27, 31, 36, 40, 45, 49, 54, 58, 62, 62]]),
    # longer: linspace(0, 64, 16) from the start (not centred), capped at 63
    "long": (100, 1, [[0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63]]),
    # two clips, each in its own partition
    "long-2-clips": (
        300,
        2,
        [
            [0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63],
            [150, 154, 158, 162, 167, 171, 175, 179, 184, 188, 192, 196, 201, 205, 209, 213],
        ],
    ),
    # two overlapping clips, (100 - 64) // 1 = 36 frames apart
    "overlap-2-clips": (
        100,
        2,
        [
            [0, 4, 9, 13, 18, 22, 27, 31, 36, 40, 45, 49, 54, 58, 62, 62],
            [36, 40, 45, 49, 54, 58, 63, 67, 72, 76, 81, 85, 90, 94, 98, 98],
        ],
    ),
}


@pytest.mark.parametrize("case", INDICES, ids=list(INDICES))
def test_upstream_frame_indices(case):
    n_frames, clips, expected = INDICES[case]
    assert upstream_indices(n_frames, 16, 4, clips).tolist() == expected
    spec = ClipSpec(clips=clips)
    assert spec.indices(n_frames).tolist() == expected


def test_centered_rule_is_kept_by_name():
    assert centered_indices(30, 16, 4, 1).tolist() == [[0, 4, 8, 12, 16, 20, 24, 28, *[29] * 8]]
    assert (
        ClipSpec(sampling="centered").indices(30).tolist()
        == centered_indices(30, 16, 4, 1).tolist()
    )


RESIZED = {
    # 5 x 7 -> 9 x 12 (long side truncated), crop offsets round(0.5) = 0 and round(1.5) = 2
    "5x7": (
        (5, 7),
        0,
        [
            [14, 23, 32, 41, 49, 58, 67, 76],
            [49, 58, 67, 76, 84, 93, 102, 110],
            [108, 116, 125, 134, 142, 151, 160, 169],
            [166, 175, 183, 192, 168, 110, 105, 113],
            [224, 233, 242, 251, 185, 44, 21, 30],
            [140, 149, 158, 167, 142, 85, 79, 88],
            [85, 94, 103, 111, 120, 129, 137, 146],
            [143, 152, 161, 169, 178, 187, 196, 204],
        ],
    ),
    # 7 x 4 -> 15 x 9, crop offsets round(3.5) = 4 and round(0.5) = 0
    "7x4": (
        (7, 4),
        1,
        [
            [182, 186, 198, 202, 145, 89, 93, 105],
            [215, 219, 232, 230, 136, 42, 41, 53],
            [146, 150, 162, 168, 127, 86, 91, 103],
            [77, 81, 94, 106, 118, 129, 141, 154],
            [127, 132, 144, 156, 168, 180, 145, 104],
            [178, 182, 194, 206, 218, 230, 149, 55],
            [126, 130, 142, 154, 166, 178, 131, 74],
            [57, 61, 73, 85, 97, 109, 108, 105],
        ],
    ),
}


@pytest.mark.parametrize("case", RESIZED, ids=list(RESIZED))
def test_upstream_resize_of_odd_sizes(case):
    (height, width), channel, expected = RESIZED[case]
    step = 5 if case == "5x7" else 9
    frame = (np.arange(height * width * 3).reshape(1, height, width, 3) * step % 256).astype(
        np.uint8
    )
    spec = ClipSpec(num_frames=1, crop=8)
    crops = spec.resize_frames(frame)
    assert crops.dtype == np.uint8 and crops.shape == (1, 8, 8, 3)
    assert crops[0, :, :, channel].tolist() == expected
    x = spec.normalize(torch.from_numpy(crops))
    assert x.shape == (1, 1, 3, 8, 8) and x.dtype == torch.float32
    # float64 /255, then float32, then the ImageNet mean/std in float32 (upstream's arithmetic)
    value = np.float32(expected[0][0] / 255.0) - np.float32(0.485 if channel == 0 else 0.456)
    value /= np.float32(0.229 if channel == 0 else 0.224)
    assert x[0, 0, channel, 0, 0].item() == value


def test_bad_rule_names_are_refused():
    from embstore.errors import BadInputError

    with pytest.raises(BadInputError, match="sampling"):
        ClipSpec(sampling="random")
