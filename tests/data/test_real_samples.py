"""Checks on real Vaihingen pixels (../shared/data/vaihingen_samples, never copied into the repo)."""

from pathlib import Path

import numpy as np
import pytest

from segweak.data.palette import DEFAULT_TOLERANCE, IGNORE_INDEX, Palette, vaihingen_palette
from segweak.data.raster import read_raster
from segweak.data.sources import FolderSource
from segweak.data.tiles import Tile
from segweak.errors import SegweakError

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "vaihingen_samples"
VANESSA = SAMPLES / "vaihingen_area1_vanessa"
MMSEG = SAMPLES / "vaihingen_mmseg_pseudo"

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"real samples not available at {SAMPLES}")


def _tile(name, tolerance, keep_clutter=False):
    img = VANESSA / "images" / name
    lab = VANESSA / "labels" / name
    h, w = read_raster(str(lab)).shape[:2]
    return Tile(
        id="area1",
        group="area1",
        shape=(h, w),
        image_path=str(img),
        label_path=str(lab),
        palette=vaihingen_palette(keep_clutter, tolerance=tolerance),
    )


def test_vanessa_rgba_irrg_to_three_bands():
    t = _tile("top_mosaic_09cm_area1_resized.tif", tolerance=127)
    img = t.read_image()
    assert img.shape == (642, 479, 3) and img.dtype == np.uint8
    raw = read_raster(t.image_path)
    assert raw.shape[2] == 4 and np.array_equal(img, raw[..., :3])


def test_vanessa_blends_need_explicit_tolerance():
    t = _tile("top_mosaic_09cm_area1_resized.tif", tolerance=DEFAULT_TOLERANCE)
    with pytest.raises(SegweakError) as exc:
        t.read()
    msg = str(exc.value)
    assert "top_mosaic_09cm_area1_resized.tif" in msg and "--tolerance" in msg and "pixel(s)" in msg


@pytest.mark.parametrize(
    "name", ["top_mosaic_09cm_area1_resized.tif", "top_mosaic_09cm_area1_resized_crop.tif"]
)
def test_vanessa_snapped_labels_give_five_classes_no_clutter(name):
    t = _tile(name, tolerance=127, keep_clutter=True)
    img, mask, stats = t.read_with_stats()
    present = set(np.unique(mask).tolist())
    assert 5 not in present  # no clutter in this area
    if name.endswith("resized.tif"):
        assert {0, 1, 2, 3, 4} <= present
        # about 10% of pixels are blends (see the samples' README)
        assert 0.05 < stats.n_snapped / stats.n_pixels < 0.15
        assert (mask == IGNORE_INDEX).mean() < 0.001


def test_mmseg_index_png_with_folder_source(tmp_path):
    pal = Palette.from_dict(
        {
            "mode": "index",
            "classes": [
                {"name": n, "value": i + 1}
                for i, n in enumerate(["impervious", "building", "low_vegetation", "tree", "car", "clutter"])
            ],
            "ignore": [0],
        }
    )
    src = FolderSource(MMSEG / "images", MMSEG / "labels", pal, band_order="IRRG")
    (tile,) = src.tiles()
    img, mask = tile.read()
    assert img.shape == (512, 512, 3) and mask.shape == (512, 512)
    present = set(np.unique(mask).tolist())
    assert present <= {0, 1, 2, 3, 4, IGNORE_INDEX} and {0, 1, 2, 3, 4} <= present
    assert (mask == IGNORE_INDEX).any()  # value 0 = eroded boundary
    # the same crop of area 1 read two ways: vegetation is bright in the first (NIR) band in both
    veg = (mask == 3) | (mask == 2)
    assert img[veg][:, 0].mean() > img[veg][:, 1].mean()
