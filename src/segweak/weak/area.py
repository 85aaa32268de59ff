"""The area a weak label was computed over, as a mask that losses and pseudo-labels can use.

A weak label (proportions, presence) describes the *valid* pixels of a patch (the dataset's ``valid``
map: ground truth not ignore). Losses that compare predictions with it must look at the same pixels,
so every function of ``segweak.weak`` takes an optional ``area_mask`` (B, H, W), 1 = counted.
"""

from __future__ import annotations

import torch
from torch import Tensor


def area_weights(
    area_mask: Tensor | None, batch: int, height: int, width: int, device: torch.device
) -> Tensor:
    """Return the area mask as float32 0/1 weights on ``device``; all ones when ``area_mask`` is None.

    Args:
        area_mask: (B, H, W) mask (bool, 0/1 int or float; non-zero = counted), or None.
        batch: B.
        height: H.
        width: W.
        device: Device of the result.

    Returns:
        (B, H, W) float32 tensor of 0.0 / 1.0.

    Raises:
        ValueError: When ``area_mask`` is not (B, H, W).
    """
    if area_mask is None:
        return torch.ones((batch, height, width), dtype=torch.float32, device=device)
    if tuple(area_mask.shape) != (batch, height, width):
        raise ValueError(
            f"area_mask must be (B, H, W) = {(batch, height, width)}, got {tuple(area_mask.shape)}"
        )
    return (area_mask.to(device) != 0).float()


def masked_patch_mean(rows: Tensor, keep: Tensor) -> Tensor:
    """Mean of per-patch values over the kept patches; 0 (still attached to the graph) if none is kept.

    Arithmetic instead of boolean indexing, so that no GPU->CPU synchronisation happens.

    Args:
        rows: (B,) per-patch losses.
        keep: (B,) float 0/1, 1 = the patch counts.

    Returns:
        Scalar.
    """
    return (rows * keep).sum() / keep.sum().clamp_min(1.0)
