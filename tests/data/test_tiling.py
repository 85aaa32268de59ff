import numpy as np
import pytest

from segweak.data import tiling
from segweak.errors import SegweakError


@pytest.mark.parametrize(
    ("length", "patch", "stride", "expected"),
    [
        (128, 32, 32, [0, 32, 64, 96]),
        (100, 32, 32, [0, 32, 64, 68]),  # last window shifted to end at the edge
        (32, 32, 32, [0]),
        (100, 32, 16, [0, 16, 32, 48, 64, 68]),
        (10, 4, 1, list(range(7))),
    ],
)
def test_window_starts(length, patch, stride, expected):
    starts = tiling.window_starts(length, patch, stride)
    assert starts == expected
    assert starts[-1] + patch == length
    assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_windows_cover_every_pixel_with_real_pixels_only():
    shape = (70, 45)
    origins = tiling.windows(shape, 16, 16, "t")
    cover = np.zeros(shape, dtype=int)
    for r, c in origins:
        assert 0 <= r <= shape[0] - 16 and 0 <= c <= shape[1] - 16
        cover[r : r + 16, c : c + 16] += 1
    assert cover.min() >= 1
    assert len(origins) == tiling.count_windows(shape, 16, 16) == 5 * 3


def test_extract_matches_slices():
    arr = np.arange(20 * 30 * 2).reshape(20, 30, 2)
    origins = tiling.windows((20, 30), 8, 8)
    out = tiling.extract(arr, origins, 8)
    assert out.shape == (len(origins), 8, 8, 2)
    for k, (r, c) in enumerate(origins):
        np.testing.assert_array_equal(out[k], arr[r : r + 8, c : c + 8])


def test_patch_larger_than_tile_names_tile_and_suggests_smaller_patch():
    with pytest.raises(SegweakError, match=r"area7.*40x300.*64.*--patch.*40"):
        tiling.windows((40, 300), 64, 64, "area7")


@pytest.mark.parametrize(("patch", "stride"), [(32, 0), (32, 33), (0, 1), (-4, 2)])
def test_invalid_stride_or_patch(patch, stride):
    with pytest.raises(SegweakError, match="--(stride|patch)"):
        tiling.windows((100, 100), patch, stride)
