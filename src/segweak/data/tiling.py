"""Sliding windows over a tile: regular steps, the last window shifted to end at the edge.

Edge policy ``"shift"``: windows start at ``0, S, 2S, ...`` along each axis and, when the tile size is
not a multiple of the stride, one extra window is placed so that it ends exactly at the tile edge.
Every patch therefore consists of real pixels (no padding); the price is that the last window can
overlap its neighbour, so a few pixels near the right/bottom edge appear in two patches. This overlap
is accepted on purpose: padding would invent pixels and a different label statistic.

The stride must satisfy ``1 <= stride <= patch``: a stride larger than the patch would silently skip
pixels, so it is rejected rather than warned about.
"""

from __future__ import annotations

import numpy as np

from segweak.errors import SegweakError

EDGE_POLICY = "shift"
"""Name of the edge policy recorded in ``store.json``."""


def check_patch_stride(patch: int, stride: int) -> None:
    """Validate the patch size and stride.

    Args:
        patch: Square patch side in pixels.
        stride: Step between window starts in pixels.

    Raises:
        SegweakError: When ``patch < 1`` or the stride is outside ``1..patch``.
    """
    if int(patch) != patch or patch < 1:
        raise SegweakError(f"--patch must be a positive integer, got {patch}")
    if int(stride) != stride or stride < 1 or stride > patch:
        raise SegweakError(
            f"--stride must be between 1 and --patch ({patch}), got {stride}; a stride larger than the "
            "patch would skip pixels"
        )


def window_starts(length: int, patch: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis.

    Args:
        length: Axis length in pixels (must be >= ``patch``).
        patch: Window length.
        stride: Step between starts (``1..patch``).

    Returns:
        Sorted unique start offsets ``0, stride, 2*stride, ...`` plus ``length - patch`` when the
        regular steps do not end exactly at the edge.
    """
    if length < patch:
        raise SegweakError(f"axis of length {length} is smaller than the patch {patch}")
    last = length - patch
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def windows(shape: tuple[int, int], patch: int, stride: int, tile_id: str = "tile") -> list[tuple[int, int]]:
    """All window origins over a tile, row-major.

    Args:
        shape: Tile ``(H, W)``.
        patch: Square patch side ``P``.
        stride: Step ``S`` (``1..P``).
        tile_id: Tile name used in error messages.

    Returns:
        ``[(row, col), ...]`` top-left corners; each window covers ``[row:row+P, col:col+P]``.

    Raises:
        SegweakError: When the patch is larger than the tile or the stride is invalid.
    """
    check_patch_stride(patch, stride)
    h, w = int(shape[0]), int(shape[1])
    if h < patch or w < patch:
        raise SegweakError(
            f"tile {tile_id!r} is {h}x{w} px, smaller than the patch size {patch}; "
            f"choose a smaller --patch (at most {min(h, w)})"
        )
    rows = window_starts(h, patch, stride)
    cols = window_starts(w, patch, stride)
    return [(r, c) for r in rows for c in cols]


def count_windows(shape: tuple[int, int], patch: int, stride: int, tile_id: str = "tile") -> int:
    """Count the windows :func:`windows` returns for a tile."""
    return len(windows(shape, patch, stride, tile_id))


def extract(array: np.ndarray, origins: list[tuple[int, int]], patch: int) -> np.ndarray:
    """Stack the windows of an array.

    Args:
        array: ``(H, W)`` or ``(H, W, C)`` array.
        origins: Window origins from :func:`windows`.
        patch: Patch side ``P``.

    Returns:
        ``(n, P, P)`` or ``(n, P, P, C)`` array (a copy), same dtype.
    """
    out = np.empty((len(origins), patch, patch) + array.shape[2:], dtype=array.dtype)
    for i, (r, c) in enumerate(origins):
        out[i] = array[r : r + patch, c : c + patch]
    return out
