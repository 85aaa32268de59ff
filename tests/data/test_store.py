import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from segweak.data import tiling
from segweak.data.info import info
from segweak.data.store import FORMAT_VERSION, Store, prepare
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


# ---- data safety: --overwrite, integrity checks ----------------------------------------------------


def _store_copy(tiny_store, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(tiny_store, dst)
    return dst


def test_overwrite_never_replaces_a_folder_that_is_not_a_store(fake_source, tmp_path):
    user = tmp_path / "results"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(SegweakError, match=r"refusing to --overwrite .*no store.json.*notes.txt"):
        prepare(fake_source([(32, 32)]), user, patch=32, overwrite=True, progress=False)
    assert (user / "notes.txt").read_text() == "keep"

    out = prepare(fake_source([(32, 32)]), tmp_path / "s", patch=32, progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SegweakError, match=r"not part of a store \(notes.txt\)"):
        prepare(fake_source([(64, 64)]), out, patch=32, overwrite=True, progress=False)
    (out / "notes.txt").unlink()
    (out / "splits").mkdir()
    (out / "splits" / "default.json").write_text("{}")
    (out / "splits" / "plot.png").write_bytes(b"x")
    with pytest.raises(SegweakError, match="splits/plot.png"):
        prepare(fake_source([(64, 64)]), out, patch=32, overwrite=True, progress=False)
    (out / "splits" / "plot.png").unlink()
    notes = []
    prepare(fake_source([(64, 64)]), out, patch=32, overwrite=True, progress=False, log=notes.append)
    assert len(Store(out)) == 4
    assert notes == [
        f"--overwrite: {out} (images.npy, masks.npy, patches.csv, splits/, store.json) "
        "will be replaced once the new store is complete"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "s"]


def test_store_records_file_hashes_and_verifies(tiny_store, tmp_path):
    import hashlib

    st = Store(tiny_store)
    files = st.meta["files"]
    # The synthetic Vaihingen source has eroded labels: their masks are recorded like the others.
    assert sorted(files) == ["images.npy", "masks.npy", "masks_eroded.npy", "patches.csv"]
    for name, rec in files.items():
        data = (tiny_store / name).read_bytes()
        assert rec["bytes"] == len(data) and rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert st.verify() == {name: "ok" for name in files}
    assert info(tiny_store, verify=True)["verified"] == st.verify()


def test_verify_finds_damage_the_open_check_does_not_sample(fake_source, tmp_path):
    from segweak.data.store import SAMPLE_BLOCK_SIZE, SAMPLE_BLOCKS

    out = prepare(fake_source([(256, 256), (256, 256)]), tmp_path / "s", patch=32, progress=False)
    size = (out / "images.npy").stat().st_size
    assert size > SAMPLE_BLOCKS * SAMPLE_BLOCK_SIZE  # large enough to be sampled, not hashed whole
    # A byte between the first two sampled blocks: one flipped pixel, as bit rot would do.
    offset = SAMPLE_BLOCK_SIZE + 10
    assert offset < (size - SAMPLE_BLOCK_SIZE) // (SAMPLE_BLOCKS - 1)
    with open(out / "images.npy", "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    damaged = Store(out)  # the cheap check does not read that byte
    with pytest.raises(SegweakError, match=r"s/images.npy: content differs.*re-run `segweak prepare`"):
        damaged.verify()
    with pytest.raises(SegweakError, match="content differs"):
        info(out, verify=True)


def test_truncated_array_is_refused_on_open(tiny_store, tmp_path):
    copy = _store_copy(tiny_store, tmp_path)
    os.truncate(copy / "images.npy", 40000)
    for call in (lambda: Store(copy), lambda: info(copy)):
        with pytest.raises(SegweakError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and str(copy / "images.npy") in msg
        assert "40000 bytes on disk" in msg and "re-run `segweak prepare`" in msg
    os.truncate(copy / "masks.npy", 20)  # not even a whole header
    (copy / "images.npy").write_bytes((tiny_store / "images.npy").read_bytes())
    with pytest.raises(SegweakError, match=r"masks.npy is not a readable .npy array"):
        Store(copy)


def test_array_from_another_store_is_refused_on_open(tiny_store, fake_source, tmp_path):
    a = prepare(fake_source([(64, 64)]), tmp_path / "a", patch=32, progress=False)
    src_b = fake_source([(64, 64), (64, 64)])
    b = prepare(type(src_b)(src_b.tiles()[1:]), tmp_path / "b", patch=32, progress=False)
    assert np.load(a / "images.npy").shape == np.load(b / "images.npy").shape  # same shape, other pixels
    shutil.copyfile(b / "images.npy", a / "images.npy")
    with pytest.raises(SegweakError, match=r"a/images.npy does not match .*sampled hash.*re-run"):
        Store(a)
    # another shape (other patch count) is reported from the header alone
    copy = _store_copy(tiny_store, tmp_path)
    shutil.copyfile(b / "masks.npy", copy / "masks.npy")
    with pytest.raises(SegweakError, match=r"masks.npy does not match .*\(4, 32, 32\).*\(48, 32, 32\)"):
        Store(copy)


def test_store_without_hashes_still_opens_but_cannot_be_verified(tiny_store, tmp_path):
    copy = _store_copy(tiny_store, tmp_path)
    meta = json.loads((copy / "store.json").read_text())
    del meta["files"]
    (copy / "store.json").write_text(json.dumps(meta))
    st = Store(copy)
    assert len(st) == 48 and info(copy)["verifiable"] is False
    with pytest.raises(SegweakError, match=r"records no content hashes.*re-run `segweak prepare`"):
        st.verify()
    os.truncate(copy / "images.npy", 40000)  # the header/size check needs no hashes
    with pytest.raises(SegweakError, match="40000 bytes on disk"):
        Store(copy)


def test_sampled_hash_reads_little_and_sees_every_region(tmp_path):
    from segweak.data.store import SAMPLE_BLOCK_SIZE, SAMPLE_BLOCKS, sampled_sha256

    path = tmp_path / "f"
    data = bytearray(
        np.random.default_rng(0).integers(0, 256, 10 * SAMPLE_BLOCKS * SAMPLE_BLOCK_SIZE, np.uint8)
    )
    path.write_bytes(bytes(data))
    ref = sampled_sha256(path)
    for offset in (0, len(data) - 1):  # first and last byte are always sampled
        changed = bytearray(data)
        changed[offset] ^= 1
        path.write_bytes(bytes(changed))
        assert sampled_sha256(path) != ref
    path.write_bytes(bytes(data) + b"x")
    assert sampled_sha256(path) != ref


# ---- eroded-boundary masks next to the full ones ------------------------------------------------------


def test_eroded_masks_are_kept_when_every_tile_has_eroded_labels(tiny_store):
    st = Store(tiny_store)
    assert st.has_eroded_masks and info(tiny_store)["eroded_masks"] is True
    full, eroded = np.asarray(st.masks), np.asarray(st.eroded_masks)
    assert eroded.shape == full.shape and eroded.dtype == np.uint8
    # Erosion only turns boundary pixels into ignore: wherever both label a pixel, they agree.
    both = (full != 255) & (eroded != 255)
    assert np.array_equal(full[both], eroded[both]) and (eroded == 255).sum() > (full == 255).sum()
    rec = st.meta["eroded_masks"]
    assert rec["file"] == "masks_eroded.npy" and rec["ignore"] == int((eroded == 255).sum())
    assert sum(rec["pixels"].values()) == int((eroded != 255).sum())
    # A store holds everything it needs after pickling (DataLoader workers) and maps lazily.
    assert np.array_equal(pickle.loads(pickle.dumps(st)).eroded_masks[3], eroded[3])


def test_no_eroded_masks_when_opted_out_or_already_read_eroded(synthetic_root, tmp_path):
    from segweak.data.dataset import SegweakDataset
    from segweak.data.sources import VaihingenSource
    from segweak.data.splits import make_split

    off = prepare(
        VaihingenSource(synthetic_root), tmp_path / "off", patch=64, progress=False, eroded_metrics=False
    )
    # The labels read are the eroded ones already: a second copy would say nothing new.
    read_eroded = prepare(
        VaihingenSource(synthetic_root, eroded=True), tmp_path / "er", patch=64, progress=False
    )
    for store in (off, read_eroded):
        st = Store(store)
        assert not st.has_eroded_masks and st.meta["eroded_masks"] is None
        assert not (store / "masks_eroded.npy").exists() and sorted(st.meta["files"]) == [
            "images.npy",
            "masks.npy",
            "patches.csv",
        ]
        with pytest.raises(SegweakError, match=r"has no eroded masks \(masks_eroded.npy\)"):
            _ = st.eroded_masks
    make_split(off, "s", fractions=(0.25, 0.5, 0.25))
    with pytest.raises(SegweakError, match="has no eroded masks"):
        SegweakDataset(off, "s", "val", with_eroded=True)


def test_a_source_without_eroded_labels_for_every_tile_keeps_none(fake_source, tmp_path):
    out = prepare(fake_source([(64, 64)]), tmp_path / "s", patch=32, progress=False)
    assert not Store(out).has_eroded_masks and not (out / "masks_eroded.npy").exists()


def test_damaged_or_missing_eroded_masks_are_refused_on_open(tiny_store, tmp_path):
    copy = _store_copy(tiny_store, tmp_path)
    masks = np.load(copy / "masks_eroded.npy", mmap_mode="r+")
    masks[:] = np.asarray(Store(tiny_store).masks)  # the full masks swapped in: same shape, other content
    masks.flush()
    del masks
    with pytest.raises(SegweakError, match=r"masks_eroded.npy does not match .*sampled hash"):
        Store(copy)
    (copy / "masks_eroded.npy").unlink()
    with pytest.raises(SegweakError, match=r"masks_eroded.npy does not match .*file is missing"):
        Store(copy)


def test_overwrite_replaces_a_store_with_eroded_masks(tiny_store, synthetic_root, tmp_path):
    from segweak.data.sources import VaihingenSource

    copy = _store_copy(tiny_store, tmp_path)
    prepare(
        VaihingenSource(synthetic_root), copy, patch=64, overwrite=True, progress=False, log=lambda _: None
    )
    assert Store(copy).patch == 64 and Store(copy).has_eroded_masks
