import numpy as np
import pytest

from segweak.errors import SegweakError
from segweak.weak.shuffle import shuffle_assignment


def test_derangement_for_every_size_and_seed():
    for n in range(2, 40):
        for seed in range(8):
            perm = shuffle_assignment(n, seed)
            assert perm.dtype == np.int64
            assert sorted(perm.tolist()) == list(range(n))
            assert (perm != np.arange(n)).all()


def test_deterministic_per_seed_and_seeds_differ():
    assert np.array_equal(shuffle_assignment(50, 3), shuffle_assignment(50, 3))
    assert not np.array_equal(shuffle_assignment(50, 3), shuffle_assignment(50, 4))


def test_small_sizes_and_errors():
    assert shuffle_assignment(0, 0).tolist() == []
    assert shuffle_assignment(1, 0).tolist() == [0]
    assert shuffle_assignment(2, 5).tolist() == [1, 0]
    with pytest.raises(SegweakError, match="n must be"):
        shuffle_assignment(-1, 0)
