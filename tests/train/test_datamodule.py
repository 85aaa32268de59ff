"""Samplers and loaders of SegDataModule, on one process and as the ranks of a DDP run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from segweak.config import TrainConfig, load_config
from segweak.errors import SegweakError
from segweak.methods import build_method, check_config
from segweak.train.datamodule import EpochSampler, SegDataModule, ShardSampler


def test_epoch_sampler_on_one_process_is_the_seeded_permutation():
    # Runs resumed from checkpoints of earlier versions rely on this exact order.
    for epoch in (0, 3):
        sampler = EpochSampler(11, seed=5)
        sampler.set_epoch(epoch)
        gen = torch.Generator()
        gen.manual_seed(5 * 1_000_003 + epoch)
        assert list(sampler) == torch.randperm(11, generator=gen).tolist()
        assert len(sampler) == 11


@pytest.mark.parametrize(("n", "world"), [(7, 2), (6, 2), (7, 3), (2, 4)])
def test_epoch_sampler_shards_one_permutation_evenly(n: int, world: int):
    full = EpochSampler(n, seed=1)
    full.set_epoch(2)
    shards = []
    for rank in range(world):
        sampler = EpochSampler(n, seed=1, rank=rank, world_size=world)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == -(-n // world)
    # Interleaving the shards gives back the epoch's permutation, padded with its own first indices.
    interleaved = [shard[i] for i in range(len(shards[0])) for shard in shards]
    order = list(full)
    assert interleaved[:n] == order
    assert interleaved[n:] == (order * world)[: len(interleaved) - n]


def test_shard_sampler_counts_every_patch_once():
    shards = [list(ShardSampler(13, rank, 2)) for rank in range(2)]
    assert [len(s) for s in shards] == [7, 6]
    assert sorted(shards[0] + shards[1]) == list(range(13))
    assert list(ShardSampler(5)) == list(range(5))
    with pytest.raises(ValueError, match="rank 2"):
        ShardSampler(5, rank=2, world_size=2)


def _module(store: Path, *sets: str, method: str = "supervised") -> SegDataModule:
    cfg = load_config(
        TrainConfig,
        None,
        [f"data.store={store}", "data.split=odd", f"method={method}", "data.augment=false", *sets],
    )
    cfg = check_config(cfg)
    dm = SegDataModule(cfg, build_method(cfg, 6).needs())
    dm.setup("fit")
    return dm


def _as_rank(dm: SegDataModule, rank: int, world: int) -> SegDataModule:
    # Lightning attaches the trainer; rank and world size are all the loaders read from it.
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world)  # type: ignore[assignment]
    return dm


def test_drop_last_is_decided_on_each_ranks_share(odd_store: Path):
    # 6 strong patches, batch 4: one process drops the incomplete second batch (2 patches)...
    single = _module(odd_store, "data.batch_size=4").train_dataloader()
    assert [len(b["index"]) for b in single] == [4]
    # ... but each of 2 ranks holds 3 patches, fewer than a batch: it must keep them.
    sizes = [
        [len(b["index"]) for b in _as_rank(_module(odd_store, "data.batch_size=4"), r, 2).train_dataloader()]
        for r in range(2)
    ]
    assert sizes == [[3], [3]]


def test_every_sub_batch_of_several_needs_is_sharded_per_rank(odd_store: Path):
    # joint reads 6 strong and 29 weak patches per epoch; each rank must get its own share of both.
    single = _module(odd_store, "data.batch_size=2", method="joint").train_dataloader()
    assert set(single.iterables) == {"strong", "weak"}
    for name, n in (("strong", 6), ("weak", 29)):
        shards = []
        for rank in range(2):
            loaders = _as_rank(
                _module(odd_store, "data.batch_size=2", method="joint"), rank, 2
            ).train_dataloader()
            sampler = loaders.iterables[name].sampler
            assert isinstance(sampler, EpochSampler) and (sampler.rank, sampler.world_size) == (rank, 2)
            shards.append(list(sampler))
        assert [len(s) for s in shards] == [-(-n // 2)] * 2
        # Together the ranks cover the sub-batch's whole epoch order (padding repeats its first indices).
        assert set(shards[0]) | set(shards[1]) == set(range(n))
        assert len(set(shards[0]) & set(shards[1])) == 2 * (-(-n // 2)) - n


def test_validation_shards_are_unpadded_and_disjoint(odd_store: Path):
    seen = []
    for rank in range(2):
        dm = _as_rank(_module(odd_store, "data.eval_batch_size=4"), rank, 2)
        seen.append([int(i) for b in dm.val_dataloader() for i in b["index"]])
    assert [len(s) for s in seen] == [7, 6]
    single = [int(i) for b in _module(odd_store).val_dataloader() for i in b["index"]]
    assert sorted(seen[0] + seen[1]) == sorted(single) and len(single) == 13


def test_more_processes_than_validation_patches_is_refused(odd_store: Path):
    dm = _module(odd_store)
    dm.check_world_size(13)
    with pytest.raises(SegweakError, match="'val' of split 'odd' has 13 patch.*14 processes.*devices"):
        dm.check_world_size(14)
