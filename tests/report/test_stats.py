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
