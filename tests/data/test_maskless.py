"""Images with no pixel mask, labelled only by a weak-label table: prepare -> import -> split -> train.

The data are generated in the layout a user has: scene folders of images, masks for some scenes only,
and a CSV of class proportions for the images without a mask.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segweak.cli import main
from segweak.data.dataset import SegweakDataset
from segweak.data.splits import make_split
from segweak.data.store import Store
from segweak.data.synthetic import SCENE_CLASSES, synthesize_scenes
from segweak.errors import SegweakError

TEMPLATE = "{parent}/masks/{stem}.png"
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


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Three scenes of two 64x64 images; scene 3's masks are removed (their classes are returned)."""
    root = synthesize_scenes(
        tmp_path_factory.mktemp("maskless") / "data", n_scenes=3, per_scene=2, height=64, width=64
    )
    hidden = {}
    for mask in sorted((root / "Scene 3" / "masks").glob("*.png")):
        hidden[mask.stem] = np.asarray(Image.open(mask))  # P-mode: class indices
    shutil.rmtree(root / "Scene 3" / "masks")
    return root, hidden


def _prepare(root: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "prepare",
            "folder",
            "--images",
            f"{root}/*/images/*.jpg",
            "--masks",
            TEMPLATE,
            "--palette",
            str(root / "palette.yaml"),
            "--group-by",
            "top",
            "--patch",
            "32",
            "--out",
            str(out),
            *extra,
        ]
    )


def _shares(classes: np.ndarray) -> list[str]:
    counts = np.bincount(classes.ravel(), minlength=len(SCENE_CLASSES))
    return [f"{v:.6f}" for v in counts / counts.sum()]


def test_missing_masks_stay_an_error_by_default(data, tmp_path: Path, capsys):
    root, _ = data
    assert _prepare(root, tmp_path / "s") == 2
    err = capsys.readouterr().err
    assert "2 of 6 image(s)" in err and "have no mask" in err and "Scene 3/images" in err
    assert not (tmp_path / "s").exists()


def test_allow_missing_masks_needs_some_masks(data, tmp_path: Path, capsys):
    root, _ = data
    empty = tmp_path / "nomasks"
    empty.mkdir()
    args = ["--allow-missing-masks"]
    code = main(
        ["prepare", "folder", "--images", f"{root}/*/images/*.jpg", "--masks", str(empty), "--palette"]
        + [str(root / "palette.yaml"), "--patch", "32", "--out", str(tmp_path / "s"), *args]
    )
    assert code == 2
    assert "none of the 6 image(s)" in capsys.readouterr().err


def test_proportions_only_images_train_end_to_end(data, tmp_path: Path, capsys):
    root, hidden = data
    store = tmp_path / "store"
    assert _prepare(root, store, "--allow-missing-masks") == 0
    assert "2 image(s) have no mask" in capsys.readouterr().out
    st = Store(store)
    unlabelled = st.meta["unlabelled_tiles"]
    assert unlabelled == ["Scene 3__images__image_part_001", "Scene 3__images__image_part_002"]
    rec = {t["id"]: t for t in st.meta["tiles"]}
    assert rec[unlabelled[0]]["label_path"] is None
    maskless = np.flatnonzero(st.unlabelled)
    assert len(maskless) == 8 and (st.valid[maskless] == 0).all() and (st.masks[maskless] == 255).all()

    # The user's table: image 1 as a whole, and the top half (two patches) of image 2.
    a, b = unlabelled
    top = hidden["image_part_002"][:32]
    table = tmp_path / "stats.csv"
    table.write_text(
        "image,bag,x0,y0,x1,y1," + ",".join(SCENE_CLASSES) + "\n"
        f"{a},block_a,,,,,{','.join(_shares(hidden['image_part_001']))}\n"
        f"{b},block_b_top,0,0,64,32,{','.join(_shares(top))}\n"
    )
    assert main(["weak", "import", str(table), "--store", str(store), "--name", "stats"]) == 0

    # Without the weak labels the mask-less patches are nowhere; with them, weak only.
    plain = make_split(store, "plain", (0.25, 0.5, 0.25), seed=0)
    assert plain["excluded"]["no_pixel_labels"] == maskless.tolist()
    assert not set(maskless) & {i for s in plain["subsets"].values() for i in s}
    assert main(["split", str(store), "--fractions", "0.25", "0.5", "0.25", "--weak-labels", "stats"]) == 0
    out = capsys.readouterr().out
    assert "6 patch(es) of images without a mask" in out and "excluded 2 patch(es)" in out
    man = json.loads((store / "splits" / "default.json").read_text())
    covered = [i for i in maskless if st.tiles[i] == a or st.rows[i] == 0]
    assert man["weak_only"] == covered and man["weak_labels"] == "stats"
    assert set(covered) <= set(man["subsets"]["weak"])
    assert not set(maskless) & set(man["subsets"]["strong"] + man["subsets"]["val"])
    assert man["excluded"]["no_pixel_labels"] == sorted(set(maskless) - set(covered))
    # The labelled patches are split exactly as without the table.
    assert man["subsets"]["strong"] == plain["subsets"]["strong"]
    assert man["subsets"]["val"] == plain["subsets"]["val"]
    assert sorted(set(man["subsets"]["weak"]) - set(covered)) == plain["subsets"]["weak"]

    # Computed labels or pixel masks never reach the mask-less patches.
    computed = SegweakDataset(store, "default", "weak")
    assert computed.dropped_no_pixel_labels == 6 and not set(covered) & set(computed.indices.tolist())
    assert np.isfinite(computed.weak).all()
    full = SegweakDataset(store, "default", "full")
    assert full.dropped_no_pixel_labels == 6
    from segweak.data.weak_tables import load_set

    bags = SegweakDataset(store, "default", "weak", weak_set=load_set(Store(store), "stats"))
    assert set(covered) <= set(bags.indices.tolist()) and bags.dropped_no_pixel_labels == 0
    with pytest.raises(SegweakError, match="weak.area: valid needs pixel masks"):
        SegweakDataset(store, "default", "weak", with_valid=True, weak_set=load_set(Store(store), "stats"))

    runs = tmp_path / "runs"
    args = ["train", "--store", str(store), "--out-dir", str(runs), "--method", "proportion", *TRAIN]
    assert main([*args, "--set", "weak.labels=stats"]) == 0
    metrics = json.loads((runs / "proportion-seed0" / "metrics.json").read_text())
    assert metrics["weak_labels"]["name"] == "stats" and metrics["weak_labels"]["bags_used"] == 2
    ckpt = runs / "proportion-seed0" / "checkpoints" / "best.ckpt"
    ev = tmp_path / "eval.json"
    assert main(["evaluate", str(ckpt), "--store", str(store), "--out", str(ev)]) == 0
    assert json.loads(ev.read_text())["n_pixels"] == int(st.valid[man["subsets"]["val"]].sum()) > 0


def test_info_counts_images_without_masks(data, tmp_path: Path, tiny_store: Path, capsys):
    from segweak.data.info import info

    root, _ = data
    store = tmp_path / "store"
    assert _prepare(root, store, "--allow-missing-masks") == 0
    capsys.readouterr()
    d = info(store)
    assert (d["n_tiles"], d["n_tiles_labelled"], d["n_tiles_unlabelled"]) == (6, 4, 2)
    assert (d["n_patches"], d["n_patches_labelled"], d["n_patches_unlabelled"]) == (24, 16, 8)
    assert d["unlabelled_tiles"] == Store(store).meta["unlabelled_tiles"]
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "with pixel masks: 4 tiles, 16 patches" in out and "2 tiles" in out and "8 patches" in out
    assert main(["info", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_patches_unlabelled"] == 8
    # A store whose images all have masks: every count is labelled, and the text says nothing more.
    plain = info(tiny_store)
    assert plain["n_tiles_unlabelled"] == 0 and plain["n_patches_labelled"] == plain["n_patches"]
    assert plain["unlabelled_tiles"] == []
    assert main(["info", str(tiny_store)]) == 0
    assert "with pixel masks" not in capsys.readouterr().out
