"""The benchmark scripts: ``methods_throughput.py`` runs every method it is given and reports steps/s vs
supervised; every script runs as ``python benchmarks/<script>.py``; the store they share is built once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "methods_throughput.py"


@pytest.fixture
def bench(monkeypatch):
    """The benchmark module; the thread settings it makes (environment, policy) end with the test."""
    import os

    from segweak import runtime

    monkeypatch.setattr(os, "environ", os.environ.copy())
    monkeypatch.setattr(runtime, "_POLICY", runtime._POLICY)
    monkeypatch.syspath_prepend(str(BENCH.parent))  # what `python benchmarks/x.py` does for _common
    spec = importlib.util.spec_from_file_location("methods_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_methods_throughput_table(bench, tiny_store, capsys):
    argv = ["--tiny", "--store", str(tiny_store), "--split", "default", "--batch", "4", "--warmup", "1"]
    rows = bench.main([*argv, "--steps", "2", "--rounds", "1", "--methods", "shuffled", "joint"])
    by_method = {r["method"]: r for r in rows}
    assert list(by_method) == ["supervised", "shuffled", "joint"]  # supervised always, first
    assert by_method["supervised"]["relative_steps_per_s"] == pytest.approx(1.0)
    assert by_method["joint"]["images_per_step"] == 8.0 and by_method["shuffled"]["images_per_step"] == 4.0
    assert by_method["joint"]["subbatches"] == "strong:strong/mask, weak:weak/weak"
    assert all(r["steps_per_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "vs supervised" in out and "tu-test_efficientnet" in out


def test_methods_throughput_skips_a_method_that_cannot_run(bench, tiny_store, capsys):
    # --set reaches every method's config: an invalid option section stops each run with its error.
    argv = ["--tiny", "--store", str(tiny_store), "--split", "default", "--batch", "4", "--warmup", "1"]
    rows = bench.main(
        [*argv, "--steps", "1", "--methods", "proportion", "--set", "methods.proportion.loss=nope"]
    )
    assert [r["method"] for r in rows] == ["supervised", "proportion"]
    assert all("methods.proportion.loss: 'nope' is not valid" in r["skipped"] for r in rows)
    assert "proportion           skipped: " in capsys.readouterr().out


@pytest.mark.parametrize("script", ["methods_throughput.py", "train_throughput.py", "loader.py"])
def test_benchmark_scripts_run_from_the_repository_root(script):
    import os
    import subprocess
    import sys

    root = BENCH.parents[1]
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--help"], cwd=root, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(root / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--batch" in done.stdout


def test_synthetic_store_is_built_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    from _common import synthetic_store
    from segweak.data import store as store_module
    from segweak.data.splits import load_split
    from segweak.data.store import Store

    kwargs = {"patch": 32, "tile": 64, "tiles": 2, "split": "bench", "fractions": (0.5, 0.25, 0.25)}
    path = synthetic_store(tmp_path, "x", **kwargs)
    assert path == tmp_path / "x-store-p32-t64-n2"
    store = Store(path)
    assert (len(store), store.patch) == (8, 32)  # 2 tiles of 64² in 32-px patches
    assert load_split(store, "bench")["fractions"] == {"strong": 0.5, "weak": 0.25, "val": 0.25}

    def no_prepare(*args, **kwargs):
        raise AssertionError("the cached store was prepared again")

    monkeypatch.setattr(store_module, "prepare", no_prepare)
    assert synthetic_store(tmp_path, "x", **kwargs) == path
    # Another benchmark's name or size gets its own folder, not the cached one.
    with pytest.raises(AssertionError, match="prepared again"):
        synthetic_store(tmp_path, "y", **kwargs)


def test_weak_table_rows_benchmark_imports_one_row_per_patch(tmp_path):
    import os
    import subprocess
    import sys

    root = BENCH.parents[1]
    args = ["--patch", "32", "--tile", "128", "--tiles", "2", "--data", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "benchmarks/weak_table_rows.py", *args], cwd=root, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(root / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "32 patches, 32 rows: import" in done.stdout and "PASS: 32 rows imported" in done.stdout
    written = tmp_path / "rows-store-p32-t128-n2" / "weak" / "rows.json"
    assert json.loads(written.read_text())["n_patches"] == 32
