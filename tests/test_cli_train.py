"""The real CLI: segweak train / evaluate / predict on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from segweak.cli import main


def test_cli_train_evaluate_predict(tiny_store: Path, tmp_path: Path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "method": "supervised",
                "out_dir": str(tmp_path / "runs"),
                "data": {"store": str(tiny_store), "batch_size": 4},
                "model": {"encoder": "tu-test_efficientnet", "weights": "none"},
                "trainer": {"max_epochs": 3, "progress_bar": False},
            }
        )
    )
    assert (
        main(["train", "--config", str(cfg), "--set", "trainer.max_epochs=1", "--set", "trainer.seed=1"]) == 0
    )
    run = tmp_path / "runs" / "supervised-seed1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["seed"] == 1
    assert "mIoU" in capsys.readouterr().out
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                str(run / "checkpoints" / "best.ckpt"),
                "--store",
                str(tiny_store),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["n_pixels"] == metrics["n_pixels"]
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(run / "checkpoints" / "best.ckpt"),
                "--store",
                str(tiny_store),
                "--out",
                str(pred),
                "--overlap",
                "0.25",
                "--blend",
                "mean",
            ]
        )
        == 0
    )
    assert len(list(pred.glob("*.png"))) == 3
    # user errors: exit code 2 with one message
    assert (
        main(["train", "--config", str(cfg), "--set", "trainer.max_epochs=1", "--set", "trainer.seed=1"]) == 2
    )
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--set", "method=bogus"]) == 2
    assert "unknown training method 'bogus'; valid:" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--set", "methods.supervised.subsett=full"]) == 2
    assert "methods.supervised.subsett" in capsys.readouterr().err
