"""``segweak train`` with ``trainer.strategy=ddp``: 2 CPU processes (gloo), the path multi-GPU users run.

The command runs in a subprocess, as users run it: Lightning starts rank 1 as a second copy of the
command. The ``odd`` split has 6 strong patches (3 per rank, fewer than the batch size of 4) and 13
validation patches (7 + 6: a padding sampler would count one patch twice); the test below also holds
out 7 of its weak patches as a ``test`` subset (4 + 3), and the store has eroded-label masks.

Every file rename (segweak writes all its files through ``segweak.io``, temp file + ``os.replace``)
is logged with the rank of the process that did it, by a ``sitecustomize`` module on the path.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segweak.evaluate.evaluate import evaluate

pytestmark = pytest.mark.distributed

SRC = Path(__file__).resolve().parents[2] / "src"
ONCE = ("config.yaml", "history.csv", "metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt")
"""Files of a one-epoch run that rank 0, and only rank 0, writes exactly once."""

SITECUSTOMIZE = """
import os

_replace = os.replace


def _logged_replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    with open(os.environ["SEGWEAK_TEST_WRITE_LOG"], "a", encoding="utf-8") as fh:
        fh.write(f"{os.environ.get('LOCAL_RANK', '0')}\\t{os.path.abspath(dst)}\\n")


os.replace = _logged_replace
"""


def _segweak(args: list[str], hook: Path, log: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook), str(SRC), os.environ.get("PYTHONPATH", "")]),
        "SEGWEAK_TEST_WRITE_LOG": str(log),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "segweak.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _writes(log: Path, run_dir: Path) -> list[tuple[str, str]]:
    """(rank, path relative to the run directory) of every rename into the run directory."""
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    return [
        (rank, os.path.relpath(path, run_dir)) for rank, path in rows if Path(path).is_relative_to(run_dir)
    ]


def _check_run(proc: subprocess.CompletedProcess[str], run_dir: Path, store: Path) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("Initializing distributed") == 2, proc.stderr[-3000:]
    # One result line and its test line, from rank 0.
    lines = [line for line in proc.stdout.splitlines() if "mIoU" in line]
    assert len(lines) == 2 and lines[0].startswith(f"{run_dir}: mIoU"), proc.stdout
    assert lines[1].startswith("  test (7 patches): mIoU"), proc.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    from segweak.data.splits import load_split
    from segweak.data.store import Store

    subsets = load_split(store, "odd")["subsets"]
    # Validation and test are sharded without padding: every patch counts once, as in evaluate.
    for reported, subset, n in ((metrics, "val", 13), (metrics["test"], "test", 7)):
        ev = evaluate(run_dir / "checkpoints" / "best.ckpt", store, split="odd", subset=subset, batch_size=16)
        assert reported["n_patches"] == ev["n_patches"] == n
        assert reported["n_pixels"] == ev["n_pixels"] == int(Store(store).valid[subsets[subset]].sum())
        for key in ("miou", "mf1", "oa", "per_class_iou", "per_class_f1", "absent_classes", "presence_f1"):
            assert reported[key] == ev[key], key
        # Proportions are float32 means over pixels: another batch composition changes their last bits.
        assert reported["prop_mae"] == pytest.approx(ev["prop_mae"], rel=1e-6)
        assert reported["eroded"] == ev["eroded"] and reported["eroded"]["n_patches"] == n
    return metrics


def test_ddp_train_on_two_cpu_processes_matches_evaluate_writes_once_and_resumes(
    odd_store_with_test, tmp_path
):
    store = odd_store_with_test
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    config = tmp_path / "ddp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": "supervised",
                "out_dir": str(tmp_path / "runs"),
                "data": {"store": str(store), "split": "odd", "batch_size": 4, "eval_batch_size": 4},
                "model": {"encoder": "tu-test_efficientnet", "weights": "none"},
                "trainer": {
                    "max_epochs": 1,
                    "accelerator": "cpu",
                    "devices": 2,
                    "strategy": "ddp",
                    "progress_bar": False,
                },
            }
        )
    )
    run_dir = tmp_path / "runs" / "supervised-seed0"
    log = tmp_path / "writes.log"

    first = _check_run(_segweak(["train", "-c", str(config)], hook, log), run_dir, store)
    # Each rank trained on its 3 strong patches (one incomplete batch kept): one step per epoch.
    assert first["steps"] == 1 and first["epochs"] == 1
    # What-ran keys count per process: one rank's pass over its 3 patches is 1 batch (the same step).
    assert first["optimizer_steps"] == 1 and first["epoch_length"] == 1 and first["data_passes"] == 1.0
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert len(rows) == 1 and float(rows[0]["val_miou"]) == first["miou"]
    writes = _writes(log, run_dir)
    assert {rank for rank, _ in writes} == {"0"}, writes
    names = [path for _, path in writes]
    for name in (
        "config.yaml",
        "history.csv",
        "metrics.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert names.count(name) == 1, (name, names)

    # A run killed after its epoch-1 checkpoint (no metrics.json) resumes under DDP for epoch 2.
    (run_dir / "metrics.json").unlink()
    log.unlink()
    resume = ["train", "-c", str(config), "--resume", "--set", "trainer.max_epochs=2"]
    second = _check_run(_segweak(resume, hook, log), run_dir, store)
    assert second["steps"] == 2 and second["epochs"] == 2
    resumed_rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [r["epoch"] for r in resumed_rows] == ["1", "2"] and resumed_rows[0] == rows[0]
    assert {rank for rank, _ in _writes(log, run_dir)} == {"0"}


def test_segweak_run_on_a_rank_other_than_zero_trains_but_prints_and_writes_nothing(
    tiny_store, tmp_path, monkeypatch, capsys
):
    """What rank 1 does when Lightning runs ``segweak run`` again for it (training itself faked)."""
    from segweak.cli import main
    from segweak.io import atomic_write_json
    from segweak.train import engine

    trained: list[str] = []

    def rank_one_train(cfg):
        # Rank 0 writes the run directory; train() returns on every rank once metrics.json exists.
        trained.append(cfg.run_dir.name)
        metrics = {"method": cfg.method, "seed": cfg.trainer.seed, "classes": ["a"], "miou": 0.5}
        (cfg.run_dir / "checkpoints").mkdir(parents=True)
        (cfg.run_dir / "checkpoints" / "best.ckpt").write_bytes(b"best")
        (cfg.run_dir / "config.yaml").write_text("rank 0's\n")
        atomic_write_json(cfg.run_dir / "metrics.json", metrics)
        return metrics

    monkeypatch.setattr(engine, "train", rank_one_train)
    monkeypatch.setattr(engine, "is_global_zero", lambda: False)
    exp = tmp_path / "exp"
    config = tmp_path / "exp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "out_dir": str(exp),
                "dataset": {"source": "store", "store": str(tiny_store), "patch": 32},
                "seeds": [0],
                "stages": ["baseline", "weak", "finetune"],
                "train": {"model": {"encoder": "tu-test_efficientnet", "weights": "none"}},
            }
        )
    )
    assert main(["run", "--config", str(config)]) == 0
    assert trained == [
        "baseline-split0-seed0",
        "weak-proportion-split0-seed0",
        "finetune-proportion-split0-seed0",
    ]
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in exp.iterdir()) == ["runs"]
