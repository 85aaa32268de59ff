"""Weak-label shuffling for the ``shuffled`` control experiment.

The control trains exactly like a weak method, but each weak patch receives the weak label of
*another* weak patch: the labels keep their distribution over the training set and lose any link to
the image. If a weak method helps because of what its labels say about the image, the shuffled
control must not help as much.
"""

from __future__ import annotations

import numpy as np

from segweak.errors import SegweakError


def shuffle_assignment(n: int, seed: int) -> np.ndarray:
    """Draw a random derangement of 0..n-1: ``perm[i] != i`` for every i when n > 1.

    Patch i gets the weak label of patch ``perm[i]``. The permutation is drawn uniformly among the
    derangements by rejection: uniform permutations from ``numpy.random.default_rng(seed)`` are drawn
    until one has no fixed point (about e ≈ 2.7 draws on average). The same (n, seed) always gives the
    same permutation. n = 1 gives [0] (a single patch cannot get another patch's label).

    Args:
        n: Number of weak patches (≥ 0).
        seed: Seed of the draw.

    Returns:
        (n,) int64 permutation.

    Raises:
        SegweakError: When ``n`` is negative.
    """
    if n < 0:
        raise SegweakError(f"shuffle_assignment: n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    idx = np.arange(n, dtype=np.int64)
    if n < 2:
        return idx
    while True:
        perm = rng.permutation(n).astype(np.int64)
        if not (perm == idx).any():
            return perm
