"""Bags of patches in training: the bag losses, the bag batch sampler and a tiny run on imported bags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from segweak.config import TrainConfig, WeakConfig, load_config
from segweak.data.store import Store, file_sha256
from segweak.data.weak_tables import import_table
from segweak.errors import SegweakError
from segweak.methods import build_method
from segweak.train.datamodule import BagBatchSampler
from segweak.train.engine import train
from segweak.weak.losses import proportion_loss_rows

K = 4
METHODS = ["proportion", "presence_lse", "proportion_presence", "proportion_entropy", "interval"]


def _make(name: str, area: str = "valid", **options):
    return build_method(TrainConfig(method=name, weak=WeakConfig(area=area), methods={name: options}), K)


def _batch(b: int = 3, h: int = 8, w: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, K, h, w, generator=g, requires_grad=True)
    weak = torch.softmax(torch.randn(b, K, generator=g) * 2, 1)
    valid = torch.ones(b, h, w)
    valid[:, :3] = 0.0
    return logits, {"weak": weak, "presence": (weak > 0.2).float(), "valid": valid}


@pytest.mark.parametrize("area", ["valid", "patch"])
@pytest.mark.parametrize("name", [*METHODS, "joint"])
def test_one_patch_bags_give_exactly_the_patch_loss(name, area):
    method = _make(name, area)
    logits, batch = _batch()
    patch_terms = method.weak_terms(logits, batch)
    bag_terms = method.weak_terms(logits, {**batch, "bag": torch.tensor([3, 7, 9])})
    assert patch_terms.keys() == bag_terms.keys()
    for key, value in patch_terms.items():
        assert torch.equal(value, bag_terms[key]), key


def test_bag_loss_is_the_loss_of_the_pooled_prediction():
    method = _make("proportion", "valid")
    logits, batch = _batch(b=3)
    p = batch["weak"].clone()
    p[1] = p[0]  # patches 0 and 1 form one bag: they carry its proportions
    bags = torch.tensor([5, 5, 2])
    loss = method.weak_terms(logits, {**batch, "weak": p, "bag": bags})["proportion"]
    q = torch.softmax(logits.float(), 1)
    v = batch["valid"][:, None]
    pooled = (q[:2] * v[:2]).sum(dim=(0, 2, 3)) / v[:2].sum()  # area-weighted over both patches
    single = (q[2] * v[2]).sum(dim=(1, 2)) / v[2].sum()
    rows = proportion_loss_rows("ce")(torch.stack([single, pooled]), torch.stack([p[2], p[0]]), 1e-6)
    assert loss.item() == pytest.approx(rows.mean().item(), rel=1e-6)
    # It is not the mean of the two patches' own losses.
    per_patch = method.weak_terms(logits, {**batch, "weak": p})["proportion"]
    assert abs(loss.item() - per_patch.item()) > 1e-4
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_bag_sampler_keeps_bags_whole_caps_big_ones_and_keeps_its_length():
    bags = np.array([0] * 5 + [1] * 2 + [2] * 2 + [3] + [4] * 3)
    sampler = BagBatchSampler(bags, batch_size=4, seed=1)
    lengths, firsts = set(), []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        lengths.add(len(batches))
        firsts.append(batches)
        seen: list[int] = []
        for batch in batches:
            assert len(batch) <= 4
            assert len(set(bags[batch])) == len(np.unique(bags[batch]))
            for b in set(bags[batch].tolist()):
                # Every bag is whole in its batch, except bag 0 (5 patches) which is capped to 4.
                assert (bags[batch] == b).sum() == min(4, (bags == b).sum())
            seen += batch
        assert sorted(set(bags[seen].tolist())) == [0, 1, 2, 3, 4] and len(seen) == len(set(seen)) == 12
    assert lengths == {len(sampler)}
    sampler.set_epoch(0)
    assert list(sampler) == firsts[0]  # the same epoch gives the same batches (resume)
    assert firsts[0] != firsts[1]
    # Two processes: disjoint-by-position shares of equal length.
    shares = [BagBatchSampler(bags, 4, 1, rank=r, world_size=2) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == len(list(shares[0])) == len(list(shares[1]))


def _bag_table(store: Path, split: str, path: Path) -> tuple[Path, int]:
    """Regions of the weak subset: 2x2-patch windows where all four are weak, else one-patch windows."""
    st = Store(store)
    weak = set(json.loads((store / "splits" / f"{split}.json").read_text())["subsets"]["weak"])
    p = st.patch
    lines = ["image,x0,y0,x1,y1," + ",".join(st.classes)]
    used: set[int] = set()
    big = 0

    def row(tile: str, x0: int, y0: int, size: int, idx: list[int]) -> str:
        c = st.counts[idx].sum(axis=0)
        return f"{tile},{x0},{y0},{x0 + size},{y0 + size}," + ",".join(f"{v / c.sum():.6f}" for v in c)

    where = {
        (t, int(r), int(c)): i for i, (t, r, c) in enumerate(zip(st.tiles, st.rows, st.cols, strict=True))
    }
    for tile, r, c in sorted(where):
        block = [where.get((tile, r + dr, c + dc)) for dr in (0, p) for dc in (0, p)]
        if r % (2 * p) == 0 and c % (2 * p) == 0 and all(j in weak for j in block):
            lines.append(row(tile, c, r, 2 * p, block))
            used |= set(block)
            big += 1
    for (tile, r, c), i in sorted(where.items()):
        if i in weak and i not in used:
            lines.append(row(tile, c, r, p, [i]))
    path.write_text("\n".join(lines) + "\n")
    return path, big


class Spy(L.Callback):
    def __init__(self) -> None:
        self.batches: list[dict] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append({k: batch[k].tolist() for k in ("index", "bag")} | {"weak": batch["weak"]})


def test_proportion_trains_on_imported_bags(tiny_store: Path, tmp_path: Path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    table, big = _bag_table(store, "default", tmp_path / "regions.csv")
    assert big >= 1  # at least one region covers several patches
    data = import_table(table, store, "regions")
    sets = [
        f"data.store={store}",
        f"out_dir={tmp_path / 'runs'}",
        "model.encoder=tu-test_efficientnet",
        "model.weights=none",
        "trainer.progress_bar=false",
        "method=proportion",
        "trainer.max_epochs=1",
        "data.batch_size=6",
        "weak.labels=regions",
    ]
    spy = Spy()
    metrics = train(load_config(TrainConfig, None, sets), callbacks=[spy])
    assert metrics["weak_labels"]["kind"] == "imported" and metrics["weak_labels"]["used"] is True
    assert metrics["weak_labels"]["sha256"] == file_sha256(table)
    assert (
        metrics["weak_labels"]["bags_used"] == len(data["bags"])
        and metrics["weak_labels"]["bags_left_out"] == 0
    )
    members = {b: sorted(rec["patches"]) for b, rec in enumerate(data["bags"])}
    seen = []
    for batch in spy.batches:
        for b in set(batch["bag"]):
            # Every bag in a batch comes whole, and all its patches carry the bag's proportions.
            assert (
                sorted(i for i, x in zip(batch["index"], batch["bag"], strict=True) if x == b) == members[b]
            )
            rows = batch["weak"][torch.tensor(batch["bag"]) == b]
            assert torch.allclose(rows, torch.tensor(data["bags"][b]["proportions"], dtype=torch.float32))
        seen += batch["index"]
    assert sorted(seen) == sorted(i for m in members.values() for i in m)
    assert (
        json.loads((tmp_path / "runs" / "proportion-seed0" / "metrics.json").read_text())["weak_labels"][
            "name"
        ]
        == "regions"
    )
    # A set the store does not have fails before anything runs.
    with pytest.raises(SegweakError, match="weak.labels: no weak-label set 'nope'"):
        train(load_config(TrainConfig, None, [*sets, "weak.labels=nope", "run_name=x"]))
    assert not (tmp_path / "runs" / "x").exists()


def test_joint_trains_on_imported_bags(tiny_store: Path, tmp_path: Path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    table, _ = _bag_table(store, "default", tmp_path / "regions.csv")
    import_table(table, store, "regions")
    sets = [
        f"data.store={store}",
        f"out_dir={tmp_path / 'runs'}",
        "model.encoder=tu-test_efficientnet",
        "model.weights=none",
        "trainer.progress_bar=false",
        "method=joint",
        "trainer.max_steps=3",
        "data.batch_sizes.strong=2",
        "data.batch_sizes.weak=6",
        "weak.labels=regions",
    ]
    spy = []

    class Keys(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            spy.append((set(batch["strong"]), set(batch["weak"])))

    metrics = train(load_config(TrainConfig, None, sets), callbacks=[Keys()])
    assert metrics["optimizer_steps"] == 3 and metrics["weak_labels"]["used"] is True
    for strong, weak in spy:
        assert "bag" in weak and "mask" not in weak and "bag" not in strong


def test_a_method_without_bag_support_refuses_imported_labels():
    from segweak.methods import check_config

    cfg = TrainConfig(method="pseudo_label", weak=WeakConfig(labels="fields"), methods={})
    cfg.data.store = "unused"
    with pytest.raises(
        SegweakError, match="weak.labels: method 'pseudo_label' cannot use imported weak labels"
    ):
        check_config(cfg)


def test_mean_teacher_proportion_term_is_bag_aware():
    method = build_method(TrainConfig(method="mean_teacher", weak=WeakConfig(area="patch")), K)
    logits, batch = _batch(b=3)
    p = batch["weak"].clone()
    p[1] = p[0]
    with_bags = method.weak_terms(logits, {**batch, "weak": p, "bag": torch.tensor([0, 0, 1])})
    proportion = _make("proportion", "patch")
    assert torch.equal(
        with_bags["proportion"],
        proportion.weak_terms(logits, {**batch, "weak": p, "bag": torch.tensor([0, 0, 1])})["proportion"],
    )


def test_lightning_sets_the_bag_samplers_epoch(tiny_store: Path, tmp_path: Path):
    """Each epoch's batches are the sampler's batches of that epoch (what resuming relies on)."""
    from segweak.data.dataset import SegweakDataset
    from segweak.data.weak_tables import load_set

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    table, _ = _bag_table(store, "default", tmp_path / "regions.csv")
    import_table(table, store, "regions")
    sets = [
        f"data.store={store}",
        f"out_dir={tmp_path / 'runs'}",
        "model.encoder=tu-test_efficientnet",
        "model.weights=none",
        "trainer.progress_bar=false",
        "method=proportion",
        "trainer.max_epochs=2",
        "data.batch_size=6",
        "data.augment=false",
        "weak.labels=regions",
    ]
    spy = Spy()
    train(load_config(TrainConfig, None, sets), callbacks=[spy])
    ds = SegweakDataset(store, "default", "weak", weak_set=load_set(Store(store), "regions"))
    sampler = BagBatchSampler(ds.bags, 6, seed=0)
    expected = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        expected += [ds.indices[b].tolist() for b in sampler]
    assert [b["index"] for b in spy.batches] == expected
