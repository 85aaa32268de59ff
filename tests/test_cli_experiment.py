"""`segweak demo --quick`, `segweak run` and `segweak report` end to end (real training, tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segweak.cli import main


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "exp"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo", "--quick", "--seeds", "0", "--out", str(out)])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


def test_demo_quick_end_to_end(quick_demo):
    out, printed = quick_demo
    assert "SYNTHETIC" in printed
    assert "Weak pre-training + fine-tuning" in printed and "report.html" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic"] is True
    assert [(r["stage"], r["seed"]) for r in results["rows"]] == [
        ("baseline", 0),
        ("weak", 0),
        ("finetune", 0),
        ("full", 0),
    ]
    for r in results["rows"]:
        assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["oa"] <= 1.0
        assert (out / r["run_dir"] / "metrics.json").is_file()
        assert set(results["classes"]) == {k[4:] for k in r if k.startswith("iou_")}
    assert len((out / "results.csv").read_text().splitlines()) == 5
    html = (out / "report.html").read_text()
    # scores, per-class IoU, learning curves, loss terms and the samples grid, all embedded
    assert 'src="http' not in html and html.count('src="data:image/png;base64,') == 5
    assert "Weak-label area" in (out / "report.md").read_text()
    assert (out / "plots" / "samples.png").is_file()
    md = (out / "report.md").read_text()
    assert "SYNTHETIC" in md[: md.index("## ")] and "only 1 seed" in md


def test_rerun_skips_everything_and_keeps_results(quick_demo, monkeypatch, capsys):
    from segweak.train import engine

    out, _ = quick_demo
    before = (out / "results.json").read_bytes()

    def no_training(cfg):
        raise AssertionError(f"finished run {cfg.run_dir} was retrained")

    monkeypatch.setattr(engine, "train", no_training)
    assert main(["demo", "--quick", "--seeds", "0", "--out", str(out)]) == 0
    assert (out / "results.json").read_bytes() == before
    assert "skipping" in capsys.readouterr().out

    # `segweak run` with the equivalent config reaches the same directory and trains nothing either.
    from segweak.config import dump_yaml
    from segweak.experiment.demo import demo_config

    cfg_path = out.parent / "quick.yaml"
    cfg_path.write_text(dump_yaml(demo_config(out, seeds=[0], quick=True)))
    assert main(["run", "--config", str(cfg_path), "--no-report"]) == 0
    assert (out / "results.json").read_bytes() == before


def test_report_command_and_errors(quick_demo, tmp_path, capsys):
    out, _ = quick_demo
    assert main(["report", str(out), "--samples", "0"]) == 0
    assert not (out / "plots" / "samples.png").exists()
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json not found" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: {source: synthetic}\nstages: [baseline, finetune]\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "add 'weak'" in capsys.readouterr().err
    assert main(["demo", "--seeds", "x", "--out", str(tmp_path / "d")]) == 2


def test_lost_results_are_recomputed_identically(quick_demo, monkeypatch):
    from segweak.train import engine

    out, _ = quick_demo
    before = json.loads((out / "results.json").read_text())
    (out / "runs" / "finetune-proportion-split0-seed0" / "metrics.json").unlink()
    calls = []
    real_train = engine.train

    def counting(cfg):
        calls.append(cfg.run_dir.name)
        return real_train(cfg)

    monkeypatch.setattr(engine, "train", counting)
    assert main(["demo", "--quick", "--seeds", "0", "--out", str(out)]) == 0
    assert calls == ["finetune-proportion-split0-seed0"]
    after = json.loads((out / "results.json").read_text())
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in before["rows"]]
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in after["rows"]] == strip


def test_runs_and_report_record_the_environment(quick_demo, tmp_path):
    import shutil

    out, printed = quick_demo
    assert "CPU threads:" in printed and "torch thread(s)" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["packages"]["torch"] and results["environment"]["threads"]["torch"] >= 1
    for r in results["rows"]:
        env = json.loads((out / r["run_dir"] / "environment.json").read_text())
        assert env["packages"] == results["environment"]["packages"] and env["cpu"]["model"]
        assert not (out / r["run_dir"] / ".segweak.lock").exists()
    assert not (out / ".segweak.lock").exists()
    md = (out / "report.md").read_text()
    setup = md[md.index("## Setup") :]
    assert "Software: segweak" in setup and "Machine: " in setup and "timm " in setup and "Threads:" in setup
    assert "identical digits" in setup and "Runs trained in different environments" not in setup

    # A run resumed or trained elsewhere with another torch: the report says so.
    copy = tmp_path / "exp"
    shutil.copytree(out, copy)
    run_env = copy / results["rows"][0]["run_dir"] / "environment.json"
    env = json.loads(run_env.read_text())
    env["packages"]["torch"] = "0.0.1"
    run_env.write_text(json.dumps(env))
    assert main(["report", str(copy), "--samples", "0"]) == 0
    md = (copy / "report.md").read_text()
    assert "Runs trained in different environments: `packages.torch` is 0.0.1 (1 run(s))" in md


def test_report_draws_samples_from_the_artefact_and_never_runs_a_model(quick_demo, tmp_path, monkeypatch):
    import os
    import shutil

    from segweak.experiment import samples as sm
    from segweak.report import report as rep
    from segweak.train import checkpoint

    out, _ = quick_demo
    copy = tmp_path / "exp"
    shutil.copytree(out, copy)
    # The runner wrote the predictions: 2 patches (report.samples of --quick) x 4 rows.
    samples = sm.read_samples(copy)
    assert samples is not None and [g.point for g in samples.grids] == [""]  # no sweep: one grid
    written = samples.grids[0]
    assert written.labels == ["baseline", "weak", "finetune", "full"]
    assert written.predictions.shape == (4, 2, 32, 32) and written.predictions.dtype == "uint8"
    assert written.images.shape == (2, 32, 32, 3) and written.masks.shape == (2, 32, 32)
    assert written.meta["classes"] and written.colors.shape == (len(written.meta["classes"]), 3)

    def no_model(*args, **kwargs):
        raise AssertionError("the report built a model")

    calls = []
    real_predict = sm.predict_patches
    monkeypatch.setattr(checkpoint, "build_model_from_checkpoint", no_model)
    monkeypatch.setattr(sm, "predict_patches", lambda *a: calls.append(a[0]) or real_predict(*a))
    # Rendering reads samples.npz; `segweak report` keeps an artefact made from the same checkpoints.
    rep.report(copy)
    assert (copy / "plots" / "samples.png").is_file()
    assert main(["report", str(copy)]) == 0 and calls == []

    # Without the artefact the report says so instead of predicting.
    (copy / "samples.npz").unlink()
    rep.report(copy)
    assert not (copy / "plots" / "samples.png").exists()
    assert "samples.npz is missing" in (copy / "report.md").read_text()

    # `segweak report` makes it on the experiment side, and again after a run is retrained.
    monkeypatch.undo()
    monkeypatch.setattr(sm, "predict_patches", lambda *a: calls.append(a[0]) or real_predict(*a))
    assert main(["report", str(copy)]) == 0
    assert len(calls) == 4 and (copy / "plots" / "samples.png").is_file()
    again = sm.read_samples(copy)
    assert again is not None and (again.grids[0].predictions == written.predictions).all()
    ckpt = copy / "runs" / "full-split0-seed0" / "checkpoints" / "best.ckpt"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))
    assert main(["report", str(copy)]) == 0 and len(calls) == 8
