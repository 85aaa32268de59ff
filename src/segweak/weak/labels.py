"""Weak labels: per-patch class proportions and class presence, from per-class pixel counts.

Weak labels are never stored: they are this deterministic function of the per-class counts recorded
in the prepared store (``Store.counts``), so changing the definition cannot leave stale labels behind.
Proportions are computed over the *valid* pixels only (pixels whose mask is not ignore = 255), which
is why the dataset also returns a ``valid`` map: a weak loss must average its predictions over the
same area.
"""

from __future__ import annotations

import numpy as np

from segweak.errors import SegweakError


def proportions(counts: np.ndarray) -> np.ndarray:
    """Class proportions of each patch over its valid pixels.

    Args:
        counts: ``(N, K)`` non-negative integer per-class pixel counts (ignore pixels not counted).

    Returns:
        ``(N, K)`` float64; each row sums to 1. Rows whose counts are all zero (no valid pixel) are
        all-NaN: such patches carry no weak label and the caller must exclude them (splits do).

    Raises:
        SegweakError: When ``counts`` is not 2-D or has negative entries.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise SegweakError(f"weak labels need an (N, K) count array, got shape {counts.shape}")
    if counts.size and counts.min() < 0:
        raise SegweakError("per-class pixel counts must be non-negative")
    counts = counts.astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        props = counts / total
    props[total[:, 0] == 0] = np.nan
    return props


def presence(props: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Which classes are present in each patch.

    Args:
        props: ``(N, K)`` proportions from :func:`proportions` (NaN rows give all-False).
        threshold: A class is present when its proportion is strictly greater than this, in ``[0, 1)``.

    Returns:
        ``(N, K)`` bool.

    Raises:
        SegweakError: When the threshold is outside ``[0, 1)``.
    """
    if not 0.0 <= float(threshold) < 1.0:
        raise SegweakError(f"presence threshold must be in [0, 1), got {threshold}")
    props = np.asarray(props, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(props, nan=0.0) > float(threshold)


def class_counts(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class pixel counts of a stack of masks, ignoring values ``>= num_classes`` (e.g. 255).

    Vectorised with one ``np.bincount`` over ``patch_index * (K + 1) + class``.

    Args:
        masks: ``(N, H, W)`` uint8 class indices (255 = ignore).
        num_classes: ``K``.

    Returns:
        ``(N, K)`` int64 counts.
    """
    masks = np.asarray(masks)
    n = masks.shape[0]
    flat = masks.reshape(n, -1).astype(np.int64)
    # Map every non-class value (ignore) to the extra bin K, then drop that bin.
    flat = np.where(flat < num_classes, flat, num_classes)
    offsets = (np.arange(n, dtype=np.int64) * (num_classes + 1))[:, None]
    counts = np.bincount((flat + offsets).ravel(), minlength=n * (num_classes + 1))
    return counts.reshape(n, num_classes + 1)[:, :num_classes].astype(np.int64)
