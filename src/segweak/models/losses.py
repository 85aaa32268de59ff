"""Pixel losses: cross-entropy and Dice on a network's pixel logits against class-index masks.

They live next to the network (:mod:`segweak.models`), below ``train/`` (the task,
:meth:`~segweak.train.module.SegModule.pixel_loss` applies the run's class weights and Dice weight)
and ``methods/`` (which call them through the task), and depend on torch only, so tests and
benchmarks use them without building a Lightning module. Class proportion losses (weak labels) are
in :mod:`segweak.weak.losses`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segweak.data.palette import IGNORE_INDEX


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Multi-class soft Dice loss over the non-ignored pixels.

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, H, W) int64 class indices, ``ignore_index`` excluded.
        ignore_index: Target value that is not counted.

    Returns:
        Scalar ``1 - mean_k dice_k`` over classes present in the target or the prediction.
    """
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1).to(logits.dtype)  # (B,1,H,W)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(0, num_classes - 1) * (target != ignore_index), num_classes)
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid  # (B,K,H,W)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    # Classes with neither prediction nor target mass carry no information: leave them out. Masked
    # arithmetic instead of boolean indexing keeps the GPU from synchronising every step.
    keep = (denom > 0).to(probs.dtype)
    dice = (2 * inter + 1e-6) / (denom + 1e-6)
    n_keep = keep.sum()
    mean_dice = (dice * keep).sum() / n_keep.clamp_min(1.0)
    # No class with any mass (an all-ignore batch): 0 loss, still connected to the graph.
    return torch.where(n_keep > 0, 1.0 - mean_dice, logits.sum() * 0.0)


def pixel_loss(
    logits: torch.Tensor,
    mask: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    dice_weight: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy (ignore 255, optional class weights) + ``dice_weight`` × Dice.

    Args:
        logits: (B, K, H, W) raw scores.
        mask: (B, H, W) int64 class indices, 255 = ignore.
        class_weights: Optional (K,) cross-entropy weights.
        dice_weight: Weight of :func:`dice_loss` (0 disables it).

    Returns:
        Scalar loss; 0 (still attached to the graph) for a batch whose pixels are all ignored.
    """
    weight = class_weights.to(logits.dtype) if class_weights is not None else None
    # Sum / (weighted) valid count equals cross_entropy's "mean" reduction, but an all-ignore batch
    # gives 0 instead of NaN (0/0), without a data-dependent branch that would make the GPU
    # synchronise every step.
    valid = mask != IGNORE_INDEX
    if weight is None:
        denom = valid.sum().to(logits.dtype)
    else:
        denom = (weight[torch.where(valid, mask, 0)] * valid).sum()
    total = F.cross_entropy(logits, mask, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    loss = total / denom.clamp_min(1e-12)
    if dice_weight > 0:
        loss = loss + dice_weight * dice_loss(logits, mask)
    return loss
