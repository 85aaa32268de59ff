"""What the report reads off ``results.json`` before rendering it.

The headline metric, the model selection, the points of a sweep, and the curves and
label-efficiency readings across them.

Pure data (no plotting, no files besides what :func:`segweak.experiment.results.load_experiment`
read): :mod:`segweak.report.report` turns it into text and tables, :mod:`segweak.report.figures` into
the curve figures. Row fields follow docs/config.md (``factors``, ``point``, ``selection``,
``test_*``, ``eroded_miou``, ``strong_fraction``, ``weak_labels``, ``weak_noise``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from segweak.experiment.results import Experiment, row_arm
from segweak.report.stats import Crossing, first_crossing, mean_std

STRONG_AXIS = "split.strong"
"""Sweep key of the strong fraction: its curves use the rows' achieved ``strong_fraction`` as x."""

LOG_SPAN = 4.0
"""A numeric x axis is log-scaled when its largest value is more than this many times its smallest."""


def log_x(xs: Sequence[float]) -> bool:
    """Whether a numeric sweep axis with declared values ``xs`` is log-scaled.

    The one rule for both the curve figure's x axis and the label-efficiency reading, which
    interpolates in the scale the figure draws (:func:`segweak.report.stats.first_crossing`): every x
    positive and the largest more than :data:`LOG_SPAN` times the smallest.
    """
    return bool(xs) and min(xs) > 0 and max(xs) > LOG_SPAN * min(xs)


def interpolation_phrase(log: bool, between: str = "its swept fractions") -> str:
    """How a label-efficiency reading was interpolated (between the points ``between`` names).

    Shared by the report's sentences and its table caption, so both state the scale
    :func:`log_x` chose.
    """
    if log:
        return f"interpolated between {between} on a log scale, as the curve figure draws them"
    return f"linearly interpolated between {between}"


# --------------------------------------------------------------------------------------------------
# Headline metric and model selection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """Which subset the report's headline numbers are measured on.

    Attributes:
        prefix: Prefix of the row columns (``""``: validation, ``test_``: the held-out test subset).
        subset: ``validation`` or ``test``, for the text.
        partial: Rows that have test metrics while others do not (then the headline is validation).
    """

    prefix: str
    subset: str
    partial: int = 0

    def key(self, name: str) -> str:
        """Row column of metric ``name`` (``miou``, ``mf1``, ``oa``, ``iou_<c>``) on this subset."""
        return self.prefix + name

    @property
    def eroded_key(self) -> str:
        """Row column of the eroded-label mIoU on this subset."""
        return self.prefix + "eroded_miou"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def headline_metric(exp: Experiment) -> Metric:
    """Pick the headline subset: test when every row has ``test_miou`` (select on val, report on test)."""
    rows = exp.rows
    with_test = sum(_present(r.get("test_miou")) for r in rows)
    if rows and with_test == len(rows):
        return Metric("test_", "test")
    return Metric("", "validation", partial=with_test)


def has_values(exp: Experiment, key: str) -> bool:
    """Whether any row has a value in column ``key``."""
    return any(_present(r.get(key)) for r in exp.rows)


def selections(exp: Experiment) -> dict[str, int]:
    """Rows per model selection (``best``/``last``; rows without the column were ``best``), most first."""
    counts: dict[str, int] = {}
    for r in exp.rows:
        sel = str(r.get("selection") or "best")
        counts[sel] = counts.get(sel, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


_SELECTION_TEXT = {
    "best": "the checkpoint with the highest validation mIoU (`selection: best`)",
    "last": "the last epoch's weights (`selection: last`)",
}


def selection_sentence(exp: Experiment, metric: Metric) -> str:
    """One paragraph: which weights each run reports and on which subset the headline numbers are."""
    sel = selections(exp)
    if len(sel) == 1:
        (name,) = sel
        text = f"Model selection: every run reports {_SELECTION_TEXT.get(name, f'`selection: {name}`')}."
    else:
        listed = "; ".join(f"`{name}` in {n} run(s)" for name, n in sel.items())
        text = f"Model selection is MIXED across runs ({listed}): compare arms with the same selection."
    if metric.subset == "test":
        text += (
            " Headline numbers are **selected on validation, reported on the held-out test subset** "
            "(validation numbers are shown next to them)."
        )
    elif metric.partial:
        text += (
            f" Only {metric.partial} of {len(exp.rows)} runs have a held-out test subset, so the headline "
            "numbers are on the validation subset for all runs."
        )
    elif sel.get("best"):
        text += (
            " Headline numbers are on the validation subset the best checkpoint was chosen on, which "
            "flatters every arm (a `split.test` subset gives unbiased numbers)."
        )
    else:
        text += " Headline numbers are on the validation subset."
    return text


# --------------------------------------------------------------------------------------------------
# Sweep points
# --------------------------------------------------------------------------------------------------


def sweep_axes(exp: Experiment) -> dict[str, list[Any]]:
    """``{dotted key: [values]}`` of the experiment's sweep, in config order (empty without a sweep)."""
    axes = (exp.results.get("sweep") or {}).get("axes") or {}
    return {str(k): list(v) for k, v in axes.items()}


def value_label(value: Any) -> str:
    """Short text of an axis value (JSON for dicts and lists, e.g. a noise model or a method list)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _index(values: list[Any], value: Any) -> int:
    """Position of ``value`` among an axis's values (past the end when absent, e.g. a stray row)."""
    return values.index(value) if value in values else len(values)


@dataclass
class Point:
    """One point of a sweep and the experiment restricted to its rows.

    Attributes:
        label: The rows' ``point`` label (``""`` for an experiment without a sweep).
        factors: ``{dotted key: value}`` of the point.
        exp: The experiment with only this point's rows and no sweep (tables and paired tests are
            per point: the same ``(split_seed, seed)`` recurs at every point).
    """

    label: str
    factors: dict[str, Any]
    exp: Experiment


def sweep_points(exp: Experiment) -> list[Point]:
    """Points of the sweep in the config's axis order (one point, ``""``, without a sweep)."""
    axes = sweep_axes(exp)
    points = exp.by_point()
    found = {label: dict(point.rows[0].get("factors") or {}) for label, point in points.items()}

    def order(label: str) -> tuple[int, ...]:
        return tuple(_index(values, found[label].get(key)) for key, values in axes.items())

    return [Point(lb, found[lb], points[lb]) for lb in sorted(found, key=lambda lb: (order(lb), lb))]


def is_sweep(exp: Experiment) -> bool:
    """Whether the experiment swept any axis (its rows then belong to several points)."""
    return bool(sweep_axes(exp))


# --------------------------------------------------------------------------------------------------
# Curves across one axis
# --------------------------------------------------------------------------------------------------


@dataclass
class Curve:
    """One arm's headline mIoU along an axis, mean ± std over seeds at each point.

    Attributes:
        arm: Arm name.
        role: ``baseline``, ``full``, ``control`` or ``method``.
        xs: x of each point (the value, the achieved strong fraction or a categorical position).
        means: Mean over seeds.
        stds: Sample std over seeds (0 for one seed).
        ns: Seeds (split × training seed runs) behind each mean.
    """

    arm: str
    role: str
    xs: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    ns: list[int] = field(default_factory=list)


@dataclass
class Panel:
    """Curves of every arm at fixed values of the other axes.

    Attributes:
        fixed: ``{dotted key: value}`` of the other axes (empty with a single axis).
        curves: One per arm present, in the experiment's arm order.
    """

    fixed: dict[str, Any]
    curves: list[Curve]

    @property
    def title(self) -> str:
        """``key=value, ...`` of the fixed axes (empty with a single axis)."""
        return ", ".join(f"{k}={value_label(v)}" for k, v in self.fixed.items())


@dataclass
class AxisCurves:
    """Everything a curve figure of one sweep axis needs.

    Attributes:
        axis: Dotted key.
        numeric: Whether x is numeric (else categorical positions 0..n-1 with ``ticks``).
        log: Whether x is on a log scale (numeric and :func:`log_x`); label efficiency interpolates in it.
        ticks: ``[(position, label)]`` of a categorical axis.
        xlabel: Axis title.
        panels: One per combination of the other axes' values.
    """

    axis: str
    numeric: bool
    log: bool
    ticks: list[tuple[float, str]]
    xlabel: str
    panels: list[Panel]


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _point_x(point: Point, axis: str, values: list[Any], numeric: bool) -> float:
    """X of a point: achieved strong fraction (strong axis), the value (numeric) or its position."""
    value = point.factors.get(axis)
    if axis == STRONG_AXIS:
        achieved = mean_std([r.get("strong_fraction") for r in point.exp.rows])[0]
        if achieved is not None:
            return achieved
    return float(value) if numeric else float(_index(values, value))


def axis_curves(exp: Experiment, axis: str, metric: Metric) -> AxisCurves:
    """Curves of every arm's final row along ``axis``, one panel per combination of the other axes.

    The y value at a point is the mean ± std over seeds of the arm's final row (the fine-tuning of a
    pre-training method, the last round, else its one run) in the headline metric's mIoU.
    """
    axes = sweep_axes(exp)
    values = axes[axis]
    numeric = all(_numeric(v) for v in values)
    points = sweep_points(exp)
    xs = {p.label: _point_x(p, axis, values, numeric) for p in points}
    # The scale follows the declared values, not the achieved strong shares: a 5-20 % sweep (4×) must
    # not flip to log because a split rounded its shares to 4.1× on one dataset and 3.9× on another.
    log = numeric and log_x([float(v) for v in values])
    ticks = [] if numeric else [(float(i), value_label(v)) for i, v in enumerate(values)]
    if axis == STRONG_AXIS:
        xlabel = "pixel-labelled (strong) share of the patches, as achieved by the split"
    else:
        xlabel = axis
    others = [k for k in axes if k != axis]
    panels: dict[str, Panel] = {}
    for p in points:
        fixed = {k: p.factors.get(k) for k in others}
        key = value_label(fixed)
        panel = panels.setdefault(key, Panel(fixed, []))
        curves = {c.arm: c for c in panel.curves}
        for arm in p.exp.arms():
            vals = list(p.exp.values(p.exp.final_group(arm), metric.key("miou")).values())
            m, sd, n = mean_std(vals)
            if m is None:
                continue
            curve = curves.get(arm)
            if curve is None:
                curve = Curve(arm, p.exp.arm_role(arm))
                panel.curves.append(curve)
                curves[arm] = curve
            curve.xs.append(xs[p.label])
            curve.means.append(m)
            curve.stds.append(sd or 0.0)
            curve.ns.append(n)
    order = {a: i for i, a in enumerate(exp.arms())}
    for panel in panels.values():
        panel.curves.sort(key=lambda c: order.get(c.arm, len(order)))
        for c in panel.curves:  # points in x order (sweep_points orders by value, x may not follow)
            cols = sorted(zip(c.xs, c.means, c.stds, c.ns, strict=True))
            c.xs, c.means, c.stds, c.ns = (list(col) for col in zip(*cols, strict=True))
    return AxisCurves(axis, numeric, log, ticks, xlabel, list(panels.values()))


# --------------------------------------------------------------------------------------------------
# Label efficiency
# --------------------------------------------------------------------------------------------------


@dataclass
class Efficiency:
    """How many pixel labels the baseline needs to match one method at one strong fraction.

    Attributes:
        arm: The method.
        fixed: The other axes' values (empty with a single axis).
        fraction: The method's strong fraction (achieved share of patches).
        miou: The method's mean headline mIoU there.
        baseline_miou: The baseline's mean at the same fraction (``None`` when it did not run there).
        crossing: Where the baseline's mean curve (straight between swept points in the figure's x
            scale: ``crossing.log``) reaches ``miou``.
    """

    arm: str
    fixed: dict[str, Any]
    fraction: float
    miou: float
    baseline_miou: float | None
    crossing: Crossing

    @property
    def gain(self) -> float | None:
        """Method − baseline mean mIoU at the same fraction."""
        return None if self.baseline_miou is None else self.miou - self.baseline_miou


def label_efficiency(curves: AxisCurves) -> list[Efficiency]:
    """Baseline-equivalent strong fraction of every method (role ``method``) at every swept fraction.

    Empty unless ``curves`` is the strong-fraction axis and has a baseline curve. The baseline's curve
    is interpolated in the x scale its figure uses (``curves.log``).
    """
    if curves.axis != STRONG_AXIS:
        return []
    out: list[Efficiency] = []
    for panel in curves.panels:
        base = next((c for c in panel.curves if c.role == "baseline"), None)
        # Two fractions that rounded to the same patch count leave no curve to interpolate on.
        if base is None or not base.xs or len(set(base.xs)) != len(base.xs):
            continue
        at = dict(zip(base.xs, base.means, strict=True))
        for c in panel.curves:
            if c.role != "method":
                continue
            for x, m in zip(c.xs, c.means, strict=True):
                out.append(
                    Efficiency(
                        c.arm,
                        panel.fixed,
                        x,
                        m,
                        at.get(x),
                        first_crossing(base.xs, base.means, m, log=curves.log),
                    )
                )
    return out


def largest_gains(readings: list[Efficiency]) -> list[Efficiency]:
    """Each method's reading at the fraction where it gains most over the baseline (per panel)."""
    best: dict[tuple[str, str], Efficiency] = {}
    for e in readings:
        key = (e.arm, value_label(e.fixed))
        gain = -math.inf if e.gain is None else e.gain
        cur = best.get(key)
        if cur is None or gain > (-math.inf if cur.gain is None else cur.gain):
            best[key] = e
    return list(best.values())


def percent(x: float) -> str:
    """Format a fraction as a percentage with up to 3 significant digits (``0.05`` → ``5 %``)."""
    return f"{100 * x:.3g} %"


def efficiency_sentence(e: Efficiency, metric: Metric) -> str:
    """Word the label-efficiency reading of one method at one fraction, interpolation stated as such."""
    where = f" ({', '.join(f'{k}={value_label(v)}' for k, v in e.fixed.items())})" if e.fixed else ""
    subject = f"**{e.arm}** at {percent(e.fraction)} pixel labels ({metric.subset} mIoU {e.miou:.3f})"
    c = e.crossing
    if c.kind == "interpolated":
        need = f"**≈ {percent(c.x)} pixel labels**"
        if c.x > e.fraction:
            need += f", {c.x / e.fraction:.1f}× as many"
        elif c.x < e.fraction:
            need += ", fewer than the method's own: no label saving"
        need += f" ({interpolation_phrase(c.log)})"
    elif c.kind == "above":
        need = f"**more than the largest swept fraction ({percent(c.x)})**"
    else:
        need = (
            f"**less than the smallest swept fraction ({percent(c.x)})**: the method does not reach "
            "the baseline's lowest point"
        )
    text = f"Label efficiency{where}: to match {subject}, the baseline needs {need}."
    if not c.monotone:
        text += (
            " The baseline's mean curve is not monotone in the strong fraction (seed noise); the figure "
            "is where it first reaches that mIoU."
        )
    return text


def weak_provenance(exp: Experiment) -> dict[str, tuple[list[str], list[str]]]:
    """``{arm: (weak_labels values, weak_noise values)}`` of arms that train on weak labels.

    An arm trains on weak labels when any of its rows has a ``train_method`` other than
    ``supervised``; values are distinct, in row order (a noise sweep lists each noise model).
    """
    out: dict[str, tuple[list[str], list[str]]] = {}
    for r in exp.rows:
        if r.get("train_method") in (None, "", "supervised"):
            continue
        if r.get("weak_labels") is None and r.get("weak_noise") is None:
            continue
        labels, noise = out.setdefault(row_arm(r), ([], []))
        for seen, value in ((labels, r.get("weak_labels")), (noise, r.get("weak_noise"))):
            text = "–" if value is None else str(value)
            if text not in seen:
                seen.append(text)
    return out
