import json

import numpy as np
import pytest

from segweak.data.sources import VAIHINGEN_ERODED_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ZIP, VaihingenSource
from segweak.data.synthetic import CLUT, PARTICIPANT_AREAS, label_colors, render_tile, synthesize
from segweak.errors import SegweakError


def test_render_is_deterministic_and_seed_dependent():
    a = render_tile(np.random.default_rng(5), 64, 96)
    b = render_tile(np.random.default_rng(5), 64, 96)
    c = render_tile(np.random.default_rng(6), 64, 96)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (64, 96, 3) and a[0].dtype == np.uint8 and a[1].shape == (64, 96)


def test_class_coverage_and_irrg_colours():
    counts = np.zeros(6, dtype=np.int64)
    means = {}
    for seed in range(3):
        img, cls = render_tile(np.random.default_rng(seed), 128, 128)
        counts += np.bincount(cls.ravel(), minlength=6)
        for k in range(6):
            if (cls == k).any():
                means.setdefault(k, []).append(img[cls == k].astype(float).mean(axis=0))
    assert (counts[:5] > 0).all(), counts
    assert counts[CLUT] > 0
    tree, lawn, road = (np.mean(means[k], axis=0) for k in (3, 2, 0))
    # vegetation is bright in near-infrared (band 1) relative to red (band 2); roads are grey
    assert tree[0] > tree[1] + 50 and lawn[0] > lawn[1] + 20
    assert abs(road[0] - road[1]) < 25


def test_synthesize_layout_and_determinism(tmp_path):
    a = synthesize(tmp_path / "a", n_tiles=3, height=48, width=64, seed=1)
    b = synthesize(tmp_path / "b", n_tiles=3, height=48, width=64, seed=1)
    for area in (1, 2, 3):
        name = f"top_mosaic_09cm_area{area}.tif"
        assert (a / "top" / name).is_file() and (a / "ground_truth_COMPLETE" / name).is_file()
        assert (a / "gts_for_participants" / name).is_file() == (area in PARTICIPANT_AREAS)
        assert (a / "ground_truth_eroded_COMPLETE" / f"top_mosaic_09cm_area{area}_noBoundary.tif").is_file()
    meta = json.loads((a / "synth.json").read_text())
    assert meta["areas"] == [1, 2, 3] and meta["seed"] == 1
    ta, tb = VaihingenSource(a).tiles(), VaihingenSource(b).tiles()
    for x, y in zip(ta, tb, strict=True):
        (ia, ma), (ib, mb) = x.read(), y.read()
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    with pytest.raises(SegweakError, match="already exists.*--overwrite"):
        synthesize(tmp_path / "a", n_tiles=1, height=48, width=64)
    synthesize(tmp_path / "a", n_tiles=1, height=48, width=64, overwrite=True, eroded=False)
    assert not (tmp_path / "a" / "ground_truth_eroded_COMPLETE").exists()


def test_synthesize_zips(tmp_path):
    out = synthesize(tmp_path / "z", n_tiles=2, height=40, width=40, seed=2, zips=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([VAIHINGEN_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ERODED_ZIP, "synth.json"])
    import zipfile

    with zipfile.ZipFile(out / VAIHINGEN_ZIP) as zf:
        assert "top/top_mosaic_09cm_area1.tif" in zf.namelist()
        assert "gts_for_participants/top_mosaic_09cm_area1.tif" in zf.namelist()
    with zipfile.ZipFile(out / VAIHINGEN_GT_ZIP) as zf:
        assert sorted(zf.namelist()) == ["top_mosaic_09cm_area1.tif", "top_mosaic_09cm_area2.tif"]


def test_eroded_labels_blacken_boundaries():
    cls = np.zeros((20, 20), np.uint8)
    cls[:, 10:] = 1
    rgb = label_colors(cls, eroded_radius=2)
    black = (rgb == 0).all(axis=2)
    assert black[:, 8:12].all() and not black[:, :8].any() and not black[:, 12:].any()
    assert not (label_colors(cls) == 0).all(axis=2).any()


def test_bad_arguments(tmp_path):
    with pytest.raises(SegweakError, match="--tiles"):
        synthesize(tmp_path / "x", n_tiles=0)
    with pytest.raises(SegweakError, match="--size"):
        synthesize(tmp_path / "x", height=8, width=64)
    assert not (tmp_path / "x").exists()


def test_more_than_33_areas_get_extra_numbers(tmp_path):
    from segweak.data.synthetic import _area_numbers

    nums = _area_numbers(35)
    assert len(set(nums)) == 35 and nums[32] == 38 and nums[33:] == [39, 40]


def test_overwrite_replaces_only_a_synth_output(tmp_path, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(SegweakError, match=r"refusing to --overwrite .*no synth.json.*thesis.tex"):
        synthesize(user, n_tiles=1, height=32, width=32, overwrite=True)
    assert (user / "thesis.tex").read_text() == "precious"

    out = synthesize(tmp_path / "s", n_tiles=1, height=32, width=32)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SegweakError, match=r"holds files that synth does not write \(notes.txt\)"):
        synthesize(out, n_tiles=1, height=32, width=32, overwrite=True)
    (out / "notes.txt").unlink()
    (out / "top" / "extra.png").write_bytes(b"x")
    with pytest.raises(SegweakError, match="top/extra.png"):
        synthesize(out, n_tiles=1, height=32, width=32, overwrite=True)
    (out / "top" / "extra.png").unlink()
    notes = []
    synthesize(out, n_tiles=2, height=32, width=32, overwrite=True, log=notes.append)
    assert json.loads((out / "synth.json").read_text())["n_tiles"] == 2
    assert notes and "will be replaced" in notes[0]

    monkeypatch.chdir(out)
    with pytest.raises(SegweakError, match="current directory"):
        synthesize(".", n_tiles=1, height=32, width=32, overwrite=True)
    assert (out / "synth.json").is_file()


@pytest.mark.parametrize("layout", ["potsdam", "scenes"])
def test_overwrite_of_other_layouts_replaces_only_their_own_output(tmp_path, layout):
    from segweak.data.synthetic import synthesize_potsdam, synthesize_scenes
    from segweak.errors import SegweakError

    make = synthesize_potsdam if layout == "potsdam" else synthesize_scenes
    out = tmp_path / "synth"
    kwargs = dict(height=64, width=64, seed=0)
    if layout == "potsdam":
        kwargs["n_tiles"] = 1
    else:
        kwargs["n_scenes"] = 1
    make(out, **kwargs)
    make(out, overwrite=True, **kwargs)  # its own output: replaced
    assert (out / "synth.json").is_file()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SegweakError, match="notes.txt"):
        make(out, overwrite=True, **kwargs)
    assert (out / "notes.txt").read_text() == "mine"
