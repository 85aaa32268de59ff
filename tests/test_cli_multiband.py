"""End to end through the CLI with more than 3 input channels, and folder datasets as they ship.

prepare (Potsdam RGBIR; Vaihingen + DSM) -> split -> train 1 epoch (tiny encoder, 4 channels) ->
evaluate -> predict; the scene layout with palette-mode masks prepares with no conversion.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segweak.cli import main
from segweak.data.store import Store

TRAIN = [
    "--set",
    "model.encoder=tu-test_efficientnet",
    "--set",
    "model.weights=none",
    "--set",
    "trainer.max_epochs=1",
    "--set",
    "trainer.progress_bar=false",
    "--set",
    "data.batch_size=4",
]


def _split_train_evaluate(store: Path, tmp_path: Path, capsys) -> dict:
    assert main(["split", str(store), "--fractions", "0.25", "0.5", "0.25", "--seed", "0"]) == 0
    runs = tmp_path / "runs"
    # A 3-channel model on a 4-channel store: one clear error before any work.
    args = ["train", "--store", str(store), "--out-dir", str(runs), "--method", "supervised", *TRAIN]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.in_channels is 3 but store" in err and "has 4 channels" in err and "in_channels=4" in err
    assert not runs.exists()
    assert main([*args, "--set", "model.in_channels=4"]) == 0
    run = runs / "supervised-seed0"
    ckpt = run / "checkpoints" / "best.ckpt"
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(ckpt), "--store", str(store), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["n_pixels"] == json.loads((run / "metrics.json").read_text())["n_pixels"] > 0
    pred = tmp_path / "pred"
    assert main(["predict", str(ckpt), "--store", str(store), "--out", str(pred)]) == 0
    assert len(list(pred.glob("*.png"))) == 2
    return json.loads((pred / "metrics.json").read_text())


def test_potsdam_rgbir_end_to_end(tmp_path: Path, capsys):
    root = tmp_path / "potsdam"
    assert (
        main(["synth", "--layout", "potsdam", "--out", str(root), "--tiles", "2", "--size", "64", "64"]) == 0
    )
    store = tmp_path / "store"
    assert main(["prepare", "potsdam", "--root", str(root), "--out", str(store), "--patch", "32"]) == 0
    st = Store(store)
    assert (
        st.meta["channels"] == 4 and st.meta["band_order"] == "RGBIR" and st.images.shape[1:] == (32, 32, 4)
    )
    predicted = _split_train_evaluate(store, tmp_path, capsys)
    assert predicted["overall"]["n_pixels"] > 0


def test_vaihingen_with_dsm_end_to_end(tmp_path: Path, capsys):
    root = tmp_path / "vaihingen"
    synth = ["synth", "--out", str(root), "--tiles", "2", "--size", "64", "64", "--dsm", "--zips"]
    assert main(synth) == 0
    store = tmp_path / "store"
    prep = ["prepare", "vaihingen", "--root", str(root), "--out", str(store), "--patch", "32"]
    assert main([*prep, "--dsm", "ndsm", "--dsm-window", "3"]) == 0
    st = Store(store)
    assert st.meta["band_order"] == "IRRG+nDSM" and st.images.shape[-1] == 4
    assert st.meta["bands"][3]["normalisation"]["window_px"] == 33
    _split_train_evaluate(store, tmp_path, capsys)
    # predict recomputed the DSM channel from the recorded file and rule: same pixels as the store.
    from segweak.data.tiles import tile_from_record

    rec = st.meta["tiles"][0]
    image = tile_from_record(rec, st.meta, None).read_image()
    assert np.array_equal(image[:32, :32], st.images[0])


def test_dsm_options_are_checked(tmp_path: Path, capsys):
    root = tmp_path / "v"
    assert main(["synth", "--out", str(root), "--tiles", "1", "--size", "32", "32"]) == 0
    prep = ["prepare", "vaihingen", "--root", str(root), "--out", str(tmp_path / "s"), "--patch", "32"]
    assert main([*prep, "--dsm-range", "0", "10"]) == 2
    assert "--dsm-range needs --dsm" in capsys.readouterr().err
    assert main([*prep, "--dsm", "range"]) == 2
    assert "--dsm-range" in capsys.readouterr().err
    assert main([*prep, "--dsm", "ndsm"]) == 2
    assert "have no dsm_09cm_matching_area" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_scene_layout_with_palette_mode_masks_prepares(tmp_path: Path, capsys):
    root = tmp_path / "scenes"
    assert (
        main(["synth", "--layout", "scenes", "--out", str(root), "--tiles", "4", "--size", "64", "64"]) == 0
    )
    store = tmp_path / "store"
    args = ["prepare", "folder", "--palette", str(root / "palette.yaml"), "--patch", "32"]
    images = f"{root}/*/images/*.jpg"
    assert (
        main(
            [
                *args,
                "--images",
                images,
                "--masks",
                "{parent}/masks/{stem}.png",
                "--out",
                str(store),
                "--group-by",
                "top",
            ]
        )
        == 0
    )
    st = Store(store)
    assert len(st) == 16 and sorted(set(st.groups)) == ["Scene 1", "Scene 2"]
    assert main(["split", str(store), "--by", "group", "--fractions", "0", "0.5", "0.5"]) == 0
    # The same root for images and masks: refused before any work, with one line.
    assert main([*args, "--images", str(root), "--masks", str(root), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "cannot be its own mask" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("layout", ["potsdam", "scenes"])
def test_synth_rejects_bad_layout_options(tmp_path: Path, capsys, layout):
    bad = ["synth", "--out", str(tmp_path / "o"), "--layout", "bogus" if layout == "potsdam" else layout]
    if layout == "scenes":
        bad.append("--dsm")
    assert main(bad) == 2
    assert "--layout" in capsys.readouterr().err
