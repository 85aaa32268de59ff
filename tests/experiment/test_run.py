"""Experiment orchestration: planning, config checks, skipping and resuming (training faked here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from segweak.config import ExperimentConfig, dump_yaml, from_dict
from segweak.errors import SegweakError
from segweak.experiment import plan
from segweak.experiment import run as runner
from segweak.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, store: Path | None = None, **over) -> ExperimentConfig:
    data = {
        "name": "t",
        "out_dir": str(tmp_path / "exp"),
        "dataset": {"source": "store", "store": str(store or tmp_path / "store"), "patch": 32},
        "split": {"name": "default", "fractions": [0.1, 0.7, 0.2], "seeds": [0]},
        "seeds": [0, 1],
        "stages": ["baseline", "weak", "finetune", "full"],
        "train": {"model": {"encoder": "resnet18", "weights": "none"}, "trainer": {"max_epochs": 1}},
        "report": {"samples": 0},
    }
    for k, v in over.items():
        data[k] = v
    cfg = from_dict(ExperimentConfig, data).validate()
    plan.check_train_sections(cfg)
    return cfg


class FakeEngine:
    """Stands in for segweak.train.engine.train: writes a complete run directory without training."""

    def __init__(self, crash_on: str | None = None):
        self.calls: list[str] = []
        self.crash_on = crash_on

    def __call__(self, cfg):
        self.calls.append(cfg.run_dir.name)
        rd = cfg.run_dir
        (rd / "checkpoints").mkdir(parents=True, exist_ok=True)
        (rd / "config.yaml").write_text(dump_yaml(cfg))
        (rd / "checkpoints" / "last.ckpt").write_bytes(b"last")
        if cfg.init.checkpoint:
            assert Path(cfg.init.checkpoint).is_file(), "finetune must start from the weak best.ckpt"
        if self.crash_on == rd.name:
            raise RuntimeError(f"simulated crash in {rd.name}")
        (rd / "checkpoints" / "best.ckpt").write_bytes(b"best")
        # Deterministic made-up numbers (test-only) that depend on the row and seed.
        row = rd.name.split("-")[0]
        level = {"baseline": 0.5, "weak": 0.3, "finetune": 0.55, "full": 0.7, "joint": 0.6}[row]
        base = level + 0.01 * cfg.trainer.seed
        classes = ["impervious", "building", "low_vegetation", "tree", "car"]
        metrics = {
            "method": cfg.method,
            "seed": cfg.trainer.seed,
            "epochs": 1,
            "classes": classes,
            "miou": base,
            "mf1": base + 0.1,
            "oa": base + 0.2,
            "per_class_iou": {c: (None if c == "car" else base) for c in classes},
            "per_class_f1": {c: (None if c == "car" else base + 0.1) for c in classes},
            "absent_classes": ["car"],
            "n_pixels": 100,
            "checkpoint": "checkpoints/best.ckpt",
            "prop_mae": 0.1,
            "presence_f1": 0.8,
            "train_seconds": 1.0,
            "best_epoch": 1,
            "optimizer_steps": 10,
            "data_passes": 1.0,
        }
        atomic_write_json(rd / "metrics.json", metrics)
        return metrics


@pytest.fixture
def fake_engine(monkeypatch):
    from segweak.train import engine

    fake = FakeEngine()
    monkeypatch.setattr(engine, "train", fake)
    return fake


def test_plan_runs_names_methods_and_init(tmp_path):
    cfg = _cfg(tmp_path)
    runs = plan.plan_runs(cfg, tmp_path / "store")
    names = [r.cfg.run_dir.name for r in runs]
    assert names[:4] == [
        "baseline-split0-seed0",
        "weak-proportion-split0-seed0",
        "finetune-proportion-split0-seed0",
        "full-split0-seed0",
    ]
    assert len(runs) == 8
    ft = runs[2].cfg
    assert ft.method == "supervised" and ft.trainer.seed == 0 and ft.resume
    weak_dir = tmp_path / "exp" / "runs" / "weak-proportion-split0-seed0"
    assert ft.init.checkpoint == str(weak_dir / "checkpoints" / "best.ckpt")
    subsets = [r.cfg.methods.get("supervised", {}).get("subset") for r in runs[:4]]
    assert [r.cfg.method for r in runs[:4]] == ["supervised", "proportion", "supervised", "supervised"]
    assert subsets == ["strong", None, "strong", "full"]
    assert runs[1].cfg.methods == {"proportion": {"loss": "ce", "eps": 1e-6}}  # resolved options
    assert runs[0].cfg.init.checkpoint is None and runs[3].cfg.init.checkpoint is None
    assert {r.cfg.data.split for r in runs} == {"default"}
    # Per-stage overrides; a weak row also takes its method's own layer.
    cfg2 = _cfg(
        tmp_path,
        stage_overrides={
            "finetune": {"optim": {"lr": 1e-4}},
            "baseline": {"optim": {"lr": 5e-3}},
            "weak": {"trainer": {"max_epochs": 3}},
            "proportion": {"trainer": {"max_epochs": 4}, "methods": {"proportion": {"loss": "kl"}}},
        },
    )
    runs2 = {r.key: r for r in plan.plan_runs(cfg2, tmp_path / "store")}
    assert runs2[("baseline", "", 0, 1)].cfg.optim.lr == pytest.approx(5e-3)
    assert runs2[("finetune", "proportion", 0, 1)].cfg.optim.lr == pytest.approx(1e-4)
    weak = runs2[("weak", "proportion", 0, 1)].cfg
    assert weak.trainer.max_epochs == 4 and weak.methods["proportion"]["loss"] == "kl"


def test_single_run_methods_get_one_row(tmp_path):
    cfg = _cfg(
        tmp_path,
        seeds=[0],
        methods=["proportion", "joint"],
        train={
            "model": {"encoder": "resnet18", "weights": "none"},
            "methods": {"joint": {"weight": 0.5}, "proportion": {"loss": "kl"}},
        },
        stage_overrides={"joint": {"data": {"batch_sizes": {"strong": 2, "weak": 6}}}},
    )
    runs = plan.plan_runs(cfg, tmp_path / "store")
    assert [r.cfg.run_dir.name for r in runs] == [
        "baseline-split0-seed0",
        "weak-proportion-split0-seed0",
        "finetune-proportion-split0-seed0",
        "joint-split0-seed0",
        "full-split0-seed0",
    ]
    joint = runs[3]
    assert (joint.stage, joint.method) == ("joint", "") and joint.cfg.method == "joint"
    assert joint.cfg.methods["joint"]["weight"] == 0.5 and list(joint.cfg.methods) == ["joint"]
    assert joint.cfg.data.batch_sizes == {"strong": 2, "weak": 6}
    assert runs[1].cfg.methods == {"proportion": {"loss": "kl", "eps": 1e-6}}
    # joint alone needs no weak stage
    alone = _cfg(tmp_path, seeds=[0], stages=["baseline"], methods=["joint"])
    assert [r.stage for r in plan.plan_runs(alone, tmp_path / "store")] == ["baseline", "joint"]


def test_results_rows_carry_arm_step_kind_and_role(tmp_path, tiny_store, fake_engine):
    cfg = _cfg(tmp_path, store=tiny_store, seeds=[0], methods=["proportion", "shuffled", "joint"])
    exp = runner.run_experiment(cfg, make_report=False)
    results = json.loads((exp / "results.json").read_text())
    fields = [(r["stage"], r["method"], r["arm"], r["step_kind"], r["role"]) for r in results["rows"]]
    assert fields == [
        ("baseline", "", "baseline", "train", "baseline"),
        ("weak", "proportion", "proportion", "pretrain", "method"),
        ("weak", "shuffled", "shuffled", "pretrain", "control"),
        ("finetune", "proportion", "proportion", "finetune", "method"),
        ("finetune", "shuffled", "shuffled", "finetune", "control"),
        ("joint", "", "joint", "train", "method"),
        ("full", "", "full", "train", "full"),
    ]
    assert results["columns"][:7] == ["stage", "method", "arm", "step_kind", "role", "split_seed", "seed"]
    header = (exp / "results.csv").read_text().splitlines()[0]
    assert header.startswith("stage,method,arm,step_kind,role,split_seed")


def test_compare_methods_config_budgets():
    from segweak.methods import METHODS

    path = REPO / "configs" / "compare-methods.yaml"
    listed = yaml.safe_load(path.read_text(encoding="utf-8"))["methods"]
    assert {"proportion", "joint", "interval", "pseudo_label", "mean_teacher", "semi_supervised"} <= set(
        listed
    )
    assert {"presence", "shuffled"} <= set(listed)
    missing = [m for m in listed if m not in METHODS]
    if missing:
        pytest.skip(
            f"configs/compare-methods.yaml lists methods not registered on this branch yet: {missing}"
        )
    cfg = plan.load_experiment_config(path)
    assert cfg.dataset.patch == 64 and len(cfg.seeds) == 2
    runs = plan.plan_runs(cfg, "store")
    steps: dict[tuple[str, int], int] = {}
    for r in runs:
        steps[(r.arm, r.seed)] = steps.get((r.arm, r.seed), 0) + r.cfg.trainer.max_steps
    teacher = cfg.train["methods"]["pseudo_label"]["teacher"]
    budget = cfg.train["trainer"]["max_steps"]  # T
    finetune = cfg.stage_overrides["finetune"]["trainer"]["max_steps"]
    assert finetune < budget
    for (arm, seed), n in steps.items():
        # Equal budgets: every arm that uses the weak patches takes T steps (pseudo_label with its
        # teacher's), the baseline the fine-tuning part.
        total = n + (steps[(teacher, seed)] if arm == "pseudo_label" else 0)
        assert total == (finetune if arm == "baseline" else budget), (arm, total)


def test_migrated_experiment_keys(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "dataset": {"source": "synthetic"},
                "weak_methods": ["presence_lse"],
                "train": {
                    "weak": {"method": "proportion", "loss": "kl", "lse_r": 2.0, "use_valid_area": True}
                },
                "stage_overrides": {"finetune": {"finetune": {"reset_head": True}}},
            }
        )
    )
    cfg = plan.load_experiment_config(path)
    assert cfg.methods == ["presence_lse"]
    assert cfg.train == {"weak": {"area": "valid"}, "methods": {"presence_lse": {"lse_r": 2.0}}}
    assert cfg.stage_overrides == {"finetune": {"init": {"reset_head": True}}}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weak_methods" in err and "train.weak.loss" in err


def test_several_split_seeds_and_methods(tmp_path):
    cfg = _cfg(tmp_path, split={"seeds": [3, 4]}, seeds=[0], stages=["weak", "finetune"])
    cfg.methods = ["proportion", "presence_lse"]
    runs = plan.plan_runs(cfg, tmp_path / "store")
    assert [r.cfg.run_dir.name for r in runs] == [
        "weak-proportion-split3-seed0",
        "weak-presence_lse-split3-seed0",
        "finetune-proportion-split3-seed0",
        "finetune-presence_lse-split3-seed0",
        "weak-proportion-split4-seed0",
        "weak-presence_lse-split4-seed0",
        "finetune-proportion-split4-seed0",
        "finetune-presence_lse-split4-seed0",
    ]
    assert runs[1].cfg.method == "presence_lse"
    assert runs[3].cfg.init.checkpoint.endswith("weak-presence_lse-split3-seed0/checkpoints/best.ckpt")
    assert {r.cfg.data.split for r in runs} == {"default-seed3", "default-seed4"}


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"train": {"stage": "weak"}}, "train.stage: this key is set by the experiment"),
        ({"train": {"method": "joint"}}, "train.method: this key is set by the experiment"),
        ({"train": {"trainer": {"seed": 3}}}, "train.trainer.seed"),
        ({"train": {"model": {"encoderr": "x"}}}, "model.encoderr"),
        (
            {"train": {"methods": {"joint": {"wieght": 1}}}},
            r"train: unknown config key\(s\) methods\.joint\.wieght",
        ),
        ({"stage_overrides": {"finetune": {"finetune": {"init_from": "x"}}}}, "finetune.init_from"),
        ({"stage_overrides": {"finetune": {"init": {"checkpoint": "x"}}}}, "init.checkpoint"),
        ({"stage_overrides": {"finetun": {}}}, "stage_overrides.finetun"),
        ({"stage_overrides": {"control": {}}}, "stage_overrides.control: the 'control' stage was removed"),
        ({"stages": ["baseline", "finetune"]}, "add 'weak'"),
        ({"stages": ["baseline", "strong"]}, "stages\\[1\\]"),
        ({"stages": ["baseline", "control"]}, r"stages\[1\]: the 'control' stage was removed.*methods"),
        ({"methods": ["proportoin"]}, r"methods\[0\]: method: unknown training method 'proportoin'; valid"),
        ({"methods": ["supervised"]}, r"methods\[0\]: 'supervised' is what the baseline"),
        ({"stages": ["baseline"], "methods": ["interval"]}, r"methods\[0\]: 'interval' pre-trains"),
        ({"seeds": []}, "seeds"),
        ({"split": {"fractions": [0.5, 0.6, 0.2]}}, "split.fractions"),
    ],
)
def test_config_errors_name_the_key(tmp_path, over, match):
    with pytest.raises(SegweakError, match=match):
        _cfg(tmp_path, **over)


def test_load_experiment_config_with_overrides(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"source": "synthetic"}, "seeds": [0]}))
    cfg = plan.load_experiment_config(path, ["seeds=[1,2]", "train.optim.lr=1e-4", f"out_dir={tmp_path}/o"])
    assert cfg.seeds == [1, 2] and cfg.train["optim"]["lr"] == pytest.approx(1e-4)
    with pytest.raises(SegweakError, match="e.yaml"):
        plan.load_experiment_config(path, ["datasett.source=x"])


def test_run_skips_finished_and_resumes_after_crash(tmp_path, tiny_store, monkeypatch):
    from segweak.train import engine

    cfg = _cfg(tmp_path, store=tiny_store)
    first = FakeEngine()
    monkeypatch.setattr(engine, "train", first)
    exp = runner.run_experiment(cfg, make_report=False)
    assert len(first.calls) == 8
    results = json.loads((exp / "results.json").read_text())
    rows = results["rows"]
    assert [r["train_method"] for r in rows[:4]] == ["supervised", "proportion", "supervised", "supervised"]
    assert rows[0]["optimizer_steps"] == 10 and rows[0]["data_passes"] == 1.0
    assert [(r["stage"], r["method"], r["seed"]) for r in rows] == [
        ("baseline", "", 0),
        ("weak", "proportion", 0),
        ("finetune", "proportion", 0),
        ("full", "", 0),
        ("baseline", "", 1),
        ("weak", "proportion", 1),
        ("finetune", "proportion", 1),
        ("full", "", 1),
    ]
    assert rows[2]["miou"] == pytest.approx(0.55) and rows[2]["iou_car"] is None
    assert rows[2]["f1_tree"] == pytest.approx(0.65)
    assert rows[0]["run_dir"] == "runs/baseline-split0-seed0"
    header = (exp / "results.csv").read_text().splitlines()[0].split(",")
    assert header == results["columns"]
    expected = "stage method split_seed seed miou mf1 oa iou_car f1_tree prop_mae presence_f1 run_dir"
    for col in expected.split():
        assert col in header
    assert yaml.safe_load((exp / "config.yaml").read_text())["seeds"] == [0, 1]
    snapshot = (exp / "results.json").read_bytes()

    # Nothing to do on a rerun.
    again = FakeEngine()
    monkeypatch.setattr(engine, "train", again)
    runner.run_experiment(cfg, make_report=False)
    assert again.calls == []
    assert (exp / "results.json").read_bytes() == snapshot

    # Simulate a crash: one weak run lost its results and crashes while being retrained.
    victim = exp / "runs" / "weak-proportion-split0-seed1"
    (victim / "metrics.json").unlink()
    crash = FakeEngine(crash_on="weak-proportion-split0-seed1")
    monkeypatch.setattr(engine, "train", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.run_experiment(cfg, make_report=False)
    assert crash.calls == ["weak-proportion-split0-seed1"]
    # The rerun trains only the missing run (it resumes from last.ckpt) and gives the same results.
    resume = FakeEngine()
    monkeypatch.setattr(engine, "train", resume)
    runner.run_experiment(cfg, make_report=False)
    assert resume.calls == ["weak-proportion-split0-seed1"]
    assert (exp / "results.json").read_bytes() == snapshot


def test_finished_run_with_other_config_is_refused(tmp_path, tiny_store, fake_engine):
    cfg = _cfg(tmp_path, store=tiny_store, seeds=[0], stages=["baseline"])
    runner.run_experiment(cfg, make_report=False)
    changed = _cfg(tmp_path, store=tiny_store, seeds=[0], stages=["baseline"], train={"optim": {"lr": 0.5}})
    with pytest.raises(SegweakError, match="different config.*optim.lr"):
        runner.run_experiment(changed, make_report=False)


def test_existing_split_with_other_settings_is_refused(tmp_path, tiny_store, fake_engine):
    cfg = _cfg(tmp_path, store=tiny_store, split={"name": "default", "fractions": [0.2, 0.6, 0.2]})
    with pytest.raises(SegweakError, match="exists with other settings"):
        runner.run_experiment(cfg, make_report=False)


def test_existing_store_must_match(tmp_path, synthetic_root, fake_engine, monkeypatch):
    from segweak.data.sources import VaihingenSource
    from segweak.data.store import prepare

    store = tmp_path / "store"
    prepare(VaihingenSource(synthetic_root), store, patch=32, stride=32, progress=False)
    # A vaihingen-source experiment whose store already exists with another patch size.
    ds = {"source": "vaihingen", "root": str(synthetic_root), "store": str(store)}
    cfg = _cfg(tmp_path, store=store, dataset={**ds, "patch": 64})
    with pytest.raises(SegweakError, match="does not match the config.*patch 32 != dataset.patch 64"):
        runner.run_experiment(cfg, make_report=False)
    # Matching metadata: reused without re-preparing (the split is made in it).
    ok = _cfg(tmp_path, store=store, dataset={**ds, "patch": 32}, seeds=[0], stages=["baseline"])
    mtime = (store / "store.json").stat().st_mtime_ns
    runner.run_experiment(ok, make_report=False)
    assert (store / "store.json").stat().st_mtime_ns == mtime
    assert (store / "splits" / "default.json").is_file()
    assert fake_engine.calls == ["baseline-split0-seed0"]


def test_demo_config_is_packaged_identically():
    from segweak.experiment.demo import demo_config, demo_config_text

    assert (REPO / "configs" / "demo.yaml").read_text(encoding="utf-8") == demo_config_text()
    cfg = demo_config("x", seeds=[4])
    assert cfg.dataset.source == "synthetic" and cfg.seeds == [4] and cfg.out_dir == "x"
    assert cfg.stages == ["baseline", "weak", "finetune", "full"] and cfg.methods == ["proportion"]
    plan.check_train_sections(cfg)
    valid = demo_config("z", quick=True, overrides=["train.weak.area=valid"])
    assert valid.train["weak"]["area"] == "valid"
    quick = demo_config("y", quick=True)
    assert quick.dataset.patch <= 32 and quick.train["trainer"]["max_epochs"] == 1
    assert quick.train["model"]["weights"] == "none" and quick.stage_overrides == {}


@pytest.mark.parametrize(
    "name", ["demo.yaml", "vaihingen.yaml", "potsdam.yaml", "folder-example.yaml", "label-efficiency.yaml"]
)
def test_shipped_configs_load(name):
    path = REPO / "configs" / name
    cfg = plan.load_experiment_config(path)
    runs = plan.plan_runs(cfg, "store")
    assert runs and all(r.cfg.data.store == "store" for r in runs)


def _keys(cls, prefix=""):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_docs_config_documents_every_key():
    from segweak.config import TrainConfig

    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    missing = [k for cls in (TrainConfig, ExperimentConfig) for k in _keys(cls) if f"| `{k}` |" not in text]
    assert not missing, f"docs/config.md does not document: {missing}"


def test_docs_config_documents_every_method_option():
    from segweak.methods import METHODS

    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    shipped = {n: c for n, c in METHODS.items() if c.__module__.startswith("segweak.methods.")}
    assert {"supervised", "proportion", "joint", "interval"} <= set(shipped)
    missing = [f"methods.{n}.{k}" for n, c in shipped.items() for k in _keys(c.Options)]
    missing = [k for k in missing if f"| `{k}` |" not in text]
    assert not missing, f"docs/config.md does not document: {missing}"


def test_experiment_written_before_methods_resumes(tmp_path, tiny_store, monkeypatch, old_layout):
    from segweak.train import engine

    cfg = _cfg(
        tmp_path, store=tiny_store, seeds=[0], train={**_cfg(tmp_path).train, "weak": {"area": "valid"}}
    )
    monkeypatch.setattr(engine, "train", FakeEngine())
    exp = runner.run_experiment(cfg, make_report=False)
    # Rewrite every finished run's config.yaml in the layout of before training methods.
    for path in (exp / "runs").glob("*/config.yaml"):
        path.write_text(yaml.safe_dump(old_layout(yaml.safe_load(path.read_text()))))
    assert "stage: weak" in (exp / "runs" / "weak-proportion-split0-seed0" / "config.yaml").read_text()
    again = FakeEngine()
    monkeypatch.setattr(engine, "train", again)
    runner.run_experiment(cfg, make_report=False)
    assert again.calls == []  # migrated configs match: nothing retrained
    # Those runs averaged over the valid area; the new default differs and the error says what to do.
    default = _cfg(tmp_path, store=tiny_store, seeds=[0])
    with pytest.raises(SegweakError, match=r"differs at: weak\.area.*--set train\.weak\.area=valid"):
        runner.run_experiment(default, make_report=False)


def test_missing_imported_weak_labels_fail_before_the_first_run(tmp_path, tiny_store, fake_engine):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    cfg = _cfg(
        tmp_path,
        store,
        train={"model": {"encoder": "resnet18", "weights": "none"}, "weak": {"labels": "fields"}},
    )
    with pytest.raises(SegweakError, match="stage baseline: weak.labels: no weak-label set 'fields'"):
        runner.run_experiment(cfg, make_report=False)
    assert fake_engine.calls == []
