"""Segmentation metrics from one confusion matrix accumulated over a whole split.

This module sits at the package root, below ``train/`` (validation and test in
:class:`~segweak.train.module.SegModule`), ``evaluate/`` (``segweak evaluate``, ``segweak predict``)
and the report, so each of them uses the same definitions without importing another: a run's
``metrics.json`` and ``segweak evaluate`` agree because both accumulate :class:`SegMetrics`.

Pixels are counted over the whole evaluated set first and the metrics are computed once from the
totals (never averaged per patch, which would over-weight small or nearly empty patches).

Definitions, with the confusion matrix ``cm[t, p]`` = number of pixels of true class t predicted as p
(rows = truth, columns = prediction; pixels with target ``ignore_index`` are not counted):

* TP_k = cm[k, k], FP_k = Σ_t cm[t, k] − TP_k, FN_k = Σ_p cm[k, p] − TP_k
* IoU_k = TP_k / (TP_k + FP_k + FN_k);  F1_k = 2·TP_k / (2·TP_k + FP_k + FN_k)
* OA = trace(cm) / sum(cm): overall accuracy over non-ignored pixels
* A class with **no ground-truth pixel** in the evaluated set is *absent*: its IoU/F1 are ``None``
  (JSON ``null``), it is listed in ``absent_classes``, and it is excluded from mIoU and mF1 (its IoU
  would be 0 whenever it is predicted anywhere and undefined otherwise — neither says anything about
  how well the class is segmented). Its false positives are still reported
  (``absent_false_positives``) and they still lower the IoU of the true classes of those pixels.
* mIoU / mF1: unweighted means over the present classes.

Weak metrics:

* :func:`proportion_mae`: mean over patches and classes of |p̂_k − p_k|.
* Presence F1 (:class:`PresenceF1Metric`): **micro** F1 over all (patch, class) pairs,
  2·TP / (2·TP + FP + FN), where a pair is positive when the class is present in the patch.
  Micro averaging weights every decision equally, so rare classes (car) are not over-weighted
  by a handful of patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from segweak.data.palette import IGNORE_INDEX
from segweak.weak.pooling import hard_proportions, soft_proportions


def confusion_matrix(
    pred: Tensor | np.ndarray, target: Tensor | np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Confusion matrix of one or many masks.

    Args:
        pred: Predicted class indices, any shape (e.g. (B, H, W) or (H, W)).
        target: True class indices, same shape; ``ignore_index`` pixels are skipped.
        num_classes: K.
        ignore_index: Target value that is not counted.

    Returns:
        (K, K) int64 array, rows = truth, columns = prediction.

    Raises:
        ValueError: On shape mismatch or a class index outside ``0..K-1`` (other than ignore).
    """
    p = pred.detach().cpu().numpy() if isinstance(pred, Tensor) else np.asarray(pred)
    t = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    if p.shape != t.shape:
        raise ValueError(f"confusion_matrix: pred shape {p.shape} != target shape {t.shape}")
    p = p.reshape(-1).astype(np.int64)
    t = t.reshape(-1).astype(np.int64)
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"confusion_matrix: target has class index outside 0..{num_classes - 1}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"confusion_matrix: pred has class index outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def metrics_from_confusion(cm: np.ndarray | Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """IoU, F1, OA and their means from a confusion matrix, with absent classes set to None.

    Args:
        cm: (K, K) counts, rows = truth, columns = prediction.
        classes: K class names in index order.

    Returns:
        ``{"miou", "mf1", "oa", "per_class_iou": {name: float|None}, "per_class_f1": {...},
        "absent_classes": [names], "absent_false_positives": {name: int}, "classes": [names],
        "n_pixels": int}``. Means/OA are None when nothing was counted (no present class / no pixel).
    """
    cm = cm.detach().cpu().numpy() if isinstance(cm, Tensor) else np.asarray(cm)
    cm = cm.astype(np.int64)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"metrics_from_confusion: confusion matrix {cm.shape} does not match {k} classes")
    tp = np.diag(cm).astype(np.float64)
    gt = cm.sum(axis=1).astype(np.float64)  # TP + FN
    pr = cm.sum(axis=0).astype(np.float64)  # TP + FP
    fp, fn = pr - tp, gt - tp
    per_iou: dict[str, float | None] = {}
    per_f1: dict[str, float | None] = {}
    absent: list[str] = []
    absent_fp: dict[str, int] = {}
    for i, name in enumerate(classes):
        if gt[i] == 0:
            per_iou[name] = None
            per_f1[name] = None
            absent.append(name)
            absent_fp[name] = int(fp[i])
        else:
            # Denominators are >= gt > 0 here.
            per_iou[name] = float(tp[i] / (tp[i] + fp[i] + fn[i]))
            per_f1[name] = float(2 * tp[i] / (2 * tp[i] + fp[i] + fn[i]))
    ious = [v for v in per_iou.values() if v is not None]
    f1s = [v for v in per_f1.values() if v is not None]
    total = int(cm.sum())
    return {
        "miou": float(np.mean(ious)) if ious else None,
        "mf1": float(np.mean(f1s)) if f1s else None,
        "oa": float(tp.sum() / total) if total else None,
        "per_class_iou": per_iou,
        "per_class_f1": per_f1,
        "absent_classes": absent,
        "absent_false_positives": absent_fp,
        "classes": list(classes),
        "n_pixels": total,
    }


class ConfusionMatrixMetric(Metric):
    """torchmetrics accumulator of a (K, K) confusion matrix (rows = truth), summed across DDP ranks.

    Args:
        num_classes: K.
        ignore_index: Target value that is not counted.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "cm", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` and ``target`` (B, H, W) long class indices (target 255 = ignore)."""
        if preds.shape != target.shape:
            raise ValueError(
                f"ConfusionMatrixMetric: preds {tuple(preds.shape)} != target {tuple(target.shape)}"
            )
        k = self.num_classes
        p = preds.reshape(-1).long()
        t = target.reshape(-1).long()
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        if t.numel():
            # Out-of-range indices would silently corrupt other cells; refuse them.
            if bool((t < 0).any() | (t >= k).any() | (p < 0).any() | (p >= k).any()):
                raise ValueError(f"ConfusionMatrixMetric: class index outside 0..{k - 1}")
            self.cm += torch.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def compute(self) -> Tensor:
        """Return the accumulated (K, K) long tensor."""
        return self.cm.clone()


def proportion_mae(p_hat: Tensor | np.ndarray, p: Tensor | np.ndarray) -> float:
    """Mean absolute error between predicted and true proportions, over patches and classes.

    Args:
        p_hat: (B, K) predicted proportions.
        p: (B, K) true proportions.
    """
    a = p_hat.detach().cpu().double().numpy() if isinstance(p_hat, Tensor) else np.asarray(p_hat, np.float64)
    b = p.detach().cpu().double().numpy() if isinstance(p, Tensor) else np.asarray(p, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"proportion_mae: shapes {a.shape} and {b.shape} differ")
    return float(np.abs(a - b).mean())


class ProportionMAEMetric(Metric):
    """torchmetrics accumulator of :func:`proportion_mae` over a split (DDP-safe sums)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("abs_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, p_hat: Tensor, p: Tensor) -> None:
        """Add (B, K) predicted and true proportions."""
        if p_hat.shape != p.shape:
            raise ValueError(f"ProportionMAEMetric: shapes {tuple(p_hat.shape)} and {tuple(p.shape)} differ")
        self.abs_sum += (p_hat.detach().double() - p.detach().double()).abs().sum()
        self.count += p.numel()

    def compute(self) -> Tensor:
        """Mean absolute error (NaN when nothing was added)."""
        return (
            self.abs_sum / self.count if int(self.count) else torch.tensor(float("nan"), dtype=torch.float64)
        )


class PresenceF1Metric(Metric):
    """Micro F1 of class presence over all (patch, class) pairs, summed across DDP ranks.

    ``update(pred (B, K) 0/1, target (B, K) 0/1)``; ``compute()`` gives 2TP / (2TP + FP + FN), or 1.0 when
    there is no positive in either (nothing to find and nothing wrongly found).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add (B, K) predicted and true presence (values > 0.5 count as present)."""
        if pred.shape != target.shape:
            raise ValueError(f"PresenceF1Metric: shapes {tuple(pred.shape)} and {tuple(target.shape)} differ")
        p = pred > 0.5
        t = target > 0.5
        self.tp += (p & t).sum()
        self.fp += (p & ~t).sum()
        self.fn += (~p & t).sum()

    def compute(self) -> Tensor:
        """Micro F1 as a float tensor."""
        denom = 2 * self.tp + self.fp + self.fn
        if int(denom) == 0:
            return torch.tensor(1.0)
        return (2 * self.tp).float() / denom.float()


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
