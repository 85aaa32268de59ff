"""The protocol as a declaration (``plan.PROTOCOL``): the shipped configs' plans, a new protocol, checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from segweak.config import EXPERIMENT_STAGES, ExperimentConfig, from_dict
from segweak.errors import SegweakError
from segweak.experiment import plan
from segweak.train.engine import selected_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY_TRAIN = {
    "model": {"encoder": "tu-test_efficientnet", "weights": "none"},
    "data": {"batch_size": 4},
    "trainer": {"max_epochs": 1},
}

# (row name prefix, stage, method, arm, role, step_kind, upstream row name prefix or None)
REFERENCE = [("baseline", "baseline", "", "baseline", "baseline", "train", None)]
FULL = [("full", "full", "", "full", "full", "train", None)]


def _pretrain_rows(methods: list[str]) -> list[tuple]:
    weak = [(f"weak-{m}", "weak", m, m, "method", "pretrain", None) for m in methods]
    ft = [(f"finetune-{m}", "finetune", m, m, "method", "finetune", f"weak-{m}") for m in methods]
    return weak + ft


def _structure(runs: list[plan.PlannedRun]) -> list[tuple]:
    """Each run's row as the tables above spell it (split and seed suffix dropped from names)."""
    rows = []
    for r in runs:
        suffix = f"-split{r.split_seed}-seed{r.seed}"
        upstream = Path(r.upstream).name.replace(suffix, "") if r.upstream else None
        rows.append(
            (r.cfg.run_dir.name.replace(suffix, ""), r.stage, r.method, r.arm, r.role, r.step_kind, upstream)
        )
    return rows


def _check_resolved(runs: list[plan.PlannedRun]) -> None:
    """What each run trains with follows its stage's declaration."""
    for r in runs:
        spec = plan.stage_spec(r.stage)
        assert r.spec is spec
        subset = r.cfg.methods.get("supervised", {}).get("subset") if r.cfg.method == "supervised" else None
        assert (r.cfg.method, subset) == (("supervised", spec.subset) if spec.subset else (r.arm, None))
        if spec.consumes:  # finetune: starts from its weak run's selected checkpoint
            assert r.cfg.init.checkpoint == str(selected_checkpoint(_run(runs, r.upstream).cfg))
        else:
            assert r.cfg.init.checkpoint is None


def _run(runs: list[plan.PlannedRun], run_dir: str | None) -> plan.PlannedRun:
    return next(r for r in runs if str(r.cfg.run_dir) == run_dir)


def test_demo_config_plans_the_four_stages():
    cfg = plan.load_experiment_config(CONFIGS / "demo.yaml")
    runs = plan.plan_runs(cfg)
    expected = REFERENCE + _pretrain_rows(["proportion"]) + FULL
    assert _structure(runs) == expected * 3
    assert [r.seed for r in runs] == [0] * 4 + [1] * 4 + [2] * 4
    _check_resolved(runs)
    # Layers: stage_overrides.weak / .full over train; the rest train's 8 epochs.
    assert [r.cfg.trainer.max_epochs for r in runs[:4]] == [8, 6, 8, 5]


def test_compare_methods_config_plans_pretraining_single_run_and_taught_rows():
    cfg = plan.load_experiment_config(CONFIGS / "compare-methods.yaml")
    runs = plan.plan_runs(cfg)
    pretrain = ["proportion", "interval", "presence", "shuffled"]
    single = [
        ("joint", "joint", "", "joint", "method", "train", None),
        ("pseudo_label-round1", "pseudo_label", "", "pseudo_label", "method", "train", "baseline"),
        ("mean_teacher", "mean_teacher", "", "mean_teacher", "method", "train", None),
        ("semi_supervised", "semi_supervised", "", "semi_supervised", "control", "train", None),
    ]
    expected = REFERENCE + _pretrain_rows(pretrain) + single + FULL
    controls = {"presence", "shuffled", "semi_supervised"}
    expected = [(*row[:4], "control" if row[3] in controls else row[4], *row[5:]) for row in expected]
    assert _structure(runs) == expected * 2
    _check_resolved(runs)
    (taught,) = [r for r in runs if r.round == 1 and r.seed == 0]
    assert taught.teacher == str(
        selected_checkpoint(runs[0].cfg)
    )  # the baseline teaches (methods.pseudo_label)
    # ... and the student starts from model.weights (the default student_init), as before the option.
    assert taught.cfg.methods["pseudo_label"]["student_init"] == "imagenet"
    assert taught.cfg.init.checkpoint is None and taught.note == ""
    steps = {r.cfg.run_dir.name: r.cfg.trainer.max_steps for r in runs if r.seed == 0}
    assert steps["weak-interval-split0-seed0"] == 80 and steps["finetune-interval-split0-seed0"] == 40
    assert steps["pseudo_label-split0-seed0-round1"] == 80 and steps["joint-split0-seed0"] == 120


def test_label_efficiency_config_plans_every_point_and_shares_full():
    cfg = plan.load_experiment_config(CONFIGS / "label-efficiency.yaml")
    points = plan.sweep_points(cfg)
    runs = plan.plan_runs(cfg, points=points)
    expected = REFERENCE + _pretrain_rows(["proportion"]) + FULL
    assert _structure(runs) == expected * 3 * 3
    assert [r.point for r in runs] == [p.label for p in points for _ in range(12)]
    _check_resolved(runs)
    # full reads strong ∪ weak: the same patches at every point, trained once at the first.
    shared = {(r.point, r.stage) for r in runs if r.trained_at is not None}
    assert shared == {(p.label, "full") for p in points[1:]}


def _cfg(tmp_path: Path, **over) -> ExperimentConfig:
    data = {
        "name": "protocol",
        "out_dir": str(tmp_path / "exp"),
        "dataset": {"source": "store", "store": str(tmp_path / "store"), "patch": 32},
        "split": {"name": "default", "fractions": [0.1, 0.7, 0.2], "seeds": [0]},
        "seeds": [0],
        "methods": ["proportion", "pseudo_label"],
        "train": {**TINY_TRAIN, "methods": {"pseudo_label": {"teacher": "proportion", "rounds": 1}}},
        "report": {"samples": 0},
    }
    data.update(over)
    return from_dict(ExperimentConfig, data).validate()


#: A protocol with a second fine-tuning of each pre-trained model, declared without touching the planner.
REFINE = dataclasses.replace(
    plan.stage_spec("finetune"), name="refine", consumes={"init.checkpoint": "finetune"}
)
WITH_REFINE = (*plan.PROTOCOL[:3], REFINE, *plan.PROTOCOL[3:])


def test_a_new_stage_is_a_declaration(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.stages = [*cfg.stages, "refine"]  # `stages` of a config lists the shipped protocol's stages
    runs = plan.plan_runs(cfg, tmp_path / "store", protocol=WITH_REFINE)
    by_name = {r.cfg.run_dir.name: r for r in runs}
    assert list(by_name) == [
        "baseline-split0-seed0",
        "weak-proportion-split0-seed0",
        "finetune-proportion-split0-seed0",
        "refine-proportion-split0-seed0",
        "pseudo_label-split0-seed0-round1",
        "full-split0-seed0",
    ]
    ft, refine = by_name["finetune-proportion-split0-seed0"], by_name["refine-proportion-split0-seed0"]
    assert refine.cfg.init.checkpoint == str(selected_checkpoint(ft.cfg))
    assert refine.upstream == str(ft.cfg.run_dir) and refine.step_kind == "finetune"
    assert refine.cfg.method == "supervised" and refine.cfg.methods["supervised"]["subset"] == "strong"
    # The last teaching stage of a pre-training method is what a method depending on it reads.
    assert by_name["pseudo_label-split0-seed0-round1"].teacher == str(selected_checkpoint(refine.cfg))
    # The shipped protocol is unchanged: without the declaration, the same config has no refine row.
    assert "refine-proportion-split0-seed0" not in {r.cfg.run_dir.name for r in plan.plan_runs(cfg, "s")}


def test_a_consumed_stage_must_be_planned(tmp_path):
    cfg = _cfg(tmp_path, stages=["baseline", "weak"])
    cfg.stages = [*cfg.stages, "refine"]
    with pytest.raises(SegweakError, match="stages: 'refine' starts from the 'finetune' checkpoints"):
        plan.check_train_sections(cfg, WITH_REFINE)  # load_experiment_config's check, before planning


def test_protocol_declarations_are_checked():
    finetune = plan.stage_spec("finetune")
    with pytest.raises(ValueError, match="declared twice"):
        plan.check_protocol((*plan.PROTOCOL, finetune))
    with pytest.raises(ValueError, match="not declared before it"):
        plan.check_protocol((REFINE, *plan.PROTOCOL))
    with pytest.raises(ValueError, match="only a per-method stage"):
        plan.check_protocol(
            (*plan.PROTOCOL, plan.StageSpec("avg", subset="strong", consumes={"init.checkpoint": "weak"}))
        )
    with pytest.raises(ValueError, match="exactly one stage"):
        plan.check_protocol(plan.PROTOCOL[:3])
    with pytest.raises(ValueError, match="subset goes with"):
        plan.StageSpec("x", trains="method", rows="pretrain", subset="strong")
    with pytest.raises(ValueError, match="cannot consume"):
        plan.StageSpec("x", subset="strong", consumes={"optim.lr": "weak"})


def test_shipped_protocol_stages_are_the_config_stages():
    assert [s.name for s in plan.PROTOCOL if s.rows != "methods"] == list(EXPERIMENT_STAGES)
