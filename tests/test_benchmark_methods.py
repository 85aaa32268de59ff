"""``benchmarks/methods_throughput.py`` runs every method it is given and reports steps/s vs supervised."""

from __future__ import annotations

import importlib.util
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
