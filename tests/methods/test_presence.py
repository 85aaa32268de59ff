"""The ``presence`` control: pre-training on class presence only (the candidate-set loss)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from segweak.config import TrainConfig, WeakConfig, load_config
from segweak.errors import SegweakError
from segweak.methods import METHODS, Need, build_method
from segweak.train.engine import train

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "trainer.progress_bar=false",
    "data.batch_size=4",
]


def _cfg(store: Path, out: Path, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])


def test_presence_is_a_registered_pretraining_control():
    cls = METHODS["presence"]
    assert cls.pretrain and cls.control and not cls.requires_init
    assert build_method(TrainConfig(method="presence"), 5).needs() == {
        "weak": Need(subset="weak", labels="weak")
    }
    with pytest.raises(SegweakError, match=r"unknown config key\(s\) methods\.presence\.loss"):
        build_method(TrainConfig(method="presence", methods={"presence": {"loss": "ce"}}), 5)


def _presence_method(area: str = "patch"):
    return build_method(TrainConfig(method="presence", weak=WeakConfig(area=area)), 3)


def test_presence_ignores_how_mass_is_split_among_present_classes():
    method = _presence_method()
    presence = torch.tensor([[1.0, 1.0, 0.0]])
    # All mass on the present classes, split in two very different ways: both ~0 loss.
    on_first = torch.tensor([20.0, 0.0, -20.0])[None, :, None, None].expand(1, 3, 4, 4)
    mixed = torch.tensor([0.0, 20.0, -20.0])[None, :, None, None].expand(1, 3, 4, 4).clone()
    mixed[..., :2] = torch.tensor([20.0, 0.0, -20.0])[:, None, None]
    for logits in (on_first, mixed):
        (term,) = method.weak_terms(logits, {"presence": presence}).values()
        assert float(term) < 1e-6
    # Mass on the absent class costs its log: uniform logits give −log(2/3).
    uniform = torch.zeros(1, 3, 4, 4, requires_grad=True)
    loss = method.weak_terms(uniform, {"presence": presence})["presence"]
    assert float(loss.detach()) == pytest.approx(-np.log(2 / 3), rel=1e-5)
    loss.backward()
    # The gradient pushes the absent class down and the present ones up, never between present ones.
    g = uniform.grad[0, :, 0, 0]
    assert g[2] > 0 and g[0] < 0 and g[1] < 0 and float(g[0]) == pytest.approx(float(g[1]))


def test_presence_valid_area_and_the_batch_keys():
    method = _presence_method("valid")
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 0, :] = 30.0  # the absent class wins on row 0 ...
    valid = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])  # ... which lies outside the valid area
    batch = {"presence": torch.tensor([[1.0, 0.0, 0.0]]), "valid": valid}
    inside = method.weak_terms(logits, batch)["presence"]
    assert float(inside) == pytest.approx(-np.log(1 / 3), rel=1e-5)
    with pytest.raises(SegweakError, match=r"needs batch\['presence'\]"):
        method.weak_terms(logits, {"valid": valid})


def test_presence_end_to_end(tiny_store, tmp_path):
    metrics = train(_cfg(tiny_store, tmp_path, "method=presence", "trainer.max_epochs=2"))
    assert metrics["method"] == "presence" and metrics["optimizer_steps"] > 0
    rows = list(csv.DictReader((tmp_path / "presence-seed0" / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["train_presence"]) >= 0 for r in rows)
    assert float(rows[0]["train_loss"]) == pytest.approx(float(rows[0]["train_presence"]))


def test_presence_with_bags_uses_the_bag_classes_per_patch():
    # Imported labels: both patches of bag 0 carry the bag's presence (classes 0 and 1), although
    # patch 1 shows only class 1. The per-patch loss is unchanged by the bag ids.
    method = _presence_method()
    logits = torch.zeros(2, 3, 2, 2)
    logits[1, 1] = 20.0
    presence = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    plain = method.weak_terms(logits, {"presence": presence})["presence"]
    bagged = method.weak_terms(logits, {"presence": presence, "bag": torch.tensor([0, 0])})["presence"]
    assert float(bagged) == pytest.approx(float(plain)) == pytest.approx(-np.log(2 / 3) / 2, rel=1e-4)
