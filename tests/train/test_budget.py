"""Training budgets: every budget ends with a validation, final metrics cover the whole val subset.

A validation pass is counted by a callback on ``on_validation_epoch_end`` (sanity checks excluded),
tagged with the trainer function that ran it: ``fit`` (choosing the best checkpoint) or ``validate``
(the engine re-validating ``best.ckpt`` for ``metrics.json``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from segweak.config import TrainConfig, load_config
from segweak.errors import SegweakError
from segweak.evaluate.evaluate import evaluate
from segweak.train.engine import train

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "data.batch_size=4",
    "data.split=odd",
    "trainer.progress_bar=false",
]


def make_cfg(store: Path, out: Path, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])


class CountValidations(L.Callback):
    """Records (trainer function, global step, patches seen) of every validation pass."""

    def __init__(self) -> None:
        self.passes: list[tuple[str, int, int]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            patches = int(module.val_metrics.patches.compute())
            self.passes.append((trainer.state.fn.value, trainer.global_step, patches))


def history(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "history.csv").open()))


def assert_matches_evaluate(metrics: dict[str, Any], cfg: TrainConfig) -> None:
    """metrics.json of the run equals ``evaluate`` of its best checkpoint on the whole val subset."""
    on_disk = json.loads((cfg.run_dir / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    ev = evaluate(cfg.run_dir / "checkpoints" / "best.ckpt", cfg.data.store, split=cfg.data.split)
    for key in ("n_pixels", "n_patches", "miou", "mf1", "oa", "per_class_iou", "absent_classes"):
        assert metrics[key] == ev[key], key
    # Proportions are float32 means over pixels: other batch sizes change their last bits.
    assert metrics["n_patches"] == 13 and metrics["prop_mae"] == pytest.approx(ev["prop_mae"], rel=1e-6)


def test_max_steps_below_one_epoch_trains_validates_once_and_writes_metrics(odd_store, tmp_path):
    # 29 weak patches in batches of 4: 7 steps per epoch; the budget ends at step 3.
    counter = CountValidations()
    cfg = make_cfg(odd_store, tmp_path, "method=proportion", "trainer.max_steps=3", "trainer.max_epochs=5")
    metrics = train(cfg, callbacks=[counter])
    assert metrics["steps"] == 3 and metrics["epochs"] == 1 and metrics["best_epoch"] == 1
    # The budget's last step was validated, and that validation (of the best = last weights, on every
    # patch) was reused for metrics.json instead of validating best.ckpt again.
    assert counter.passes == [("fit", 3, 13)]
    rows = history(cfg.run_dir)
    assert [r["epoch"] for r in rows] == ["1"] and float(rows[0]["val_miou"]) == metrics["miou"]
    assert_matches_evaluate(metrics, cfg)


def test_final_metrics_cover_the_whole_subset_whatever_limit_val_batches_says(odd_store, tmp_path):
    counter = CountValidations()
    cfg = make_cfg(
        odd_store,
        tmp_path,
        "method=supervised",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "data.eval_batch_size=2",
    )
    metrics = train(cfg, callbacks=[counter])
    # Fit validated 1 batch (2 patches) to pick the best checkpoint; the final pass saw all 13.
    assert counter.passes == [("fit", 1, 2), ("validate", 1, 13)]
    assert_matches_evaluate(metrics, cfg)


def test_an_int_batch_limit_stays_a_number_of_batches(tmp_path):
    # Lightning reads 1 as "one batch" and 1.0 as "all batches"; the config must keep them apart.
    assert load_config(TrainConfig, None, ["trainer.limit_val_batches=1"]).trainer.limit_val_batches == 1
    path = tmp_path / "c.yaml"
    path.write_text("trainer: {limit_val_batches: 2, limit_train_batches: 1.0}\n")
    tc = load_config(TrainConfig, path).trainer
    assert type(tc.limit_val_batches) is int and type(tc.limit_train_batches) is float


class WorseAfterFirstEpoch(L.Callback):
    """Makes every validation after the first look worse, so the best checkpoint is epoch 1's."""

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn.value == "fit" and trainer.current_epoch > 0:
            trainer.callback_metrics["val/miou"] = torch.tensor(-1.0)


def test_best_checkpoint_before_the_last_epoch_is_validated_again(odd_store, tmp_path):
    counter = CountValidations()
    cfg = make_cfg(odd_store, tmp_path, "method=supervised", "trainer.max_epochs=2")
    metrics = train(cfg, callbacks=[WorseAfterFirstEpoch(), counter])
    assert metrics["best_epoch"] == 1 and metrics["epochs"] == 2
    assert [fn for fn, _, _ in counter.passes] == ["fit", "fit", "validate"]
    rows = history(cfg.run_dir)
    assert float(rows[0]["val_miou"]) == metrics["miou"] != float(rows[1]["val_miou"])
    assert_matches_evaluate(metrics, cfg)


def test_last_epoch_is_validated_when_the_validation_interval_skips_it(odd_store, tmp_path):
    counter = CountValidations()
    cfg = make_cfg(
        odd_store, tmp_path, "method=supervised", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"
    )
    metrics = train(cfg, callbacks=[counter])
    assert [fn for fn, _, _ in counter.passes[:2]] == ["fit", "fit"]
    assert [bool(r["val_miou"]) for r in history(cfg.run_dir)] == [False, True, True]
    assert metrics["epochs"] == 3 and metrics["best_epoch"] in (2, 3)
    assert_matches_evaluate(metrics, cfg)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("trainer.max_steps=0", "trainer.max_steps=0"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0"),
        ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 trains nothing"),
        ("trainer.limit_val_batches=0", "trainer.limit_val_batches=0 disables validation"),
        ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5 is a fraction above 1"),
    ],
)
def test_budgets_that_train_or_validate_nothing_are_refused_up_front(odd_store, tmp_path, setting, message):
    cfg = make_cfg(odd_store, tmp_path, setting)
    with pytest.raises(SegweakError, match=message.replace(".", r"\.")):
        train(cfg)
    assert not cfg.run_dir.exists()


def test_spawning_strategies_are_refused_before_anything_is_written(odd_store, tmp_path):
    cfg = make_cfg(
        odd_store, tmp_path, "trainer.strategy=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu"
    )
    with pytest.raises(SegweakError, match="trainer.strategy='ddp_spawn'.*use trainer.strategy=ddp"):
        train(cfg)
    assert not cfg.run_dir.exists()


def test_bf16_mixed_weak_stage_has_finite_metrics(odd_store, tmp_path):
    bf16 = ("trainer.precision=bf16-mixed", "trainer.max_steps=2", "optim.lr=0.01")
    cfg = make_cfg(odd_store, tmp_path, "method=proportion", *bf16)
    metrics = train(cfg)
    assert metrics["steps"] == 2 and metrics["n_patches"] == 13
    for key in ("miou", "oa", "prop_mae", "presence_f1", "val_loss"):
        assert math.isfinite(metrics[key]), key
    assert all(math.isfinite(float(r["train_loss"])) for r in history(cfg.run_dir))
