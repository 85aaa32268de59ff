"""Consistency losses between two views or two models: FixMatch pseudo-labels and mean-teacher MSE.

* :func:`fixmatch_targets` + :func:`consistency_ce`: FixMatch (Sohn et al., "FixMatch: simplifying
  semi-supervised learning with consistency and confidence", NeurIPS 2020), per pixel: the argmax of
  the prediction on the weakly augmented view is the target for the strongly augmented view where the
  maximum probability reaches the threshold τ.
* :func:`softmax_mse`: the mean-teacher consistency (Tarvainen & Valpola, NeurIPS 2017): squared
  difference between student and teacher softmax outputs.

All computations are float32 even under mixed precision and need no GPU->CPU synchronisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segweak.errors import SegweakError
from segweak.weak.area import area_weights

IGNORE = 255
"""Target of pixels that carry no pseudo-label."""

REDUCTIONS = ("kept", "all")


@torch.no_grad()
def fixmatch_targets(
    weak_logits: Tensor, threshold: float, area_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Confident pseudo-labels from the weak view's prediction.

    ŷ_i = argmax_c q_{c,i} where max_c q_{c,i} ≥ τ (and the pixel is in the area), IGNORE otherwise.

    Args:
        weak_logits: (B, K, H, W) logits on the weakly augmented view (no gradient flows back).
        threshold: Confidence threshold τ in [0, 1]; FixMatch uses 0.95.
        area_mask: (B, H, W) non-zero = pixel may get a target; None = every pixel.

    Returns:
        ``(targets, fraction)``: (B, H, W) int64 targets with IGNORE (255) on unconfident or outside
        pixels, and a float32 scalar tensor, the fraction of area pixels kept (for logging).

    Raises:
        SegweakError: When ``threshold`` is outside [0, 1].
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise SegweakError(f"FixMatch: threshold must be in [0, 1], got {threshold}")
    b, _, h, w = weak_logits.shape
    conf, arg = torch.softmax(weak_logits.float(), dim=1).max(dim=1)
    v = area_weights(area_mask, b, h, w, weak_logits.device) > 0
    kept = (conf >= float(threshold)) & v
    targets = torch.where(kept, arg, torch.full_like(arg, IGNORE))
    fraction = kept.float().sum() / v.float().sum().clamp_min(1.0)
    return targets, fraction


def consistency_ce(strong_logits: Tensor, targets: Tensor, reduction: str = "kept") -> Tensor:
    """Cross-entropy of the strong view's prediction against pseudo-label targets.

    With M the set of pixels whose target is not IGNORE,

        ``kept``: L = (1/|M|) Σ_{i∈M} −log q_{ŷ_i, i}       (0 when M is empty)
        ``all``:  L = (1/|all pixels|) Σ_{i∈M} −log q_{ŷ_i, i}   (FixMatch's normalisation: the
                  loss shrinks with the fraction of confident pixels)

    Args:
        strong_logits: (B, K, H, W) logits on the strongly augmented view.
        targets: (B, H, W) int64 targets, IGNORE = no target.
        reduction: ``"kept"`` (default) or ``"all"``.

    Returns:
        Scalar float32, attached to the graph of ``strong_logits`` even when no pixel is kept.

    Raises:
        SegweakError: For an unknown ``reduction``.
    """
    if reduction not in REDUCTIONS:
        raise SegweakError(
            f"consistency loss: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}"
        )
    targets = targets.to(strong_logits.device)
    total = F.cross_entropy(strong_logits.float(), targets, ignore_index=IGNORE, reduction="sum")
    # A sum over no pixel is an exact 0 that still depends on the logits, so backward works.
    if reduction == "all":
        return total / max(targets.numel(), 1)  # a Python number: no host-to-device copy
    return total / (targets != IGNORE).float().sum().clamp_min(1.0)


def softmax_mse(student_logits: Tensor, teacher_logits: Tensor, area_mask: Tensor | None = None) -> Tensor:
    """Mean-teacher consistency: mean over pixels and classes of (softmax(z_s) − softmax(z_t))².

    L = (1/(N K)) Σ_i v_i Σ_c (q^s_{c,i} − q^t_{c,i})², N = Σ_i v_i. Dividing by K follows the
    reference implementation of Tarvainen & Valpola. The teacher is a target: no gradient flows to it.

    Args:
        student_logits: (B, K, H, W).
        teacher_logits: (B, K, H, W).
        area_mask: (B, H, W) non-zero = counted; None = every pixel.

    Returns:
        Scalar float32 (0, attached to the student's graph, when the area is empty).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"softmax_mse: student and teacher logits differ in shape: "
            f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        )
    b, k, h, w = student_logits.shape
    v = area_weights(area_mask, b, h, w, student_logits.device)
    qs = torch.softmax(student_logits.float(), dim=1)
    qt = torch.softmax(teacher_logits.detach().float(), dim=1).to(qs.device)
    per_pixel = (qs - qt).square().sum(dim=1)  # (B, H, W)
    return (per_pixel * v).sum() / (v.sum() * k).clamp_min(1.0)
