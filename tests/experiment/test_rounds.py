"""Rows that depend on another row (``pseudo_label``): planning, artefacts before rounds, resuming."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from segweak.config import ExperimentConfig, from_dict
from segweak.errors import SegweakError
from segweak.experiment import plan
from segweak.experiment import run as runner
from segweak.experiment.results import load_experiment, row_group
from segweak.report.report import summary_table
from segweak.train.pseudo_labels import PseudoLabels

TINY_TRAIN = {
    "model": {"encoder": "tu-test_efficientnet", "weights": "none"},
    "optim": {"lr": 0.01},
    "data": {"batch_size": 4},
    "trainer": {"max_epochs": 1},
}


def _cfg(tmp_path: Path, store: Path, **over) -> ExperimentConfig:
    data = {
        "name": "rounds",
        "out_dir": str(tmp_path / "exp"),
        "dataset": {"source": "store", "store": str(store), "patch": 32},
        "split": {"name": "default", "fractions": [0.1, 0.7, 0.2], "seeds": [0]},
        "seeds": [0],
        "stages": ["baseline", "weak", "finetune"],
        "methods": ["proportion", "pseudo_label"],
        "train": {**TINY_TRAIN, "methods": {"pseudo_label": {"rounds": 2}}},
        "report": {"samples": 0},
    }
    data.update(over)
    return from_dict(ExperimentConfig, data).validate()


def test_plan_rounds_chain_teachers_and_artefacts(tmp_path):
    cfg = _cfg(tmp_path, tmp_path / "store", seeds=[0, 1])
    plan.check_train_sections(cfg)
    runs = plan.plan_runs(cfg, tmp_path / "store")
    exp = tmp_path / "exp"
    names = [r.cfg.run_dir.name for r in runs if r.seed == 1]
    assert names == [
        "baseline-split0-seed1",
        "weak-proportion-split0-seed1",
        "finetune-proportion-split0-seed1",
        "pseudo_label-split0-seed1-round1",
        "pseudo_label-split0-seed1-round2",
    ]
    r1, r2 = (r for r in runs if r.seed == 1 and r.round)
    assert (r1.round, r2.round) == (1, 2) and r1.stage == "pseudo_label" and r1.method == ""
    assert r1.teacher == str(exp / "runs" / "finetune-proportion-split0-seed1" / "checkpoints" / "best.ckpt")
    assert r2.teacher == str(r1.cfg.run_dir / "checkpoints" / "best.ckpt")
    assert r1.artefact == str(exp / "pseudo" / "pseudo_label-split0-seed1-round1")
    assert r2.cfg.methods["pseudo_label"]["labels"] == r2.artefact
    assert r2.cfg.methods["pseudo_label"]["rounds"] == 2 and r2.cfg.init.checkpoint is None
    assert r1.key == ("pseudo_label", "", 0, 1, 1) and runs[0].key == ("baseline", "", 0, 0)
    assert "round2" in r2.label
    # Taught by the baseline instead.
    base = _cfg(
        tmp_path,
        tmp_path / "store",
        train={**TINY_TRAIN, "methods": {"pseudo_label": {"teacher": "baseline"}}},
    )
    plan.check_train_sections(base)
    (only,) = [r for r in plan.plan_runs(base, "s") if r.round]
    assert only.teacher == str(exp / "runs" / "baseline-split0-seed0" / "checkpoints" / "best.ckpt")


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"methods": ["pseudo_label", "joint"], "train": {"methods": {"pseudo_label": {"teacher": "joint"}}}},
         r"methods\[0\]: 'pseudo_label' starts from the final checkpoint of row 'joint'.*can use: baseline"),
        ({"train": {"methods": {"pseudo_label": {"teacher": "full"}}},
          "stages": ["baseline", "weak", "finetune", "full"]},
         "row 'full', which this experiment does not train before it"),
        ({"stages": ["baseline", "weak"]}, r"row 'proportion'.*\(it can use: baseline\)"),
        ({"train": {"methods": {"pseudo_label": {"labels": "x"}}}},
         "methods.pseudo_label.labels: the experiment sets it for every round"),
        ({"train": {"methods": {"pseudo_label": {"rounds": 0}}}}, "methods.pseudo_label.rounds must be >= 1"),
    ],
)  # fmt: skip
def test_dependency_errors_name_the_row(tmp_path, over, match):
    with pytest.raises(SegweakError, match=match) as err:
        plan.check_train_sections(_cfg(tmp_path, tmp_path / "store", **over))
    assert "\n" not in str(err.value)


def test_a_later_method_can_teach_from_an_earlier_single_run_method(tmp_path):
    cfg = _cfg(
        tmp_path, tmp_path / "store", methods=["joint", "pseudo_label"],
        train={**TINY_TRAIN, "methods": {"pseudo_label": {"teacher": "joint"}}},
    )  # fmt: skip
    plan.check_train_sections(cfg)
    (rnd,) = [r for r in plan.plan_runs(cfg, "s") if r.round]
    assert rnd.teacher.endswith("joint-split0-seed0/checkpoints/best.ckpt")


def _rerun_trains_nothing(cfg, exp: Path, monkeypatch) -> None:
    """Run the experiment again with training forbidden; its results.json must come out unchanged."""
    from segweak.train import engine

    snapshot = (exp / "results.json").read_bytes()

    def no_training(run_cfg):
        raise AssertionError(f"retrained {run_cfg.run_dir}")

    monkeypatch.setattr(engine, "train", no_training)
    runner.run_experiment(cfg, make_report=False)
    assert (exp / "results.json").read_bytes() == snapshot


def test_run_with_pseudo_label_rounds_end_to_end(tmp_path, tiny_store, monkeypatch):

    cfg = _cfg(tmp_path, tiny_store)
    exp = runner.run_experiment(cfg, make_report=False)
    results = json.loads((exp / "results.json").read_text())
    rows = results["rows"]
    assert [(r["stage"], r["method"], r["round"], r["train_method"]) for r in rows] == [
        ("baseline", "", None, "supervised"),
        ("weak", "proportion", None, "proportion"),
        ("finetune", "proportion", None, "supervised"),
        ("pseudo_label", "", 1, "pseudo_label"),
        ("pseudo_label", "", 2, "pseudo_label"),
    ]
    assert rows[3]["run_dir"] == "runs/pseudo_label-split0-seed0-round1"
    header = (exp / "results.csv").read_text().splitlines()
    columns = ["stage", "method", "arm", "step_kind", "role", "split_seed", "seed", "round", "train_method"]
    assert header[0].split(",")[:9] == columns
    assert header[4].split(",")[7] == "1" and header[1].split(",")[7] == ""
    assert header[4].split(",")[2:5] == ["pseudo_label", "train", "method"]
    # Round 1 is taught by finetune-proportion, round 2 by round 1's student.
    art1, art2 = (PseudoLabels(exp / "pseudo" / f"pseudo_label-split0-seed0-round{r}") for r in (1, 2))
    assert art1.meta["teacher"]["checkpoint"].endswith(
        "finetune-proportion-split0-seed0/checkpoints/best.ckpt"
    )
    assert art2.meta["teacher"]["checkpoint"].endswith(
        "pseudo_label-split0-seed0-round1/checkpoints/best.ckpt"
    )
    run2 = exp / "runs" / "pseudo_label-split0-seed0-round2"
    recorded = yaml.safe_load((run2 / "config.yaml").read_text())
    assert recorded["methods"]["pseudo_label"]["labels"] == str(art2.path)
    # The report keeps rounds apart (never averaged as if they were seeds).
    groups = load_experiment(exp).groups()
    assert groups[-2:] == [("pseudo_label round 1", ""), ("pseudo_label round 2", "")]
    assert [row[0] for row in summary_table(load_experiment(exp))[1]][-2:] == [
        "pseudo_label round 1",
        "pseudo_label round 2",
    ]
    assert row_group(rows[0]) == ("baseline", "")

    # A rerun trains nothing and rewrites no artefact.
    stamps = {p: p.stat().st_mtime_ns for p in (exp / "pseudo").glob("*/pseudo.json")}
    _rerun_trains_nothing(cfg, exp, monkeypatch)
    assert stamps == {p: p.stat().st_mtime_ns for p in (exp / "pseudo").glob("*/pseudo.json")}
    monkeypatch.undo()

    # Round 2 lost: it retrains from its (complete, reused) artefact; a lost artefact is remade.
    shutil.rmtree(run2)
    runner.run_experiment(cfg, make_report=False)
    assert (run2 / "metrics.json").is_file() and stamps == {
        p: p.stat().st_mtime_ns for p in (exp / "pseudo").glob("*/pseudo.json")
    }
    shutil.rmtree(run2)
    shutil.rmtree(art2.path)
    runner.run_experiment(cfg, make_report=False)
    assert PseudoLabels(art2.path).meta["teacher"]["sha256"] == art2.meta["teacher"]["sha256"]

    # A teacher retrained since its artefact was written: the artefact is refused, not mixed in.
    shutil.rmtree(run2)
    first = exp / "runs" / "pseudo_label-split0-seed0-round1"
    (first / "checkpoints" / "best.ckpt").write_bytes(
        (first / "checkpoints" / "last.ckpt").read_bytes() + b"x"
    )
    with pytest.raises(SegweakError, match="holds pseudo-labels of another request .*teacher.sha256"):
        runner.run_experiment(cfg, make_report=False)


def test_other_ddp_ranks_wait_for_rank_zero_to_write_the_artefact(tmp_path, monkeypatch):
    import threading

    from segweak.methods.pseudo_label import PseudoLabel
    from segweak.train import engine

    cfg = _cfg(tmp_path, tmp_path / "store")
    (run,) = [r for r in plan.plan_runs(cfg, tmp_path / "store") if r.round == 1]
    artefact = Path(run.artefact)

    def not_on_this_rank(*args):
        raise AssertionError("only rank 0 writes the artefact")

    monkeypatch.setattr(engine, "is_global_zero", lambda: False)
    monkeypatch.setattr(PseudoLabel, "prepare", classmethod(not_on_this_rank))
    monkeypatch.setattr(runner, "ARTEFACT_POLL_S", 0.01)
    # Rank 0 renames the complete artefact into place a moment later; the teacher is not needed here.
    writer = threading.Timer(0.2, lambda: artefact.mkdir(parents=True))
    writer.start()
    runner._prepare_artefact(run, "[1/1]", print)
    writer.join()
    assert artefact.is_dir()
    # Rank 0 never writes it: the other ranks give up with one line instead of hanging.
    (run2,) = [r for r in plan.plan_runs(cfg, tmp_path / "store") if r.round == 2]
    monkeypatch.setattr(runner, "ARTEFACT_WAIT_S", 0.05)
    with pytest.raises(SegweakError, match=r"waited 0 s for rank 0 to write .*round2; see rank 0's output"):
        runner._prepare_artefact(run2, "[1/1]", print)


def test_more_rounds_reuse_finished_ones_but_other_settings_do_not(tmp_path):
    from segweak.config import dump_yaml

    two = {r.cfg.run_dir.name: r for r in plan.plan_runs(_cfg(tmp_path, tmp_path / "store"), "s")}
    for run in two.values():  # as if every run had finished with rounds: 2
        run.cfg.run_dir.mkdir(parents=True)
        (run.cfg.run_dir / "config.yaml").write_text(dump_yaml(run.cfg))

    def planned(**options):
        train = {**TINY_TRAIN, "methods": {"pseudo_label": options}}
        cfg = _cfg(tmp_path, tmp_path / "store", train=train)
        return {r.cfg.run_dir.name: r for r in plan.plan_runs(cfg, "s")}

    three = planned(rounds=3)
    assert list(three)[-1] == "pseudo_label-split0-seed0-round3"
    for name in two:
        runner._check_same_config(three[name])  # rounds 1 and 2 are reused
    changed = planned(rounds=2, keep=0.5)
    with pytest.raises(SegweakError, match=r"differs at: methods\.pseudo_label\.keep"):
        runner._check_same_config(changed["pseudo_label-split0-seed0-round1"])


def _rounds(tmp_path: Path, **options) -> list[plan.PlannedRun]:
    """The planned rounds of two-round pseudo_label taught by finetune-proportion, with ``options``."""
    train = {**TINY_TRAIN, "methods": {"pseudo_label": {"rounds": 2, **options}}}
    cfg = _cfg(tmp_path, tmp_path / "store", train=train)
    plan.check_train_sections(cfg)
    return [r for r in plan.plan_runs(cfg, tmp_path / "store") if r.round]


def test_plan_students_start_from_their_teachers_with_student_init_teacher(tmp_path):
    runs = tmp_path / "exp" / "runs"
    r1, r2 = _rounds(tmp_path, student_init="teacher")
    teacher1 = runs / "finetune-proportion-split0-seed0"
    assert r1.teacher == r1.cfg.init.checkpoint == str(teacher1 / "checkpoints" / "best.ckpt")
    # Round 2's teacher (and start) is round 1's student: it trains only once round 1 is final.
    assert r2.teacher == r2.cfg.init.checkpoint == str(r1.cfg.run_dir / "checkpoints" / "best.ckpt")
    assert (r1.upstream, r2.upstream) == (str(teacher1), str(r1.cfg.run_dir))
    assert r2.cfg.methods["pseudo_label"]["student_init"] == "teacher"
    assert r1.note == "starts from its teacher's weights (finetune-proportion-split0-seed0)"
    assert r2.note == "starts from its teacher's weights (pseudo_label-split0-seed0-round1)"
    # The default: every student starts from model.weights; the teachers are the same.
    d1, d2 = _rounds(tmp_path)
    assert (d1.teacher, d2.teacher) == (r1.teacher, r2.teacher)
    assert (d1.cfg.init.checkpoint, d2.cfg.init.checkpoint, d1.note, d2.note) == (None, None, "", "")
    assert d1.cfg.methods["pseudo_label"]["student_init"] == "imagenet"


def test_a_finished_round_is_reused_only_with_the_same_student_init(tmp_path):
    from segweak.config import dump_yaml, to_dict

    default = _rounds(tmp_path)
    for run in default:  # as if each round had finished before student_init existed
        recorded = to_dict(run.cfg)
        del recorded["methods"]["pseudo_label"]["student_init"]
        run.cfg.run_dir.mkdir(parents=True)
        (run.cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(recorded))
        runner._check_same_config(run)  # the recorded config reads as student_init: imagenet
    (from_teacher, _) = _rounds(tmp_path, student_init="teacher")
    with pytest.raises(SegweakError, match=r"differs at: methods\.pseudo_label\.student_init\)"):
        runner._check_same_config(from_teacher)
    (from_teacher.cfg.run_dir / "config.yaml").write_text(dump_yaml(from_teacher.cfg))
    runner._check_same_config(from_teacher)


def test_student_init_swept_end_to_end_starts_from_the_teachers_weights(tmp_path, tiny_store, monkeypatch):
    import lightning as L
    import torch

    from segweak.train import engine
    from segweak.train.checkpoint import load_checkpoint, model_state_dict

    axis = "train.methods.pseudo_label.student_init"
    cfg = _cfg(
        tmp_path, tiny_store, stages=["baseline"], methods=["pseudo_label"],
        train={**TINY_TRAIN, "methods": {"pseudo_label": {"teacher": "baseline"}}},
        sweep={axis: ["imagenet", "teacher"]},
    )  # fmt: skip
    first: dict[str, dict[str, torch.Tensor]] = {}  # run directory -> weights before its first step

    class FirstWeights(L.Callback):
        def on_train_start(self, trainer, module):
            state = module.model.state_dict()
            first[trainer.default_root_dir] = {k: v.detach().clone() for k, v in state.items()}

    real_train = engine.train
    monkeypatch.setattr(engine, "train", lambda run_cfg: real_train(run_cfg, [FirstWeights()]))
    exp = runner.run_experiment(cfg, make_report=False)
    monkeypatch.undo()
    rows = json.loads((exp / "results.json").read_text())["rows"]
    assert [(r["stage"], r["factors"][axis], r["trained_at"]) for r in rows] == [
        ("baseline", "imagenet", None),
        ("pseudo_label", "imagenet", None),
        ("baseline", "teacher", f"{axis}=imagenet"),  # the same baseline: it reads no pseudo_label option
        ("pseudo_label", "teacher", None),
    ]
    assert (
        rows[1]["note"] == ""
        and rows[3]["note"] == "starts from its teacher's weights (baseline-split0-seed0)"
    )
    header = (exp / "results.csv").read_text().splitlines()[0].split(",")
    assert f"factor:{axis}" in header and "note" in header
    teacher = exp / "runs" / f"{axis}-imagenet" / "baseline-split0-seed0" / "checkpoints" / "best.ckpt"
    teacher_state = model_state_dict(load_checkpoint(teacher))
    students = {point: str(exp / rows[i]["run_dir"]) for i, point in ((1, "imagenet"), (3, "teacher"))}
    assert sorted(first) == sorted([str(teacher.parent.parent), *students.values()])
    assert all(torch.equal(first[students["teacher"]][k], v) for k, v in teacher_state.items())
    assert not all(torch.equal(first[students["imagenet"]][k], v) for k, v in teacher_state.items())
    recorded = yaml.safe_load((Path(students["teacher"]) / "config.yaml").read_text())
    assert recorded["init"]["checkpoint"] == str(teacher)
    assert recorded["methods"]["pseudo_label"]["student_init"] == "teacher"
    # A rerun trains nothing: the finished student matches what is asked (init.checkpoint included).
    _rerun_trains_nothing(cfg, exp, monkeypatch)
