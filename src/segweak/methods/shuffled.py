"""``shuffled``: proportion pre-training on weak labels permuted across the weak patches (a control).

Exactly ``proportion`` (same loss, data, steps and fine-tuning), except that weak patch i is trained
with the weak label of weak patch π(i), where π is a random derangement of the weak subset
(:func:`segweak.weak.shuffle.shuffle_assignment`: no patch keeps its own label when there are at
least two). The labels keep their distribution over the training set and lose any link to the image:

    L = loss(p̂(x_i), p_{π(i)})

So ``proportion`` − ``shuffled`` (both fine-tuned) is what the proportions teach about the images,
and ``shuffled`` − ``baseline`` what the extra pre-training steps and images do on their own.

π is fixed for the run: drawn from ``methods.shuffled.seed``, or, when that is null, from the
training seed and the split name (so every training seed of an experiment gets its own π). It is
written to ``RUN/shuffle.json`` when training starts. The permuted labels are looked up by patch index
(the batch's ``index``) in a (N_store, K) table built from the store when training starts; validation
metrics and ``val/weak_loss`` use the true labels of the validation patches. Imported weak labels
(``weak.labels: NAME``, bags of patches) are refused: the permutation is over patches and their
computed proportions.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segweak.errors import SegweakError
from segweak.methods.base import Task, register
from segweak.methods.proportion import Proportion, ProportionOptions
from segweak.weak.shuffle import shuffle_assignment

RECORD = "shuffle.json"
"""File in the run directory that records the permutation."""


@dataclass
class ShuffledOptions(ProportionOptions):
    """Options of ``shuffled``.

    Attributes:
        loss: Proportion loss, as ``proportion``: ``ce``, ``kl``, ``l1`` or ``mse``.
        eps: Clamp for p̂ before taking logs.
        seed: Seed of the permutation; ``None`` derives it from ``trainer.seed`` and ``data.split``.
    """

    seed: int | None = None

    def validate(self, prefix: str) -> None:
        """Check the loss, ``eps`` and the seed."""
        super().validate(prefix)
        if self.seed is not None and self.seed < 0:
            raise SegweakError(f"{prefix}seed must be >= 0 or null, got {self.seed}")


def permutation_seed(train_seed: int, split: str, seed: int | None = None) -> int:
    """Seed of the label permutation: ``seed`` when given, else one mixed from the training seed and split.

    Args:
        train_seed: ``trainer.seed``.
        split: ``data.split`` (its name; a stable CRC-32 of it enters the mix).
        seed: ``methods.shuffled.seed``.
    """
    if seed is not None:
        return int(seed)
    mixed = np.random.SeedSequence([int(train_seed), zlib.crc32(split.encode("utf-8"))])
    return int(mixed.generate_state(1)[0])


def shuffled_labels(store: Any, split: str, seed: int, noise: Any = None) -> dict[str, Any]:
    """Permute the weak subset's labels across its patches.

    Args:
        store: Prepared store (path or :class:`~segweak.data.store.Store`).
        split: Split name.
        seed: Permutation seed (:func:`permutation_seed`).
        noise: ``weak.noise`` (:class:`~segweak.config.NoiseConfig`): the labels are corrupted per
            patch first, then permuted, so the control reads the same noisy labels as ``proportion``.

    Returns:
        ``indices`` (W,) int64 weak patch indices (sorted, as the dataset orders them),
        ``source`` (W,) int64: patch ``indices[i]`` gets the labels of patch ``source[i]``,
        ``weak`` (W, K) float32 and ``presence`` (W, K) float32: the labels each weak patch gets, and
        ``n_patches``, the store's patch count.
    """
    from segweak.data.dataset import SegweakDataset

    ds = SegweakDataset(store, split, "weak", with_mask=False, with_valid=False, noise=noise)
    assert ds.weak is not None and ds.presence is not None
    perm = shuffle_assignment(len(ds.indices), seed)
    return {
        "indices": ds.indices,
        "source": ds.indices[perm],
        "weak": ds.weak[perm],
        "presence": ds.presence[perm],
        "n_patches": len(ds.store),
    }


@register("shuffled")
class Shuffled(Proportion):
    """``proportion`` on weak labels permuted across the weak patches. Term: ``proportion``."""

    Options = ShuffledOptions
    control = True
    # The permutation is over patches and their computed proportions; imported labels come in bags.
    imported_weak_labels = False

    def setup(self, task: Task) -> None:
        """Create the label tables (empty until training starts; not saved: π is re-derived)."""
        k = self.num_classes
        self.register_buffer("shuffled_weak", torch.empty(0, k), persistent=False)
        self.register_buffer("shuffled_presence", torch.empty(0, k), persistent=False)

    def on_fit_start(self, task: Task) -> None:
        """Build the (N_store, K) tables of permuted labels and record π in the run directory."""
        from segweak.io import atomic_write_json

        cfg = task.cfg
        seed = permutation_seed(cfg.trainer.seed, cfg.data.split, self.options.seed)
        labels = shuffled_labels(cfg.data.store, cfg.data.split, seed, cfg.weak.noise)
        index = torch.from_numpy(labels["indices"])
        # Rows of patches outside the weak subset stay NaN: reading one would poison the loss visibly.
        for name in ("weak", "presence"):
            table = torch.full((labels["n_patches"], self.num_classes), float("nan"))
            table[index] = torch.from_numpy(labels[name])
            setattr(self, f"shuffled_{name}", table.to(task.device))
        trainer = getattr(task, "_trainer", None)
        if trainer is None or trainer.is_global_zero:
            pairs = zip(labels["indices"].tolist(), labels["source"].tolist(), strict=True)
            atomic_write_json(
                cfg.run_dir / RECORD,
                {
                    "seed": seed,
                    "split": cfg.data.split,
                    "n_weak": len(labels["indices"]),
                    "fixed_points": int((labels["indices"] == labels["source"]).sum()),
                    "label_of": [list(pair) for pair in pairs],
                },
            )

    def permuted(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Return the batch with ``weak`` and ``presence`` replaced by the labels its patches were assigned.

        Args:
            batch: A weak sub-batch with ``index`` (B,) patch indices.

        Raises:
            SegweakError: When training has not started (the tables are built in ``on_fit_start``).
        """
        if self.shuffled_weak.shape[0] == 0:
            raise SegweakError("method 'shuffled': the permuted labels are built when training starts")
        index = torch.as_tensor(batch["index"], device=self.shuffled_weak.device)
        return {**batch, "weak": self.shuffled_weak[index], "presence": self.shuffled_presence[index]}

    def training_step(self, task: Task, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:  # noqa: D102
        batch = batches["weak"]
        return self.weak_terms(task(batch["image"]), self.permuted(batch))
