import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from segweak.data.dataset import SegweakDataset
from segweak.data.splits import load_split
from segweak.data.store import Store
from segweak.data.transforms import Augment, default_train_transform, normalize
from segweak.errors import SegweakError
from segweak.weak.labels import proportions


def _d4(a: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(a, k)
        out += [r, np.flip(r, 1)]
    return out


def test_strong_and_val_items(tiny_store):
    st = Store(tiny_store)
    for subset in ("strong", "val"):
        ds = SegweakDataset(tiny_store, "default", subset)
        assert len(ds) == len(load_split(tiny_store, "default")["subsets"][subset])
        item = ds[0]
        idx = item["index"]
        assert item["id"] == st.ids[idx]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
        expected = (st.images[idx].astype(np.float32) - st.mean) / st.std
        np.testing.assert_allclose(item["image"].numpy(), expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
        assert item["mask"].dtype == torch.int64
        np.testing.assert_array_equal(item["mask"].numpy(), st.masks[idx])
        np.testing.assert_array_equal(item["valid"].numpy(), (st.masks[idx] != 255).astype(np.float32))


def test_weak_items_have_no_mask_and_exact_proportions(tiny_store):
    st = Store(tiny_store)
    ds = SegweakDataset(tiny_store, "default", "weak")
    with_valid = SegweakDataset(tiny_store, "default", "weak", with_valid=True)
    assert len(ds) > 0
    for i in range(len(ds)):
        item = ds[i]
        # Leak-free by default: neither the mask nor the valid map (which traces ignored regions).
        assert "mask" not in item and "valid" not in item
        m = np.asarray(st.masks[item["index"]])
        counts = np.array([[(m == k).sum() for k in range(st.num_classes)]])
        np.testing.assert_allclose(item["weak"].numpy(), proportions(counts)[0], rtol=1e-6)
        assert float(item["weak"].sum()) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_array_equal(item["presence"].numpy(), (item["weak"].numpy() > 0).astype(np.float32))
        # Opt-in (weak.area: valid): the valid map of the old behaviour.
        np.testing.assert_array_equal(with_valid[i]["valid"].numpy(), (m != 255).astype(np.float32))
        assert "mask" not in with_valid[i]
    assert "mask" in SegweakDataset(tiny_store, "default", "weak", with_mask=True)[0]


def test_unlabelled_items_carry_images_only(tiny_store, monkeypatch):
    ds = SegweakDataset(tiny_store, "default", "weak", with_weak=False, transform=default_train_transform())
    assert ds.weak is None and ds.presence is None  # never computed

    def no_masks(*args, **kwargs):
        raise AssertionError("an unlabelled item read a mask")

    monkeypatch.setattr(type(ds.store), "masks", property(no_masks))
    item = ds[0]
    assert set(item) == {"image", "id", "index"} and item["image"].shape == (3, 32, 32)


def test_full_and_all_subsets(tiny_store):
    man = load_split(tiny_store, "default")
    full = SegweakDataset(tiny_store, man, "full")
    assert full.indices.tolist() == sorted(man["subsets"]["strong"] + man["subsets"]["weak"])
    assert "mask" in full[len(full) - 1]
    every = SegweakDataset(tiny_store, man, "all")
    assert len(every) == sum(len(v) for v in man["subsets"].values())
    assert "mask" not in every[0]
    with pytest.raises(SegweakError, match="subset"):
        SegweakDataset(tiny_store, man, "test")
    with pytest.raises(SegweakError, match="not found"):
        SegweakDataset(tiny_store, "missing", "strong")


def test_presence_threshold_override(tiny_store):
    ds = SegweakDataset(tiny_store, "default", "weak", presence_threshold=0.3)
    np.testing.assert_array_equal(ds.presence, (ds.weak > 0.3).astype(np.float32))


def test_default_transform_moves_image_mask_and_valid_together(tiny_store):
    st = Store(tiny_store)
    torch.manual_seed(0)
    ds = SegweakDataset(tiny_store, "default", "strong", transform=default_train_transform())
    seen = set()
    for _ in range(40):
        item = ds[0]
        idx = item["index"]
        img = np.asarray(st.images[idx])
        m = np.asarray(st.masks[idx])
        got_img = item["image"].numpy()
        got_mask = item["mask"].numpy()
        matches = [
            k
            for k, (ti, tm) in enumerate(zip(_d4(img), _d4(m), strict=True))
            if np.allclose(normalize(np.ascontiguousarray(ti), st.mean, st.std), got_img, atol=1e-5)
            and np.array_equal(tm, got_mask)
        ]
        assert matches, "image and mask were not transformed by the same dihedral operation"
        seen.add(matches[0])
        np.testing.assert_array_equal(item["valid"].numpy(), (got_mask != 255).astype(np.float32))
    assert len(seen) >= 4


def test_augment_seeding_and_pickling():
    img = np.arange(64, dtype=np.uint8).reshape(8, 8, 1).repeat(3, axis=2)
    sample = {"image": img, "mask": img[..., 0].copy()}

    def run(seed: int) -> list[bytes]:
        torch.manual_seed(seed)
        aug = default_train_transform()
        return [aug(sample)["mask"].tobytes() for _ in range(12)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    aug = default_train_transform()
    aug(sample)
    clone = pickle.loads(pickle.dumps(aug))
    assert isinstance(clone, Augment) and clone._seeded_pid is None


def test_dataloader_with_workers(tiny_store):
    ds = SegweakDataset(tiny_store, "default", "weak", transform=default_train_transform())
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2[0]["id"] == ds[0]["id"]
    loader = DataLoader(ds, batch_size=8, num_workers=2)
    n = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 32, 32)
        assert "mask" not in batch
        torch.testing.assert_close(batch["weak"].sum(1), torch.ones(len(batch["weak"])))
        n += len(batch["index"])
    assert n == len(ds)


def test_lut_normalisation_matches_formula():
    from segweak.data.transforms import normalization_lut, normalize_with_lut

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (17, 9, 4), dtype=np.uint8)
    mean = np.array([10.0, 100.0, 200.0, 0.0], dtype=np.float32)
    std = np.array([5.0, 50.0, 20.0, 0.0], dtype=np.float32)  # zero std -> divide by 1
    got = normalize_with_lut(img, normalization_lut(mean, std))
    assert got.shape == (4, 17, 9) and got.dtype == np.float32
    np.testing.assert_allclose(got, normalize(img, mean, std), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(got[3], img[..., 3].astype(np.float32))
