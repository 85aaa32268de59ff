"""DSM channel: the documented float-metres -> uint8 mappings, and the Vaihingen DSM files."""

from __future__ import annotations

import numpy as np
import pytest

from segweak.data.dsm import DsmNormalisation
from segweak.data.raster import read_raster
from segweak.data.sources import VaihingenSource
from segweak.data.store import Store, prepare
from segweak.data.synthetic import synthesize
from segweak.errors import SegweakError


def _sloped_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 5 % slope at ~300 m with a 10.2 m high 12×12 px block: (dsm, block mask)."""
    yy, xx = np.mgrid[0:80, 0:100].astype(np.float32)
    ground = 300.0 + 0.05 * xx + 0.02 * yy  # metres; gsd 1 m
    block = np.zeros((80, 100), bool)
    block[30:42, 40:52] = True
    return ground + 10.2 * block, block


def test_ndsm_is_height_above_ground_on_a_slope():
    dsm, block = _sloped_scene()
    out = DsmNormalisation(method="ndsm", window_m=31).apply(dsm, gsd=1.0)
    assert out.dtype == np.uint8
    assert np.all(out[~block] == 0)  # the sloping ground is height 0 (planes survive the opening)
    # 10.2 m at 0.2 m per step is 51; beside an object on a slope the ground can be overestimated by up
    # to slope x object width (here 0.02 x 12 m = 0.24 m, about one step).
    assert np.all((out[block] >= 50) & (out[block] <= 51))


def test_ndsm_window_narrower_than_the_object_loses_it():
    dsm, block = _sloped_scene()
    out = DsmNormalisation(method="ndsm", window_m=5).apply(dsm, gsd=1.0)
    assert out[36, 46] <= 1  # a 12 m wide block is "ground" for a 5 m window: documented limit


def test_range_maps_absolute_elevation_and_clips():
    z = np.array([[290.0, 300.0, 325.5, 351.0, 400.0]], np.float32)
    out = DsmNormalisation(method="range", range_m=(300.0, 351.0)).apply(z, gsd=0.09)
    assert out.tolist() == [[0, 0, 128, 255, 255]]


def test_invalid_pixels_become_zero_and_do_not_disturb_the_ground():
    dsm, block = _sloped_scene()
    dsm[0, 0] = np.nan
    dsm[5, 5] = -9999.0
    out = DsmNormalisation(window_m=31).apply(dsm, gsd=1.0, nodata=-9999.0)
    assert out[0, 0] == 0 and out[5, 5] == 0
    assert np.all(out[block] >= 50) and out[~block].max() == 0
    assert (DsmNormalisation().apply(np.full((4, 4), np.nan), gsd=1.0) == 0).all()


def test_rules_are_validated_and_round_trip():
    with pytest.raises(SegweakError, match="--dsm-range"):
        DsmNormalisation(method="range")
    with pytest.raises(SegweakError, match="high must be above low"):
        DsmNormalisation(range_m=(5.0, 5.0))
    with pytest.raises(SegweakError, match="unknown method"):
        DsmNormalisation(method="slope")
    rule = DsmNormalisation(window_m=20)
    rec = rule.describe(0.09)
    assert rec["window_px"] == 223 and rec["metres_per_step"] == pytest.approx(0.2)
    assert DsmNormalisation.from_record(rec) == rule
    assert DsmNormalisation(method="range", range_m=(250, 300)).channel_name == "DSM"


@pytest.fixture(scope="module")
def vaihingen_dsm(tmp_path_factory):
    base = tmp_path_factory.mktemp("vdsm")
    return (
        synthesize(base / "f", n_tiles=2, height=64, width=64, seed=4, dsm=True),
        synthesize(base / "z", n_tiles=2, height=64, width=64, seed=4, dsm=True, zips=True),
    )


def test_synth_dsm_does_not_change_the_images(vaihingen_dsm, tmp_path):
    plain = synthesize(tmp_path / "plain", n_tiles=2, height=64, width=64, seed=4)
    name = "top/top_mosaic_09cm_area1.tif"
    assert np.array_equal(read_raster(str(plain / name)), read_raster(str(vaihingen_dsm[0] / name)))
    dsm = read_raster(str(vaihingen_dsm[0] / "dsm" / "dsm_09cm_matching_area1.tif"))
    assert dsm.dtype == np.float32 and dsm.shape == (64, 64, 1) and 240 < dsm.min() < dsm.max() < 280


def test_vaihingen_with_dsm_reads_four_channels(vaihingen_dsm, tmp_path):
    rule = DsmNormalisation(window_m=4.0)
    a = VaihingenSource(vaihingen_dsm[0], dsm=rule).tiles()
    b = VaihingenSource(vaihingen_dsm[1], dsm=rule).tiles()
    assert "!dsm/dsm_09cm_matching_area1.tif" in b[0].extra[0].path
    ia, _ = a[0].read()
    ib, _ = b[0].read()
    assert ia.shape == (64, 64, 4) and np.array_equal(ia, ib)
    src = VaihingenSource(vaihingen_dsm[0], dsm=rule)
    store = Store(prepare(src, tmp_path / "s", patch=32, progress=False))
    assert store.meta["band_order"] == "IRRG+nDSM" and store.meta["channels"] == 4
    assert [b["name"] for b in store.meta["bands"]] == ["IR", "R", "G", "nDSM"]
    assert store.meta["bands"][3]["normalisation"]["window_m"] == 4.0
    assert store.meta["source"]["describe"]["dsm"]["method"] == "ndsm"


def test_vaihingen_dsm_missing_or_wrong_size(vaihingen_dsm, tmp_path):
    import shutil

    root = tmp_path / "v"
    shutil.copytree(vaihingen_dsm[0], root)
    (root / "dsm" / "dsm_09cm_matching_area2.tif").unlink()
    with pytest.raises(
        SegweakError, match=r"1 area\(s\) .* have no dsm_09cm_matching_area\{N\}.tif \(area2\)"
    ):
        VaihingenSource(root, dsm=DsmNormalisation()).tiles()
    assert len(VaihingenSource(root).tiles()) == 2  # without the DSM option nothing is needed
    small = synthesize(tmp_path / "small", n_tiles=2, height=32, width=32, seed=4, dsm=True)
    shutil.copy(small / "dsm" / "dsm_09cm_matching_area1.tif", root / "dsm" / "dsm_09cm_matching_area2.tif")
    with pytest.raises(SegweakError, match="DSM .*area2.tif is 32×32 px but image .* is 64×64 px"):
        VaihingenSource(root, dsm=DsmNormalisation()).tiles()
