"""``joint`` (strong + weak sub-batches in every step) and ``interval`` (size-interval pre-training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from segweak.config import TrainConfig, load_config
from segweak.methods.joint import ramp
from segweak.train.engine import train
from segweak.weak.constraints import interval_loss_mean

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "trainer.progress_bar=false",
    "optim.lr=0.01",
]


def _cfg(store: Path, out: Path, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])


def _subsets(store: Path) -> dict[str, list[int]]:
    return json.loads((store / "splits" / "default.json").read_text())["subsets"]


class Spy(L.Callback):
    """Records every training batch's structure and the logged weak weight."""

    def __init__(self) -> None:
        self.batches: list[dict[str, dict]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append({k: {"keys": set(v), "index": v["index"].tolist()} for k, v in batch.items()})


def test_joint_reads_strong_and_weak_every_step(tiny_store, tmp_path):
    spy = Spy()
    sets = [
        "method=joint",
        "trainer.max_epochs=2",
        "data.batch_sizes.strong=2",
        "data.batch_sizes.weak=6",
        "methods.joint.ramp_steps=4",
        "methods.joint.weight=0.5",
        "trainer.log_every_n_steps=1",
    ]
    metrics = train(_cfg(tiny_store, tmp_path, *sets), callbacks=[spy])
    subsets = _subsets(tiny_store)
    n_strong, n_weak = len(subsets["strong"]), len(subsets["weak"])
    # Epoch = one pass over the longer (weak) loader; the strong one starts over when it runs out.
    per_epoch = n_weak // 6
    assert n_strong // 2 < per_epoch and metrics["optimizer_steps"] == 2 * per_epoch == len(spy.batches)
    assert metrics["epoch_length"] == per_epoch and metrics["data_passes"] == 2.0
    for b in spy.batches:
        assert set(b) == {"strong", "weak"}
        assert "mask" in b["strong"]["keys"] and set(b["strong"]["index"]) <= set(subsets["strong"])
        assert b["weak"]["keys"] == {"image", "weak", "presence", "id", "index"}  # no mask, no valid map
        assert set(b["weak"]["index"]) <= set(subsets["weak"]) and len(b["weak"]["index"]) == 6
        assert len(b["strong"]["index"]) == 2
    # Cycled strong batches: each time round the strong loader starts over in a new order.
    epoch0 = [i for b in spy.batches[:per_epoch] for i in b["strong"]["index"]]
    cycle = (n_strong // 2) * 2
    assert epoch0[:cycle] != epoch0[cycle : 2 * cycle]
    run = tmp_path / "joint-seed0"
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        assert float(r["train_pixel"]) > 0 and float(r["train_proportion"]) > 0
        assert float(r["train_loss"]) == pytest.approx(float(r["train_pixel"]) + float(r["train_proportion"]))
    # Both terms and λ are in the step logs; λ ramps linearly to 0.5 over 4 steps.
    logged = list(csv.DictReader(next((run / "logs" / "csv").rglob("metrics.csv")).open()))
    assert any(r.get("train/pixel_step") for r in logged) and any(
        r.get("train/proportion_step") for r in logged
    )
    weights = [float(r["train/weak_weight"]) for r in logged if r.get("train/weak_weight")]
    assert weights and max(weights) == pytest.approx(0.5) and min(weights) < 0.5


def test_joint_interval_and_shortest_epoch(tiny_store, tmp_path):
    sets = ["method=joint", "methods.joint.weak_loss=interval", "data.batch_size=2", "data.epoch=shortest"]
    metrics = train(_cfg(tiny_store, tmp_path, *sets, "trainer.max_epochs=1"))
    n_strong = len(_subsets(tiny_store)["strong"])
    assert metrics["optimizer_steps"] == n_strong // 2  # stops when the strong loader runs out
    rows = list(csv.DictReader((tmp_path / "joint-seed0" / "history.csv").open()))
    assert "train_interval" in rows[0] and "train_proportion" not in rows[0]


def test_interval_pretraining_end_to_end(tiny_store, tmp_path):
    metrics = train(
        _cfg(tiny_store, tmp_path, "method=interval", "trainer.max_epochs=2", "data.batch_size=4")
    )
    assert metrics["method"] == "interval" and 0.0 <= metrics["prop_mae"] <= 1.0
    rows = list(csv.DictReader((tmp_path / "interval-seed0" / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(float(r["train_interval"]) >= 0 for r in rows)
    # A pre-trained interval run is a valid start for fine-tuning.
    best = tmp_path / "interval-seed0" / metrics["checkpoint"]
    ft = train(_cfg(tiny_store, tmp_path, f"init.checkpoint={best}", "trainer.max_epochs=1", "run_name=ft"))
    assert ft["method"] == "supervised"


def test_ramp_shapes():
    assert ramp(0, 0, "linear") == 1.0 and ramp(10, 0, "sigmoid") == 1.0
    assert [ramp(s, 4, "linear") for s in (0, 1, 4, 9)] == [0.0, 0.25, 1.0, 1.0]
    assert ramp(0, 10, "sigmoid") == pytest.approx(math.exp(-5)) and ramp(10, 10, "sigmoid") == 1.0
    assert ramp(5, 10, "sigmoid") == pytest.approx(math.exp(-1.25))


def test_interval_loss_is_zero_inside_and_squared_outside():
    # Two pixels of two classes: p̂ = [0.5, 0.5] whatever the target.
    logits = torch.zeros(1, 2, 1, 2, requires_grad=True)
    inside = interval_loss_mean(logits, torch.tensor([[0.45, 0.55]]), tau=0.2)
    assert float(inside.detach()) == 0.0
    inside.backward()
    assert torch.count_nonzero(logits.grad) == 0
    # Target [0.8, 0.2], τ = 0.1: class 0 below 0.72 by 0.22, class 1 above 0.22 by 0.28.
    outside = interval_loss_mean(logits, torch.tensor([[0.8, 0.2]]), tau=0.1)
    assert float(outside) == pytest.approx(0.22**2 + 0.28**2)
    # τ = 0: the squared error; an empty area leaves the patch out.
    assert float(interval_loss_mean(logits, torch.tensor([[0.8, 0.2]]), tau=0.0)) == pytest.approx(0.18)
    empty = torch.zeros(1, 1, 2)
    # (The methods replace such a patch's NaN proportions: test_patch_without_valid_pixels_is_left_out.)
    assert float(interval_loss_mean(logits, torch.tensor([[0.8, 0.2]]), 0.1, empty)) == 0.0
