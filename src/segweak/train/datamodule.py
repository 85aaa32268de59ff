"""SegDataModule: the training subset of a stage and the validation subset, as DataLoaders.

Stage → training subset: ``strong`` → ``strong``, ``weak`` → ``weak`` (weak labels only, no masks),
``finetune`` → ``strong``, ``full`` → ``full`` (strong ∪ weak with pixel masks). Validation always uses
the ``val`` subset with pixel masks. Augmentations are applied to the training subset only.

Reproducibility: :class:`EpochReseed` reseeds every RNG at the start of each epoch from
``(seed, epoch)`` and gives the training set a freshly seeded augmentation pipeline, so a run resumed
at an epoch boundary sees the same batches and augmentations as an uninterrupted run (for
``num_workers: 0``; with worker processes each worker's seed is derived from the same epoch seed).

Several processes (``trainer.strategy: ddp``): the module shards the data itself (the Trainer runs
with ``use_distributed_sampler=False``). Training: every rank draws the same epoch permutation and
takes its own share of it (:class:`EpochSampler`), padded so that all ranks run the same number of
steps; whether the last incomplete batch is dropped is decided on that per-rank share. Validation:
rank ``r`` gets patches ``r, r + W, r + 2W, …`` with no padding (:class:`ShardSampler`), so every
validation patch is counted exactly once in the split-wide metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import seed_everything
from torch.utils.data import DataLoader, Sampler

from segweak.config import TrainConfig
from segweak.errors import SegweakError

TRAIN_SUBSET = {"strong": "strong", "weak": "weak", "finetune": "strong", "full": "full"}
"""Training subset of the split for each stage."""
VAL_SUBSET = "val"


def check_store_and_split(store: str | Path, split: str) -> None:
    """Raise a clear error when the store or the split manifest is missing.

    Args:
        store: Store directory (``data.store``).
        split: Split name (``data.split``).
    """
    path = Path(store)
    if not (path / "store.json").is_file():
        raise SegweakError(
            f"data.store: {path} is not a prepared store (no store.json); create it with `segweak prepare`"
        )
    if not (path / "splits" / f"{split}.json").is_file():
        have = sorted(p.stem for p in (path / "splits").glob("*.json")) if (path / "splits").is_dir() else []
        raise SegweakError(
            f"data.split: split {split!r} not found in store {path} (have: {', '.join(have) or 'none'}); "
            f"create it with `segweak split {path} --name {split}`"
        )


class EpochSampler(Sampler[int]):
    """Random permutation of ``range(n)`` that depends only on ``(seed, epoch)``; one rank's share of it.

    Lightning calls :meth:`set_epoch` before every epoch, so the order of epoch ``e`` is the same
    whether or not the run was interrupted before it. With ``world_size`` > 1 every rank draws the same
    permutation, repeats its first indices until its length is a multiple of ``world_size`` (DDP needs
    the same number of steps on every rank) and takes every ``world_size``-th index from ``rank`` on.
    With one process the order is the plain permutation.

    Args:
        n: Number of samples in the subset.
        seed: Run seed.
        rank: This process's global rank.
        world_size: Number of processes.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.n = int(n)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:  # noqa: D105
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        if self.world_size == 1:
            return iter(order)
        total = len(self) * self.world_size
        padded = (order * math.ceil(total / self.n))[:total] if self.n else order
        return iter(padded[self.rank :: self.world_size])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, …`` of ``range(n)`` in order, without padding (evaluation).

    The shards of all ranks are disjoint and cover ``range(n)`` exactly once, so metrics summed across
    ranks count every sample once. Shards differ in length by at most one.

    Args:
        n: Number of samples in the subset.
        rank: This process's global rank.
        world_size: Number of processes.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.indices = range(int(rank), int(n), int(world_size))

    def __iter__(self) -> Iterator[int]:  # noqa: D105
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SegDataModule(L.LightningDataModule):
    """Training and validation data of one stage.

    Args:
        cfg: The run's config (``data.*`` and ``trainer.seed`` are used).
        stage: Stage whose training subset to load; ``None`` uses ``cfg.stage``.
    """

    def __init__(self, cfg: TrainConfig, stage: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.stage = stage or cfg.stage
        if self.stage not in TRAIN_SUBSET:
            raise SegweakError(f"stage: {self.stage!r} is not valid; choose one of {', '.join(TRAIN_SUBSET)}")
        self.train_subset = TRAIN_SUBSET[self.stage]
        self.train_dataset: Any = None
        self.val_dataset: Any = None
        self.store: Any = None
        # The loader draws its workers' base seed from this generator instead of the global RNG, so
        # creating a loader iterator (which Lightning does at different moments when resuming) does
        # not shift the random numbers the model's dropout and the augmentations see.
        self.loader_generator = torch.Generator()
        self.loader_generator.manual_seed(cfg.trainer.seed)

    def _open(self) -> None:
        if self.store is not None:
            return
        from segweak.data.store import Store

        check_store_and_split(self.cfg.data.store, self.cfg.data.split)
        self.store = Store(self.cfg.data.store)

    def _train_transform(self, epoch: int) -> Any:
        if not self.cfg.data.augment:
            return None
        from segweak.data.transforms import default_train_transform

        return default_train_transform(seed=self.cfg.trainer.seed * 10_007 + epoch)

    def setup(self, stage: str | None = None) -> None:
        """Open the store and build the datasets (Lightning calls this on every process)."""
        from segweak.data.dataset import SegweakDataset

        self._open()
        split = self.cfg.data.split
        if self.train_dataset is None and stage in (None, "fit"):
            self.train_dataset = SegweakDataset(
                self.store, split, self.train_subset, transform=self._train_transform(0)
            )
            if len(self.train_dataset) == 0:
                raise SegweakError(
                    f"subset {self.train_subset!r} of split {split!r} in store {self.cfg.data.store} "
                    "is empty; "
                    f"stage {self.stage!r} has nothing to train on (make a split with a non-zero fraction)"
                )
        if self.val_dataset is None:
            self.val_dataset = SegweakDataset(self.store, split, VAL_SUBSET)
            if len(self.val_dataset) == 0:
                raise SegweakError(
                    f"subset 'val' of split {split!r} in store {self.cfg.data.store} is empty; "
                    "training needs validation patches (make a split with a non-zero val fraction)"
                )

    def reseed_epoch(self, epoch: int) -> None:
        """Give the training set a fresh augmentation pipeline for ``epoch`` (see :class:`EpochReseed`)."""
        self.loader_generator.manual_seed(self.cfg.trainer.seed * 1_000_003 + epoch)
        if self.train_dataset is not None and self.cfg.data.augment:
            self.train_dataset.transform = self._train_transform(epoch)

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def check_world_size(self, world_size: int) -> None:
        """Refuse a process count that would leave a rank without validation patches.

        Call before training starts (it opens the store and builds the datasets).

        Args:
            world_size: Number of processes that will share the data.

        Raises:
            SegweakError: When the ``val`` subset has fewer patches than processes.
        """
        self.setup("fit")
        if len(self.val_dataset) < world_size:
            raise SegweakError(
                f"subset 'val' of split {self.cfg.data.split!r} has {len(self.val_dataset)} patch(es) for "
                f"{world_size} processes; every process needs one (lower trainer.devices or make a larger "
                "validation subset)"
            )

    def _loader(self, dataset: Any, batch_size: int, train: bool) -> DataLoader:
        rank, world = self._rank_and_world()
        sampler: Sampler[int]
        if train:
            sampler = EpochSampler(len(dataset), self.cfg.trainer.seed, rank, world)
        else:
            sampler = ShardSampler(len(dataset), rank, world)
        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            # Persistent workers would keep an old augmentation pipeline across epochs.
            persistent_workers=False,
            pin_memory=self.cfg.trainer.accelerator not in ("cpu",),
            # Drop the incomplete last batch of this rank's share unless that leaves no batch at all.
            drop_last=train and len(sampler) > batch_size,
            generator=self.loader_generator if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (epoch-seeded) batches of the stage's training subset."""
        return self._loader(self.train_dataset, self.cfg.data.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        """Return the validation batches, in order."""
        return self._loader(
            self.val_dataset, self.cfg.data.eval_batch_size or self.cfg.data.batch_size, train=False
        )

    def test_dataloader(self) -> DataLoader:
        """Same as :meth:`val_dataloader` (the split's held-out subset)."""
        return self.val_dataloader()


class EpochReseed(L.Callback):
    """Reseed all RNGs from ``(seed, epoch)`` at the start of every training epoch.

    The validation loop and sanity check also consume random numbers, so without this a resumed run
    would draw different augmentations and dropout masks than an uninterrupted one.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        epoch = trainer.current_epoch
        seed = (self.seed * 100_003 + epoch * 7_919 + trainer.global_rank) % (2**32)
        seed_everything(seed, workers=True, verbose=False)
        dm = trainer.datamodule
        if isinstance(dm, SegDataModule):
            dm.reseed_epoch(epoch)
