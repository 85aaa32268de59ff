"""Evaluate a checkpoint on a subset of a split: the same metrics as training's validation.

:class:`SegMetrics` is the one metric accumulator used both by
:class:`~segweak.train.module.SegModule` (validation/test, DDP-synced via torchmetrics) and by
:func:`evaluate` (a plain PyTorch loop), so a run's ``metrics.json`` and ``segweak evaluate`` agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from segweak.errors import SegweakError
from segweak.evaluate.metrics import (
    ConfusionMatrixMetric,
    PresenceF1Metric,
    ProportionMAEMetric,
    metrics_from_confusion,
)
from segweak.io import atomic_write_json


class PatchCount(Metric):
    """Number of patches evaluated, summed across DDP ranks (shows whether a whole subset was seen)."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("n", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, n: int) -> None:
        """Add ``n`` patches."""
        self.n += int(n)

    def compute(self) -> torch.Tensor:
        """Return the total count."""
        return self.n.clone()


class SegMetrics(nn.Module):
    """Split-wide segmentation metrics plus weak-label metrics.

    Accumulates a (K, K) confusion matrix over every pixel of the split (ignore index 255 skipped),
    the mean absolute error between predicted and true class proportions, the presence F1 and the
    number of patches seen; for batches with ``mask_eroded`` (a store with eroded-boundary masks) a
    second confusion matrix against those, reported under ``eroded``.

    Args:
        num_classes: Number of classes ``K``.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.confusion = ConfusionMatrixMetric(num_classes)
        self.prop_mae = ProportionMAEMetric()
        self.presence = PresenceF1Metric()
        self.patches = PatchCount()
        self.eroded = ConfusionMatrixMetric(num_classes)
        self.eroded_patches = PatchCount()

    @torch.no_grad()
    def update(
        self,
        logits: torch.Tensor,
        batch: dict[str, Any],
        area: str | None = "patch",
        presence_threshold: float = 0.0,
    ) -> None:
        """Add one batch.

        Args:
            logits: (B, K, H, W) pixel logits.
            batch: Needs ``mask`` (B, H, W) int64; ``weak`` (B, K) and ``presence`` (B, K) for the
                weak metrics (skipped when absent), ``valid`` (B, H, W) with ``area="valid"``, and
                optionally ``mask_eroded`` (B, H, W) int64 for the eroded-label metrics.
            area: Where predicted proportions are averaged, as in training (``weak.area``): ``patch``
                (whole patch) or ``valid`` (non-ignore pixels); ``None`` skips the weak metrics.
            presence_threshold: A class is predicted present when its share of argmax pixels over the
                area exceeds this (``weak.presence_threshold``).
        """
        from segweak.weak.pooling import hard_proportions, soft_proportions

        pred = logits.argmax(dim=1)
        self.confusion.update(pred, batch["mask"])
        self.patches.update(batch["mask"].shape[0])
        if "mask_eroded" in batch:
            self.eroded.update(pred, batch["mask_eroded"])
            self.eroded_patches.update(batch["mask_eroded"].shape[0])
        if area is not None and "weak" in batch and (area == "patch" or "valid" in batch):
            valid = batch["valid"] if area == "valid" else None
            logits = logits.float()
            self.prop_mae.update(soft_proportions(logits, valid), batch["weak"].float())
            predicted = (hard_proportions(logits, valid) > presence_threshold).float()
            self.presence.update(predicted, batch["presence"].float())

    def compute(self, classes: list[str]) -> dict[str, Any]:
        """Metrics dict: ``metrics_from_confusion`` keys + ``n_patches``, ``prop_mae``, ``presence_f1``.

        ``prop_mae`` and ``presence_f1`` are None when no batch carried weak labels. When the batches
        carried eroded masks, ``eroded`` holds ``metrics_from_confusion`` keys and ``n_patches`` on
        those (the same predictions; fewer pixels, as the boundary bands are ignored).
        """
        result = metrics_from_confusion(self.confusion.compute(), classes)
        result["n_patches"] = int(self.patches.compute())
        # update_count is per process; the metric states themselves are summed across processes.
        weak_seen = int(self.prop_mae.compute().isnan().logical_not())
        result["prop_mae"] = float(self.prop_mae.compute()) if weak_seen else None
        result["presence_f1"] = float(self.presence.compute()) if weak_seen else None
        # Every process evaluates batches of the same store (each at least one batch), so all take this
        # branch or none: compute() below syncs across them.
        if self.eroded_patches.update_count:
            eroded = metrics_from_confusion(self.eroded.compute(), classes)
            del eroded["classes"]  # the same as the main metrics'
            result["eroded"] = {**eroded, "n_patches": int(self.eroded_patches.compute())}
        return result

    def reset(self) -> None:
        """Clear all accumulated state."""
        self.confusion.reset()
        self.prop_mae.reset()
        self.presence.reset()
        self.patches.reset()
        self.eroded.reset()
        self.eroded_patches.reset()


def evaluate(
    checkpoint: str | Path,
    store: str | Path,
    split: str = "default",
    subset: str = "val",
    batch_size: int = 16,
    device: str = "cpu",
    out: str | Path | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one subset of a split of a prepared store.

    The checkpoint is loaded weights-only; the network is rebuilt from the model config recorded in
    its hyperparameters.

    Args:
        checkpoint: ``.ckpt`` written by ``segweak train``.
        store: Prepared store directory.
        split: Split manifest name.
        subset: ``val``, ``test`` (a split that has one), ``strong``, ``weak``, ``full`` or ``all``
            (masks are loaded for all of them; eroded masks too when the store has them).
        batch_size: Batch size.
        device: Torch device string, e.g. ``cpu`` or ``cuda``.
        out: Optional JSON file to write the metrics to (atomically).
        num_workers: DataLoader workers.

    Returns:
        ``metrics_from_confusion`` keys (miou, mf1, oa, per_class_iou, ..., n_pixels) plus
        ``n_patches``, ``prop_mae``, ``presence_f1``, ``checkpoint``, ``store``, ``split``, ``subset``,
        and ``eroded`` (metrics on the eroded-boundary masks) when the store has them.

    Raises:
        SegweakError: Bad options (device, batch size, ``out``), missing checkpoint/store/split, or
            classes or input bands that differ between checkpoint and store; all before any work.
    """
    from segweak.data.dataset import SegweakDataset
    from segweak.data.store import Store
    from segweak.models.factory import check_in_channels
    from segweak.train.checkpoint import build_model_from_checkpoint, check_classes, load_checkpoint
    from segweak.train.preflight import (
        check_device,
        check_output_file,
        check_positive,
    )

    dev = check_device(device)
    check_positive(batch_size, "--batch-size")
    if num_workers < 0:
        raise SegweakError(f"num_workers must be >= 0, got {num_workers}")
    if out is not None:
        check_output_file(out)
    ckpt = load_checkpoint(checkpoint)
    model, cfg, classes = build_model_from_checkpoint(ckpt, checkpoint)
    st = Store(store)
    check_classes(classes, class_names(st), checkpoint, f"store {store}")
    check_in_channels(cfg.model.in_channels, st.meta, str(store), str(checkpoint))
    dataset = SegweakDataset(st, split, subset, with_mask=True, with_eroded=st.has_eroded_masks)
    if len(dataset) == 0:
        raise SegweakError(
            f"subset {subset!r} of split {split!r} in store {store} is empty; nothing to evaluate"
        )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    model.to(dev)
    metrics = SegMetrics(len(classes)).to(dev)
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            metrics.update(model(batch["image"]), batch, cfg.weak.area, cfg.weak.presence_threshold)
    result = metrics.compute(classes)
    result.update(checkpoint=str(checkpoint), store=str(store), split=split, subset=subset)
    if out is not None:
        atomic_write_json(out, result)
    return result


def class_names(store: Any) -> list[str]:
    """Class names of a :class:`~segweak.data.store.Store` (whatever form ``.classes`` takes)."""
    classes = store.classes
    names = getattr(classes, "names", classes)
    return [str(n) for n in names]
