"""Statistics of the report (mean ± std, the paired t-test) against scipy's reference implementation."""

from __future__ import annotations

import math

import pytest
import scipy.stats

from segweak.report import stats

BASE = [0.50, 0.52, 0.55]
FINE = [0.56, 0.57, 0.62]


def test_paired_test_matches_scipy_ttest_rel():
    a = {(0, s): v for s, v in enumerate(FINE)}
    b = {(0, s): v for s, v in enumerate(BASE)}
    pr = stats.paired_test(a, b)
    ref = scipy.stats.ttest_rel(FINE, BASE)
    assert pr.n == 3 and pr.improved == 3
    assert pr.mean == pytest.approx(sum(FINE) / 3 - sum(BASE) / 3)
    assert pr.t == pytest.approx(ref.statistic)
    assert pr.p == pytest.approx(ref.pvalue)
    lo, hi = pr.ci
    assert lo < pr.mean < hi


def test_paired_test_small_and_degenerate_cases():
    one = stats.paired_test({(0, 0): 0.6}, {(0, 0): 0.5})
    assert one.n == 1 and one.p is None and "no statistical test" in one.verdict
    same = stats.paired_test({(0, 0): 0.5, (0, 1): 0.4}, {(0, 0): 0.5, (0, 1): 0.4})
    assert same.mean == 0 and same.p is None and "identical" in same.verdict
    const = stats.paired_test({(0, 0): 0.6, (0, 1): 0.5}, {(0, 0): 0.5, (0, 1): 0.4})
    assert const.mean == pytest.approx(0.1) and "same difference" in const.verdict
    unpaired = stats.paired_test({(0, 0): 0.6}, {(0, 1): 0.5})
    assert unpaired.n == 0 and unpaired.mean is None
    noisy = stats.paired_test({(0, 0): 0.6, (0, 1): 0.4}, {(0, 0): 0.5, (0, 1): 0.45})
    assert noisy.p is not None and noisy.p > 0.05 and "noise" in noisy.verdict and "n = 2" in noisy.verdict


def test_mean_std_skips_nulls():
    m, sd, n = stats.mean_std([0.2, None, 0.4])
    assert n == 2 and m == pytest.approx(0.3) and sd == pytest.approx(math.sqrt(0.02))
    assert stats.mean_std([None]) == (None, None, 0)


def test_first_crossing_interpolates_linearly_between_swept_points():
    xs, ys = [0.01, 0.05, 0.10, 0.20], [0.40, 0.50, 0.60, 0.64]
    c = stats.first_crossing(xs, ys, 0.55)
    assert c.kind == "interpolated" and c.monotone
    assert c.x == pytest.approx(0.075)  # half-way between 5 % and 10 %
    assert stats.first_crossing(xs, ys, 0.62).x == pytest.approx(0.15)
    assert stats.first_crossing(xs, ys, 0.50).x == pytest.approx(0.05)  # exactly on a swept point
    assert stats.first_crossing(xs, ys, 0.40).x == pytest.approx(0.01)
    # Order of the swept points does not matter.
    assert stats.first_crossing(xs[::-1], ys[::-1], 0.55).x == pytest.approx(0.075)


def test_first_crossing_in_log_x_is_straight_on_a_log_axis():
    xs, ys = [0.01, 0.05, 0.2], [0.40, 0.50, 0.60]
    # Half-way in y between 5 % and 20 %: 10 % in log x (the geometric mean), 12.5 % in x.
    log = stats.first_crossing(xs, ys, 0.55, log=True)
    assert (log.kind, log.log) == ("interpolated", True) and log.x == pytest.approx(0.1)
    assert stats.first_crossing(xs, ys, 0.55).x == pytest.approx(0.125)
    assert stats.first_crossing(xs, ys, 0.48, log=True).x == pytest.approx(0.01 * 5**0.8)
    # Swept points and the ends are the same in either scale.
    assert stats.first_crossing(xs, ys, 0.50, log=True).x == pytest.approx(0.05)
    assert stats.first_crossing(xs, ys, 0.61, log=True) == stats.Crossing("above", 0.2, True, True)
    with pytest.raises(ValueError, match="positive xs"):
        stats.first_crossing([0.0, 0.1], [0.5, 0.6], 0.55, log=True)


def test_first_crossing_outside_the_swept_range_is_not_extrapolated():
    xs, ys = [0.01, 0.05, 0.10], [0.40, 0.50, 0.60]
    above = stats.first_crossing(xs, ys, 0.61)
    assert (above.kind, above.x) == ("above", 0.10)
    below = stats.first_crossing(xs, ys, 0.39)
    assert (below.kind, below.x) == ("below", 0.01)
    one = stats.first_crossing([0.1], [0.5], 0.5)
    assert (one.kind, one.x) == ("interpolated", 0.1)


def test_first_crossing_of_a_non_monotone_curve_is_the_first_one():
    # Seed noise: the curve dips at 10 %; 0.55 is reached between 1 % and 5 % first (and again later).
    xs, ys = [0.01, 0.05, 0.10, 0.20], [0.40, 0.60, 0.50, 0.70]
    c = stats.first_crossing(xs, ys, 0.55)
    assert c.kind == "interpolated" and not c.monotone
    assert c.x == pytest.approx(0.01 + 0.75 * 0.04)
    # A value only reached after the dip: the crossing on the last segment.
    assert stats.first_crossing(xs, ys, 0.65).x == pytest.approx(0.1 + 0.75 * 0.1)
    with pytest.raises(ValueError, match="distinct"):
        stats.first_crossing([0.1, 0.1], [0.5, 0.6], 0.5)
    with pytest.raises(ValueError, match="as many"):
        stats.first_crossing([], [], 0.5)
