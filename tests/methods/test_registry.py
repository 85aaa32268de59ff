"""The training-method registry and the contract a method gets from the task and the datamodule.

A method defined here, outside the ``segweak.methods`` package, with no edit to the module, the
datamodule or the planner, proves that adding a method is one ``@register``-ed class: it reads a
labelled and an unlabelled sub-batch, uses two views of the unlabelled patches and keeps a counter
in its state that must survive a resume.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch

from segweak.config import TrainConfig, load_config
from segweak.errors import SegweakError
from segweak.methods import METHODS, Need, TrainingMethod, build_method, register
from segweak.train.checkpoint import load_checkpoint
from segweak.train.engine import is_complete, train

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "data.batch_size=4",
    "trainer.progress_bar=false",
]
SEEN: list[dict[str, dict]] = []


@dataclass
class ToyOptions:
    scale: float = 1.0


class ToyConsistency(TrainingMethod):
    """Pixel loss on strong patches + view consistency on unlabelled weak patches."""

    Options = ToyOptions

    def setup(self, task):
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def needs(self):
        return {
            "labelled": Need(subset="strong", labels="mask"),
            "unlabelled": Need(subset="weak", labels="none", views=2, batch_size=3),
        }

    def make_views(self, task, name, batch, n):
        return [torch.flip(batch["image"], dims=[-1])]

    def training_step(self, task, batches):
        SEEN.append({k: {"keys": sorted(v), "n": len(v["image"])} for k, v in batches.items()})
        lab, unl = batches["labelled"], batches["unlabelled"]
        pixel = task.pixel_loss(task(lab["image"]), lab["mask"])
        a, b = unl["views"]
        consistency = (task(a).softmax(1) - task(b).flip(-1).softmax(1)).pow(2).mean()
        return {"pixel": pixel, "consistency": self.options.scale * consistency}

    def on_train_batch_end(self, task):
        self.steps_seen += 1


@pytest.fixture
def toy():
    register("toy_consistency")(ToyConsistency)
    SEEN.clear()
    yield "toy_consistency"
    METHODS.pop("toy_consistency")


def _cfg(store: Path, out: Path, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])


def test_unknown_method_is_one_error_listing_the_valid_names():
    with pytest.raises(SegweakError) as info:
        build_method(TrainConfig(method="proportio"), 5)
    message = str(info.value)
    assert "\n" not in message and "unknown training method 'proportio'" in message
    assert all(name in message for name in ("supervised", "proportion", "joint", "interval"))


def test_register_refuses_bad_names_and_options():
    class NoDataclass(TrainingMethod):
        Options = dict

    with pytest.raises(ValueError, match="stage name"):
        register("full")(ToyConsistency)
    with pytest.raises(ValueError, match="lower-case"):
        register("My-Method")(ToyConsistency)
    with pytest.raises(ValueError, match="already registered"):
        register("proportion")(ToyConsistency)
    with pytest.raises(TypeError, match="must be a dataclass"):
        register("no_dataclass")(NoDataclass)
    assert "no_dataclass" not in METHODS


def test_every_module_of_the_package_is_imported():
    # A new file in segweak/methods is registered without editing any other file.
    import segweak.methods as package

    files = {p.stem for p in Path(package.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert files and all(f"segweak.methods.{f}" in sys.modules for f in files)
    assert {c.__module__ for c in METHODS.values()} >= {f"segweak.methods.{f}" for f in files - {"base"}}


def test_need_rejects_pixel_labels_on_the_weak_subset():
    with pytest.raises(SegweakError, match="weak subset has no pixel labels"):
        Need(subset="weak", labels="mask")
    with pytest.raises(SegweakError, match="Need.labels"):
        Need(subset="strong", labels="proportions")


def test_method_from_outside_the_package_trains_and_keeps_its_state(toy, tiny_store, tmp_path):
    class Boom(Exception):
        pass

    class StopAtEpoch1(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise Boom

    base = [
        f"method={toy}",
        f"methods.{toy}.scale=0.5",
        "trainer.max_epochs=2",
        "data.batch_sizes.labelled=2",
    ]
    with pytest.raises(Boom):
        train(_cfg(tiny_store, tmp_path, *base), callbacks=[StopAtEpoch1()])
    run = tmp_path / f"{toy}-seed0"
    assert not is_complete(run)
    steps_epoch0 = int(load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]["method.steps_seen"])
    assert steps_epoch0 > 0
    metrics = train(_cfg(tiny_store, tmp_path, *base, "resume=true"))
    # The counter was restored from the checkpoint and kept counting: it equals all steps taken.
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert int(last["state_dict"]["method.steps_seen"]) == metrics["optimizer_steps"] == 2 * steps_epoch0
    # Sub-batches as declared: an unlabelled batch of images (and their views) only; sizes from the
    # need's default (3) and data.batch_sizes (2).
    assert all(s["unlabelled"]["keys"] == ["id", "image", "index", "views"] for s in SEEN)
    assert all("mask" in s["labelled"]["keys"] and "weak" not in s["labelled"]["keys"] for s in SEEN)
    assert {s["unlabelled"]["n"] for s in SEEN} == {3} and {s["labelled"]["n"] for s in SEEN} == {2}
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["train_consistency"]) >= 0 and float(r["train_pixel"]) > 0 for r in rows)
    for r in rows:
        total = float(r["train_pixel"]) + float(r["train_consistency"])
        assert float(r["train_loss"]) == pytest.approx(total, rel=1e-6)
    assert (
        metrics["method"] == toy and load_checkpoint(run / metrics["checkpoint"])["segweak"]["method"] == toy
    )


def test_task_guards_the_protocol(tiny_store):
    from segweak.train.module import SegModule

    image = torch.zeros(2, 3, 32, 32)
    for method, sub, match in (
        ("proportion", {"weak": torch.ones(2, 5), "mask": torch.zeros(2, 32, 32)}, "carries pixel masks"),
        ("proportion", {"weak": torch.ones(2, 5), "valid": torch.ones(2, 32, 32)}, "valid map although"),
    ):
        cfg = _cfg(tiny_store, Path("unused"), f"method={method}")
        module = SegModule(cfg, 5, ["a", "b", "c", "d", "e"])
        with pytest.raises(RuntimeError, match=match):
            module.training_step({"image": image, **sub}, 0)


def test_unknown_batch_size_name_is_an_error(tiny_store, tmp_path):
    with pytest.raises(
        SegweakError, match="data.batch_sizes.strong: method 'proportion' reads no sub-batch.*weak"
    ):
        train(_cfg(tiny_store, tmp_path, "method=proportion", "data.batch_sizes.strong=2"))
