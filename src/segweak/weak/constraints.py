"""Size-interval constraint on the predicted class shares of a patch (Kervadec et al., MedIA 2019).

With q = softmax(z) per pixel, the predicted share of class c over the area is
p̂_c = Σ_i v_i q_{c,i} / Σ_i v_i (whole patch when no area mask is given). The weak label p_c gives the
interval [a_c, b_c] = [max(0, (1 − τ) p_c), (1 + τ) p_c]; the per-patch penalty is

    Σ_c max(0, a_c − p̂_c)² + max(0, p̂_c − b_c)²

which is 0 with zero gradient inside the interval. τ = 0 is the squared error Σ_c (p̂_c − p_c)².
Computation is in float32. Formulas: ``docs/methods.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from segweak.errors import SegweakError


def interval_loss_mean(scores: Tensor, p: Tensor, tau: float, area_mask: Tensor | None = None) -> Tensor:
    """Interval penalty averaged over the patches whose area is not empty.

    Args:
        scores: (B, K, H, W) pixel logits.
        p: (B, K) weak-label proportions.
        tau: Relative half-width τ ≥ 0 of the interval around each proportion.
        area_mask: (B, H, W) 0/1 area the proportions were computed over, or None for the whole patch.

    Returns:
        Scalar; 0 (still attached to the graph) when no patch has a non-empty area.

    Raises:
        SegweakError: For a negative ``tau``.
        ValueError: For mismatched shapes.
    """
    if not tau >= 0.0:
        raise SegweakError(f"interval loss: tau must be >= 0, got {tau}")
    b, k, h, w = scores.shape
    if tuple(p.shape) != (b, k):
        raise ValueError(f"p must be (B, K) = {(b, k)}, got {tuple(p.shape)}")
    if area_mask is None:
        v = scores.new_ones((b, h, w), dtype=torch.float32)
    elif tuple(area_mask.shape) != (b, h, w):
        raise ValueError(f"area_mask must be (B, H, W) = {(b, h, w)}, got {tuple(area_mask.shape)}")
    else:
        v = (area_mask.to(scores.device) != 0).float()
    n = v.sum(dim=(1, 2))
    keep = (n > 0).float()
    q = torch.softmax(scores.float(), dim=1)
    p_hat = (q * v[:, None]).sum(dim=(2, 3)) / n.clamp_min(1.0)[:, None]
    # Patches without information get the prediction itself as target: finite value, zero gradient.
    p = torch.where(keep[:, None] > 0, p.to(p_hat), p_hat.detach())
    below = ((1.0 - tau) * p).clamp_min(0.0) - p_hat
    above = p_hat - (1.0 + tau) * p
    rows = (below.clamp_min(0.0).square() + above.clamp_min(0.0).square()).sum(dim=1)
    return (rows * keep).sum() / keep.sum().clamp_min(1.0)
