"""Pixel logits -> patch-level quantities: predicted proportions and pooled class scores.

Every function takes pixel logits ``z`` (B, K, H, W) and an optional area mask ``v`` (B, H, W), 1 for a
pixel that counts; ``None`` means the whole patch (``weak.area: patch``, the leak-free default). A
patch whose mask has no pixel falls back to the whole patch, so rows stay finite. Computation is in
float32 even under mixed precision, for the logs and exps. Formulas: ``docs/methods.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def area_mask(logits: Tensor, valid: Tensor | None) -> Tensor:
    """(B, H, W) float32 mask on ``logits``' device; all ones when ``valid`` is None.

    Args:
        logits: (B, K, H, W) pixel logits (only their shape and device are used).
        valid: (B, H, W) 0/1 mask, or None for the whole patch.

    Raises:
        ValueError: When ``valid`` does not match the logits' batch and spatial size.
    """
    b, _, h, w = logits.shape
    if valid is None:
        return logits.new_ones((b, h, w), dtype=torch.float32)
    if valid.shape != (b, h, w):
        raise ValueError(f"valid mask must be (B, H, W) = {(b, h, w)}, got {tuple(valid.shape)}")
    return valid.to(device=logits.device, dtype=torch.float32)


def _nonempty(logits: Tensor, valid: Tensor | None) -> Tensor:
    """:func:`area_mask` with empty patches replaced by the whole patch."""
    v = area_mask(logits, valid)
    n = v.sum(dim=(1, 2))
    return torch.where((n > 0)[:, None, None], v, torch.ones_like(v))


def soft_proportions(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean per-pixel softmax over the area: p̂ (B, K), rows summing to 1.

    Args:
        logits: (B, K, H, W) pixel logits.
        valid: (B, H, W) 0/1 mask, or None for the whole patch.

    Returns:
        (B, K) float32 proportions.
    """
    v = _nonempty(logits, valid)
    q = torch.softmax(logits.float(), dim=1)
    return (q * v[:, None]).sum(dim=(2, 3)) / v.sum(dim=(1, 2))[:, None]


def hard_proportions(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Fraction of the area's pixels whose argmax is each class: (B, K), rows sum to 1."""
    v = _nonempty(logits, valid)
    k = logits.shape[1]
    onehot = F.one_hot(logits.argmax(dim=1), k).permute(0, 3, 1, 2).float()
    return (onehot * v[:, None]).sum(dim=(2, 3)) / v.sum(dim=(1, 2))[:, None]


def lse_pool(logits: Tensor, valid: Tensor | None = None, r: float = 5.0) -> Tensor:
    """Log-sum-exp pooling of class logits over the area (Pinheiro & Collobert, 2015).

    s_k = (1/r) · log( (1/N) Σ_{px in area} exp(r · z_k) ), N = pixels in the area. It lies between
    the mean (r → 0) and the max (r → ∞) of z_k over the area.

    Args:
        logits: (B, K, H, W).
        valid: (B, H, W) 0/1 or None.
        r: Sharpness (> 0).

    Returns:
        (B, K) float32 pooled scores.
    """
    v = _nonempty(logits, valid)
    z = logits.float().flatten(2)  # (B, K, HW)
    mask = (v.flatten(1) > 0)[:, None, :]
    rz = (r * z).masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(rz, dim=2) - torch.log(v.sum(dim=(1, 2)))[:, None]
    return lse / r


def max_pool(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Max of each class logit over the area: (B, K) float32."""
    v = _nonempty(logits, valid)
    z = logits.float().flatten(2)
    mask = (v.flatten(1) > 0)[:, None, :]
    return z.masked_fill(~mask, float("-inf")).amax(dim=2)
