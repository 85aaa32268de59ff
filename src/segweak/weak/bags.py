"""Bags of patches: per-patch sums -> per-bag values, for weak labels given per region (``docs/methods.md``).

A weak sub-batch read with imported weak labels (``weak.labels: NAME``) carries ``bag`` (B,) int64:
the bag each patch belongs to. Every patch of a bag in the batch carries the bag's proportions; the
bag's predicted proportions are the area-weighted mean of its patches' p̂, i.e. the sum of q over all
counted pixels of the bag divided by their number. Bags are renumbered ``0..G-1`` in the order of
their sorted ids, so a batch of one-patch bags in increasing id order keeps the patch order.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bag_inverse(bag: Tensor) -> tuple[Tensor, int]:
    """Bag slot of every patch and the number of bags ``G`` in the batch.

    Args:
        bag: (B,) integer bag ids.

    Returns:
        ``(inverse, G)``: (B,) int64 slots in ``0..G-1`` (sorted by id).
    """
    uniq, inverse = torch.unique(bag, return_inverse=True)
    return inverse, int(uniq.numel())


def bag_sum(values: Tensor, inverse: Tensor, n_bags: int) -> Tensor:
    """Sum of the rows of ``values`` (B, ...) per bag: (G, ...)."""
    out = values.new_zeros((n_bags, *values.shape[1:]))
    return out.index_add_(0, inverse.to(values.device), values)


def bag_mean(values: Tensor, inverse: Tensor, n_bags: int) -> Tensor:
    """Mean of the rows of ``values`` (B, ...) per bag: (G, ...) (for per-bag constants such as targets)."""
    count = bag_sum(torch.ones_like(values[:, :1]), inverse, n_bags)
    return bag_sum(values, inverse, n_bags) / count.reshape(n_bags, *([1] * (values.dim() - 1)))


def bag_max(values: Tensor, inverse: Tensor, n_bags: int) -> Tensor:
    """Maximum of the rows of ``values`` (B, K) per bag: (G, K) (MIL: present in some patch)."""
    index = inverse.to(values.device)[:, None].expand_as(values)
    out = values.new_full((n_bags, values.shape[1]), float("-inf"))
    return out.scatter_reduce(0, index, values, reduce="amax", include_self=True)
