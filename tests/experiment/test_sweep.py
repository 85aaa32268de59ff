"""Sweeps: axis checks, expansion, per-point layout, shared runs, a tiny sweep trained end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from segweak.config import ExperimentConfig, from_dict
from segweak.data.splits import load_split, make_split
from segweak.errors import SegweakError
from segweak.experiment import plan, sweep
from segweak.experiment import run as runner
from segweak.experiment.data import make_splits

TINY_TRAIN = {
    "model": {"encoder": "tu-test_efficientnet", "weights": "none"},
    "optim": {"lr": 0.01},
    "data": {"batch_size": 4, "eval_batch_size": 16},
    "trainer": {"max_epochs": -1, "max_steps": 2, "check_val_every_n_epoch": 1},
}


def _cfg(tmp_path: Path, store: Path | None = None, **over) -> ExperimentConfig:
    data = {
        "name": "sweep",
        "out_dir": str(tmp_path / "exp"),
        "dataset": {"source": "store", "store": str(store or tmp_path / "store"), "patch": 32},
        "split": {"name": "default", "fractions": [0.1, 0.7, 0.2], "seeds": [0]},
        "seeds": [0],
        "stages": ["baseline", "weak", "finetune", "full"],
        "methods": ["proportion"],
        "train": TINY_TRAIN,
        "report": {"samples": 0},
        "sweep": {"split.strong": [0.1, 0.2]},
    }
    data.update(over)
    return from_dict(ExperimentConfig, data).validate()


def test_expansion_is_the_cross_product_in_axis_order(tmp_path):
    # --set sweep.train.optim.lr=[...] nests the dotted key; it is read as "train.optim.lr".
    cfg = _cfg(tmp_path, sweep={"split.strong": [0.05, 0.1], "train": {"optim": {"lr": [0.01, 0.001]}}})
    points = sweep.expand(cfg)
    assert [p.label for p in points] == [
        "split.strong=0.05,train.optim.lr=0.01",
        "split.strong=0.05,train.optim.lr=0.001",
        "split.strong=0.1,train.optim.lr=0.01",
        "split.strong=0.1,train.optim.lr=0.001",
    ]
    first = points[0]
    assert first.factors == {"split.strong": 0.05, "train.optim.lr": 0.01}
    assert first.slug == "split.strong-0.05_train.optim.lr-0.01"
    # strong takes its fraction from the strong + weak share; val is unchanged; splits nest.
    assert first.cfg.split.fractions == [0.05, 0.75, 0.2]  # rounded: no 0.7499999999999999 in manifests
    assert first.cfg.split.nested is True and first.cfg.sweep == {}
    # Only split keys name the split: the learning rate does not make another manifest.
    assert {p.cfg.split.name for p in points} == {"default_split.strong-0.05", "default_split.strong-0.1"}
    assert first.cfg.train["optim"]["lr"] == 0.01
    # No sweep: one point with the experiment's own config and layout.
    (only,) = sweep.expand(_cfg(tmp_path, sweep={}))
    assert only.label == "" and only.slug == "" and only.cfg.split.name == "default"


@pytest.mark.parametrize(
    ("axes", "match"),
    [
        ({"seeds": [[0], [1]]}, r"^sweep\.seeds: not an axis"),
        ({"split.seeds": [[0], [1]]}, r"^sweep\.split\.seeds: not an axis"),
        ({"optim.lr": [0.1]}, r"^sweep\.optim\.lr: not a key an experiment can sweep"),
        ({"split.strong": []}, r"^sweep\.split\.strong: give a non-empty list"),
        ({"split.strong": 0.1}, r"^sweep\.split\.strong: give a non-empty list"),
        ({"split.strong": [0.1, 0.1]}, r"^sweep\.split\.strong: the value 0\.1 is listed twice"),
        ({"split.strong": [0.1, 0.9]}, r"^sweep\.split\.strong: value 0\.9: .*fraction in \(0, 0\.8\]"),
        ({"split.strong": [0.1], "split.nested": [True]}, r"^sweep\.split\.strong: .*split\.nested"),
        ({"train.optim.lr": ["fast"]}, r"^sweep\.train\.optim\.lr: value fast: "),
        ({"train.weak.noise.model": ["gauss"]}, r"^sweep\.train\.weak\.noise\.model: value gauss: .*noise"),
        ({"train.optim.lrr": [0.1]}, r"^sweep\.train\.optim\.lrr: value 0\.1: .*unknown config key"),
        ({"methods": [["proportion"], ["nope"]]}, r"^sweep\.methods: value \[\"nope\"\]: "),
        ({"dataset.patch": [16, 32]}, r"^sweep\.dataset\.patch: dataset\.source is 'store'"),
    ],
)  # fmt: skip
def test_axis_errors_name_the_key(tmp_path, axes, match):
    cfg = _cfg(tmp_path, sweep=axes)
    with pytest.raises(SegweakError, match=match) as info:
        plan.sweep_points(cfg)
    assert "\n" not in str(info.value)


def test_a_point_invalid_only_in_combination_is_named(tmp_path):
    # Each value is valid alone; the overrides of `proportion` with a method list without it are not.
    axes = {"methods": [["proportion"], ["joint"]], "stage_overrides.proportion.optim.lr": [0.01]}
    with pytest.raises(
        SegweakError, match=r'^sweep point methods=\["joint"\],stage_overrides.*: stage_overrides'
    ):
        plan.sweep_points(_cfg(tmp_path, sweep=axes))
    with pytest.raises(SegweakError, match=r"^sweep\.stages: not a key an experiment can sweep"):
        plan.sweep_points(_cfg(tmp_path, sweep={"stages": [["baseline"]]}))


def test_plan_places_runs_per_point_and_shares_full(tmp_path):
    cfg = _cfg(tmp_path, seeds=[0, 1], train={**TINY_TRAIN, "selection": "last"})
    runs = plan.plan_runs(cfg)
    assert len(runs) == 2 * 2 * 4
    at = {(r.point, r.stage, r.seed): r for r in runs}
    low, high = "split.strong=0.1", "split.strong=0.2"
    base = at[(low, "baseline", 0)]
    assert base.cfg.run_dir == tmp_path / "exp" / "runs" / "split.strong-0.1" / "baseline-split0-seed0"
    assert base.cfg.data.split == "default_split.strong-0.1" and base.factors == {"split.strong": 0.1}
    assert base.key == (low, "baseline", "", 0, 0)
    # Fine-tuning starts from the weak run's selected checkpoint (selection: last -> last.ckpt).
    ft = at[(high, "finetune", 1)]
    assert ft.cfg.init.checkpoint == str(
        tmp_path
        / "exp"
        / "runs"
        / "split.strong-0.2"
        / "weak-proportion-split0-seed1"
        / "checkpoints"
        / "last.ckpt"
    )
    # full reads strong ∪ weak: the same at both points of nested splits; it trains once per seed.
    full_low, full_high = at[(low, "full", 1)], at[(high, "full", 1)]
    assert full_low.trained_at is None and full_high.trained_at == low
    assert (
        full_high.cfg.run_dir == full_low.cfg.run_dir and full_high.split_name == "default_split.strong-0.2"
    )
    assert all(at[(high, s, 0)].trained_at is None for s in ("baseline", "weak", "finetune"))
    # A learning-rate axis: full differs per learning rate, nothing is shared across those points.
    lr = _cfg(tmp_path, sweep={"train.optim.lr": [0.01, 0.001]}, stages=["baseline", "full"], methods=[])
    assert all(r.trained_at is None for r in plan.plan_runs(lr))
    # A stage-only axis: the rows it does not touch are the same run at both points.
    wk = _cfg(tmp_path, sweep={"stage_overrides.weak.optim.lr": [0.01, 0.001]})
    shared = {(r.point, r.stage) for r in plan.plan_runs(wk) if r.trained_at is not None}
    assert shared == {
        ("stage_overrides.weak.optim.lr=0.001", "baseline"),
        ("stage_overrides.weak.optim.lr=0.001", "full"),
    }


@pytest.fixture(scope="module")
def tiny_sweep(tiny_store, tmp_path_factory) -> tuple[ExperimentConfig, Path, Path]:
    """``(cfg, experiment directory, store)`` of a 2-point strong-fraction sweep, trained once (no report)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)  # the sweep writes its split manifests into the store
    cfg = _cfg(tmp_path, store)
    return cfg, runner.run_experiment(cfg, make_report=False), store


def test_tiny_sweep_end_to_end(tiny_sweep, capsys):
    cfg, exp, store = tiny_sweep

    runs = sorted(p.relative_to(exp / "runs").as_posix() for p in (exp / "runs").glob("*/*"))
    assert runs == [
        "split.strong-0.1/baseline-split0-seed0",
        "split.strong-0.1/finetune-proportion-split0-seed0",
        "split.strong-0.1/full-split0-seed0",
        "split.strong-0.1/weak-proportion-split0-seed0",
        "split.strong-0.2/baseline-split0-seed0",
        "split.strong-0.2/finetune-proportion-split0-seed0",
        "split.strong-0.2/weak-proportion-split0-seed0",
    ]  # full trained once
    # Nested manifests: the smaller strong set inside the larger one, the same validation patches.
    low, high = (load_split(store, f"default_split.strong-{f}") for f in ("0.1", "0.2"))
    assert set(low["subsets"]["strong"]) < set(high["subsets"]["strong"])
    assert low["subsets"]["val"] == high["subsets"]["val"] and low["nested"] and high["nested"]
    assert sorted(low["subsets"]["strong"] + low["subsets"]["weak"]) == sorted(
        high["subsets"]["strong"] + high["subsets"]["weak"]
    )

    results = json.loads((exp / "results.json").read_text())
    assert results["sweep"] == {"axes": {"split.strong": [0.1, 0.2]}}
    assert [p["slug"] for p in results["points"]] == ["split.strong-0.1", "split.strong-0.2"]
    # Each point's manifests, for readers of results.json alone (the sample predictions).
    assert [p["splits"] for p in results["points"]] == [
        {"0": "default_split.strong-0.1"},
        {"0": "default_split.strong-0.2"},
    ]
    rows = results["rows"]
    assert [(r["point"], r["stage"]) for r in rows] == [
        (f"split.strong={f}", s) for f in ("0.1", "0.2") for s in ("baseline", "weak", "finetune", "full")
    ]
    assert all(r["factors"] == {"split.strong": float(r["point"].split("=")[1])} for r in rows)
    full_low, full_high = rows[3], rows[7]
    assert full_high["run_dir"] == full_low["run_dir"] == "runs/split.strong-0.1/full-split0-seed0"
    assert full_high["trained_at"] == "split.strong=0.1" and full_low["trained_at"] is None
    assert full_high["miou"] == full_low["miou"]
    # strong_fraction is the point's achieved fraction, also on the shared full row.
    assert full_high["strong_fraction"] == high["achieved"]["strong"]["patch_fraction"]
    assert (
        rows[0]["strong_fraction"]
        == low["achieved"]["strong"]["patch_fraction"]
        < full_high["strong_fraction"]
    )
    assert {r["selection"] for r in rows} == {"best"}
    assert {r["weak_noise"] for r in rows if r["train_method"] != "supervised"} == {"none"}
    assert {r["weak_noise"] for r in rows if r["train_method"] == "supervised"} == {None}
    assert {r["weak_labels"] for r in rows if r["train_method"] != "supervised"} == {"computed"}
    assert rows[0]["test_miou"] is None
    with (exp / "results.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [t["factor:split.strong"] for t in table] == ["0.1"] * 4 + ["0.2"] * 4
    assert table[7]["point"] == "split.strong=0.2"

    # A second call trains nothing and writes the same results.
    snapshot = (exp / "results.json").read_bytes()
    capsys.readouterr()
    runner.run_experiment(cfg, make_report=False)
    out = capsys.readouterr().out
    assert "0 run(s) trained, 7 skipped as finished" in out and "training ->" not in out
    assert "the same run as at split.strong=0.1" in out
    assert (exp / "results.json").read_bytes() == snapshot


def test_sweep_samples_show_every_point_on_the_same_patches(tiny_sweep, tmp_path, monkeypatch):
    import numpy as np

    from segweak.experiment import samples as sm
    from segweak.report import report as rep

    exp = tmp_path / "exp"
    shutil.copytree(tiny_sweep[1], exp)
    assert sm.ensure_samples(exp, 2) is None
    written = sm.read_samples(exp)
    assert written is not None and written.meta["format_version"] == 2
    assert [g.point for g in written.grids] == ["split.strong=0.1", "split.strong=0.2"]
    low, high = written.grids
    # Nested splits share their validation patches: the same two patches at both points.
    assert low.indices.tolist() == high.indices.tolist() and len(low.indices) == 2
    assert (low.images == high.images).all() and (low.masks == high.masks).all()
    # Each point's own runs (full is shared, so its prediction is the same at both points).
    rows = json.loads((exp / "results.json").read_text())["rows"]
    assert low.labels == high.labels == ["baseline", "weak", "finetune", "full"]
    assert [run[1] for run in written.meta["points"][1]["runs"]] == [r["run_dir"] for r in rows[4:]]
    assert (low.predictions[3] == high.predictions[3]).all()
    assert low.predictions.shape == (4, 2, 32, 32)

    rep.report(exp, samples=2)
    md = (exp / "report.md").read_text()
    for i, point in enumerate(("split.strong=0.1", "split.strong=0.2")):
        assert (exp / "plots" / f"samples_{i}.png").is_file()
        section = md[md.index(f"## Point `{point}`") :]
        section = section[: section.index("\n## ")]  # up to the next second-level heading
        assert f"plots/samples_{i}.png" in section
        assert f"Validation patches at {point} (the same patches at every point;" in md
    assert not (exp / "plots" / "samples.png").exists()

    # Results written before points recorded their manifests name the same splits.
    results = json.loads((exp / "results.json").read_text())
    for point in results["points"]:
        del point["splits"]
    (exp / "results.json").write_text(json.dumps(results))
    assert sm.ensure_samples(exp, 2) is None and sm.read_samples(exp).meta == written.meta

    # A format-1 artefact (one grid: the first point's) still reads, and is rewritten, not drawn.
    g0 = written.grids[0]
    old_meta = {k: written.meta[k] for k in ("n", "sample_seed", "split_seed", "seed")}
    old_meta.update(g0.meta, format_version=1)
    np.savez_compressed(
        exp / sm.SAMPLES_FILE, indices=g0.indices, images=g0.images, masks=g0.masks,
        predictions=g0.predictions, colors=g0.colors, meta=np.asarray(json.dumps(old_meta)),
    )  # fmt: skip
    old = sm.read_samples(exp)
    assert old is not None and len(old.grids) == 1 and old.grids[0].labels == g0.labels
    rep.report(exp, samples=2)
    assert not list((exp / "plots").glob("samples*.png"))
    assert "samples.npz is missing or was made from other checkpoints" in (exp / "report.md").read_text()
    calls = []
    real = sm.predict_patches
    monkeypatch.setattr(sm, "predict_patches", lambda *a: calls.append(a[0]) or real(*a))
    # 2 points x 4 rows, but `full` is one run shared by both points: its patches are predicted once.
    assert sm.ensure_samples(exp, 2) is None and len(calls) == 7
    assert sm.read_samples(exp).meta == written.meta


def test_dataset_patch_sweep_prepares_one_store_per_value(tmp_path, monkeypatch):
    from segweak.data.store import Store
    from segweak.train import engine

    trained: list[str] = []

    def fake_train(cfg):
        trained.append(str(cfg.run_dir.relative_to(tmp_path / "exp" / "runs")))
        raise SystemExit  # stop after the first run: the stores and splits exist by then

    monkeypatch.setattr(engine, "train", fake_train)
    cfg = _cfg(
        tmp_path,
        dataset={"source": "synthetic", "patch": 32, "synthetic": {"tiles": 2, "height": 64, "width": 64}},
        stages=["baseline"],
        methods=[],
        sweep={"dataset.patch": [32, 16], "split.strong": [0.2]},
    )
    with pytest.raises(SystemExit):
        runner.run_experiment(cfg, make_report=False)
    stores = tmp_path / "exp" / "stores"
    assert sorted(p.name for p in stores.iterdir()) == ["dataset.patch-16", "dataset.patch-32"]
    assert Store(stores / "dataset.patch-16").meta["patch"] == 16
    assert Store(stores / "dataset.patch-32").meta["patch"] == 32
    assert not (tmp_path / "exp" / "store").exists()
    for name in ("dataset.patch-16", "dataset.patch-32"):
        assert (stores / name / "splits" / "default_split.strong-0.2.json").is_file()
    assert trained == ["dataset.patch-32_split.strong-0.2/baseline-split0-seed0"]


def test_make_splits_passes_every_split_key(tmp_path, tiny_store):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    four = {"name": "held", "fractions": [0.1, 0.5, 0.2, 0.2], "seeds": [3], "nested": True}
    cfg = _cfg(tmp_path, store, split=four, sweep={})
    assert make_splits(cfg, store, log=lambda m: None) == {3: "held"}
    manifest = load_split(store, "held")
    assert manifest["nested"] and manifest["seed"] == 3 and len(manifest["subsets"]["test"]) > 0
    assert make_splits(cfg, store, log=lambda m: None) == {3: "held"}  # reused: the same settings
    other = _cfg(tmp_path, store, split={**four, "nested": False}, sweep={})
    with pytest.raises(SegweakError, match="exists with other settings .*nested True, wanted False"):
        make_splits(other, store, log=lambda m: None)


def test_make_splits_with_imported_weak_labels_checks_the_set(tmp_path, tiny_store):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    make_split(store, "plain", fractions=(0.1, 0.7, 0.2), seed=0)
    split = {"name": "plain", "fractions": [0.1, 0.7, 0.2], "seeds": [0]}
    cfg = _cfg(tmp_path, store, split=split, sweep={}, train={**TINY_TRAIN, "weak": {"labels": "fields"}})
    # The manifest made without the set differs from what the experiment asks for.
    with pytest.raises(SegweakError, match="exists with other settings .*weak_labels None, wanted fields"):
        make_splits(cfg, store, log=lambda m: None)


def test_label_efficiency_config_plan():
    cfg = plan.load_experiment_config(
        Path(__file__).resolve().parents[2] / "configs" / "label-efficiency.yaml"
    )
    points = plan.sweep_points(cfg)
    assert [p.factors["split.strong"] for p in points] == [0.05, 0.1, 0.2]
    runs = plan.plan_runs(cfg, points=points)
    trained = [r for r in runs if r.trained_at is None]
    assert {r.arm for r in runs} == {"baseline", "proportion", "full"}
    assert sum(r.stage == "full" for r in trained) == len(cfg.seeds)  # once per seed, shown at 3 points
    assert sum(r.stage == "full" for r in runs) == 3 * len(cfg.seeds)
    # The budget stated in the file's header: 3 points x (120 + 80 + 40) + 120 steps per seed, the
    # baseline as long as pre-training + fine-tuning.
    assert sum(r.cfg.trainer.max_steps for r in trained) == len(cfg.seeds) * (3 * (120 + 80 + 40) + 120)
    base = next(r for r in trained if r.stage == "baseline").cfg.trainer.max_steps
    pre = next(r for r in trained if r.stage == "weak").cfg.trainer.max_steps
    fine = next(r for r in trained if r.stage == "finetune").cfg.trainer.max_steps
    assert base == pre + fine


def test_sample_predictions_read_the_selected_checkpoint(tmp_path, tiny_store):
    from segweak.experiment.results import load_experiment
    from segweak.experiment.samples import wanted_spec

    exp = tmp_path / "exp"
    for name, selection in (("a", "best"), ("b", "last")):
        (exp / "runs" / name / "checkpoints").mkdir(parents=True)
        (exp / "runs" / name / "checkpoints" / f"{selection}.ckpt").write_bytes(b"x")
    rows = [
        {
            "stage": "baseline",
            "method": "",
            "seed": 0,
            "split_seed": 0,
            "run_dir": "runs/a",
            "selection": "best",
        },
        {"stage": "full", "method": "", "seed": 0, "split_seed": 0, "run_dir": "runs/b", "selection": "last"},
    ]
    results = {"store": str(tiny_store), "splits": {"0": "default"}, "split_seeds": [0], "rows": rows}
    (exp / "results.json").write_text(json.dumps(results))
    spec = wanted_spec(load_experiment(exp), 2, 0)
    (point,) = spec["points"]  # no sweep: one point
    assert [run[3] for run in point["runs"]] == ["checkpoints/best.ckpt", "checkpoints/last.ckpt"]
    assert all(run[2] is not None for run in point["runs"])  # both files found: none missing


# --------------------------------------------------------------------------------------------------
# weak_labels: tables the experiment imports into its store(s)
# --------------------------------------------------------------------------------------------------


def _proportion_table(store_path: Path, out: Path, blend: float = 0.5) -> Path:
    """Write a CSV with one window row per patch: its mask proportions blended with uniform shares.

    ``blend`` of the uniform share makes the imported labels deliberately differ from the computed ones.
    """
    from segweak.data.store import Store

    store = Store(store_path)
    k = store.num_classes
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "x0", "y0", "x1", "y1", *store.classes])
        for i in range(len(store)):
            counts = store.counts[i].astype(float)
            share = counts / counts.sum() if counts.sum() > 0 else [1.0 / k] * k
            props = [(1 - blend) * float(p) + blend / k for p in share]
            r, c, p = int(store.rows[i]), int(store.cols[i]), store.patch
            writer.writerow([store.tiles[i], c, r, c + p, r + p, *(repr(v) for v in props)])
    return out


@pytest.mark.parametrize(
    ("imports", "match"),
    [
        ([{"table": "T"}], r"^weak_labels\[0\]\.name: give the weak-label set a name"),
        ([{"name": "computed", "table": "T"}], r"^weak_labels\[0\]\.name: 'computed' is not a valid"),
        ([{"name": "a/b", "table": "T"}], r"^weak_labels\[0\]\.name: 'a/b' is not a valid"),
        ([{"name": "a"}], r"^weak_labels\[0\]\.table: give the path"),
        ([{"name": "a", "table": "missing.csv"}], r"^weak_labels\[0\]\.table: missing\.csv is not a file"),
        ([{"name": "a", "table": "T", "tolerance": 1.5}], r"^weak_labels\[0\]\.tolerance: must be in"),
        ([{"name": "a", "table": "T", "min_cover": 0}], r"^weak_labels\[0\]\.min_cover: must be in"),
        ([{"name": "a", "table": "T"}, {"name": "a", "table": "T"}], r"^weak_labels\[1\]\.name: 'a' is alr"),
        ([{"name": "a", "table": "T", "crs": "x"}], r"unknown config key\(s\) weak_labels\[0\]\.crs"),
    ],
)  # fmt: skip
def test_weak_labels_errors_name_the_key(tmp_path, imports, match):
    table = tmp_path / "t.csv"
    table.write_text("image,a\n")
    imports = [{k: (str(table) if v == "T" else v) for k, v in imp.items()} for imp in imports]
    with pytest.raises(SegweakError, match=match) as info:
        _cfg(tmp_path, weak_labels=imports)
    assert "\n" not in str(info.value)


def test_weak_labels_import_once_and_never_overwrite(tmp_path, tiny_store):
    from segweak.experiment.data import import_weak_labels

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    table = _proportion_table(store, tmp_path / "fields.csv")
    cfg = _cfg(tmp_path, store, sweep={}, weak_labels=[{"name": "fields", "table": str(table)}])
    messages: list[str] = []
    import_weak_labels(cfg, store, messages.append)
    written = json.loads((store / "weak" / "fields.json").read_text())
    assert written["n_patches"] == 48 and written["source"]["sha256"]
    assert "imported" in messages[-1] and "48 patch(es)" in messages[-1]
    # The same table and options again (a rerun, another point on this store): nothing is rewritten.
    mtime = (store / "weak" / "fields.json").stat().st_mtime_ns
    import_weak_labels(cfg, store, messages.append)
    assert "reusing it" in messages[-1]
    assert (store / "weak" / "fields.json").stat().st_mtime_ns == mtime
    # Other options or another table under that name: refused, the set is left as it was.
    other = _cfg(
        tmp_path, store, sweep={}, weak_labels=[{"name": "fields", "table": str(table), "tolerance": 0.1}]
    )
    with pytest.raises(
        SegweakError, match=r"^weak_labels\[0\]: store .* already has weak-label set 'fields'.*options"
    ):
        import_weak_labels(other, store, messages.append)
    _proportion_table(store, table, blend=0.25)
    with pytest.raises(
        SegweakError, match=r"^weak_labels\[0\]: .*SHA-256 differ.*delete .*fields\.json"
    ) as info:
        import_weak_labels(cfg, store, messages.append)
    assert "\n" not in str(info.value)
    assert json.loads((store / "weak" / "fields.json").read_text()) == written
    # A bad row of the table is named with the import it came from.
    bad = tmp_path / "bad.csv"
    bad.write_text("image,impervious\nnowhere,1\n")
    cfg_bad = _cfg(tmp_path, store, sweep={}, weak_labels=[{"name": "bad", "table": str(bad)}])
    with pytest.raises(SegweakError, match=r"^weak_labels\[0\]: .*bad\.csv row 1: unknown image 'nowhere'"):
        import_weak_labels(cfg_bad, store, messages.append)


def test_sweep_compares_computed_and_imported_weak_labels(tmp_path, tiny_store, capsys):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    table = _proportion_table(tiny_store, tmp_path / "fields.csv")  # the store has no weak/ yet
    cfg = _cfg(
        tmp_path,
        store,
        stages=["baseline", "weak", "finetune"],
        weak_labels=[{"name": "fields", "table": str(table)}],
        sweep={"train.weak.labels": ["computed", "fields"]},
    )
    exp = runner.run_experiment(cfg, make_report=False)
    out = capsys.readouterr().out
    assert "imported" in out and (store / "weak" / "fields.json").is_file()

    results = json.loads((exp / "results.json").read_text())
    rows = results["rows"]
    assert [(r["point"], r["stage"], r["weak_labels"]) for r in rows] == [
        (f"train.weak.labels={w}", s, None if s != "weak" else w)  # pixel-label runs read none
        for w in ("computed", "fields")
        for s in ("baseline", "weak", "finetune")
    ]
    # The baseline reads pixel labels only, so the weak-label axis does not change it: trained once,
    # reported at both points.
    baselines = [r for r in rows if r["stage"] == "baseline"]
    assert baselines[0]["run_dir"] == baselines[1]["run_dir"] and baselines[1]["trained_at"]
    assert "1 of them the same run as at an earlier point" in out
    # The weak runs really read different labels: the imported set's provenance is recorded.
    weak = {
        r["weak_labels"]: json.loads((exp / r["run_dir"] / "metrics.json").read_text())
        for r in rows
        if r["stage"] == "weak"
    }
    assert weak["computed"]["weak_labels"]["kind"] == "computed"
    assert weak["fields"]["weak_labels"]["kind"] == "imported"
    assert (
        weak["fields"]["weak_labels"]["sha256"]
        == json.loads((store / "weak" / "fields.json").read_text())["source"]["sha256"]
    )
    with (exp / "results.csv").open(newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [t["factor:train.weak.labels"] for t in csv_rows] == ["computed"] * 3 + ["fields"] * 3
    assert [t["weak_labels"] for t in csv_rows] == ["", "computed", "", "", "fields", ""]
    # Both points split the same patches (every image has a mask: the set adds no weak-only patches).
    a, b = (load_split(store, f"default_train.weak.labels-{w}")["subsets"] for w in ("computed", "fields"))
    assert a == b

    # A rerun imports nothing and trains nothing.
    snapshot = (exp / "results.json").read_bytes()
    runner.run_experiment(cfg, make_report=False)
    out = capsys.readouterr().out
    assert "reusing it" in out and "0 run(s) trained" in out and "training ->" not in out
    assert (exp / "results.json").read_bytes() == snapshot


def test_a_wkt_table_without_a_crs_is_refused_before_any_work(tmp_path):
    # A CSV declares no CRS: region_crs: file used to fail only after the store was prepared.
    table = tmp_path / "regions.csv"
    table.write_text('bag,geometry,a\nb1,"POLYGON ((0 0, 1 0, 1 1, 0 0))",1\n')
    cfg = _cfg(tmp_path, sweep={}, weak_labels=[{"name": "r", "table": str(table)}])
    with pytest.raises(
        SegweakError, match=r"^weak_labels\[0\]\.region_crs: .*regions\.csv has a WKT"
    ) as info:
        runner.run_experiment(cfg, make_report=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "exp").exists() and not (tmp_path / "store").exists()
    cfg.weak_labels[0].region_crs = "EPSG:32632"
    from segweak.experiment.data import check_weak_label_imports

    check_weak_label_imports(cfg)  # a CRS given: nothing to refuse
