"""Training engine: methods, run directory, init from a checkpoint, resume, weights-only checkpoints."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from segweak.config import TrainConfig, load_config
from segweak.errors import SegweakError
from segweak.train.checkpoint import load_checkpoint, model_state_dict
from segweak.train.engine import HISTORY_COLUMNS, is_complete, train
from segweak.train.module import SegModule

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "data.batch_size=4",
    "trainer.progress_bar=false",
]


def make_cfg(store: Path, out: Path, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])


@pytest.fixture(scope="module")
def weak_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, dict]:
    out = tmp_path_factory.mktemp("runs")
    cfg = make_cfg(tiny_store, out, "method=proportion", "trainer.max_epochs=2", "optim.lr=0.01")
    return cfg, train(cfg)


def test_steps_dispatch_to_one_shared_step():
    # Validation and test share one step for every method; training hands the step to the method.
    for name in ("validation_step", "test_step"):
        src = inspect.getsource(getattr(SegModule, name))
        body = src.split('"""')[-1]
        assert "self._eval_step(batch," in body and body.count("\n") <= 3, name
    assert "self.method.training_step(self, batches)" in inspect.getsource(SegModule.training_step)


def test_training_code_has_no_stage_branches():
    # Behaviour comes from the method registry, not from comparing stage names.
    import re

    root = Path(__file__).resolve().parents[2] / "src" / "segweak"
    for sub in ("train", "methods"):
        for path in (root / sub).glob("*.py"):
            assert not re.search(r"stage ==|\.stage\b", path.read_text()), path


def test_weak_run_directory_and_metrics(weak_run):
    cfg, metrics = weak_run
    run = cfg.run_dir
    for key in (
        "method",
        "seed",
        "epochs",
        "optimizer_steps",
        "steps_per_epoch",
        "epoch_length",
        "data_passes",
        "classes",
        "miou",
        "mf1",
        "oa",
        "per_class_iou",
        "per_class_f1",
        "absent_classes",
        "n_pixels",
        "checkpoint",
        "prop_mae",
        "presence_f1",
        "train_seconds",
        "best_epoch",
    ):
        assert key in metrics, key
    assert metrics["method"] == "proportion" and metrics["epochs"] == 2 and metrics["seed"] == 0
    assert 0.0 <= metrics["prop_mae"] <= 1.0 and metrics["n_pixels"] > 0
    # What ran: 2 full epochs of the weak subset at batch size 4 (drop_last).
    n_weak = len(
        json.loads((Path(cfg.data.store) / "splits" / "default.json").read_text())["subsets"]["weak"]
    )
    assert metrics["steps_per_epoch"] == metrics["epoch_length"] == n_weak // 4
    assert metrics["optimizer_steps"] == 2 * (n_weak // 4) and metrics["data_passes"] == 2.0
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["miou"] == pytest.approx(metrics["miou"])
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["method"] == "proportion" and recorded["methods"] == {
        "proportion": {"loss": "ce", "eps": 1e-6}
    }
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / metrics["checkpoint"]).is_file()
    assert any((run / "logs" / "csv").rglob("metrics.csv")) and any(
        (run / "logs" / "tensorboard").rglob("events*")
    )
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert tuple(rows[0]) == (*HISTORY_COLUMNS, "train_proportion") and [r["epoch"] for r in rows] == [
        "1",
        "2",
    ]
    assert all(r["val_miou"] and r["train_loss"] and r["val_prop_mae"] for r in rows)
    assert [int(r["step"]) for r in rows] == [n_weak // 4, 2 * (n_weak // 4)]
    # One term: the loss is that term.
    assert all(float(r["train_proportion"]) == pytest.approx(float(r["train_loss"])) for r in rows)
    assert is_complete(run)


def test_limited_epochs_report_what_ran(tiny_store, tmp_path):
    cfg = make_cfg(
        tiny_store, tmp_path, "method=proportion", "trainer.limit_train_batches=3", "trainer.max_epochs=1"
    )
    metrics = train(cfg)
    assert metrics["epochs"] == 1 and metrics["optimizer_steps"] == 3 and metrics["steps_per_epoch"] == 3
    assert metrics["epoch_length"] > 3 and metrics["data_passes"] == pytest.approx(
        3 / metrics["epoch_length"], abs=1e-4
    )
    assert metrics["limit_train_batches"] == 3


def test_weak_batches_have_no_mask_and_proportion_loss_decreases(tiny_store, tmp_path):
    seen: list[set[str]] = []
    losses: list[float] = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append(set(batch))
            losses.append(float(outputs["loss"]))

    cfg = make_cfg(
        tiny_store,
        tmp_path,
        "method=proportion",
        "trainer.max_epochs=6",
        "optim.lr=0.01",
        "data.augment=false",
        "optim.scheduler=none",
    )
    train(cfg, callbacks=[Spy()])
    # Leak-free default (weak.area: patch): no pixel mask and no valid map either.
    assert seen and all("mask" not in keys and "valid" not in keys and "weak" in keys for keys in seen)
    k = max(1, len(losses) // 4)
    assert sum(losses[-k:]) / k < sum(losses[:k]) / k


def test_valid_area_opt_in_restores_the_valid_map(tiny_store, tmp_path):
    seen: list[set[str]] = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append(set(batch))

    sets = ["method=proportion", "weak.area=valid", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    train(make_cfg(tiny_store, tmp_path, *sets), callbacks=[Spy()])
    assert len(seen) == 2 and all("valid" in keys and "mask" not in keys for keys in seen)


def test_resume_completed_run_does_not_retrain(weak_run):
    cfg, metrics = weak_run
    before = (cfg.run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    cfg2 = load_config(
        TrainConfig,
        None,
        [f"data.store={cfg.data.store}", f"out_dir={cfg.out_dir}", *TINY, "method=proportion", "resume=true"],
    )
    again = train(cfg2)
    assert again["miou"] == pytest.approx(metrics["miou"])
    assert (cfg.run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before


def test_existing_run_without_resume_is_refused(weak_run):
    cfg, _ = weak_run
    with pytest.raises(SegweakError, match="already holds a run"):
        train(cfg)


def test_finetune_loads_weights_and_resets_head(weak_run, tmp_path):
    wcfg, _ = weak_run
    best = wcfg.run_dir / "checkpoints" / "best.ckpt"
    saved = model_state_dict(load_checkpoint(best))
    captured: dict[str, dict] = {}

    class Capture(L.Callback):
        def on_fit_start(self, trainer, module):
            captured["state"] = {k: v.detach().clone() for k, v in module.model.state_dict().items()}

    cfg = make_cfg(
        wcfg.data.store,
        tmp_path,
        "method=supervised",
        f"init.checkpoint={best}",
        "trainer.max_epochs=1",
        "optim.encoder_lr=0.0001",
    )
    metrics = train(cfg, callbacks=[Capture()])
    assert metrics["method"] == "supervised"
    assert metrics["weak_labels"]["kind"] == "computed" and metrics["weak_labels"]["used"] is False
    assert all(torch.equal(captured["state"][k], v) for k, v in saved.items())

    cfg = make_cfg(
        wcfg.data.store,
        tmp_path,
        "method=supervised",
        f"init.checkpoint={best}",
        "trainer.max_epochs=1",
        "init.reset_head=true",
        "run_name=reset",
    )
    train(cfg, callbacks=[Capture()])
    state = captured["state"]
    enc = [k for k in saved if k.startswith("encoder.")]
    head = [k for k in saved if k.startswith("segmentation_head.") and k.endswith("weight")]
    assert enc and head
    assert all(torch.equal(state[k], saved[k]) for k in enc)
    assert not all(torch.equal(state[k], saved[k]) for k in head)


def test_finetune_wrong_class_count_is_a_clear_error(weak_run, tmp_path):
    wcfg, _ = weak_run
    ckpt = load_checkpoint(wcfg.run_dir / "checkpoints" / "best.ckpt")
    ckpt["hyper_parameters"]["classes"] = [*ckpt["hyper_parameters"]["classes"], "clutter"]
    bad = tmp_path / "six.ckpt"
    torch.save(ckpt, bad)
    cfg = make_cfg(wcfg.data.store, tmp_path, f"init.checkpoint={bad}")
    with pytest.raises(SegweakError, match="trained with 6 classes.*has 5"):
        train(cfg)


def test_finetune_wrong_architecture_is_a_clear_error(weak_run, tmp_path):
    wcfg, _ = weak_run
    best = wcfg.run_dir / "checkpoints" / "best.ckpt"
    cfg = make_cfg(wcfg.data.store, tmp_path, f"init.checkpoint={best}", "model.arch=unet")
    with pytest.raises(SegweakError, match="arch"):
        train(cfg)


class Evil:
    """Any class outside torch's weights-only allow-list."""


def test_checkpoint_with_pickled_object_is_refused(weak_run, tmp_path):
    wcfg, _ = weak_run
    ckpt = torch.load(wcfg.run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["payload"] = Evil()
    bad = tmp_path / "evil.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(SegweakError, match="weights-only"):
        load_checkpoint(bad)
    cfg = make_cfg(wcfg.data.store, tmp_path, f"init.checkpoint={bad}")
    with pytest.raises(SegweakError, match="weights-only"):
        train(cfg)
    # resume refuses it too
    run = tmp_path / "supervised-seed0" / "checkpoints"
    run.mkdir(parents=True)
    (run / "last.ckpt").write_bytes(bad.read_bytes())
    with pytest.raises(SegweakError, match="weights-only"):
        train(make_cfg(wcfg.data.store, tmp_path, "resume=true"))


def test_resume_matches_uninterrupted_run(tiny_store, tmp_path):
    base = ["method=supervised", "trainer.max_epochs=2", "optim.warmup_steps=2", "data.batch_size=2"]

    class Boom(Exception):
        pass

    class StopAtEpoch1(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise Boom

    a = train(make_cfg(tiny_store, tmp_path, *base, "run_name=a"))
    with pytest.raises(Boom):
        train(make_cfg(tiny_store, tmp_path, *base, "run_name=b"), callbacks=[StopAtEpoch1()])
    assert not is_complete(tmp_path / "b") and (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    b = train(make_cfg(tiny_store, tmp_path, *base, "run_name=b", "resume=true"))
    sa = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["state_dict"]
    sb = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)
    assert b["miou"] == pytest.approx(a["miou"], abs=1e-6)
    assert (tmp_path / "a" / "history.csv").read_text().splitlines()[1:] == pytest.approx(
        (tmp_path / "b" / "history.csv").read_text().splitlines()[1:]
    ) or _rows_close(tmp_path / "a" / "history.csv", tmp_path / "b" / "history.csv")


def _rows_close(pa: Path, pb: Path) -> bool:
    ra, rb = list(csv.DictReader(pa.open())), list(csv.DictReader(pb.open()))
    assert len(ra) == len(rb) == 2
    for x, y in zip(ra, rb, strict=True):
        for key in (*HISTORY_COLUMNS, "train_pixel"):
            assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-5), key
    return True


def test_missing_store_and_split_are_clear_errors(tiny_store, tmp_path):
    with pytest.raises(SegweakError, match="not a prepared store"):
        train(make_cfg(tmp_path / "nope", tmp_path))
    with pytest.raises(SegweakError, match="split 'nosuch' not found"):
        train(make_cfg(tiny_store, tmp_path, "data.split=nosuch"))


def test_checkpoints_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    # A crash while the bytes are being written must leave the previous checkpoint intact.
    from segweak.train.checkpoint import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "last.ckpt"
    io_plugin = AtomicCheckpointIO()
    io_plugin.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, target)

    def crash(fd, *args, **kwargs):
        raise OSError("disk died mid-write")

    monkeypatch.setattr("segweak.io.os.fsync", crash)
    with pytest.raises(OSError, match="mid-write"):
        io_plugin.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
