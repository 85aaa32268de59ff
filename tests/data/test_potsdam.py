"""ISPRS Potsdam reader on generated data in the official layout (folders and zips)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from segweak.data.dsm import DsmNormalisation
from segweak.data.potsdam import PotsdamSource
from segweak.data.raster import read_raster
from segweak.data.store import Store, prepare
from segweak.data.synthetic import synthesize_potsdam
from segweak.errors import SegweakError


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    base = tmp_path_factory.mktemp("potsdam")
    folders = synthesize_potsdam(base / "folders", n_tiles=2, height=48, width=64, seed=2)
    zips = synthesize_potsdam(base / "zips", n_tiles=2, height=48, width=64, seed=2, zips=True)
    return folders, zips


def test_layout_is_the_release(release):
    folders, zips = release
    assert (folders / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif").is_file()
    assert (folders / "5_Labels_all_noBoundary" / "top_potsdam_2_11_label_noBoundary.tif").is_file()
    assert (folders / "1_DSM" / "dsm_potsdam_02_10.tif").is_file()
    assert sorted(p.name for p in zips.glob("*.zip")) == [
        "1_DSM.zip",
        "2_Ortho_RGB.zip",
        "3_Ortho_IRRG.zip",
        "4_Ortho_RGBIR.zip",
        "5_Labels_all.zip",
        "5_Labels_all_noBoundary.zip",
    ]
    with zipfile.ZipFile(zips / "4_Ortho_RGBIR.zip") as zf:
        assert zf.namelist() == [
            "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif",
            "4_Ortho_RGBIR/top_potsdam_2_11_RGBIR.tif",
        ]
    rgb = read_raster(str(folders / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif"))
    irrg = read_raster(str(folders / "3_Ortho_IRRG" / "top_potsdam_2_10_IRRG.tif"))
    rgbir = read_raster(str(folders / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif"))
    assert rgbir.shape == (48, 64, 4)
    assert np.array_equal(rgbir[..., :3], rgb) and np.array_equal(rgbir[..., 3], irrg[..., 0])
    assert np.array_equal(irrg[..., 1:], rgb[..., :2])


@pytest.mark.parametrize("which", [0, 1])
def test_rgbir_tiles_read_four_bands(release, which):
    src = PotsdamSource(release[which])
    tiles = src.tiles()
    assert [t.id for t in tiles] == ["potsdam_2_10", "potsdam_2_11"]
    image, mask = tiles[0].read()
    assert image.shape == (48, 64, 4) and image.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2, 3, 4, 255}
    assert tiles[0].georef["transform"][0] == pytest.approx(0.05)
    assert src.band_order == "RGBIR"
    assert [b["name"] for b in src.describe()["bands"]] == ["R", "G", "B", "IR"]


def test_zips_equal_folders(release):
    a, b = (PotsdamSource(r, imagery="IRRG", eroded=True).tiles() for r in release)
    assert b[0].image_path.startswith("zip://")
    for ta, tb in zip(a, b, strict=True):
        ia, ma = ta.read()
        ib, mb = tb.read()
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
        assert (ma == 255).any()  # eroded boundaries are ignored


def test_imagery_choice_and_missing_product(release, tmp_path):
    rgb = PotsdamSource(release[0], imagery="rgb").tiles()[0].read_image()
    assert rgb.shape[2] == 3
    with pytest.raises(SegweakError, match="not a product"):
        PotsdamSource(release[0], imagery="CIR")
    only_rgb = tmp_path / "p"
    only_rgb.mkdir()
    (only_rgb / "2_Ortho_RGB.zip").write_bytes((release[1] / "2_Ortho_RGB.zip").read_bytes())
    with pytest.raises(SegweakError, match=r"RGBIR.tif images found .*found RGB tiles instead.*--imagery"):
        PotsdamSource(only_rgb).tiles()
    (only_rgb / "5_Labels_all.zip").write_bytes((release[1] / "5_Labels_all.zip").read_bytes())
    assert len(PotsdamSource(only_rgb, imagery="RGB").tiles()) == 2
    with pytest.raises(SegweakError, match="no Potsdam tile .* has a _label_noBoundary"):
        PotsdamSource(only_rgb, imagery="RGB", eroded=True).tiles()
    with pytest.raises(SegweakError, match="1_DSM.zip"):
        PotsdamSource(only_rgb, imagery="RGB", dsm=DsmNormalisation()).tiles()


def test_unextracted_outer_zip_is_explained(release, tmp_path):
    outer = tmp_path / "Potsdam.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        for p in release[1].glob("*.zip"):
            zf.write(p, f"Potsdam/{p.name}")
    with pytest.raises(
        SegweakError, match="Potsdam.zip hold.* further zips: extract that outer archive once"
    ):
        PotsdamSource(tmp_path).tiles()


def test_prepare_rgbir_with_dsm_records_each_channel(release, tmp_path):
    src = PotsdamSource(release[1], dsm=DsmNormalisation(window_m=2.0))
    store = Store(prepare(src, tmp_path / "s", patch=32, progress=False))
    assert store.meta["channels"] == 5 and store.images.shape[-1] == 5
    assert store.meta["band_order"] == "RGBIR+nDSM"
    bands = store.meta["bands"]
    assert [b["name"] for b in bands] == ["R", "G", "B", "IR", "nDSM"]
    assert bands[4]["normalisation"]["method"] == "ndsm" and bands[4]["normalisation"]["window_px"] == 41
    assert "1_DSM/dsm_potsdam" in bands[4]["source"]
    rec = store.meta["tiles"][0]
    assert rec["extra_channel_paths"]["nDSM"].endswith("1_DSM.zip!dsm_potsdam_02_10.tif")
    assert len(store.meta["image_stats"]["mean"]) == 5
    json.dumps(store.meta)
    # Buildings and trees stand above the ground, so their nDSM is higher than the ground classes'.
    masks, ndsm = np.asarray(store.masks), np.asarray(store.images[..., 4], dtype=float)
    assert ndsm[(masks == 1) | (masks == 3)].mean() > ndsm[(masks == 0) | (masks == 2)].mean() + 10
