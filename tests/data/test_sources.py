import shutil
import warnings
import zipfile

import numpy as np
import pytest
import rasterio
from PIL import Image

from segweak.data.palette import IGNORE_INDEX, Palette, vaihingen_palette
from segweak.data.sources import (
    VAIHINGEN_GT_ZIP,
    VAIHINGEN_ZIP,
    FolderSource,
    VaihingenSource,
    open_source,
)
from segweak.data.synthetic import synthesize
from segweak.data.tiles import Tile
from segweak.errors import SegweakError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("vaih")
    folders = synthesize(base / "folders", n_tiles=3, height=64, width=80, seed=3)
    zips = synthesize(base / "zips", n_tiles=3, height=64, width=80, seed=3, zips=True)
    return folders, zips


def _copy(src, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def _write_tif(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=arr.shape[1],
            height=arr.shape[0],
            count=arr.shape[2],
            dtype=arr.dtype,
        ) as dst:
            dst.write(np.moveaxis(arr, -1, 0))


def test_folders_tiles_and_read(synth):
    src = VaihingenSource(synth[0])
    tiles = src.tiles()
    assert [t.id for t in tiles] == ["area1", "area2", "area3"]
    t = tiles[0]
    assert isinstance(t, Tile) and t.shape == (64, 80) and t.group == "area1"
    assert "ground_truth_COMPLETE" in t.label_path and t.eroded_label_path.endswith("_noBoundary.tif")
    assert t.georef["transform"][0] == pytest.approx(0.09) and "UTM zone 32N" in t.georef["crs"]
    img, mask = t.read()
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8
    assert mask.shape == (64, 80) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2, 3, 4, IGNORE_INDEX}
    d = src.describe()
    assert d["band_order"] == "IRRG" and d["n_tiles"] == 3 and d["unlabelled"] == []
    assert d["classes"] == list(src.classes.names) and len(src.classes) == 5
    import json

    json.dumps(d)


def test_zips_equal_folders(synth):
    a = VaihingenSource(synth[0]).tiles()
    b = VaihingenSource(synth[1]).tiles()
    assert b[0].image_path.startswith("zip://") and "!top/" in b[0].image_path
    for ta, tb in zip(a, b, strict=True):
        assert ta.shape == tb.shape and ta.georef == tb.georef
        ia, ma = ta.read()
        ib, mb = tb.read()
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)


@pytest.mark.parametrize("which", [0, 1])
def test_eroded_labels_have_more_ignore(synth, which):
    full = VaihingenSource(synth[which]).tiles()[0].read()[1]
    ero = VaihingenSource(synth[which], eroded=True).tiles()[0].read()[1]
    assert (ero == IGNORE_INDEX).sum() > (full == IGNORE_INDEX).sum()
    keep = ero != IGNORE_INDEX
    assert np.array_equal(ero[keep], full[keep])


def test_keep_clutter(synth):
    src = VaihingenSource(synth[0], keep_clutter=True)
    assert src.classes.names[-1] == "clutter"
    masks = [t.read()[1] for t in src.tiles()]
    assert any((m == 5).any() for m in masks)
    default = [t.read()[1] for t in VaihingenSource(synth[0]).tiles()]
    for m6, m5 in zip(masks, default, strict=True):
        assert np.all(m5[m6 == 5] == IGNORE_INDEX)


def test_participant_labels_only(synth, tmp_path):
    root = _copy(synth[0], tmp_path)
    shutil.rmtree(root / "ground_truth_COMPLETE")
    src = VaihingenSource(root)
    assert [t.id for t in src.tiles()] == ["area1", "area3"]
    d = src.describe()
    assert d["unlabelled"] == ["area2"] and d["label_sets"] == {"gts_for_participants": 2}


def test_missing_label_reported_and_no_label_error(synth, tmp_path):
    root = _copy(synth[0], tmp_path)
    (root / "ground_truth_COMPLETE" / "top_mosaic_09cm_area2.tif").unlink()
    src = VaihingenSource(root)
    assert [t.id for t in src.tiles()] == ["area1", "area3"]
    assert src.describe()["unlabelled"] == ["area2"]
    for d in ("ground_truth_COMPLETE", "gts_for_participants", "ground_truth_eroded_COMPLETE"):
        shutil.rmtree(root / d)
    with pytest.raises(SegweakError, match="has a label"):
        VaihingenSource(root).tiles()


def test_empty_and_missing_root(tmp_path):
    with pytest.raises(SegweakError, match="no Vaihingen files"):
        VaihingenSource(tmp_path).tiles()
    with pytest.raises(SegweakError, match="does not exist"):
        VaihingenSource(tmp_path / "nope").tiles()


def test_size_mismatch(synth, tmp_path):
    root = _copy(synth[0], tmp_path)
    _write_tif(root / "ground_truth_COMPLETE" / "top_mosaic_09cm_area2.tif", np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(SegweakError, match=r"area2\.tif is 12×10 px but image .* is 80×64"):
        VaihingenSource(root).tiles()


def test_truncated_tiff(synth, tmp_path):
    root = _copy(synth[0], tmp_path)
    p = root / "top" / "top_mosaic_09cm_area1.tif"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    tile = VaihingenSource(root).tiles()[0]
    with pytest.raises(SegweakError, match=r"area1\.tif.*truncated"):
        tile.read()
    p.write_bytes(data[:50])  # header cut
    with pytest.raises(SegweakError, match=r"area1\.tif.*truncated"):
        VaihingenSource(root).tiles()


def test_wrong_band_count(synth, tmp_path):
    root = _copy(synth[0], tmp_path)
    _write_tif(root / "top" / "top_mosaic_09cm_area1.tif", np.zeros((64, 80, 2), np.uint8))
    with pytest.raises(SegweakError, match="2 band"):
        VaihingenSource(root).tiles()


def test_rgba_constant_alpha_dropped_variable_alpha_error(synth, tmp_path):
    root = _copy(synth[0], tmp_path)
    p = root / "top" / "top_mosaic_09cm_area1.tif"
    rgb = VaihingenSource(synth[0]).tiles()[0].read_image()
    _write_tif(p, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    img, _ = VaihingenSource(root).tiles()[0].read()
    assert np.array_equal(img, rgb)
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[0, 0] = 9
    _write_tif(p, np.dstack([rgb, alpha]))
    with pytest.raises(SegweakError, match="alpha"):
        VaihingenSource(root).tiles()[0].read()


def test_bad_zip(tmp_path):
    (tmp_path / VAIHINGEN_ZIP).write_bytes(b"not a zip at all")
    with pytest.raises(SegweakError, match="not a readable zip"):
        VaihingenSource(tmp_path).tiles()


def test_zip_with_only_images_is_error(synth, tmp_path):
    shutil.copy(synth[1] / VAIHINGEN_ZIP, tmp_path / VAIHINGEN_ZIP)
    # the main zip holds gts_for_participants (areas 1, 3): area 2 is unlabelled
    src = VaihingenSource(tmp_path)
    assert [t.id for t in src.tiles()] == ["area1", "area3"]
    assert src.describe()["unlabelled"] == ["area2"]
    with (
        zipfile.ZipFile(tmp_path / "only_top.zip", "w") as zf,
        zipfile.ZipFile(synth[1] / VAIHINGEN_ZIP) as zi,
    ):
        for n in zi.namelist():
            if n.startswith("top/"):
                zf.writestr(n, zi.read(n))
    with pytest.raises(SegweakError, match="has a label"):
        VaihingenSource(tmp_path / "only_top.zip").tiles()
    assert VAIHINGEN_GT_ZIP in str(
        pytest.raises(SegweakError, VaihingenSource(tmp_path / "only_top.zip").tiles).value
    )


def test_tolerance_option_reaches_palette(synth):
    assert VaihingenSource(synth[0], tolerance=50).palette.tolerance == 50
    assert open_source("vaihingen", root=synth[0]).kind == "vaihingen"
    with pytest.raises(SegweakError, match="unknown source kind"):
        open_source("nope")


# ---- FolderSource ------------------------------------------------------------------------------------


def _folder_dataset(tmp_path, mode):
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    for rel in ("city_a/t1", "city_a/t2", "city_b/t3"):
        img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (masks / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(images / f"{rel}.jpg")
        cls = rng.integers(0, 3, (20, 24))
        if mode == "rgb":
            colours = np.array([(255, 255, 255), (0, 0, 255), (0, 0, 0)], np.uint8)
            Image.fromarray(colours[cls]).save(masks / f"{rel}.png")
        else:
            Image.fromarray(cls.astype(np.uint8)).save(masks / f"{rel}.png")
    return images, masks


def test_folder_rgb_palette_group_by_parent(tmp_path):
    images, masks = _folder_dataset(tmp_path, "rgb")
    pal = Palette.from_dict(
        {
            "mode": "rgb",
            "classes": [{"name": "road", "color": [255, 255, 255]}, {"name": "house", "color": [0, 0, 255]}],
            "ignore": [[0, 0, 0]],
        }
    )
    src = FolderSource(images, masks, pal, group_by="parent")
    tiles = src.tiles()
    assert [t.id for t in tiles] == ["city_a__t1", "city_a__t2", "city_b__t3"]
    assert [t.group for t in tiles] == ["city_a", "city_a", "city_b"]
    assert tiles[0].georef is None and tiles[0].shape == (20, 24)
    img, mask = tiles[0].read()
    assert img.shape == (20, 24, 3) and set(np.unique(mask)) == {0, 1, IGNORE_INDEX}
    d = src.describe()
    assert d["kind"] == "folder" and d["group_by"] == "parent" and d["classes"] == ["road", "house"]
    assert [t.group for t in FolderSource(images, masks, pal).tiles()] == [t.id for t in tiles]


def test_folder_index_palette_yaml(tmp_path):
    images, masks = _folder_dataset(tmp_path, "index")
    y = tmp_path / "p.yaml"
    y.write_text("mode: index\nclasses:\n  - {name: a, value: 1}\n  - {name: b, value: 2}\nignore: [0]\n")
    src = FolderSource(images, masks, y, band_order="IRRG")
    assert src.band_order == "IRRG"
    _, mask = src.tiles()[2].read()
    assert set(np.unique(mask)) == {0, 1, IGNORE_INDEX}


def test_folder_missing_mask_and_orphan(tmp_path):
    images, masks = _folder_dataset(tmp_path, "index")
    pal = Palette.from_dict({"mode": "index", "classes": [{"name": "a", "value": 1}], "ignore": [0, 2]})
    (masks / "city_b" / "t3.png").rename(masks / "city_b" / "t9.png")
    with pytest.raises(
        SegweakError,
        match=r"1 of 3 image\(s\) found by .* have no mask .*3 mask file\(s\).*unpaired city_b/t3\.jpg.*"
        r"--masks a template",
    ):
        FolderSource(images, masks, pal).tiles()
    (masks / "city_b" / "t9.png").rename(masks / "city_b" / "t3.png")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(masks / "extra.png")
    src = FolderSource(images, masks, pal)
    with pytest.warns(UserWarning, match="no image"):
        assert len(src.tiles()) == 3
    assert src.describe()["orphan_masks"] == ["extra"]


def test_folder_size_mismatch_and_empty(tmp_path):
    images, masks = _folder_dataset(tmp_path, "index")
    pal = Palette.from_dict({"mode": "index", "classes": [{"name": "a", "value": 1}], "ignore": [0, 2]})
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "city_a" / "t1.png")
    with pytest.raises(SegweakError, match="must match its image"):
        FolderSource(images, masks, pal).tiles()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegweakError, match="holds no"):
        FolderSource(tmp_path / "empty", masks, pal).tiles()
    with pytest.raises(SegweakError, match="group_by"):
        FolderSource(images, masks, pal, group_by="x")


def test_vaihingen_palette_matches_source(synth):
    assert VaihingenSource(synth[0]).palette == vaihingen_palette()
