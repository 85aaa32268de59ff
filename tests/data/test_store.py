import csv
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from segweak.data import tiling
from segweak.data.store import FORMAT_VERSION, Store, info, prepare
from segweak.errors import SegweakError


def _leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_tiny_store_layout_and_metadata(tiny_store):
    st = Store(tiny_store)
    n = len(st)
    assert n == 48
    assert st.images.shape == (n, 32, 32, 3) and st.images.dtype == np.uint8
    assert st.masks.shape == (n, 32, 32) and st.masks.dtype == np.uint8
    m = st.meta
    assert m["format_version"] == FORMAT_VERSION
    assert m["classes"] == st.classes == ["impervious", "building", "low_vegetation", "tree", "car"]
    assert (m["patch"], m["stride"], m["edge_policy"], m["ignore_index"]) == (32, 32, "shift", 255)
    assert m["n_patches"] == n and m["n_tiles"] == 3 and len(m["tiles"]) == 3
    assert m["band_order"] == "IRRG" and m["channels"] == 3
    assert {"id", "group", "shape", "image_path", "label_path", "georef"} <= set(m["tiles"][0])
    assert m["source"]["kind"] == "vaihingen"
    assert len(m["image_stats"]["mean"]) == 3
    assert st.split_names() == ["default"]
    values = np.unique(np.asarray(st.masks))
    assert set(values.tolist()) <= {0, 1, 2, 3, 4, 255}


def test_counts_valid_and_ids_match_masks(tiny_store):
    st = Store(tiny_store)
    masks = np.asarray(st.masks)
    for i in range(len(st)):
        for k in range(st.num_classes):
            assert st.counts[i, k] == int((masks[i] == k).sum())
        assert st.valid[i] == int((masks[i] != 255).sum())
        assert st.ids[i] == f"{st.tiles[i]}_r{st.rows[i]}_c{st.cols[i]}"
    assert st.counts.dtype == np.int64 and st.counts.shape == (len(st), 5)
    with open(tiny_store / "patches.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["index", "id", "tile", "group", "row", "col", "size", "valid"] + [
        f"count_{c}" for c in st.classes
    ]


def test_patches_are_the_tile_pixels_and_stats_exact(tiny_store, synthetic_root):
    from segweak.data.sources import VaihingenSource

    st = Store(tiny_store)
    tiles = {t.id: t for t in VaihingenSource(synthetic_root).tiles()}
    pix = []
    for tid, tile in tiles.items():
        image, mask = tile.read()
        pix.append(image.reshape(-1, 3).astype(np.float64))
        for i in np.flatnonzero(np.asarray(st.tiles) == tid):
            r, c = st.rows[i], st.cols[i]
            np.testing.assert_array_equal(st.images[i], image[r : r + 32, c : c + 32])
            np.testing.assert_array_equal(st.masks[i], mask[r : r + 32, c : c + 32])
    allpix = np.concatenate(pix)
    np.testing.assert_allclose(st.mean, allpix.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(st.std, allpix.std(axis=0), rtol=1e-4)


def test_edge_windows_are_shifted_not_padded(fake_source, tmp_path):
    src = fake_source([(50, 70)])
    out = prepare(src, tmp_path / "s", patch=32, stride=32, progress=False)
    st = Store(out)
    assert sorted(zip(st.rows.tolist(), st.cols.tolist(), strict=True)) == [
        (0, 0),
        (0, 32),
        (0, 38),
        (18, 0),
        (18, 32),
        (18, 38),
    ]
    image, mask = src.tiles()[0].read()
    for i in range(len(st)):
        r, c = st.rows[i], st.cols[i]
        np.testing.assert_array_equal(st.images[i], image[r : r + 32, c : c + 32])
        np.testing.assert_array_equal(st.masks[i], mask[r : r + 32, c : c + 32])


def test_not_a_store_and_wrong_version(tmp_path, tiny_store):
    with pytest.raises(SegweakError, match="not a directory"):
        Store(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegweakError, match="not a segweak store.*store.json"):
        Store(tmp_path / "empty")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_store, copy)
    meta = json.loads((copy / "store.json").read_text())
    meta["format_version"] = 99
    (copy / "store.json").write_text(json.dumps(meta))
    with pytest.raises(SegweakError, match="format_version 99"):
        Store(copy)


def test_existing_output_needs_overwrite(fake_source, tmp_path):
    out = tmp_path / "s"
    prepare(fake_source([(40, 40)]), out, patch=32, stride=32, progress=False)
    with pytest.raises(SegweakError, match="already exists.*--overwrite"):
        prepare(fake_source([(64, 64)]), out, patch=32, stride=32, progress=False)
    assert len(Store(out)) == 4
    prepare(fake_source([(64, 64)]), out, patch=32, stride=32, overwrite=True, progress=False)
    assert len(Store(out)) == 4 and Store(out).meta["tiles"][0]["shape"] == [64, 64]
    assert _leftovers(tmp_path, "s") == []


def test_interrupted_prepare_leaves_nothing(fake_source, tmp_path):
    src = fake_source([(64, 64), (64, 64), (64, 64)], fail_at=1)
    out = tmp_path / "store"
    with pytest.raises(RuntimeError, match="simulated read failure of t1"):
        prepare(src, out, patch=32, stride=32, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_patch_larger_than_tile(fake_source, tmp_path):
    src = fake_source([(64, 64), (40, 100)])
    with pytest.raises(SegweakError, match=r"'t1'.*40x100.*smaller --patch"):
        prepare(src, tmp_path / "s", patch=48, stride=48, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_mask_values_rejected(tmp_path, fake_source):
    src = fake_source([(32, 32)])
    tile = src.tiles()[0]
    image, mask = tile.read()
    mask[0, 0] = 7
    tile.read = lambda: (image, mask)
    with pytest.raises(SegweakError, match=r"value\(s\) \[7\]"):
        prepare(src, tmp_path / "s", patch=32, stride=32, progress=False)


def test_store_pickles_without_memmaps(tiny_store):
    st = Store(tiny_store)
    _ = st.images[0]
    clone = pickle.loads(pickle.dumps(st))
    assert clone._images is None
    np.testing.assert_array_equal(clone.images[3], st.images[3])


def test_info_keys(tiny_store):
    d = info(tiny_store, split="default")
    for key in (
        "path",
        "format_version",
        "classes",
        "num_classes",
        "patch",
        "stride",
        "n_tiles",
        "n_patches",
    ):
        assert key in d
    assert d["n_patches"] == 48 and d["splits"] == ["default"]
    subsets = d["split"]["subsets"]
    assert set(subsets) == {"strong", "weak", "val"}
    assert sum(s["patches"] for s in subsets.values()) + d["split"]["excluded"]["no_valid_pixels"] == 48
    for s in subsets.values():
        assert sum(s["mean_weak"].values()) == pytest.approx(1.0)
    json.dumps(d)


def test_windows_count_matches_store(fake_source, tmp_path):
    shapes = [(70, 45), (33, 90)]
    out = prepare(fake_source(shapes), tmp_path / "s", patch=16, stride=12, progress=False)
    assert len(Store(out)) == sum(tiling.count_windows(s, 16, 12) for s in shapes)


SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "vaihingen_samples"


def test_prepare_real_vaihingen_sample(tmp_path):
    sample = SAMPLES / "vaihingen_area1_vanessa"
    if not sample.is_dir():
        pytest.skip(f"real Vaihingen samples not found at {SAMPLES}")
    from segweak.data.palette import vaihingen_palette
    from segweak.data.sources import FolderSource

    src = FolderSource(
        sample / "images", sample / "labels", vaihingen_palette(tolerance=127), band_order="IRRG"
    )
    out = prepare(src, tmp_path / "real", patch=100, stride=100, progress=False)
    st = Store(out)
    # 642x479 -> 7x5 windows, two 200x200 crops -> 2x2 windows each
    assert len(st) == 35 + 4 + 4
    assert st.meta["band_order"] == "IRRG"
    snap = st.meta["label_stats"]["snapping"]["total"]
    assert snap["n_pixels"] == 642 * 479 + 2 * 200 * 200 and snap["n_snapped"] > 0
    masks = np.asarray(st.masks)
    for i in range(0, len(st), 5):
        np.testing.assert_array_equal(st.counts[i], [(masks[i] == k).sum() for k in range(5)])
    # every class of the 5-class set occurs in the real area-1 sample
    assert (st.counts.sum(axis=0) > 0).all()
