import json
import shutil

import numpy as np
import pytest

from segweak.data.splits import (
    VAIHINGEN_TEST_AREAS,
    check_fractions,
    fraction_warning,
    load_split,
    make_split,
    split_mismatch,
)
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
        (0.1, 0.2, 0.3, 0.2, 0.2),
        (0.2, 0.6, 0.2, 0.0),
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


def test_sequential_three_fraction_split_is_unchanged(tiny_store):
    # The manifests of earlier versions must be reproduced exactly: published (demo) numbers were
    # trained on them. These indices are what segweak 14b9d07 wrote for the tiny store.
    man = load_split(tiny_store, "default")
    assert man["subsets"]["strong"] == [2, 4, 18, 21, 43]
    assert man["subsets"]["val"] == [5, 7, 14, 15, 29, 31, 33, 39, 41, 47]
    assert (
        "nested" not in man and "test_groups" not in man and set(man["subsets"]) == {"strong", "weak", "val"}
    )


def test_four_fractions_give_a_test_subset(store_copy):
    n = len(Store(store_copy))
    for nested in (False, True):
        man = make_split(store_copy, name=f"t{nested}", fractions=(0.1, 0.6, 0.1, 0.2), nested=nested)
        subsets = man["subsets"]
        assert list(subsets) == ["strong", "weak", "val", "test"]
        assert sorted(i for idx in subsets.values() for i in idx) == list(range(n))
        for sub, target in zip(("strong", "weak", "val", "test"), (0.1, 0.6, 0.1, 0.2), strict=True):
            assert abs(len(subsets[sub]) - target * n) <= 1.0, (nested, sub)
        assert man["fractions"]["test"] == 0.2 and man["achieved"]["test"]["patches"] == len(subsets["test"])
        assert load_split(store_copy, f"t{nested}")["subsets"] == subsets


def _many_groups_store(fake_source, tmp_path):
    # 30 tiles of 1-3 patches each: groups of unequal size, as real tiles are.
    shapes = [(32, 32 * (1 + i % 3)) for i in range(30)]
    return prepare(fake_source(shapes), tmp_path / "groups", patch=32, stride=32, progress=False)


@pytest.mark.parametrize("by", ["patch", "group"])
@pytest.mark.parametrize("test", [0.0, 0.1])
def test_nested_strong_sets_grow_and_held_out_patches_stay(by, test, fake_source, tmp_path):
    store = _many_groups_store(fake_source, tmp_path)
    st = Store(store)
    previous = None
    for k, strong in enumerate((0.01, 0.02, 0.05, 0.1, 0.2)):
        fractions = (strong, 0.8 - strong - test, 0.2, test) if test else (strong, 0.8 - strong, 0.2)
        man = make_split(store, name=f"f{k}", fractions=fractions, by=by, seed=4, nested=True)
        subsets = {sub: set(idx) for sub, idx in man["subsets"].items()}
        assert man["nested"] is True
        assert set().union(*subsets.values()) == set(range(len(st)))
        assert sum(len(v) for v in subsets.values()) == len(st)  # disjoint
        if by == "group":
            for sub, idx in subsets.items():
                assert {st.groups[i] for i in idx}.isdisjoint(
                    {st.groups[i] for other, j in subsets.items() if other != sub for i in j}
                )
        if previous is not None:
            assert previous["strong"] <= subsets["strong"]
            assert previous["val"] == subsets["val"]
            assert previous.get("test") == subsets.get("test")
            assert subsets["weak"] == set(range(len(st))) - subsets["strong"] - subsets["val"] - subsets.get(
                "test", set()
            )
        previous = subsets
    first = load_split(store, "f0")["subsets"]["strong"]
    assert len(previous["strong"]) > len(first)  # the sweep does change the strong set


def test_sequential_group_split_does_not_nest(fake_source, tmp_path):
    # Why `nested` exists: the greedy group assignment reshuffles val when the strong fraction moves.
    store = _many_groups_store(fake_source, tmp_path)
    vals = [
        make_split(store, name=f"s{k}", fractions=(f, 0.8 - f, 0.2), by="group", seed=4)["subsets"]["val"]
        for k, f in enumerate((0.05, 0.2))
    ]
    assert vals[0] != vals[1]


def test_nested_val_does_not_depend_on_the_test_fraction(store_copy):
    three = make_split(store_copy, name="a", fractions=(0.1, 0.7, 0.2), nested=True, seed=2)
    four = make_split(store_copy, name="b", fractions=(0.1, 0.6, 0.2, 0.1), nested=True, seed=2)
    assert three["subsets"]["val"] == four["subsets"]["val"]


def test_nested_same_seed_byte_identical(store_copy):
    path = store_copy / "splits" / "n.json"
    make_split(store_copy, name="n", fractions=(0.05, 0.75, 0.1, 0.1), seed=3, nested=True)
    first = path.read_bytes()
    make_split(store_copy, name="n", fractions=(0.05, 0.75, 0.1, 0.1), seed=3, nested=True, overwrite=True)
    assert path.read_bytes() == first
    other = make_split(store_copy, name="o", fractions=(0.05, 0.75, 0.1, 0.1), seed=4, nested=True)
    assert other["subsets"]["val"] != load_split(store_copy, "n")["subsets"]["val"]


def test_nested_too_few_units(fake_source, tmp_path):
    out = prepare(fake_source([(64, 64)] * 2), tmp_path / "s", patch=32, stride=32, progress=False)
    with pytest.raises(SegweakError, match="at least 3 groups.*only 2 group"):
        make_split(out, by="group", nested=True)
    three = prepare(fake_source([(32, 96)]), tmp_path / "three", patch=32, stride=32, progress=False)
    assert len(make_split(three, fractions=(0.3, 0.3, 0.4), nested=True)["subsets"]["val"]) == 1
    with pytest.raises(SegweakError, match="only 3 patches.*too few"):
        make_split(three, name="x", fractions=(0.25, 0.25, 0.25, 0.25), nested=True)


@pytest.fixture(scope="module")
def vaihingen33(tmp_path_factory):
    """All 33 Vaihingen areas (synthetic, 32x64 px: two patches each), prepared with patch 32."""
    from segweak.data.sources import VaihingenSource
    from segweak.data.synthetic import synthesize

    base = tmp_path_factory.mktemp("vaihingen33")
    root = synthesize(base / "root", n_tiles=33, height=32, width=64, seed=0, eroded=False)
    return prepare(VaihingenSource(root), base / "store", patch=32, stride=32, progress=False)


def test_official_test_areas_are_the_isprs_test_set():
    from segweak.data.synthetic import PARTICIPANT_AREAS, VAIHINGEN_AREAS

    assert set(VAIHINGEN_TEST_AREAS) == set(VAIHINGEN_AREAS) - PARTICIPANT_AREAS
    assert len(VAIHINGEN_TEST_AREAS) == 17


@pytest.mark.parametrize("by", ["patch", "group"])
def test_official_vaihingen_test_split(vaihingen33, tmp_path, by):
    store = tmp_path / "store"
    shutil.copytree(vaihingen33, store)
    st = Store(store)
    man = make_split(store, name="o", fractions=(0.25, 0.5, 0.25), by=by, nested=True, test="official")
    official = {f"area{a}" for a in VAIHINGEN_TEST_AREAS}
    test_idx = man["subsets"]["test"]
    assert {st.groups[i] for i in test_idx} == official
    assert test_idx == [i for i in range(len(st)) if st.groups[i] in official]
    rest = [i for sub in ("strong", "weak", "val") for i in man["subsets"][sub]]
    assert {st.groups[i] for i in rest} == {g for g in st.groups if g not in official}  # the 16 others
    assert len(rest) == 32 and all(man["subsets"][sub] for sub in ("strong", "weak", "val"))
    assert man["test_groups"] == {"rule": "official", "groups": [f"area{a}" for a in VAIHINGEN_TEST_AREAS]}
    # The fractions are of the 16 training areas: 8/16/8 of 32 patches, so no warning.
    assert [len(man["subsets"][s]) for s in ("strong", "weak", "val")] == [8, 16, 8]
    assert man["fractions"] == {"strong": 0.25, "weak": 0.5, "val": 0.25}
    assert fraction_warning(man) is None
    again = make_split(store, name="p", fractions=(0.1, 0.65, 0.25), by=by, nested=True, test="official")
    assert again["subsets"]["val"] == man["subsets"]["val"] and again["subsets"]["test"] == test_idx
    assert set(again["subsets"]["strong"]) <= set(man["subsets"]["strong"])


def test_test_groups_list(fake_source, tmp_path):
    store = _many_groups_store(fake_source, tmp_path)
    st = Store(store)
    man = make_split(store, fractions=(0.2, 0.6, 0.2), by="group", test=["t3", "t1"])
    assert man["test_groups"] == {"rule": "groups", "groups": ["t1", "t3"]}
    assert man["subsets"]["test"] == [i for i, g in enumerate(st.groups) if g in ("t1", "t3")]
    assert man["groups"]["test"] == ["t1", "t3"]
    assert not {"t1", "t3"} & {st.groups[i] for s in ("strong", "weak", "val") for i in man["subsets"][s]}


def test_test_option_errors(vaihingen33, tiny_store, fake_source, tmp_path):
    fake = prepare(fake_source([(32, 32)] * 4), tmp_path / "fake", patch=32, stride=32, progress=False)
    with pytest.raises(SegweakError, match="official.*prepared from source 'fake'"):
        make_split(fake, test="official")
    few = tmp_path / "few"
    shutil.copytree(tiny_store, few)  # areas 1-3 only
    with pytest.raises(SegweakError, match="lacks 16 of the 17 ISPRS test areas.*COMPLETE"):
        make_split(few, name="x", test="official")
    with pytest.raises(SegweakError, match="has no group.*nope"):
        make_split(fake, test=["t0", "nope"])
    with pytest.raises(SegweakError, match="give three fractions"):
        make_split(fake, fractions=(0.2, 0.4, 0.2, 0.2), test=["t0"])
    with pytest.raises(SegweakError, match="'official' or a list"):
        make_split(fake, test="t0")
    with pytest.raises(SegweakError, match="distinct group ids"):
        make_split(fake, test=["t0", "t0"])
    with pytest.raises(SegweakError, match="no patch with valid pixels in the other groups"):
        make_split(fake, test=["t0", "t1", "t2", "t3"])
    assert not (tmp_path / "fake" / "splits").exists() or not list((tmp_path / "fake" / "splits").iterdir())


def test_load_split_accepts_test_and_rejects_other_subsets(store_copy):
    make_split(store_copy, name="t", fractions=(0.1, 0.6, 0.1, 0.2))
    assert "test" in load_split(store_copy, "t")["subsets"]
    path = store_copy / "splits" / "t.json"
    data = json.loads(path.read_text())
    data["subsets"]["extra"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(SegweakError, match="optionally test"):
        load_split(store_copy, "t")


def test_split_mismatch(store_copy):
    man = make_split(store_copy, name="m", fractions=(0.1, 0.6, 0.1, 0.2), seed=2, nested=True)
    assert split_mismatch(man, [0.1, 0.6, 0.1, 0.2], "patch", 2, nested=True) is None
    assert split_mismatch(man, [0.1, 0.6, 0.1, 0.2], "patch", 2) == "nested True, wanted False"
    assert "fractions" in split_mismatch(man, [0.1, 0.7, 0.2], "patch", 2, nested=True)
    assert split_mismatch(man, [0.1, 0.6, 0.1, 0.2], "group", 2, nested=True).startswith("by ")
    assert split_mismatch(man, [0.1, 0.6, 0.1, 0.2], "patch", 2, nested=True, test="official").startswith(
        "test"
    )
    legacy = load_split(store_copy, "default")
    assert split_mismatch(legacy, (0.1, 0.7, 0.2), "patch", 0) is None


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
