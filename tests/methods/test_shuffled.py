"""The ``shuffled`` control: proportion pre-training on weak labels permuted across the weak patches."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from segweak.config import TrainConfig, load_config
from segweak.data.dataset import SegweakDataset
from segweak.errors import SegweakError
from segweak.methods import METHODS, Need, build_method, check_config
from segweak.methods.shuffled import RECORD, permutation_seed, shuffled_labels
from segweak.train.engine import train

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "trainer.progress_bar=false",
    "data.batch_size=4",
]


def _cfg(store: Path, out: Path, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])


def test_shuffled_is_a_registered_pretraining_control():
    cls = METHODS["shuffled"]
    assert cls.pretrain and cls.control and not cls.requires_init
    assert not METHODS["proportion"].control and not METHODS["supervised"].control
    method = build_method(TrainConfig(method="shuffled"), 5)
    assert method.needs() == {"weak": Need(subset="weak", labels="weak")}
    with pytest.raises(SegweakError, match=r"methods\.shuffled\.seed must be >= 0"):
        build_method(TrainConfig(method="shuffled", methods={"shuffled": {"seed": -1}}), 5)
    # Imported weak labels come in bags; the permutation is over patches: refused up front.
    imported = load_config(TrainConfig, None, ["method=shuffled", "data.store=s", "weak.labels=survey"])
    with pytest.raises(
        SegweakError, match=r"weak\.labels: method 'shuffled' cannot use imported weak labels"
    ):
        check_config(imported)


def test_shuffled_labels_are_a_derangement_of_the_weak_labels(tiny_store):
    real = SegweakDataset(tiny_store, "default", "weak")
    out = shuffled_labels(tiny_store, "default", seed=7)
    n = len(real)
    assert n > 1 and np.array_equal(out["indices"], real.indices)
    # No patch keeps its own label, every label is used exactly once.
    assert (out["source"] != out["indices"]).all()
    assert sorted(out["source"].tolist()) == sorted(real.indices.tolist())
    pos = {int(i): k for k, i in enumerate(real.indices)}
    for k, src in enumerate(out["source"]):
        np.testing.assert_array_equal(out["weak"][k], real.weak[pos[int(src)]])
        np.testing.assert_array_equal(out["presence"][k], real.presence[pos[int(src)]])
    assert Counter(map(tuple, out["weak"].tolist())) == Counter(map(tuple, real.weak.tolist()))
    # Deterministic per seed; another seed gives another permutation.
    again = shuffled_labels(tiny_store, "default", seed=7)
    assert np.array_equal(again["source"], out["source"])
    assert not np.array_equal(shuffled_labels(tiny_store, "default", seed=8)["source"], out["source"])


def test_permutation_seed_depends_on_training_seed_and_split():
    assert permutation_seed(0, "default") == permutation_seed(0, "default")
    assert permutation_seed(0, "default") != permutation_seed(1, "default")
    assert permutation_seed(0, "default") != permutation_seed(0, "default-seed1")
    assert permutation_seed(0, "default", seed=5) == permutation_seed(3, "other", seed=5) == 5


class LabelSpy(L.Callback):
    """Records the indices of each weak batch and the labels the method trains them with."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        used = module.method.permuted(batch)["weak"].cpu()
        self.seen.append((batch["index"].tolist(), batch["weak"].cpu(), used))


def test_shuffled_trains_on_permuted_labels_and_records_them(tiny_store, tmp_path):
    spy = LabelSpy()
    metrics = train(_cfg(tiny_store, tmp_path, "method=shuffled", "trainer.max_epochs=2"), callbacks=[spy])
    assert metrics["method"] == "shuffled"
    run = tmp_path / "shuffled-seed0"
    record = json.loads((run / RECORD).read_text())
    assert record["seed"] == permutation_seed(0, "default") and record["split"] == "default"
    assert record["fixed_points"] == 0
    label_of = {i: j for i, j in record["label_of"]}
    real = SegweakDataset(tiny_store, "default", "weak")
    assert record["n_weak"] == len(real) == len(label_of) and sorted(label_of) == real.indices.tolist()
    pos = {int(i): k for k, i in enumerate(real.indices)}
    assert spy.seen
    for indices, own, used in spy.seen:
        for b, i in enumerate(indices):
            # Trained with the recorded patch's label, which is not its own.
            torch.testing.assert_close(used[b], torch.from_numpy(real.weak[pos[label_of[i]]]))
            assert label_of[i] != i
        assert not torch.equal(used, own)
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert all(float(r["train_proportion"]) > 0 for r in rows)
    # A second run with the same seed and split draws the same permutation.
    train(_cfg(tiny_store, tmp_path, "method=shuffled", "trainer.max_epochs=1", "run_name=again"))
    assert json.loads((tmp_path / "again" / RECORD).read_text())["label_of"] == record["label_of"]


def test_shuffled_before_training_is_a_clear_error():
    method = build_method(TrainConfig(method="shuffled"), 5)
    method.setup(None)
    with pytest.raises(SegweakError, match="built when training starts"):
        method.permuted({"index": torch.tensor([0])})


def test_the_controls_are_marked():
    controls = {name for name, cls in METHODS.items() if cls.control}
    assert {"shuffled", "presence", "semi_supervised"} <= controls
    assert not {"proportion", "joint", "interval", "mean_teacher", "supervised"} & controls
