import numpy as np
import pytest

from segweak.errors import SegweakError
from segweak.weak.labels import class_counts, presence, proportions


def test_class_counts_matches_loop_and_ignores_255():
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 4, size=(6, 9, 7)).astype(np.uint8)
    masks[0, :3] = 255
    masks[5] = 255
    counts = class_counts(masks, 4)
    assert counts.dtype == np.int64 and counts.shape == (6, 4)
    for i in range(6):
        for k in range(4):
            assert counts[i, k] == int((masks[i] == k).sum())
    assert counts[5].sum() == 0
    assert counts[0].sum() == 9 * 7 - 3 * 7


def test_proportions_exact_and_nan_rows():
    counts = np.array([[1, 3, 0], [0, 0, 0], [5, 0, 5]])
    p = proportions(counts)
    np.testing.assert_allclose(p[0], [0.25, 0.75, 0.0])
    assert np.isnan(p[1]).all()
    np.testing.assert_allclose(p[2], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(p[[0, 2]].sum(axis=1), 1.0)


def test_presence_threshold_is_strict():
    p = proportions(np.array([[1, 3, 0], [0, 0, 0], [5, 0, 5]]))
    np.testing.assert_array_equal(presence(p, 0.0), [[1, 1, 0], [0, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(presence(p, 0.25), [[0, 1, 0], [0, 0, 0], [1, 0, 1]])
    with pytest.raises(SegweakError, match="threshold"):
        presence(p, 1.0)


def test_bad_counts():
    with pytest.raises(SegweakError):
        proportions(np.array([1, 2, 3]))
    with pytest.raises(SegweakError):
        proportions(np.array([[1, -1]]))
