"""Honest model selection: ``selection: best | last``, a held-out test subset, eroded-label metrics.

The runs use ``heldout_store``: the tiny synthetic Vaihingen store (it keeps the eroded ``_noBoundary``
masks next to the full ones) with a split that holds out 8 test patches.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from segweak.cli import main
from segweak.config import TrainConfig, load_config
from segweak.data.dataset import SegweakDataset
from segweak.data.splits import load_split
from segweak.data.store import Store
from segweak.errors import SegweakError
from segweak.evaluate.evaluate import evaluate
from segweak.metrics import confusion_matrix, metrics_from_confusion
from segweak.train.checkpoint import build_model_from_checkpoint, load_checkpoint
from segweak.train.engine import selected_checkpoint, train

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "data.batch_size=4",
    "trainer.progress_bar=false",
    "method=supervised",
    "data.split=heldout",
    "trainer.max_epochs=2",
]
METRIC_KEYS = (
    "miou",
    "mf1",
    "oa",
    "per_class_iou",
    "per_class_f1",
    "absent_classes",
    "n_pixels",
    "n_patches",
)


class BestIsTheFirstEpoch(L.Callback):
    """Makes the checkpoint callback see every validation after the first as the worst one.

    Only what the ``best.ckpt`` callback compares is changed; the weights, the history and the
    metrics of each validation stay the real ones.
    """

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn.value == "fit" and trainer.current_epoch > 0:
            trainer.callback_metrics["val/miou"] = torch.tensor(-1.0)


def _train(store: Path, out: Path, *sets: str) -> tuple[TrainConfig, dict]:
    cfg = load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])
    return cfg, train(cfg, callbacks=[BestIsTheFirstEpoch()])


@pytest.fixture(scope="module")
def runs(
    heldout_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[TrainConfig, dict]]:
    """The same two-epoch run reported with each selection."""
    out = tmp_path_factory.mktemp("selection")
    return {
        selection: _train(heldout_store, out, f"selection={selection}", f"run_name={selection}")
        for selection in ("best", "last")
    }


def _val_miou(cfg: TrainConfig) -> list[float]:
    return [float(r["val_miou"]) for r in csv.DictReader((cfg.run_dir / "history.csv").open())]


def _assert_same_metrics(ours: dict, theirs: dict) -> None:
    for key in METRIC_KEYS:
        assert ours[key] == theirs[key], key
    # Proportions are float32 means over pixels: another batch composition changes their last bits.
    assert ours["prop_mae"] == pytest.approx(theirs["prop_mae"], rel=1e-6)


def test_heldout_split_has_four_subsets(heldout_store):
    manifest = load_split(heldout_store, "heldout")
    assert {k: len(v) for k, v in manifest["subsets"].items()} == {
        "strong": 5,
        "weak": 25,
        "val": 10,
        "test": 8,
    }
    # The held-out patches are in no other subset.
    others = set().union(*(manifest["subsets"][s] for s in ("strong", "weak", "val")))
    assert not others & set(manifest["subsets"]["test"])


def test_selection_best_reports_the_best_validation_and_last_the_final_weights(runs):
    (best_cfg, best), (last_cfg, last) = runs["best"], runs["last"]
    # The same training (same seed): identical histories; epoch 2's weights differ from epoch 1's.
    history = _val_miou(best_cfg)
    assert history == _val_miou(last_cfg) and len(history) == 2 and history[0] != history[1]
    assert best["selection"] == "best" and last["selection"] == "last"
    assert best["checkpoint"] == "checkpoints/best.ckpt" and last["checkpoint"] == "checkpoints/last.ckpt"
    assert (best["selected_epoch"], best["best_epoch"]) == (1, 1)
    assert (last["selected_epoch"], last["best_epoch"]) == (2, 1)
    assert last["selected_step"] == last["steps"] == 2 * best["selected_step"]
    assert best["miou"] == history[0] and last["miou"] == history[1]
    for cfg, metrics in runs.values():
        assert selected_checkpoint(cfg) == cfg.run_dir / metrics["checkpoint"]
        assert json.loads((cfg.run_dir / "metrics.json").read_text())["selection"] == cfg.selection
        # The reported validation metrics are those of the selected checkpoint's weights.
        _assert_same_metrics(metrics, evaluate(selected_checkpoint(cfg), cfg.data.store, split="heldout"))


def test_test_subset_metrics_are_the_selected_checkpoints_on_the_whole_test_subset(runs, heldout_store):
    test_idx = load_split(heldout_store, "heldout")["subsets"]["test"]
    full_pixels = int(Store(heldout_store).valid[test_idx].sum())
    for cfg, metrics in runs.values():
        test = metrics["test"]
        assert test["n_patches"] == 8 and test["n_pixels"] == full_pixels and test["loss"] > 0
        _assert_same_metrics(test, evaluate(selected_checkpoint(cfg), heldout_store, "heldout", "test"))
        assert (
            test["eroded"] == evaluate(selected_checkpoint(cfg), heldout_store, "heldout", "test")["eroded"]
        )
        # Validation metrics stay at the top level, as before.
        assert metrics["n_patches"] == 10
    assert runs["best"][1]["test"]["miou"] != runs["last"][1]["test"]["miou"]


def test_eroded_metrics_are_computed_on_the_eroded_masks(runs, heldout_store):
    st = Store(heldout_store)
    subsets = load_split(heldout_store, "heldout")["subsets"]
    cfg, metrics = runs["last"]
    for reported, subset in ((metrics, "val"), (metrics["test"], "test")):
        idx = subsets[subset]
        eroded = reported["eroded"]
        assert eroded["n_patches"] == reported["n_patches"] == len(idx)
        # The boundary bands are ignored: fewer pixels, exactly the non-ignore pixels of the eroded masks.
        assert eroded["n_pixels"] == int((st.eroded_masks[idx] != 255).sum()) < reported["n_pixels"]
        assert set(eroded) >= {"miou", "mf1", "oa", "per_class_iou", "per_class_f1", "absent_classes"}
        # Recomputed from the network's predictions on the eroded masks.
        path = selected_checkpoint(cfg)
        model, _, classes = build_model_from_checkpoint(load_checkpoint(path), path)
        data = SegweakDataset(st, "heldout", subset)
        images = torch.stack([data[i]["image"] for i in range(len(data))])
        with torch.inference_mode():
            pred = model(images).argmax(dim=1)
        expected = metrics_from_confusion(
            confusion_matrix(pred, st.eroded_masks[data.indices], len(classes)), classes
        )
        assert eroded["miou"] == pytest.approx(expected["miou"], abs=1e-12)
        assert eroded["n_pixels"] == expected["n_pixels"]


def test_evaluate_cli_on_the_test_subset(runs, heldout_store, tmp_path, capsys):
    cfg, metrics = runs["best"]
    out = tmp_path / "test.json"
    args = ["evaluate", str(selected_checkpoint(cfg)), "--store", str(heldout_store), "--split", "heldout"]
    assert main([*args, "--subset", "test", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on heldout/test: mIoU" in printed and "eroded labels: mIoU" in printed
    written = json.loads(out.read_text())
    assert written["subset"] == "test" and written["n_pixels"] == metrics["test"]["n_pixels"]
    assert written["miou"] == metrics["test"]["miou"]


def test_train_cli_prints_the_test_line(runs, capsys):
    cfg, _ = runs["last"]
    argv = ["train", "--config", str(cfg.run_dir / "config.yaml"), "--resume"]
    assert main(argv) == 0  # a finished run: its metrics are read back, nothing is retrained
    out = capsys.readouterr().out
    assert "(last epoch 2)" in out and "test (8 patches): mIoU" in out


def test_a_split_without_test_reports_no_test_metrics(tiny_store, tmp_path):
    cfg, metrics = _train(tiny_store, tmp_path, "data.split=default", "trainer.max_epochs=1")
    assert "test" not in metrics and metrics["selection"] == "best" and "eroded" in metrics
    with pytest.raises(SegweakError, match=r"split 'default' of store .* has no 'test' subset"):
        evaluate(selected_checkpoint(cfg), tiny_store, "default", "test")


def test_selection_is_checked_with_the_config():
    with pytest.raises(SegweakError, match="selection: 'final' is not valid; choose one of best, last"):
        load_config(TrainConfig, None, ["data.store=x", "selection=final"]).validate()


def test_a_store_without_eroded_masks_reports_no_eroded_metrics(tmp_path, fake_source):
    from segweak.data.splits import make_split
    from segweak.data.store import prepare

    store = prepare(fake_source([(64, 64), (64, 64)]), tmp_path / "s", patch=32, progress=False)
    make_split(store, "heldout", fractions=(0.25, 0.5, 0.25), seed=0)
    _, metrics = _train(store, tmp_path, "trainer.max_epochs=1")
    assert "eroded" not in metrics and metrics["n_patches"] == 2 and "test" not in metrics


@pytest.mark.parametrize(
    ("budget", "steps", "epochs"),
    [
        # 25 weak patches in batches of 4: 6 steps per epoch, the budget ends inside the first.
        (["trainer.max_steps=3"], 3, 1),
        # Validation every 2 epochs: the third (last) one is validated anyway.
        (
            ["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2", "trainer.limit_train_batches=2"],
            6,
            3,
        ),
    ],
)
def test_selection_last_holds_the_final_step_whatever_the_budget(
    heldout_store, tmp_path, budget, steps, epochs
):
    cfg, metrics = _train(heldout_store, tmp_path, "method=proportion", "selection=last", *budget)
    assert metrics["steps"] == metrics["selected_step"] == steps and metrics["selected_epoch"] == epochs
    assert load_checkpoint(cfg.run_dir / "checkpoints" / "last.ckpt")["global_step"] == steps
    _assert_same_metrics(metrics, evaluate(selected_checkpoint(cfg), heldout_store, split="heldout"))
