"""``mean_teacher`` (EMA teacher + proportions) and the ``semi_supervised`` FixMatch control."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from segweak.config import TrainConfig, load_config
from segweak.errors import SegweakError
from segweak.evaluate.evaluate import evaluate
from segweak.evaluate.predict import predict_tiles
from segweak.methods import build_method
from segweak.methods.consistency import view_seed
from segweak.models.losses import pixel_loss
from segweak.train.checkpoint import load_checkpoint, model_state_dict
from segweak.train.datamodule import SegDataModule
from segweak.train.engine import is_complete, train
from segweak.train.module import SegModule

K = 5
CLASSES = ["a", "b", "c", "d", "e"]
TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "data.batch_size=4",
    "trainer.progress_bar=false",
    "optim.lr=0.01",
]


def _cfg(store: Path, out: Path, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])


def _make(name: str, **options):
    return build_method(TrainConfig(method=name, methods={name: options}), K)


# ---- options and declared data -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "value", "match"),
    [
        ("mean_teacher", "ema_decay", 1.5, "methods.mean_teacher.ema_decay must be in"),
        ("mean_teacher", "ema_buffers", "avg", "methods.mean_teacher.ema_buffers: 'avg' is not valid"),
        ("mean_teacher", "proportion_weight", -1.0, "methods.mean_teacher.proportion_weight must be >= 0"),
        ("mean_teacher", "loss", "nope", "methods.mean_teacher.loss: 'nope'"),
        ("mean_teacher", "ramp", "cosine", "methods.mean_teacher.ramp: 'cosine'"),
        ("semi_supervised", "threshold", 1.2, "methods.semi_supervised.threshold must be in"),
        ("semi_supervised", "reduction", "mean", "methods.semi_supervised.reduction: 'mean'"),
        ("semi_supervised", "weak_ratio", 0.0, "methods.semi_supervised.weak_ratio must be > 0"),
        ("semi_supervised", "contrast", 2.0, "methods.semi_supervised.contrast must be in"),
        ("semi_supervised", "cutout_size", 0.0, "methods.semi_supervised.cutout_size must be in"),
        ("semi_supervised", "noise_std", -0.1, "methods.semi_supervised.noise_std must be >= 0"),
    ],
)
def test_invalid_options_are_one_line_errors_naming_the_key(name, key, value, match):
    with pytest.raises(SegweakError, match=match) as info:
        _make(name, **{key: value})
    assert "\n" not in str(info.value)


def test_needs_two_views_of_weak_patches_with_or_without_their_labels():
    mt, ss = _make("mean_teacher"), _make("semi_supervised")
    assert not mt.pretrain and not ss.pretrain
    assert mt.needs()["strong"].labels == ss.needs()["strong"].labels == "mask"
    assert (mt.needs()["weak"].labels, mt.needs()["weak"].views) == ("weak", 2)
    # The control never loads the proportions: the weak patches are unlabelled images.
    assert (ss.needs()["weak"].labels, ss.needs()["weak"].views) == ("none", 2)


def test_weak_ratio_sets_the_weak_batch_size_unless_given(tiny_store, tmp_path):
    sets = ["method=semi_supervised", "data.batch_sizes.strong=3", "methods.semi_supervised.weak_ratio=2.5"]
    cfg = _cfg(tiny_store, tmp_path, *sets)
    assert SegDataModule(cfg, build_method(cfg, K).needs()).batch_sizes == {"strong": 3, "weak": 8}
    cfg = _cfg(tiny_store, tmp_path, *sets, "data.batch_sizes.weak=5")
    assert SegDataModule(cfg, build_method(cfg, K).needs()).batch_sizes == {"strong": 3, "weak": 5}


def test_strong_views_depend_on_seed_and_step_only():
    class Task:
        def __init__(self, step: int, seed: int = 0) -> None:
            self.global_step, self.global_rank = step, 0
            self.cfg = TrainConfig()
            self.cfg.trainer.seed = seed

    method = _make("semi_supervised")
    image = torch.randn(3, 3, 16, 16)
    (a,) = method.make_views(Task(4), "weak", {"image": image}, 2)
    (b,) = method.make_views(Task(4), "weak", {"image": image.clone()}, 2)
    assert a.shape == image.shape and torch.equal(a, b) and not torch.equal(a, image)
    assert not torch.equal(a, method.make_views(Task(5), "weak", {"image": image}, 2)[0])
    assert not torch.equal(a, method.make_views(Task(4, seed=1), "weak", {"image": image}, 2)[0])
    assert len({view_seed(0, 4, r, 1) for r in range(4)}) == 4  # processes draw independently


# ---- the FixMatch loss counts only confident pixels ------------------------------------------------


class StubTask:
    """Stands in for the task: its 'network' returns fixed logits for the concatenated batch."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        self.cfg = TrainConfig()
        self.global_step = 0
        self.global_rank = 0
        self.logged: dict[str, float] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[0] == self.logits.shape[0]
        return self.logits

    def pixel_loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pixel_loss(logits, mask)

    def log(self, name: str, value, **kwargs) -> None:
        self.logged[name] = float(value)


@pytest.mark.parametrize("reduction", ["all", "kept"])
def test_semi_supervised_loss_only_counts_confident_pixels(reduction):
    h = w = 4
    g = torch.Generator().manual_seed(0)
    # Rows: 1 strong patch, 2 weak-view patches, 2 strong-view patches.
    logits = torch.randn(5, K, h, w, generator=g)
    confident = torch.zeros(2, h, w, dtype=torch.bool)
    confident[0, :2, :] = True
    confident[1, 3, 1] = True
    labels = torch.randint(0, K, (2, h, w), generator=g)
    # Weak view: a sharp peak (softmax > 0.99) on confident pixels, flat (1/K) elsewhere.
    weak_view = torch.where(confident[:, None], 8.0 * F.one_hot(labels, K).permute(0, 3, 1, 2), 0.0)
    logits[1:3] = weak_view
    logits.requires_grad_()
    method = _make("semi_supervised", threshold=0.95, reduction=reduction, consistency_weight=2.0)
    image = torch.zeros(2, 3, h, w)
    batches = {
        "strong": {"image": torch.zeros(1, 3, h, w), "mask": torch.zeros(1, h, w, dtype=torch.long)},
        "weak": {"image": image, "views": [image, image]},
    }
    task = StubTask(logits)
    terms = method.training_step(task, batches)
    assert list(terms) == ["pixel", "consistency"]
    ce = F.cross_entropy(logits[3:5].detach(), labels, reduction="none")  # (2, H, W)
    denom = confident.sum() if reduction == "kept" else confident.numel()
    expected = 2.0 * ce[confident].sum() / denom
    torch.testing.assert_close(terms["consistency"].detach(), expected)
    assert task.logged["train/confident_fraction"] == pytest.approx(float(confident.float().mean()))
    terms["consistency"].backward()
    grad = logits.grad.abs().sum(dim=1)  # (5, H, W)
    # Gradient only through the strong view's confident pixels; the weak view is a fixed target.
    assert torch.all(grad[3:5][~confident] == 0) and torch.all(grad[3:5][confident] > 0)
    assert torch.all(grad[:3] == 0)


# ---- mean teacher: state, EMA, optimiser, checkpoints --------------------------------------------


def test_teacher_is_frozen_in_eval_mode_and_not_part_of_the_network(tiny_store, tmp_path):
    module = SegModule(_cfg(tiny_store, tmp_path, "method=mean_teacher"), K, CLASSES)
    teacher = module.method.teacher
    module.train()
    assert module.model.training and all(not m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    optimiser = module.configure_optimizers()["optimizer"]
    in_optimiser = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert in_optimiser == {id(p) for p in module.model.parameters()}
    state = module.state_dict()
    assert any(k.startswith("method.teacher.") for k in state) and "method.teacher_initialised" in state
    # evaluate / predict / init.checkpoint read only the network.
    assert model_state_dict({"state_dict": state}).keys() == module.model.state_dict().keys()


class TeacherSpy(L.Callback):
    """Checks every EMA update exactly, the teacher's mode and what the optimiser holds."""

    def __init__(self) -> None:
        self.batches: list[dict[str, set[str]]] = []
        self.expected: dict[str, torch.Tensor] | None = None
        self.updates_checked = 0

    def on_train_start(self, trainer, module):
        in_optimiser = {id(p) for o in trainer.optimizers for g in o.param_groups for p in g["params"]}
        assert in_optimiser == {id(p) for p in module.model.parameters()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        assert module.model.training and all(not m.training for m in module.method.teacher.modules())
        self._check(module)
        self.batches.append({name: set(sub) for name, sub in batch.items()})

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        # Callbacks run before the module's hook: the student has stepped, the teacher not yet.
        d = module.method.ema_decay(trainer.global_step)
        t, s = module.method.teacher.state_dict(), module.model.state_dict()
        self.expected = {
            k: t[k] * d + s[k] * (1.0 - d) if t[k].is_floating_point() else s[k].clone() for k in t
        }

    def on_train_epoch_end(self, trainer, module):
        self._check(module)

    def _check(self, module):
        if self.expected is None:
            return
        now = module.method.teacher.state_dict()
        assert all(torch.equal(now[k], v) for k, v in self.expected.items())
        self.expected = None
        self.updates_checked += 1


@pytest.fixture(scope="module")
def mt_run(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("mt")
    spy = TeacherSpy()
    sets = [
        "method=mean_teacher",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.log_every_n_steps=1",
    ]
    cfg = _cfg(tiny_store, out, *sets, "methods.mean_teacher.ramp_steps=4")
    return cfg.run_dir, train(cfg, callbacks=[spy]), spy


def test_mean_teacher_end_to_end(mt_run):
    run, metrics, spy = mt_run
    assert metrics["method"] == "mean_teacher" and 0.0 <= metrics["miou"] <= 1.0
    assert spy.updates_checked == metrics["optimizer_steps"] == len(spy.batches) > 0
    for b in spy.batches:
        assert "mask" in b["strong"] and b["weak"] == {"image", "weak", "presence", "id", "index"}
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        terms = [float(r[f"train_{t}"]) for t in ("pixel", "proportion", "consistency")]
        assert all(t > 0 for t in terms) and float(r["train_loss"]) == pytest.approx(sum(terms))
    logged = list(csv.DictReader(next((run / "logs" / "csv").rglob("metrics.csv")).open()))
    weights = [float(r["train/consistency_weight"]) for r in logged if r.get("train/consistency_weight")]
    assert weights and min(weights) < max(weights) == pytest.approx(1.0)  # ramped over 4 steps
    # The teacher is in the checkpoint, apart from the network's weights, and is not the student.
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    teacher = {k[len("method.teacher.") :]: v for k, v in state.items() if k.startswith("method.teacher.")}
    student = model_state_dict({"state_dict": state})
    assert teacher.keys() == student.keys() and bool(state["method.teacher_initialised"])
    assert not all(torch.equal(teacher[k], student[k]) for k in student)


def test_mean_teacher_checkpoint_evaluates_and_predicts(mt_run, tiny_store, tmp_path):
    from segweak.data.store import Store

    run, metrics, _ = mt_run
    best = run / metrics["checkpoint"]
    result = evaluate(best, tiny_store)
    assert result["miou"] == pytest.approx(metrics["miou"], abs=1e-6)
    tile = Store(tiny_store).meta["tiles"][0]["id"]
    predicted = predict_tiles(best, tiny_store, tmp_path, tiles=[tile])
    assert Path(predicted["tiles"][tile]["png"]).is_file() and predicted["overall"]["miou"] is not None


def test_teacher_starts_as_the_init_checkpoint_student(mt_run, tiny_store, tmp_path):
    run, metrics, _ = mt_run
    best = run / metrics["checkpoint"]
    seen: dict[str, dict[str, torch.Tensor]] = {}

    class Capture(L.Callback):
        def on_train_start(self, trainer, module):
            seen["teacher"] = {k: v.clone() for k, v in module.method.teacher.state_dict().items()}

    sets = ["method=mean_teacher", f"init.checkpoint={best}", "trainer.max_epochs=1"]
    train(_cfg(tiny_store, tmp_path, *sets, "trainer.limit_train_batches=1"), callbacks=[Capture()])
    loaded = model_state_dict(load_checkpoint(best))
    assert seen["teacher"].keys() == loaded.keys()
    assert all(torch.equal(seen["teacher"][k], v) for k, v in loaded.items())


def test_mean_teacher_resume_is_exact_teacher_included(tiny_store, tmp_path):
    base = [
        "method=mean_teacher",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "methods.mean_teacher.ramp_steps=3",
    ]

    class Boom(Exception):
        pass

    class StopAtEpoch1(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise Boom

    seen: dict[str, dict[str, torch.Tensor]] = {}

    class Capture(L.Callback):
        def on_train_start(self, trainer, module):
            seen["teacher"] = {k: v.clone() for k, v in module.method.teacher.state_dict().items()}

    a = train(_cfg(tiny_store, tmp_path, *base, "run_name=a"))
    with pytest.raises(Boom):
        train(_cfg(tiny_store, tmp_path, *base, "run_name=b"), callbacks=[StopAtEpoch1()])
    assert not is_complete(tmp_path / "b")
    epoch1 = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["state_dict"]
    b = train(_cfg(tiny_store, tmp_path, *base, "run_name=b", "resume=true"), callbacks=[Capture()])
    # The resumed run's teacher is the checkpoint's, not a fresh copy of the student.
    assert all(torch.equal(v, epoch1[f"method.teacher.{k}"]) for k, v in seen["teacher"].items())
    assert not all(torch.equal(v, epoch1[f"model.{k}"]) for k, v in seen["teacher"].items())
    sa = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["state_dict"]
    sb = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["state_dict"]
    assert sa.keys() == sb.keys() and any(k.startswith("method.teacher.") for k in sa)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different
    assert a["optimizer_steps"] == b["optimizer_steps"] and a["miou"] == b["miou"]
    ha = list(csv.DictReader((tmp_path / "a" / "history.csv").open()))
    hb = list(csv.DictReader((tmp_path / "b" / "history.csv").open()))
    assert ha == hb and len(ha) == 2


# ---- semi-supervised control end to end ----------------------------------------------------------


def test_semi_supervised_end_to_end_never_loads_proportions(tiny_store, tmp_path):
    seen: list[dict[str, set[str]]] = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append({name: set(sub) for name, sub in batch.items()})

    sets = [
        "method=semi_supervised",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "methods.semi_supervised.threshold=0.3",  # a barely trained tiny net is rarely 95 % sure
        "methods.semi_supervised.weak_ratio=2",
    ]
    metrics = train(_cfg(tiny_store, tmp_path, *sets), callbacks=[Spy()])
    assert metrics["method"] == "semi_supervised" and seen and len(seen) == metrics["optimizer_steps"]
    for b in seen:
        assert "mask" in b["strong"] and b["weak"] == {"image", "id", "index"}  # no weak, presence, valid
    run = tmp_path / "semi_supervised-seed0"
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "train_proportion" not in rows[0]
    for r in rows:
        pixel, consistency = float(r["train_pixel"]), float(r["train_consistency"])
        assert pixel > 0 and consistency > 0 and float(r["train_loss"]) == pytest.approx(pixel + consistency)
    logged = list(csv.DictReader(next((run / "logs" / "csv").rglob("metrics.csv")).open()))
    fractions = [
        float(r["train/confident_fraction_step"]) for r in logged if r.get("train/confident_fraction_step")
    ]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions) and max(fractions) > 0
