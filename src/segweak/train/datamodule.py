"""SegDataModule: the training sub-batches a method declares and the validation subset, as loaders.

Training data come from the method's :meth:`~segweak.methods.TrainingMethod.needs`: one named
sub-batch per :class:`~segweak.methods.Need` (a subset of the split and what is loaded with it).

* One need: a plain DataLoader over that subset; a training batch is the collated dict itself.
* Several needs: Lightning's ``CombinedLoader`` over one DataLoader per need; a training batch is
  ``{name: collated dict}``. ``data.epoch`` sets the epoch length: ``longest`` (one pass over the
  sub-batch with the most batches, the others start over when they run out; Lightning's
  ``max_size_cycle``) or ``shortest`` (stop when the first runs out; ``min_size``). Each sub-batch's
  batch size is ``data.batch_sizes.<name>``, else the need's own default, else ``data.batch_size``.

What a sub-batch carries follows ``Need.labels``: ``mask`` (pixel masks, with ``valid``), ``weak``
(proportions and presence; ``valid`` only with ``weak.area: valid``), ``none`` (images only; weak
labels are not even computed). A need with ``masks_from`` reads its masks from that artefact
(:class:`~segweak.train.pseudo_labels.PseudoLabels`) instead of the store; the artefact is opened and
checked against the store, split and subset when the datamodule is built, before training starts.
Validation always uses the ``val`` subset with pixel masks (and its ``valid`` map and clean weak
labels, for the weak metrics); the test loader the split's ``test`` subset (when it has one) in the
same form. Both also carry the eroded-boundary masks when the store has them (``mask_eroded``, for
the eroded-label metrics). ``weak.noise`` corrupts the weak labels of training sub-batches only.
Augmentations apply to training data only.

Reproducibility: :class:`EpochReseed` reseeds every RNG at the start of each epoch from
``(seed, epoch)`` and gives each training set a freshly seeded augmentation pipeline, so a run
resumed at an epoch boundary sees the same batches and augmentations as an uninterrupted run (for
``num_workers: 0``; with worker processes each worker's seed is derived from the same epoch seed).
Each sub-batch has its own order (a different sampler stream) and, when it starts over within an
epoch, a new permutation.

Several processes (``trainer.strategy: ddp``): the module shards the data itself (the Trainer runs
with ``use_distributed_sampler=False``). Training: every rank draws the same epoch permutation and
takes its own share of it (:class:`EpochSampler`), padded so that all ranks run the same number of
steps; whether the last incomplete batch is dropped is decided on that per-rank share. With several
sub-batches every sub-batch's loader is sharded this way. Validation: rank ``r`` gets patches
``r, r + W, r + 2W, …`` with no padding (:class:`ShardSampler`), so every validation patch is counted
exactly once in the split-wide metrics. The test subset is sharded the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import seed_everything
from torch.utils.data import DataLoader, Sampler

from segweak.config import TrainConfig
from segweak.data.dataset import SegweakDataset
from segweak.data.splits import check_store_and_split
from segweak.data.store import Store
from segweak.data.transforms import default_train_transform
from segweak.data.weak_tables import COMPUTED, load_set
from segweak.errors import SegweakError
from segweak.train.pseudo_labels import PseudoLabels

if TYPE_CHECKING:
    from segweak.methods import Need

VAL_SUBSET = "val"
TEST_SUBSET = "test"
EPOCH_MODES = {"longest": "max_size_cycle", "shortest": "min_size"}
"""``data.epoch`` -> Lightning ``CombinedLoader`` mode."""


class EpochSampler(Sampler[int]):
    """Seeded permutation of ``range(n)`` from ``(seed, epoch, stream, pass)``; one rank's share of it.

    Lightning calls :meth:`set_epoch` before every epoch, so the order of epoch ``e`` is the same
    whether or not the run was interrupted before it. ``stream`` separates the sub-batches of one
    run; ``pass`` counts the times a sub-batch starts over within an epoch (``data.epoch: longest``),
    so each repetition is a new order. Stream 0, pass 0 is the single-loader order.

    With ``world_size`` > 1 every rank draws the same permutation, repeats its first indices until its
    length is a multiple of ``world_size`` (DDP needs the same number of steps on every rank) and takes
    every ``world_size``-th index from ``rank`` on. With one process the order is the plain permutation.

    Args:
        n: Number of samples in the subset.
        seed: Run seed.
        stream: Index of the sub-batch.
        rank: This process's global rank.
        world_size: Number of processes.
    """

    def __init__(self, n: int, seed: int, stream: int = 0, *, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.n = int(n)
        self.seed = int(seed)
        self.stream = int(stream)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.passes = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutations of ``epoch`` (starting with its first pass)."""
        self.epoch = int(epoch)
        self.passes = 0

    def __iter__(self) -> Iterator[int]:  # noqa: D105
        seed = self.seed * 1_000_003 + self.epoch
        if self.stream or self.passes:
            # torch's CPU generator keeps only 32 bits of a seed: mix the extra keys into them.
            seed = int(np.random.SeedSequence([seed, self.stream, self.passes]).generate_state(1)[0])
        gen = torch.Generator()
        gen.manual_seed(seed)
        self.passes += 1
        order = torch.randperm(self.n, generator=gen).tolist()
        if self.world_size == 1:
            return iter(order)
        total = len(self) * self.world_size
        padded = (order * math.ceil(total / self.n))[:total] if self.n else order
        return iter(padded[self.rank :: self.world_size])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)


class BagBatchSampler(Sampler[list[int]]):
    """Batches of whole bags (imported weak labels), a seeded new composition and order every epoch.

    Rule (``docs/methods.md``): a bag with more patches than ``batch_size`` is capped to a random
    ``batch_size`` of them (a new draw every epoch); the (capped) bags are packed first-fit in order
    of decreasing size, ties in a random order, into batches of at most ``batch_size`` patches; the
    batches are then shuffled. The number of batches depends only on the bag sizes, so every epoch
    has the same length, and no patch of a bag ever lands in another batch than its bag-mates.
    Several processes: the batch list is padded by repeating its first batches to a multiple of
    ``world_size`` and rank ``r`` takes every ``world_size``-th batch from ``r`` on.

    Lightning calls ``set_epoch`` on ``batch_sampler.sampler``: that is this object itself.

    Args:
        bags: ``(n,)`` bag of each dataset item.
        batch_size: Most patches per batch.
        seed: Run seed.
        stream: Index of the sub-batch.
        rank: This process's global rank.
        world_size: Number of processes.
    """

    def __init__(
        self,
        bags: np.ndarray,
        batch_size: int,
        seed: int,
        stream: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        bags = np.asarray(bags, dtype=np.int64)
        self.members = [np.flatnonzero(bags == b) for b in np.unique(bags)]
        self.batch_size = int(batch_size)
        self.order = EpochSampler(len(self.members), seed, stream, rank=0, world_size=1)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.sampler = self
        sizes = [min(len(m), self.batch_size) for m in self.members]
        self.n_batches = len(self._pack(sorted(range(len(sizes)), key=lambda b: -sizes[b]), sizes))

    def set_epoch(self, epoch: int) -> None:
        """Select the compositions and orders of ``epoch``."""
        self.order.set_epoch(epoch)

    def _pack(self, order: list[int], sizes: list[int]) -> list[list[int]]:
        """First-fit packing of bags (in ``order``) into bins of ``batch_size`` patches."""
        bins: list[list[int]] = []
        free: list[int] = []
        for b in order:
            slot = next((j for j, f in enumerate(free) if f >= sizes[b]), None)
            if slot is None:
                bins.append([])
                free.append(self.batch_size)
                slot = len(bins) - 1
            bins[slot].append(b)
            free[slot] -= sizes[b]
        return bins

    def __iter__(self) -> Iterator[list[int]]:  # noqa: D105
        # The bag permutation of (seed, epoch, stream, pass) ranks the ties; a generator keyed the same
        # way (plus a tag) draws the caps and the batch order.
        o = self.order
        key = [o.seed, o.epoch, o.stream, o.passes, 0xBA6]
        perm = list(iter(o))
        gen = torch.Generator()
        gen.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        chosen = []
        for m in self.members:
            if len(m) > self.batch_size:
                pick = torch.randperm(len(m), generator=gen)[: self.batch_size].sort().values.numpy()
                m = m[pick]
            chosen.append(m)
        sizes = [len(m) for m in chosen]
        rank_of = {b: r for r, b in enumerate(perm)}
        bins = self._pack(sorted(range(len(chosen)), key=lambda b: (-sizes[b], rank_of[b])), sizes)
        shuffle = torch.randperm(len(bins), generator=gen).tolist()
        batches = [sorted(i for b in bins[j] for i in chosen[b].tolist()) for j in shuffle]
        if self.world_size > 1:
            total = len(self) * self.world_size
            batches = (batches * math.ceil(total / len(batches)))[:total][self.rank :: self.world_size]
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(self.n_batches / self.world_size)


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
    """Training sub-batches of a method and validation data.

    Args:
        cfg: The run's config (``data.*``, ``weak.area`` and ``trainer.seed`` are used).
        needs: The method's named sub-batches (:meth:`~segweak.methods.TrainingMethod.needs`).

    Raises:
        SegweakError: When ``needs`` is empty or ``data.batch_sizes`` names a sub-batch the method
            does not read.
    """

    def __init__(self, cfg: TrainConfig, needs: Mapping[str, Need]) -> None:
        super().__init__()
        self.cfg = cfg
        self.needs = dict(needs)
        if not self.needs:
            raise SegweakError(f"method {cfg.method!r} declares no training data (needs() is empty)")
        unknown = sorted(set(cfg.data.batch_sizes) - set(self.needs))
        if unknown:
            raise SegweakError(
                f"data.batch_sizes.{unknown[0]}: method {cfg.method!r} reads no sub-batch of that name; "
                f"its sub-batches: {', '.join(self.needs)}"
            )
        self.batch_sizes = {
            name: cfg.data.batch_sizes.get(name, need.batch_size or cfg.data.batch_size)
            for name, need in self.needs.items()
        }
        # Mask artefacts of needs with masks_from, opened and checked now: a mismatch stops the run
        # before any training work.
        self.mask_sources = {
            name: self._open_masks(need) for name, need in self.needs.items() if need.masks_from is not None
        }
        self.train_datasets: dict[str, Any] = {}
        self.val_dataset: Any = None
        self.test_dataset: SegweakDataset | None = None
        self.store: Store | None = None
        # The loaders draw their workers' base seed from this generator instead of the global RNG, so
        # creating a loader iterator (which Lightning does at different moments when resuming) does
        # not shift the random numbers the model's dropout and the augmentations see.
        self.loader_generator = torch.Generator()
        self.loader_generator.manual_seed(cfg.trainer.seed)

    def _open_masks(self, need: Need) -> Any:
        check_store_and_split(self.cfg.data.store, self.cfg.data.split)
        assert need.masks_from is not None
        masks = PseudoLabels(need.masks_from)
        masks.check(self.cfg.data.store, self.cfg.data.split, need.subset, self.cfg.weak.noise)
        return masks

    def _open(self) -> None:
        if self.store is not None:
            return
        check_store_and_split(self.cfg.data.store, self.cfg.data.split)
        self.store = Store(self.cfg.data.store)

    def _train_transform(self, epoch: int, stream: int) -> Any:
        if not self.cfg.data.augment:
            return None
        # Stream 0 keeps the seed a single training set always had.
        return default_train_transform(seed=self.cfg.trainer.seed * 10_007 + epoch + 104_729 * stream)

    def weak_set(self) -> dict[str, Any] | None:
        """Return the imported weak-label set of ``weak.labels`` (None for ``computed``)."""
        if self.cfg.weak.labels == COMPUTED:
            return None
        return load_set(self.store, self.cfg.weak.labels)

    def _train_dataset(self, name: str, need: Need, stream: int) -> Any:
        weak_set = self.weak_set() if need.labels == "weak" else None
        dataset = SegweakDataset(
            self.store,
            self.cfg.data.split,
            need.subset,
            transform=self._train_transform(0, stream),
            with_mask=need.labels == "mask",
            with_valid=need.labels == "mask" or (need.labels == "weak" and self.cfg.weak.area == "valid"),
            with_weak=need.labels == "weak",
            weak_set=weak_set,
            masks=self.mask_sources.get(name),
            # weak.noise corrupts what training reads; the validation set below stays clean.
            noise=self.cfg.weak.noise if need.labels == "weak" else None,
        )
        if weak_set is not None and len(dataset) == 0:
            raise SegweakError(
                f"weak.labels: none of the {len(weak_set['bags'])} bag(s) of {self.cfg.weak.labels!r} lies "
                f"wholly in subset {need.subset!r} of split {self.cfg.data.split!r} (a bag cut by the split "
                "is left out); split the store by group (`segweak split --by group`)"
            )
        if len(dataset) == 0:
            raise SegweakError(
                f"subset {need.subset!r} of split {self.cfg.data.split!r} in store {self.cfg.data.store} is "
                f"empty; method {self.cfg.method!r} reads it as sub-batch {name!r} (make a split with a "
                "non-zero fraction)"
            )
        return dataset

    def setup(self, stage: str | None = None) -> None:
        """Open the store and build the datasets (Lightning calls this on every process)."""
        self._open()
        split = self.cfg.data.split
        if not self.train_datasets and stage in (None, "fit"):
            self.train_datasets = {
                name: self._train_dataset(name, need, i) for i, (name, need) in enumerate(self.needs.items())
            }
        eroded = self.store.has_eroded_masks
        if self.val_dataset is None:
            self.val_dataset = SegweakDataset(self.store, split, VAL_SUBSET, with_eroded=eroded)
            if len(self.val_dataset) == 0:
                raise SegweakError(
                    f"subset 'val' of split {split!r} in store {self.cfg.data.store} is empty; "
                    "training needs validation patches (make a split with a non-zero val fraction)"
                )
        if self.test_dataset is None and self.has_test():
            self.test_dataset = SegweakDataset(self.store, split, TEST_SUBSET, with_eroded=eroded)

    def has_test(self) -> bool:
        """Whether the run's split holds out a non-empty ``test`` subset (opens the store)."""
        from segweak.data.splits import load_split

        self._open()
        return bool(load_split(self.store, self.cfg.data.split)["subsets"].get(TEST_SUBSET))

    def reseed_epoch(self, epoch: int) -> None:
        """Give each training set a fresh augmentation pipeline for ``epoch`` (see :class:`EpochReseed`)."""
        self.loader_generator.manual_seed(self.cfg.trainer.seed * 1_000_003 + epoch)
        if self.cfg.data.augment:
            for stream, dataset in enumerate(self.train_datasets.values()):
                dataset.transform = self._train_transform(epoch, stream)

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def check_world_size(self, world_size: int) -> None:
        """Refuse a process count that would leave a rank without validation patches.

        Call before training starts (it opens the store and builds the datasets).

        Args:
            world_size: Number of processes that will share the data.

        Raises:
            SegweakError: When the ``val`` or ``test`` subset has fewer patches than processes.
        """
        self.setup("fit")
        for name, dataset in ((VAL_SUBSET, self.val_dataset), (TEST_SUBSET, self.test_dataset)):
            if dataset is not None and len(dataset) < world_size:
                raise SegweakError(
                    f"subset {name!r} of split {self.cfg.data.split!r} has {len(dataset)} patch(es) for "
                    f"{world_size} processes; every process needs one (lower trainer.devices or make a "
                    f"larger {name} subset)"
                )

    def _loader(self, dataset: Any, batch_size: int, train: bool, stream: int = 0) -> DataLoader:
        rank, world = self._rank_and_world()
        sampler: Sampler[int]
        bags = getattr(dataset, "bags", None)
        if train and bags is not None:
            return DataLoader(
                dataset,
                batch_sampler=BagBatchSampler(
                    bags, batch_size, self.cfg.trainer.seed, stream, rank=rank, world_size=world
                ),
                num_workers=self.cfg.data.num_workers,
                persistent_workers=False,
                pin_memory=self.cfg.trainer.accelerator not in ("cpu",),
                generator=self.loader_generator,
            )
        if train:
            # Every sub-batch's loader gets its own rank-sharded stream.
            sampler = EpochSampler(len(dataset), self.cfg.trainer.seed, stream, rank=rank, world_size=world)
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

    def train_dataloader(self) -> Any:
        """One DataLoader for one need, else a ``CombinedLoader`` of ``{name: DataLoader}``."""
        from lightning.pytorch.utilities import CombinedLoader

        loaders = {
            name: self._loader(self.train_datasets[name], self.batch_sizes[name], train=True, stream=i)
            for i, name in enumerate(self.needs)
        }
        if len(loaders) == 1:
            return next(iter(loaders.values()))
        return CombinedLoader(loaders, mode=EPOCH_MODES[self.cfg.data.epoch])

    def epoch_length(self, world_size: int = 1) -> int:
        """Training batches of one process in one full epoch, before ``trainer.limit_train_batches``.

        Args:
            world_size: Number of processes; each gets ``ceil(n / world_size)`` patches of a subset.

        Returns:
            The batches of each sub-batch's loader, combined by ``data.epoch`` (max or min).
        """
        lengths = []
        for name in self.needs:
            n, bsz = len(self.train_datasets[name]), self.batch_sizes[name]
            bags = getattr(self.train_datasets[name], "bags", None)
            if bags is not None:
                lengths.append(len(BagBatchSampler(bags, bsz, 0, world_size=max(1, world_size))))
                continue
            per_rank = math.ceil(n / max(1, world_size))
            # As the loader: the incomplete last batch of a rank's share is dropped unless it is the only one.
            lengths.append(per_rank // bsz if per_rank > bsz else math.ceil(per_rank / bsz))
        return max(lengths) if self.cfg.data.epoch == "longest" else min(lengths)

    def val_dataloader(self) -> DataLoader:
        """Return the validation batches, in order."""
        return self._loader(
            self.val_dataset, self.cfg.data.eval_batch_size or self.cfg.data.batch_size, train=False
        )

    def test_dataloader(self) -> DataLoader:
        """Return the batches of the split's ``test`` subset, in order, sharded like validation.

        Raises:
            SegweakError: When the split has no (or an empty) ``test`` subset.
        """
        if self.test_dataset is None or len(self.test_dataset) == 0:
            raise SegweakError(
                f"split {self.cfg.data.split!r} of store {self.cfg.data.store} has no test subset to evaluate"
            )
        return self._loader(
            self.test_dataset, self.cfg.data.eval_batch_size or self.cfg.data.batch_size, train=False
        )


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
