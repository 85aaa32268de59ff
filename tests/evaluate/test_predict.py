"""Evaluate a checkpoint on a split, and sliding-window prediction of whole tiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from segweak.config import TrainConfig, load_config
from segweak.errors import SegweakError
from segweak.evaluate.evaluate import evaluate
from segweak.evaluate.predict import blend_weights, predict_probabilities, predict_tiles
from segweak.train.engine import train

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "data.batch_size=4",
    "trainer.progress_bar=false",
]


@pytest.fixture(scope="module")
def strong_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        TrainConfig, None, [f"data.store={tiny_store}", f"out_dir={out}", *TINY, "trainer.max_epochs=1"]
    )
    metrics = train(cfg)
    return cfg.run_dir, metrics


def test_evaluate_matches_training_metrics(strong_run, tiny_store, tmp_path):
    run, metrics = strong_run
    out = tmp_path / "m.json"
    res = evaluate(run / "checkpoints" / "best.ckpt", tiny_store, out=out)
    assert res["miou"] == pytest.approx(metrics["miou"], abs=1e-6)
    assert res["n_pixels"] == metrics["n_pixels"] and res["prop_mae"] == pytest.approx(
        metrics["prop_mae"], abs=1e-6
    )
    assert json.loads(out.read_text())["miou"] == pytest.approx(res["miou"])
    with pytest.raises(SegweakError, match="not found"):
        evaluate(run / "nope.ckpt", tiny_store)


def test_blend_weights_and_single_window_equivalence():
    w = blend_weights(32, "gaussian")
    assert w.shape == (32, 32) and float(w.min()) > 0 and float(w.max()) == pytest.approx(1.0)
    assert torch.all(blend_weights(32, "mean") == 1)
    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(3, 32, 32)
    probs = predict_probabilities(model, x, 4, window=32, overlap=0.5)
    torch.testing.assert_close(probs, model(x[None]).softmax(1)[0])
    big = torch.randn(3, 70, 50)
    p = predict_probabilities(model, big, 4, window=32, overlap=0.5, blend="gaussian", batch_size=3)
    assert p.shape == (4, 70, 50)
    torch.testing.assert_close(p.sum(0), torch.ones(70, 50))


def test_predict_tiles_png_geotiff_and_metrics(strong_run, tiny_store, tmp_path):
    from segweak.data.store import Store

    run, _ = strong_run
    st = Store(tiny_store)
    tile = st.meta["tiles"][0]
    res = predict_tiles(
        run / "checkpoints" / "best.ckpt", tiny_store, tmp_path, tiles=[tile["id"]], overlap=0.5
    )
    entry = res["tiles"][tile["id"]]
    from PIL import Image

    png = np.asarray(Image.open(entry["png"]))
    assert png.shape == (*tile["shape"], 3)
    assert entry["metrics"]["n_pixels"] > 0 and res["overall"]["miou"] is not None
    if tile.get("eroded_label_path"):
        assert entry["metrics_no_boundary"]["n_pixels"] < entry["metrics"]["n_pixels"]
    if tile.get("georef"):
        assert entry["geotiff"] is not None
        with rasterio.open(entry["geotiff"]) as dst, rasterio.open(tile["image_path"]) as src:
            assert dst.transform == src.transform and dst.crs == src.crs
            assert dst.dtypes[0] == "uint8" and (dst.height, dst.width) == tuple(tile["shape"])
            assert int(dst.read(1).max()) < len(st.classes)
    assert json.loads((tmp_path / "metrics.json").read_text())["tiles"][tile["id"]]["png"] == entry["png"]
    # The tiny store's split is by patch: the tile holds patches of the strong/weak subsets.
    from segweak.data.splits import load_split

    subsets = load_split(st, "default")["subsets"]
    trained = set(subsets["strong"]) | set(subsets["weak"])
    expected = sum(1 for i, t in enumerate(st.tiles) if t == tile["id"] and i in trained)
    assert entry["training_patches"] == expected > 0
    with pytest.raises(SegweakError, match="unknown tile"):
        predict_tiles(run / "checkpoints" / "best.ckpt", tiny_store, tmp_path, tiles=["nosuch"])
