"""Statistics of the report: mean ± std over seeds and the paired t-test between arms.

All comparisons are over runs that share ``(split_seed, seed)``, i.e. the same data split and the same
initial weights/data order: Δ = metric(stage) − metric(reference) per pair; mean Δ, its sample
standard deviation (ddof 1), a 95 % confidence interval from Student's t (:mod:`scipy.stats`), and the
two-sided paired t-test p-value. With fewer than 2 pairs no test is possible and the verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

ALPHA = 0.05
"""Significance level used in verdicts and confidence intervals."""


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample std (ddof 1; 0 for one value) over the non-null ``values``; and their count."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    if n == 0:
        return None, None, 0
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, sd, n


def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value of Student's t statistic ``t`` with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return float(2.0 * stats.t.sf(abs(t), df))


def t_quantile(q: float, df: int) -> float:
    """Quantile ``q`` of Student's t with ``df`` degrees of freedom."""
    return float(stats.t.ppf(q, df))


@dataclass
class Paired:
    """Paired comparison of a stage against a reference over matched seeds.

    Attributes:
        n: Number of pairs.
        mean: Mean difference (stage − reference).
        std: Sample std of the differences (ddof 1; ``None`` when n < 2).
        ci: 95 % confidence interval of the mean difference (``None`` when n < 2).
        t: t statistic (``None`` when undefined).
        p: Two-sided paired t-test p-value (``None`` when undefined).
        improved: Pairs where the stage is better than the reference.
        verdict: One sentence a reader can act on.
    """

    n: int
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None
    t: float | None
    p: float | None
    improved: int
    verdict: str


def paired_test(
    stage: dict[Any, float], reference: dict[Any, float], ref_name: str = "the reference"
) -> Paired:
    """Paired t-test of ``stage`` vs ``reference`` over the keys both have (e.g. ``(split, seed)``).

    ``ref_name`` names the reference in the verdict sentence.
    """
    keys = sorted(k for k in stage if k in reference and stage[k] is not None and reference[k] is not None)
    diffs = [float(stage[k]) - float(reference[k]) for k in keys]
    n = len(diffs)
    improved = sum(d > 0 for d in diffs)
    if n == 0:
        return Paired(
            0, None, None, None, None, None, 0, f"no runs share a seed with {ref_name}: no comparison"
        )
    m = sum(diffs) / n
    if n == 1:
        return Paired(
            1, m, None, None, None, None, improved,
            "only 1 seed: no statistical test is possible, treat the difference as anecdotal",
        )  # fmt: skip
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    if se == 0.0:
        if m == 0.0:
            return Paired(n, 0.0, 0.0, (0.0, 0.0), None, None, 0, f"identical results on all {n} seeds")
        return Paired(
            n, m, 0.0, (m, m), math.copysign(math.inf, m), 0.0, improved,
            f"the same difference on all {n} seeds (no variance: the t-test is degenerate)",
        )  # fmt: skip
    t = m / se
    p = t_two_sided_p(t, n - 1)
    h = t_quantile(1 - ALPHA / 2, n - 1) * se
    if p < ALPHA:
        better = "better" if m > 0 else "worse"
        verdict = f"{better} than {ref_name} (paired t-test p = {format_p(p)} < {ALPHA})"
    else:
        verdict = f"within seed-to-seed noise (paired t-test p = {format_p(p)} ≥ {ALPHA})"
    if n < 3:
        verdict += f"; with n = {n} seeds the test has almost no power, use ≥ 3 seeds"
    return Paired(n, m, sd, (m - h, m + h), t, p, improved, verdict)


def format_p(p: float | None) -> str:
    """Format a p-value for tables and verdicts (``n/a`` when undefined)."""
    if p is None:
        return "n/a"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


@dataclass(frozen=True)
class Crossing:
    """Where a swept reference curve first reaches a target value (:func:`first_crossing`).

    Attributes:
        kind: ``interpolated`` (``x`` lies on the curve, between or at swept points), ``below`` (the
            curve already exceeds the target at its smallest swept x: the crossing lies below it) or
            ``above`` (the curve never reaches the target: the crossing lies above its largest x).
        x: The interpolated x for ``interpolated``; the smallest (``below``) or largest (``above``)
            swept x otherwise.
        monotone: Whether the curve is non-decreasing over the swept x values. When it is not, ``x`` is
            the *first* (smallest) x where it reaches the target.
        log: Whether the curve was interpolated in log x (straight between points on a log x axis)
            rather than in x.
    """

    kind: str
    x: float
    monotone: bool
    log: bool = False


def first_crossing(xs: Sequence[float], ys: Sequence[float], target: float, *, log: bool = False) -> Crossing:
    """Smallest x where the piecewise-linear curve through ``(xs, ys)`` reaches ``target``.

    The curve is straight between consecutive swept points, sorted by x: in x, or with ``log`` in
    log x (the line a log-scaled x axis draws between them, so a reading agrees with its figure:
    half-way between 5 % and 20 % is 10 % there, not 12.5 %). Nothing is extrapolated outside the
    swept range. Used for "the baseline needs X % pixel labels to match M": ``xs`` are the baseline's
    strong fractions, ``ys`` its mean mIoU, ``target`` the method's mIoU. A non-monotone curve (seed
    noise) may reach the target more than once; the first crossing is the fewest labels that are
    enough on the swept evidence.

    Args:
        xs: Swept x values (distinct, any order; positive with ``log``).
        ys: Curve value at each x.
        target: Value to reach.
        log: Interpolate in log x.

    Raises:
        ValueError: When ``xs`` is empty, its length differs from ``ys``, it has duplicates, or ``log``
            is asked for with an x that is not positive.
    """
    if not xs or len(xs) != len(ys):
        raise ValueError(
            f"first_crossing needs as many ys as xs (got {len(xs)} xs, {len(ys)} ys), at least 1"
        )
    if len(set(xs)) != len(xs):
        raise ValueError(f"first_crossing needs distinct xs, got {list(xs)}")
    if log and min(xs) <= 0:
        raise ValueError(f"first_crossing in log x needs positive xs, got {list(xs)}")
    pts = sorted(zip((float(x) for x in xs), (float(y) for y in ys), strict=True))
    monotone = all(b[1] >= a[1] for a, b in zip(pts, pts[1:], strict=False))
    x0, y0 = pts[0]
    if y0 > target:
        return Crossing("below", x0, monotone, log)
    if y0 == target:
        return Crossing("interpolated", x0, monotone, log)
    for (xa, ya), (xb, yb) in zip(pts, pts[1:], strict=False):
        if ya < target <= yb:  # ya < yb here, so the division is safe
            if log:
                x = xa * (xb / xa) ** ((target - ya) / (yb - ya))
            else:
                x = xa + (target - ya) * (xb - xa) / (yb - ya)
            return Crossing("interpolated", x, monotone, log)
    return Crossing("above", pts[-1][0], monotone, log)
