import shutil

import numpy as np
import pytest

from segweak.data.splits import check_fractions, load_split, make_split
from segweak.data.store import Store, prepare
from segweak.errors import SegweakError


@pytest.fixture
def store_copy(tiny_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(tiny_store, out)
    return out


@pytest.mark.parametrize(
    "fractions",
    [
        (0.5, 0.5, 0.5),
        (0.2, 0.7, 0.2),
        (-0.1, 0.9, 0.2),
        (0.5, 0.5),
        (0.1, 0.2, 0.3, 0.4),
        (np.nan, 0.5, 0.5),
    ],
)
def test_invalid_fractions(fractions, store_copy):
    with pytest.raises(SegweakError, match="--fractions"):
        make_split(store_copy, name="bad", fractions=fractions)
    assert not (store_copy / "splits" / "bad.json").exists()


def test_fraction_tolerance():
    assert check_fractions((0.1, 0.7, 0.2 + 5e-7)) == pytest.approx((0.1, 0.7, 0.2), abs=1e-6)
    with pytest.raises(SegweakError):
        check_fractions((0.1, 0.7, 0.2 + 5e-6))


def test_default_split_achieves_targets(tiny_store):
    st = Store(tiny_store)
    man = load_split(tiny_store, "default")
    eligible = np.flatnonzero(st.valid > 0)
    n = len(eligible)
    subsets = man["subsets"]
    everything = sorted(subsets["strong"] + subsets["weak"] + subsets["val"])
    assert everything == eligible.tolist()  # disjoint and complete
    assert man["excluded"]["no_valid_pixels"] == np.flatnonzero(st.valid == 0).tolist()
    for name, target in (("strong", 0.1), ("weak", 0.7), ("val", 0.2)):
        idx = subsets[name]
        assert idx == sorted(idx)
        assert abs(len(idx) - target * n) < 1.0  # within rounding
        ach = man["achieved"][name]
        assert ach["patches"] == len(idx)
        assert ach["patch_fraction"] == pytest.approx(len(idx) / n, abs=1e-6)
        assert ach["pixels"] == int(st.valid[idx].sum())
        assert ach["pixel_fraction"] == pytest.approx(ach["pixels"] / st.valid.sum(), abs=1e-6)


def test_same_seed_byte_identical_other_seed_differs(store_copy):
    path = store_copy / "splits" / "s.json"
    make_split(store_copy, name="s", seed=7)
    first = path.read_bytes()
    make_split(store_copy, name="s", seed=7, overwrite=True)
    assert path.read_bytes() == first
    other = make_split(store_copy, name="t", seed=8)
    assert other["subsets"] != load_split(store_copy, "s")["subsets"]


def test_existing_split_needs_overwrite_and_missing_split_lists_names(store_copy):
    with pytest.raises(SegweakError, match="already exists.*--overwrite"):
        make_split(store_copy, name="default")
    with pytest.raises(SegweakError, match=r"'nope' not found.*existing splits: default"):
        load_split(store_copy, "nope")


def test_bad_options(store_copy):
    with pytest.raises(SegweakError, match="--by"):
        make_split(store_copy, name="x", by="tile")
    with pytest.raises(SegweakError, match="split name"):
        make_split(store_copy, name="../evil")
    with pytest.raises(SegweakError, match="threshold"):
        make_split(store_copy, name="x", presence_threshold=1.5)


def test_patches_without_valid_pixels_are_excluded(fake_source, tmp_path):
    src = fake_source([(64, 64), (64, 64), (64, 64)], ignore_all=(1,))
    out = prepare(src, tmp_path / "s", patch=32, stride=32, progress=False)
    man = make_split(out, fractions=(0.25, 0.5, 0.25))
    assert man["excluded"]["no_valid_pixels"] == [4, 5, 6, 7]
    used = set(man["subsets"]["strong"] + man["subsets"]["weak"] + man["subsets"]["val"])
    assert used == set(range(12)) - {4, 5, 6, 7}
    assert [man["achieved"][s]["patches"] for s in ("strong", "weak", "val")] == [2, 4, 2]


def test_group_split_keeps_groups_whole(fake_source, tmp_path):
    groups = ["g0", "g0", "g1", "g2", "g3", "g4", "g5", "g6"]
    src = fake_source([(64, 64)] * 8, groups=groups)
    out = prepare(src, tmp_path / "s", patch=32, stride=32, progress=False)
    st = Store(out)
    man = make_split(out, fractions=(0.25, 0.5, 0.25), by="group", seed=1)
    seen = {}
    for sub, idx in man["subsets"].items():
        assert idx, f"{sub} is empty"
        for i in idx:
            assert seen.setdefault(st.groups[i], sub) == sub
        assert man["groups"][sub] == sorted({st.groups[i] for i in idx})
    assert sum(len(v) for v in man["subsets"].values()) == len(st)
    again = make_split(out, name="again", fractions=(0.25, 0.5, 0.25), by="group", seed=1)
    assert again["subsets"] == man["subsets"]


def test_group_split_with_too_few_groups(fake_source, tmp_path):
    out = prepare(fake_source([(64, 64)] * 2), tmp_path / "s", patch=32, stride=32, progress=False)
    with pytest.raises(SegweakError, match="at least 3 groups.*2 group"):
        make_split(out, by="group")
    man = make_split(out, by="group", fractions=(0.5, 0.5, 0.0))
    assert man["subsets"]["val"] == []


def test_fraction_warning_only_when_targets_are_missed(tiny_store, tmp_path):
    from segweak.data.splits import fraction_warning

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    # 48 patches by patch: within a patch of every target, no warning.
    assert fraction_warning(make_split(store, name="p", by="patch", seed=0)) is None
    # 3 tiles by group: one tile per subset, 1/3 each, far from 0.1/0.7/0.2.
    message = fraction_warning(make_split(store, name="g", by="group", seed=0))
    assert message is not None
    assert "'g'" in message and "3 groups are too few" in message and "--by patch" in message


def test_a_test_subset_is_optional_and_other_subsets_are_refused(store_copy):
    import json

    man = make_split(store_copy, "s", fractions=(0.1, 0.7, 0.2))
    path = store_copy / "splits" / "s.json"
    man["subsets"]["weak"], man["subsets"]["test"] = man["subsets"]["weak"][:-4], man["subsets"]["weak"][-4:]
    path.write_text(json.dumps(man))
    assert load_split(store_copy, "s")["subsets"]["test"] == man["subsets"]["test"]
    man["subsets"]["holdout"] = man["subsets"].pop("test")
    path.write_text(json.dumps(man))
    with pytest.raises(
        SegweakError, match=r"s.json: 'subsets' must have the keys strong, weak, val and optionally test"
    ):
        load_split(store_copy, "s")
