"""Checkpoints and experiment directories written before training methods existed still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from segweak.cli import main
from segweak.config import TrainConfig, from_dict, load_config, migrate_train_dict, to_dict
from segweak.errors import SegweakError
from segweak.train.checkpoint import checkpoint_config, load_checkpoint
from segweak.train.engine import train

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "data.batch_size=4",
    "trainer.progress_bar=false",
    "trainer.max_epochs=1",
]


@pytest.fixture(scope="module")
def checkpoints(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory, old_layout) -> tuple[Path, Path]:
    """A new checkpoint (proportion, weak.area valid) and the same one with its metadata in the old layout."""
    out = tmp_path_factory.mktemp("compat")
    cfg = load_config(
        TrainConfig,
        None,
        [f"data.store={tiny_store}", f"out_dir={out}", *TINY, "method=proportion", "weak.area=valid"],
    )
    metrics = train(cfg)
    new = out / "proportion-seed0" / metrics["checkpoint"]
    ckpt = load_checkpoint(new)
    ckpt["hyper_parameters"]["cfg"] = old_layout(ckpt["hyper_parameters"]["cfg"])
    extras = ckpt["segweak"]
    extras["format_version"] = 1
    extras["stage"] = extras.pop("method")
    old = out / "old.ckpt"
    torch.save(ckpt, old)
    return new, old


def test_old_checkpoint_config_is_migrated(checkpoints):
    new, old = checkpoints
    raw = load_checkpoint(old)["hyper_parameters"]["cfg"]
    assert raw["stage"] == "weak" and raw["weak"]["use_valid_area"] is True and "method" not in raw
    cfg = checkpoint_config(load_checkpoint(old), old)
    assert cfg.method == "proportion" and cfg.weak.area == "valid"
    assert cfg.methods == {"proportion": {"loss": "ce", "eps": 1e-6}}
    assert to_dict(cfg) == to_dict(checkpoint_config(load_checkpoint(new), new))


def test_old_checkpoint_evaluates_and_predicts(checkpoints, tiny_store, tmp_path, capsys):
    new, old = checkpoints
    for name, ckpt in (("new", new), ("old", old)):
        assert (
            main(["evaluate", str(ckpt), "--store", str(tiny_store), "--out", str(tmp_path / f"{name}.json")])
            == 0
        )
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("new", "old"))
    # Same weights, same (migrated) weak area: identical metrics, weak ones included.
    assert {k: v for k, v in a.items() if k != "checkpoint"} == {
        k: v for k, v in b.items() if k != "checkpoint"
    }
    assert main(["predict", str(old), "--store", str(tiny_store), "--out", str(tmp_path / "pred")]) == 0
    assert len(list((tmp_path / "pred").glob("*.png"))) == 3
    assert "deprecated" not in capsys.readouterr().err  # nothing the user wrote is deprecated


def test_old_checkpoint_is_a_valid_start(checkpoints, tiny_store, tmp_path):
    _, old = checkpoints
    cfg = load_config(
        TrainConfig,
        None,
        [f"data.store={tiny_store}", f"out_dir={tmp_path}", *TINY, f"init.checkpoint={old}"],
    )
    assert train(cfg)["method"] == "supervised"


def test_unloadable_old_config_is_one_clear_error(checkpoints, tiny_store, tmp_path, capsys):
    _, old = checkpoints
    ckpt = load_checkpoint(old)
    ckpt["hyper_parameters"]["cfg"]["stage"] = "semi"
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(SegweakError, match="recorded config does not load.*retrain it"):
        checkpoint_config(ckpt, bad)
    assert main(["evaluate", str(bad), "--store", str(tiny_store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.ckpt" in err


def test_old_run_config_yaml_round_trips(old_layout, tiny_store):
    from segweak.methods import check_config

    for sets in (
        ["method=supervised"],
        ["method=supervised", "methods.supervised.subset=full"],
        ["method=supervised", "init.checkpoint=w.ckpt", "init.reset_head=true"],
        ["method=proportion_entropy", "methods.proportion_entropy.entropy_weight=0.3", "weak.area=valid"],
    ):
        cfg = check_config(load_config(TrainConfig, None, [f"data.store={tiny_store}", *sets]))
        old = yaml.safe_load(yaml.safe_dump(old_layout(to_dict(cfg))))
        assert "stage" in old and "method" not in old
        migrated = check_config(from_dict(TrainConfig, migrate_train_dict(old)[0]))
        assert to_dict(migrated) == to_dict(cfg), sets
