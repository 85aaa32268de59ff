"""``pseudo_label``: the pseudo-label artefact (stage, reader, CLI) and the student that reads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from segweak.cli import main
from segweak.config import TrainConfig, load_config
from segweak.data.dataset import SegweakDataset
from segweak.data.store import Store
from segweak.errors import SegweakError
from segweak.methods import Need
from segweak.train.checkpoint import build_model_from_checkpoint, load_checkpoint, model_state_dict
from segweak.train.engine import train
from segweak.train.pseudo_labels import PseudoLabels, is_complete, make_pseudo_labels, store_fingerprint
from segweak.weak.labels import proportions
from segweak.weak.pseudo import IGNORE, assign_sinkhorn, assign_topk, proportion_quotas

TINY = [
    "model.encoder=tu-test_efficientnet",
    "model.weights=none",
    "trainer.progress_bar=false",
    "optim.lr=0.01",
]


def _cfg(store: Path, out: Path, *sets: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.store={store}", f"out_dir={out}", *TINY, *sets])


def _weak(store: Path, split: str = "default") -> list[int]:
    return sorted(json.loads((store / "splits" / f"{split}.json").read_text())["subsets"]["weak"])


@pytest.fixture(scope="module")
def teacher(tiny_store, tmp_path_factory) -> Path:
    """best.ckpt of a tiny supervised run on the strong subset (one epoch)."""
    out = tmp_path_factory.mktemp("teacher")
    metrics = train(_cfg(tiny_store, out, "trainer.max_epochs=1", "data.batch_size=4"))
    return out / "supervised-seed0" / metrics["checkpoint"]


def _teacher_probs(teacher: Path, store: Path, indices: list[int]) -> torch.Tensor:
    model, _, _ = build_model_from_checkpoint(load_checkpoint(teacher), teacher)
    ds = SegweakDataset(store, "default", "weak", with_mask=False, with_valid=False)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert ds.indices.tolist() == indices
    with torch.no_grad():
        return model(images).softmax(dim=1)


@pytest.mark.parametrize(("assignment", "assign"), [("topk", assign_topk), ("sinkhorn", assign_sinkhorn)])
def test_artefact_round_trip_counts_are_the_quotas(
    teacher, tiny_store, tmp_path, monkeypatch, assignment, assign
):
    # The weak patches' pixel masks must never be read: only images and their proportions.
    def no_masks(self):
        raise AssertionError("make_pseudo_labels read the store's masks")

    monkeypatch.setattr(Store, "masks", property(no_masks))
    out = make_pseudo_labels(
        teacher, tiny_store, "default", tmp_path / "pl", assignment=assignment, batch_size=5
    )
    monkeypatch.undo()
    pl = PseudoLabels(out)
    weak = _weak(tiny_store)
    assert pl.indices.tolist() == weak and pl.labels.shape == (len(weak), 32, 32)
    assert pl.labels.dtype == np.uint8
    meta = pl.meta
    assert meta["format_version"] == 1 and meta["assignment"] == assignment and meta["keep"] == 1.0
    assert meta["teacher"]["checkpoint"] == str(teacher) and len(meta["teacher"]["sha256"]) == 64
    assert meta["store"]["fingerprint"] == store_fingerprint(tiny_store)
    assert meta["split"] == {
        "name": "default",
        "subset": "weak",
        "indices_sha256": meta["split"]["indices_sha256"],
    }
    st = Store(tiny_store)
    p = torch.from_numpy(proportions(st.counts[weak])).float()
    labels = torch.from_numpy(np.array(pl.labels)).long()
    counts = torch.stack([(labels.flatten(1) == c).sum(1) for c in range(5)], 1)
    # Class counts are the quotas: within one pixel of p_c · N, and 0 for every absent class.
    assert torch.equal(counts, proportion_quotas(p, torch.full((len(weak),), 32 * 32)))
    assert ((counts - p.double() * 32 * 32).abs() < 1).all() and (counts[p == 0] == 0).all()
    assert not (labels == IGNORE).any()
    # The labels are exactly the assignment of the teacher's probabilities (batching changes nothing).
    q = _teacher_probs(teacher, tiny_store, weak)
    assert torch.equal(labels, assign(q, p))
    assert meta["stats"]["labelled"] == labels.numel()
    assert meta["stats"]["per_class"] == {c: int(counts[:, i].sum()) for i, c in enumerate(st.classes)}
    assert meta["stats"]["teacher_agreement"] == pytest.approx(float((labels == q.argmax(1)).float().mean()))
    assert pl[weak[3]].tolist() == labels[3].tolist()
    with pytest.raises(KeyError, match="no pseudo-label"):
        pl[10_000]


def test_keep_labels_the_most_confident_share(teacher, tiny_store, tmp_path):
    out = make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "pl", keep=0.25)
    labels = np.asarray(PseudoLabels(out).labels)
    labelled = (labels != IGNORE).reshape(len(labels), -1).sum(1)
    assert (labelled == 256).all()  # round(0.25 · 1024) per patch
    p = proportions(Store(tiny_store).counts[_weak(tiny_store)])
    for c in range(5):
        assert not (labels[p[:, c] == 0] == c).any()  # absent classes never assigned


def test_rerun_reuses_and_other_requests_are_refused(teacher, tiny_store, tmp_path):
    out = make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "pl")
    stamp = (out / "pseudo.json").stat().st_mtime_ns
    assert make_pseudo_labels(teacher, tiny_store, "default", out) == out
    assert (out / "pseudo.json").stat().st_mtime_ns == stamp
    with pytest.raises(SegweakError, match=r"another request \(differs at: assignment, keep, assignment_opt"):
        make_pseudo_labels(teacher, tiny_store, "default", out, assignment="sinkhorn", keep=0.5)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SegweakError, match="exists and is not a pseudo-label artefact"):
        make_pseudo_labels(teacher, tiny_store, "default", other)
    assert (other / "notes.txt").read_text() == "mine" and not is_complete(other)
    for kwargs, match in [
        ({"keep": 0.0}, "keep must be in"),
        ({"assignment": "argmax"}, "assignment: 'argmax'"),
        ({"batch_size": 0}, "batch size must be >= 1"),
        ({"device": "gpu0"}, "device 'gpu0' is not a torch device"),
    ]:
        with pytest.raises(SegweakError, match=match):
            make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
    # An output inside the store (or equal to it) would swallow an input.
    with pytest.raises(SegweakError, match="contains the input|is the input"):
        make_pseudo_labels(teacher, tiny_store, "default", tiny_store)


@pytest.fixture
def other_store(tiny_store, tmp_path) -> Path:
    """A copy of the tiny store with the same arrays but a different store.json, and a split 'other'."""
    from segweak.data.splits import make_split

    copy = tmp_path / "other-store"
    shutil.copytree(tiny_store, copy)
    meta = json.loads((copy / "store.json").read_text())
    meta["created"] = "1999-01-01T00:00:00+00:00"
    (copy / "store.json").write_text(json.dumps(meta))
    make_split(copy, name="other", fractions=(0.2, 0.6, 0.2), by="patch", seed=1)
    return copy


def test_artefact_for_another_store_or_split_is_refused(teacher, tiny_store, other_store, tmp_path):
    pl = PseudoLabels(make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "pl"))
    pl.check(tiny_store, "default", "weak")
    cases = [
        ((other_store, "default", "weak"), "were made for another store"),
        ((tiny_store, "default", "strong"), "are for subset 'weak', not 'strong'"),
    ]
    for args, match in cases:
        with pytest.raises(SegweakError, match=match) as err:
            pl.check(*args)
        assert "\n" not in str(err.value)
    made = PseudoLabels(make_pseudo_labels(teacher, other_store, "default", tmp_path / "pl2"))
    with pytest.raises(SegweakError, match="were made for split 'default', not 'other'"):
        made.check(other_store, "other", "weak")
    # Same name, remade split: other patches.
    (other_store / "splits" / "default.json").write_text((other_store / "splits" / "other.json").read_text())
    with pytest.raises(SegweakError, match="cover other patches than the 'weak' subset"):
        made.check(other_store, "default", "weak")
    # The student refuses it before training starts, in one line.
    cfg = _cfg(
        other_store, tmp_path / "runs", "method=pseudo_label", f"methods.pseudo_label.labels={pl.path}"
    )
    with pytest.raises(SegweakError, match="were made for another store") as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_broken_artefacts_are_refused(teacher, tiny_store, tmp_path):
    out = make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "pl")
    meta = json.loads((out / "pseudo.json").read_text())
    (out / "pseudo.json").write_text(json.dumps({**meta, "format_version": 9}))
    with pytest.raises(SegweakError, match="format_version 9 is not supported"):
        PseudoLabels(out)
    (out / "pseudo.json").write_text(json.dumps({**meta, "n_patches": 3}))
    with pytest.raises(SegweakError, match="do not match pseudo.json"):
        PseudoLabels(out)
    with pytest.raises(SegweakError, match="is not a pseudo-label artefact"):
        PseudoLabels(tmp_path)


def test_masks_from_replaces_the_store_masks_through_the_transform(teacher, tiny_store, tmp_path):
    pl = PseudoLabels(make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "pl"))

    def rot(item):  # stands in for the augmentation: image and mask must move together
        return {"image": np.rot90(item["image"]).copy(), "mask": np.rot90(item["mask"]).copy()}

    ds = SegweakDataset(
        tiny_store, "default", "weak", transform=rot, with_mask=True, with_weak=False, masks=pl
    )
    for i in (0, 5):
        item = ds[i]
        assert item["mask"].numpy().tolist() == np.rot90(pl[item["index"]]).tolist()
        assert item["valid"].min() == 1.0 and "weak" not in item
    assert "masks=PseudoLabels" in repr(ds)


def test_need_masks_from_is_the_only_way_to_pixel_labels_on_weak():
    assert Need(subset="weak", labels="mask", masks_from="x").masks_from == "x"
    with pytest.raises(SegweakError, match="weak subset has no pixel labels.*masks_from"):
        Need(subset="weak", labels="mask")
    with pytest.raises(SegweakError, match="masks_from needs labels 'mask'"):
        Need(subset="weak", labels="weak", masks_from="x")


class Spy(L.Callback):
    def __init__(self) -> None:
        self.batches: list[dict] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append({k: {kk: v[kk] for kk in ("index", "mask") if kk in v} for k, v in batch.items()})


def test_student_reads_strong_masks_and_pseudo_labels(teacher, tiny_store, tmp_path):
    pl = PseudoLabels(make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "pl", keep=0.5))
    spy = Spy()
    sets = [
        "method=pseudo_label",
        f"methods.pseudo_label.labels={pl.path}",
        "methods.pseudo_label.weight=0.5",
        "data.augment=false",
        "data.batch_sizes.strong=2",
        "data.batch_sizes.weak=4",
        "trainer.max_epochs=1",
    ]
    metrics = train(_cfg(tiny_store, tmp_path / "runs", *sets), callbacks=[spy])
    assert metrics["method"] == "pseudo_label" and metrics["optimizer_steps"] == len(spy.batches) > 0
    st = Store(tiny_store)
    strong = json.loads((tiny_store / "splits" / "default.json").read_text())["subsets"]["strong"]
    for b in spy.batches:
        assert set(b["strong"]["index"].tolist()) <= set(strong)
        for index, mask in zip(b["weak"]["index"].tolist(), b["weak"]["mask"], strict=True):
            assert mask.numpy().astype(np.uint8).tolist() == pl[index].tolist()  # the artefact's, ...
            assert (mask == IGNORE).any()  # ... with keep = 0.5, not the store's
        for index, mask in zip(b["strong"]["index"].tolist(), b["strong"]["mask"], strict=True):
            assert mask.numpy().tolist() == st.masks[index].tolist()
    run = tmp_path / "runs" / "pseudo_label-seed0"
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert "train_pixel" in header and "train_pseudo" in header


def test_student_without_labels_is_one_error(tiny_store, tmp_path):
    with pytest.raises(SegweakError, match="methods.pseudo_label.labels is not set"):
        train(_cfg(tiny_store, tmp_path, "method=pseudo_label"))
    with pytest.raises(SegweakError, match="methods.pseudo_label.keep must be in"):
        train(_cfg(tiny_store, tmp_path, "method=pseudo_label", "methods.pseudo_label.keep=1.5"))


class FirstWeights(L.Callback):
    """Copies the network's weights when training starts, before the first optimiser step."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, module):
        self.state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def test_student_starts_from_init_checkpoint_stage_by_stage(teacher, tiny_store, tmp_path):
    """`segweak train` of a student with init.checkpoint: the teacher's weights, a fresh optimiser."""
    pl = make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "pl")
    sets = ["method=pseudo_label", f"methods.pseudo_label.labels={pl}", "trainer.max_steps=1"]
    teacher_state = model_state_dict(load_checkpoint(teacher))
    starts = {}
    for init, extra in [
        ("teacher", ["methods.pseudo_label.student_init=teacher", f"init.checkpoint={teacher}"]),
        ("default+checkpoint", [f"init.checkpoint={teacher}"]),  # init.checkpoint decides in train
        ("imagenet", []),
    ]:
        first = FirstWeights()
        metrics = train(_cfg(tiny_store, tmp_path / init, *sets, *extra), callbacks=[first])
        # The teacher trained a whole epoch: one step here means the step counter started at 0.
        assert metrics["optimizer_steps"] == 1
        starts[init] = first.state
    for init in ("teacher", "default+checkpoint"):
        assert starts[init].keys() == teacher_state.keys()
        assert all(torch.equal(starts[init][k], teacher_state[k]) for k in teacher_state)
    assert not all(torch.equal(starts["imagenet"][k], teacher_state[k]) for k in teacher_state)
    recorded = yaml.safe_load((tmp_path / "teacher" / "pseudo_label-seed0" / "config.yaml").read_text())
    assert recorded["methods"]["pseudo_label"]["student_init"] == "teacher"
    assert recorded["init"]["checkpoint"] == str(teacher)


def test_student_init_is_checked_in_one_line(tiny_store, tmp_path):
    with pytest.raises(SegweakError) as err:
        train(_cfg(tiny_store, tmp_path, "methods.pseudo_label.student_init=scratch"))
    assert str(err.value) == (
        "methods.pseudo_label.student_init: 'scratch' is not valid; choose one of imagenet, teacher"
    )
    # From the teacher needs the teacher: training from model.weights instead would be a silent swap.
    labels = "methods.pseudo_label.labels=somewhere"
    with pytest.raises(
        SegweakError, match=r"^methods\.pseudo_label: .*teacher's weights.*init\.checkpoint is not set"
    ) as err:
        train(
            _cfg(
                tiny_store,
                tmp_path,
                "method=pseudo_label",
                labels,
                "methods.pseudo_label.student_init=teacher",
            )
        )
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_cli_pseudo_label(teacher, tiny_store, tmp_path, capsys):
    out = tmp_path / "pl"
    args = ["pseudo-label", str(teacher), "--store", str(tiny_store), "--split", "default", "--out", str(out)]
    assert main([*args, "--assignment", "sinkhorn", "--keep", "0.5", "--batch-size", "7"]) == 0
    text = capsys.readouterr().out
    assert f"{out}: " in text and "methods.pseudo_label.labels=" in text
    meta = PseudoLabels(out).meta
    assert (
        meta["assignment"] == "sinkhorn"
        and meta["keep"] == 0.5
        and meta["assignment_options"]["n_iter"] == 50
    )
    # Errors: one line, exit code 2, nothing written.
    for extra, match in [
        (["--keep", "0"], "keep must be in"),
        (["--assignment", "best"], "assignment: 'best' is not valid"),
    ]:
        assert main([*args[:-1], str(tmp_path / "bad"), *extra]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1
    assert (
        main(
            [
                "pseudo-label",
                str(tmp_path / "none.ckpt"),
                "--store",
                str(tiny_store),
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 2
    )
    assert "teacher checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "b").exists()


def test_noisy_quotas_are_recorded_and_a_run_with_other_noise_refuses_them(teacher, tiny_store, tmp_path):
    from segweak.config import NoiseConfig
    from segweak.weak.noise import corrupt

    noise = NoiseConfig("dirichlet", concentration=3.0, seed=2)
    out = make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "noisy", noise=noise)
    pl = PseudoLabels(out)
    assert pl.meta["weak_noise"] == {"model": "dirichlet", "concentration": 3.0, "seed": 2}
    # The quotas are those of the noisy proportions: a class whose noisy share is 0 gets no pixel.
    ds = SegweakDataset(tiny_store, "default", "weak", with_mask=False, with_valid=False)
    noisy = corrupt(ds.weak.astype(np.float64), ds.indices, "dirichlet", concentration=3.0, seed=2)
    quotas = np.round(noisy * pl.labels.shape[1] * pl.labels.shape[2])
    counts = np.stack([np.bincount(pl.labels[i].ravel(), minlength=6)[:6] for i in range(len(pl))])
    assert np.array_equal(counts[:, : quotas.shape[1]] > 0, quotas > 0)
    pl.check(tiny_store, "default", "weak", noise)
    with pytest.raises(SegweakError, match=r"made from weak labels with noise .*the run asks for weak.noise"):
        pl.check(tiny_store, "default", "weak", None)
    clean = make_pseudo_labels(teacher, tiny_store, "default", tmp_path / "clean")
    assert "weak_noise" not in PseudoLabels(clean).meta
    with pytest.raises(SegweakError, match="differs at: weak_noise"):
        make_pseudo_labels(teacher, tiny_store, "default", clean, noise=noise)
