"""Report figures: sweep curves, stage bars, per-class IoU, learning curves, loss terms and samples.

matplotlib's object API is used (no pyplot global state, Agg rendering); predictions are shown in
the store palette's display colours, and captions describe the store's own bands and palette
(:mod:`segweak.report.wording`).

Every figure is written to ``EXP/plots/<name>.png``; :func:`make_plots` returns the written paths
(relative to the experiment directory) with their captions, and a list of notes for what could not be
drawn (e.g. a missing samples artefact), so the report can say so instead of silently dropping a figure.

Figures are drawn from files alone: ``results.json``, the run directories (``history.csv``, the per-step
CSV logs) and, for the sample grid, the predictions the experiment wrote to ``EXP/samples.npz``
(:mod:`segweak.experiment.samples`). No figure runs a model.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segweak.experiment.results import (
    Experiment,
    read_history,
    read_step_log,
    row_step_kind,
)
from segweak.experiment.samples import SAMPLES_FILE, SampleGrid, is_current, read_samples, wanted_spec
from segweak.io import atomic_write_bytes
from segweak.report.stats import mean_std
from segweak.report.views import AxisCurves, Metric, axis_curves, headline_metric, sweep_axes, sweep_points
from segweak.report.wording import data_wording, read_store_meta

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Stage colours (colour-blind-safe Okabe-Ito palette).
STAGE_COLORS = {
    "baseline": "#999999",
    "weak": "#E69F00",
    "finetune": "#0072B2",
    "full": "#009E73",
    "control": "#CC79A7",
}
_TAB10 = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]

IGNORE_COLOR = (0, 0, 0)
"""Display colour of ignored pixels (value 255), black as in the official eroded labels."""


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def _color(exp: Experiment, group: tuple[str, str], i: int) -> str:
    """Stage colour; with several weak methods every group gets its own colour instead."""
    if len(exp.results.get("methods") or []) > 1:
        return _TAB10[i % len(_TAB10)]
    return STAGE_COLORS.get(group[0], _TAB10[i % len(_TAB10)])


def plot_stage_bars(exp: Experiment, path: Path, metric: Metric | None = None) -> None:
    """Bar per stage: mean mIoU, mean F1 and OA with ±1 std error bars and every seed as a dot.

    ``metric``: the subset drawn (default: :func:`segweak.report.views.headline_metric`).
    """
    metric = metric or headline_metric(exp)
    groups = exp.groups()
    metrics = [(metric.key("miou"), "mIoU"), (metric.key("mf1"), "mean F1"), (metric.key("oa"), "OA")]
    fig = _figure(max(6.0, 1.6 * len(groups) + 2.5), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    x = np.arange(len(groups))
    alphas = [1.0, 0.6, 0.3]
    for j, (key, name) in enumerate(metrics):
        for i, g in enumerate(groups):
            vals = [v for v in exp.values(g, key).values() if v is not None]
            m, sd, _ = mean_std(vals)
            if m is None:
                continue
            xpos = x[i] + (j - 1) * width
            ax.bar(
                xpos, m, width * 0.95, yerr=sd, capsize=3, color=_color(exp, g, i), alpha=alphas[j],
                edgecolor="black", linewidth=0.5, label=name if i == 0 else None,
            )  # fmt: skip
            ax.scatter([xpos] * len(vals), vals, s=10, color="black", zorder=3)
            if j == 0:
                ax.annotate(f"{m:.3f}", (xpos, m + (sd or 0.0)), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_xticks(x, [exp.label(g) for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{metric.subset} score")
    ax.set_title("Scores per stage (bars: mean over seeds, error bars: ±1 std, dots: seeds)", fontsize=10)
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="#777777", alpha=a, label=n) for a, (_, n) in zip(alphas, metrics, strict=True)
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_per_class(exp: Experiment, path: Path, metric: Metric | None = None) -> None:
    """Draw grouped bars of per-class IoU (mean ± std over seeds), one bar per stage in each class group.

    ``metric``: the subset drawn (default: :func:`segweak.report.views.headline_metric`).
    """
    metric = metric or headline_metric(exp)
    groups = exp.groups()
    classes = exp.classes
    fig = _figure(max(7.0, 1.3 * len(classes) * max(1, len(groups)) / 3 + 3), 3.8)
    ax = fig.subplots()
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(classes))
    for i, g in enumerate(groups):
        means, sds = [], []
        for c in classes:
            m, sd, _ = mean_std(list(exp.values(g, metric.key(f"iou_{c}")).values()))
            means.append(np.nan if m is None else m)
            sds.append(0.0 if sd is None else sd)
        ax.bar(
            x + (i - (len(groups) - 1) / 2) * width, means, width * 0.95, yerr=sds, capsize=2,
            color=_color(exp, g, i), edgecolor="black", linewidth=0.4, label=exp.label(g),
        )  # fmt: skip
    ax.set_xticks(x, [c.replace("_", " ") for c in classes])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{metric.subset} IoU")
    ax.set_title(f"Per-class {metric.subset} IoU (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=8, ncols=min(5, len(groups)), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


_ROLE_STYLE = {"baseline": ("-", "s"), "full": ("--", "^"), "control": (":", "v"), "method": ("-", "o")}
"""Line style and marker per arm role, so the baseline, the upper bound and controls read apart."""


def arm_colors(arms: list[str]) -> dict[str, str]:
    """Give every arm a colour, the same in every panel and figure (the baseline grey, full green)."""
    fixed = {"baseline": STAGE_COLORS["baseline"], "full": STAGE_COLORS["full"]}
    others = [_TAB10[i] for i in (0, 1, 3, 4, 5, 6, 8, 9)]  # tab10 without its grey and green
    out, i = {}, 0
    for arm in arms:
        if arm in fixed:
            out[arm] = fixed[arm]
        else:
            out[arm] = others[i % len(others)]
            i += 1
    return out


def plot_sweep_curves(curves: AxisCurves, colors: dict[str, str], metric: Metric, path: Path) -> None:
    """Draw mIoU along one sweep axis: a line per arm (mean over seeds, markers at the points, ±std band).

    One panel per combination of the other axes' values; a categorical axis (noise models, label
    kinds, method lists) is drawn at evenly spaced positions with its values as tick labels.

    Args:
        curves: The axis's data (:func:`segweak.report.views.axis_curves`).
        colors: ``{arm: colour}`` (:func:`arm_colors`), shared by every curve figure.
        metric: The headline metric (names the y axis).
        path: PNG to write.
    """
    panels = curves.panels
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = _figure(max(6.0, 4.2 * ncols), 3.6 * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True)).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        for c in panel.curves:
            style, marker = _ROLE_STYLE.get(c.role, ("-", "o"))
            x, m, sd = (np.asarray(v, dtype=float) for v in (c.xs, c.means, c.stds))
            color = colors.get(c.arm, "#333333")
            ax.fill_between(x, m - sd, m + sd, color=color, alpha=0.15, linewidth=0)
            ax.plot(x, m, color=color, linestyle=style, marker=marker, markersize=5, linewidth=1.8,
                    label=c.arm + (" (control)" if c.role == "control" else ""))  # fmt: skip
        if curves.log:
            ax.set_xscale("log")
        if curves.ticks:
            ax.set_xticks([t for t, _ in curves.ticks], [label for _, label in curves.ticks], fontsize=7)
            ax.set_xlim(-0.4, len(curves.ticks) - 0.6)
        else:
            # Ticks at the swept values themselves (a log axis would otherwise show only decades).
            xs = sorted({x for c in panel.curves for x in c.xs})
            fmt = (lambda v: f"{100 * v:.3g} %") if curves.axis == "split.strong" else (lambda v: f"{v:g}")
            if len(xs) <= 8:
                ax.set_xticks(xs, [fmt(x) for x in xs])
                ax.set_xticks([], minor=True)
        ax.set_xlabel(curves.xlabel, fontsize=8)
        ax.set_ylabel(f"{metric.subset} mIoU", fontsize=8)
        if panel.title:
            ax.set_title(panel.title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8)
    fig.suptitle(
        # Two lines: on one the title was wider than a one-panel figure and was cut at both ends.
        f"{metric.subset} mIoU vs {curves.axis}\n"
        "(line: mean over seeds, band: ±1 std, markers: swept points)",
        fontsize=10,
    )
    _save(fig, path)


def axis_file(i: int, axis: str) -> str:
    """File name of the curve figure of the ``i``-th sweep axis (dotted key made file-safe)."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in axis)
    return f"sweep_{i}_{safe}.png"


_KIND_ORDER = {"pretrain": 0, "finetune": 1, "train": 2}
_KIND_STYLE = {"pretrain": "--", "finetune": "-", "train": "-"}


def _segment(row: dict[str, Any]) -> str:
    """Part of an arm a run is: its step kind, and its round for a method with rounds (``train round 2``)."""
    rnd = row.get("round")
    return row_step_kind(row) + ("" if rnd in (None, "") else f" round {int(rnd)}")


def _style(segment: str) -> str:
    return _KIND_STYLE.get(segment.split()[0], "-")


def _arm_pairs(exp: Experiment, arm: str) -> list[list[dict[str, Any]]]:
    """Rows of ``arm`` per (split seed, seed), pre-training before fine-tuning."""
    pairs: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in exp.arm_rows(arm):
        pairs.setdefault((int(r["split_seed"]), int(r["seed"])), []).append(r)
    return [
        sorted(rows, key=lambda r: _KIND_ORDER.get(row_step_kind(r), 9)) for _, rows in sorted(pairs.items())
    ]


def _history(exp: Experiment, row: dict[str, Any]) -> list[dict[str, float]]:
    return read_history(exp.path / str(row.get("run_dir", "")) / "history.csv")


def _run_length(row: dict[str, Any], hist: list[dict[str, float]], unit: str) -> float:
    """Length of a run in ``unit`` (``step``: optimiser steps; ``epoch``), where the next run starts."""
    recorded = row.get("optimizer_steps" if unit == "step" else "epochs")
    if recorded is not None:
        return float(recorded)
    xs = [h[unit] for h in hist if unit in h]
    return max(xs) if xs else 0.0


def _mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean over curves at the x values they all have (the same budget gives the same x)."""
    common = set(curves[0][0].tolist())
    for x, _ in curves[1:]:
        common &= set(x.tolist())
    if not common:
        return None
    xs = np.asarray(sorted(common))
    ys = [np.interp(xs, x, y) for x, y in curves]  # exact at common points: x values are shared
    return xs, np.mean(ys, axis=0)


def learning_curve_series(
    exp: Experiment,
) -> tuple[str, dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]]]:
    """Collect every arm's validation mIoU curves, each seed's runs placed end to end.

    A pre-training arm's fine-tuning continues where its pre-training ended (its x values are offset
    by the pre-training run's optimiser steps), so every arm is measured against the optimiser steps
    it has taken in all. Runs written before histories recorded ``step`` are placed over epochs.

    Returns:
        ``(unit, {arm: {segment: [(x, val_miou), one per seed]}})`` with unit ``step`` or ``epoch``;
        a segment is a run's step kind (``pretrain``, ``finetune``, ``train``), with its round for a
        method with rounds (``train round 2``), in training order.
    """
    histories = {id(r): _history(exp, r) for r in exp.rows}
    found = [h for h in histories.values() if h]
    unit = "step" if found and all(any("step" in row for row in h) for h in found) else "epoch"
    series: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for arm in exp.arms():
        for rows in _arm_pairs(exp, arm):
            offset = 0.0
            for r in rows:
                hist = histories[id(r)]
                pts = [(h[unit] + offset, h["val_miou"]) for h in hist if unit in h and "val_miou" in h]
                if pts:
                    x, y = (np.asarray(v, dtype=float) for v in zip(*pts, strict=True))
                    series.setdefault(arm, {}).setdefault(_segment(r), []).append((x, y))
                offset += _run_length(r, hist, unit)
    return unit, series


def plot_learning_curves(exp: Experiment, path: Path) -> bool:
    """Draw each arm's validation mIoU over its optimiser steps (:func:`learning_curve_series`).

    Thin lines: each seed; thick: the mean over seeds; dashed: pre-training.

    Returns:
        Whether any history was found (nothing is written otherwise).
    """
    unit, series = learning_curve_series(exp)
    if not series:
        return False
    fig = _figure(9.0, 3.8)
    ax = fig.subplots()
    for i, arm in enumerate(exp.arms()):
        color = _TAB10[i % len(_TAB10)]
        label: str | None = arm
        for segment, curves in series.get(arm, {}).items():
            style = _style(segment)
            for x, y in curves:
                ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8, linestyle=style)
            mean = _mean_curve(curves)
            if mean is not None:
                ax.plot(
                    *mean, color=color, linewidth=2.0, marker="o", markersize=3, linestyle=style, label=label
                )
                label = None
    if unit == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimiser steps (pre-training + fine-tuning)" if unit == "step" else "epochs")
    ax.set_ylabel("validation mIoU")
    ax.set_ylim(0, 1.0)
    ax.set_title(
        "Learning curves per arm (thick: mean over seeds, thin: each seed; dashed: pre-training)", fontsize=10
    )
    ax.legend(fontsize=8, ncols=2)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _run_terms(exp: Experiment, row: dict[str, Any], hist: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Loss terms of one run as ``{term: (2, n) [steps; values]}``: the per-step log, else history.csv.

    The total ``loss`` is kept only when the method logged no separate term.
    """
    log = read_step_log(exp.path / str(row.get("run_dir", "")))
    series = {t: np.asarray(pts, dtype=float).T for t, pts in log.items() if pts}
    if not series:
        for key in hist[0] if hist else {}:
            if key.startswith("train_"):
                pts = [(h["step"], h[key]) for h in hist if "step" in h and key in h]
                if pts:
                    series[key[len("train_") :]] = np.asarray(pts, dtype=float).T
    if len(series) > 1:
        series.pop("loss", None)
    return series


def loss_term_series(
    exp: Experiment,
) -> tuple[dict[str, dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]]], dict[str, list[float]]]:
    """Collect every arm's training loss terms over its optimiser steps, each seed's runs end to end.

    Read from each run's per-step CSV log (:func:`segweak.experiment.results.read_step_log`, one point every
    ``trainer.log_every_n_steps`` steps), or, without it, from the ``step`` and ``train_<term>`` columns
    of ``history.csv`` (epoch means); runs that recorded neither are left out. A pre-training arm's
    fine-tuning is offset by the pre-training run's optimiser steps.

    Returns:
        ``({arm: {(segment, term): [(steps, values), one per seed]}}, {arm: [[step where each next
        run starts (fine-tuning, the next round)], one list per seed]})``, segments as in
        :func:`learning_curve_series`.
    """
    series: dict[str, dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]]] = {}
    starts: dict[str, list[list[float]]] = {}
    for arm in exp.arms():
        for rows in _arm_pairs(exp, arm):
            offset, boundaries = 0.0, []
            for i, r in enumerate(rows):
                hist = _history(exp, r)
                for term, (x, y) in _run_terms(exp, r, hist).items():
                    series.setdefault(arm, {}).setdefault((_segment(r), term), []).append((x + offset, y))
                offset += _run_length(r, hist, "step")
                if i < len(rows) - 1:
                    boundaries.append(offset)
            if boundaries:
                starts.setdefault(arm, []).append(boundaries)
    return series, starts


def plot_loss_terms(exp: Experiment, path: Path) -> bool:
    """Draw each arm's training loss terms over its optimiser steps, one panel per arm.

    Data: :func:`loss_term_series`. Thin: each seed; thick: the mean over seeds; dotted: where the
    next run (fine-tuning, the next round) starts.

    Returns:
        Whether any run had loss terms (nothing is written otherwise).
    """
    panels, starts = loss_term_series(exp)
    if not panels:
        return False
    arms = [a for a in exp.arms() if a in panels]
    terms = sorted({t for p in panels.values() for _, t in p})
    colors = {t: _TAB10[j % len(_TAB10)] for j, t in enumerate(terms)}
    ncols = min(3, len(arms))
    nrows = -(-len(arms) // ncols)
    fig = _figure(3.6 * ncols, 2.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, arm in zip(axes, arms, strict=False):
        labelled: set[str] = set()
        for (_, term), curves in panels[arm].items():
            color = colors[term]
            for x, y in curves:
                ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            mean = _mean_curve(curves)
            if mean is not None:
                ax.plot(*mean, color=color, linewidth=1.8, label=None if term in labelled else term)
                labelled.add(term)
        for i in range(max((len(b) for b in starts.get(arm, [])), default=0)):
            at = np.mean([b[i] for b in starts[arm] if len(b) > i])
            ax.axvline(float(at), color="black", linestyle=":", linewidth=1.0)
        ax.set_title(arm + (" (control)" if exp.arm_role(arm) == "control" else ""), fontsize=9)
        ax.set_xlabel("optimiser steps", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(arms) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Training loss terms per arm (thick: mean over seeds, thin: each seed; dotted: the next run starts)",
        fontsize=10,
    )
    _save(fig, path)
    return True


def colorize_mask(mask: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Colour a class-index mask: (H, W) uint8 -> (H, W, 3) uint8; 255 (ignore) in black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(colors)] = colors
    lut[255] = IGNORE_COLOR
    return lut[mask]


def false_colour(image: np.ndarray) -> np.ndarray:
    """Display image (H, W, 3) uint8: the first three bands as R, G, B (IRRG gives standard false colour)."""
    if image.shape[-1] >= 3:
        return np.ascontiguousarray(image[..., :3])
    return np.repeat(image[..., :1], 3, axis=-1)


def plot_samples(grid: SampleGrid, path: Path, title: str | None = None) -> None:
    """Grid of validation patches: false-colour image, truth, and each row's prediction.

    Args:
        grid: One point's sample predictions (:func:`segweak.experiment.samples.read_samples`).
        path: PNG to write.
        title: Figure title (a sweep names the point; none without a sweep).
    """
    colors = grid.colors
    classes = list(grid.meta.get("classes") or [])
    ids = list(grid.meta.get("patch_ids") or [str(i) for i in grid.indices])
    n = len(grid.indices)
    ncols = 2 + len(grid.labels)
    fig = _figure(1.9 * ncols + 0.3, 1.9 * n + 0.9 + (0.3 if title else 0.0))
    axes = np.atleast_2d(fig.subplots(n, ncols, squeeze=False))
    for r in range(n):
        panels = [
            ("image", false_colour(grid.images[r])),
            ("truth", colorize_mask(grid.masks[r], colors)),
        ]
        panels += [
            (name, colorize_mask(pred[r], colors))
            for name, pred in zip(grid.labels, grid.predictions, strict=True)
        ]
        for c, (name, img) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(ids[r], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors[i] / 255.0, edgecolor="black", label=c) for i, c in enumerate(classes)]
    handles.append(Patch(facecolor=np.asarray(IGNORE_COLOR) / 255.0, edgecolor="black", label="ignore"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(7, len(handles)), fontsize=8)
    _save(fig, path)


def samples_file(i: int) -> str:
    """Return the sample grid's file name of the ``i``-th sweep point (without a sweep: samples.png)."""
    return f"samples_{i}.png"


def _sample_grids(
    exp: Experiment, n: int, sample_seed: int, out: dict[str, tuple[Path, str]], notes: list[str]
) -> None:
    """Draw the sample grids from ``EXP/samples.npz`` when it is current for these settings.

    Without a sweep: ``plots/samples.png`` (key ``samples``). In a sweep: one grid per point,
    ``plots/samples_<i>.png`` (key ``samples:<point>``), titled with the point. Notes say why a grid is
    missing, or which rows had no checkpoint.
    """
    spec = wanted_spec(exp, n, sample_seed)
    if isinstance(spec, str):
        notes.append(spec)
        return
    samples = read_samples(exp.path)
    if not is_current(samples, spec):
        notes.append(
            f"sample predictions skipped: {SAMPLES_FILE} is missing or was made from other checkpoints or "
            "settings; `segweak report` writes it"
        )
        return
    assert samples is not None
    store = exp.results.get("store")
    words = data_wording(read_store_meta(exp.path / store if store else None))
    what = f"{words.image}, truth and each stage's prediction in {words.colours} (black: ignored pixels)."
    sweep = bool(sweep_axes(exp))
    # Points on one store show the same patches: say so, it is what makes the grids comparable.
    same = (
        len({g.indices.tobytes() for g in samples.grids}) == 1
        and len({p["store"] for p in spec["points"]}) == 1
    )
    # The checkpoints the rows report (``selection``); spec["seed"] is the seed drawn (sample_seed, or
    # the first trained seed when sample_seed was not trained).
    selections = {str(r.get("selection") or "best") for r in exp.rows}
    chosen = selections.pop() if len(selections) == 1 else "selected"
    for i, grid in enumerate(samples.grids):
        if not sweep:
            plot_samples(grid, exp.path / "plots" / "samples.png")
            out["samples"] = (
                Path("plots/samples.png"),
                f"Validation patches (seed {spec['seed']} {chosen} checkpoints): {what}",
            )
        else:
            name = samples_file(i)
            plot_samples(grid, exp.path / "plots" / name, title=f"Sample predictions at {grid.point}")
            patches = "the same patches at every point" if same else "this point's validation patches"
            out[f"samples:{grid.point}"] = (
                Path("plots") / name,
                f"Validation patches at {grid.point} ({patches}; seed {spec['seed']} {chosen} checkpoints): "
                f"{what}",
            )
        missing = grid.meta.get("missing") or []
        if missing:
            where = f" at {grid.point}" if sweep else ""
            notes.append(f"sample predictions{where}: no best checkpoint for {', '.join(missing)}")


def make_plots(
    exp: Experiment, n_samples: int = 4, sample_seed: int = 0
) -> tuple[dict[str, tuple[Path, str]], list[str]]:
    """Draw every report figure into ``EXP/plots``.

    Returns:
        ``({key: (path relative to EXP, caption)}, [notes about figures that could not be drawn])``.
    """
    out: dict[str, tuple[Path, str]] = {}
    notes: list[str] = []
    plots = exp.path / "plots"
    if not exp.rows:
        return out, ["no results rows: no plots"]
    metric = headline_metric(exp)
    if sweep_axes(exp):
        _sweep_plots(exp, metric, out, notes)
    else:
        _run_plots(exp, metric, out, notes)
    # Never show a stale grid from an earlier report (another point count, samples: 0).
    for stale in (plots / "samples.png", *plots.glob("samples_*.png")):
        stale.unlink(missing_ok=True)
    if n_samples > 0:
        _sample_grids(exp, n_samples, sample_seed, out, notes)
    return out, notes


def _sweep_plots(exp: Experiment, metric: Metric, out: dict[str, tuple[Path, str]], notes: list[str]) -> None:
    """Draw a curve per sweep axis (``sweep:<axis>``) and learning curves per point (``curves:<point>``).

    Per-stage bars would mix the points (their seeds recur at every point); the per-point tables
    give those numbers.
    """
    plots = exp.path / "plots"
    colors = arm_colors(exp.arms())
    for i, axis in enumerate(sweep_axes(exp)):
        curves = axis_curves(exp, axis, metric)
        if not any(c.xs for p in curves.panels for c in p.curves):
            notes.append(f"curve of {axis} skipped: no row has a {metric.subset} mIoU")
            continue
        name = axis_file(i, axis)
        plot_sweep_curves(curves, colors, metric, plots / name)
        if axis == "split.strong":
            x = "the strong (pixel-labelled) share of the patches each split achieved"
        else:
            x = f"the value of `{axis}`" + ("" if curves.numeric else " (categorical)")
        scale = ", log scale" if curves.log else ""
        others = "; one panel per value of the other axes" if len(curves.panels) > 1 else ""
        out[f"sweep:{axis}"] = (
            Path("plots") / name,
            f"{metric.subset.capitalize()} mIoU of each arm's final row against {x}{scale}: line and "
            f"markers the mean over seeds at each swept point, band ±1 std{others}.",
        )
    for i, point in enumerate(sweep_points(exp)):
        name = f"learning_curves_{i}.png"
        if plot_learning_curves(point.exp, plots / name):
            out[f"curves:{point.label}"] = (
                Path("plots") / name,
                f"Validation mIoU of each arm over its optimiser steps at {point.label} (from each run's "
                "history.csv).",
            )


def _run_plots(exp: Experiment, metric: Metric, out: dict[str, tuple[Path, str]], notes: list[str]) -> None:
    """Figures of an experiment without a sweep: stage bars, per-class IoU, learning curves, loss terms."""
    plots = exp.path / "plots"
    plot_stage_bars(exp, plots / "scores_by_stage.png", metric)
    out["miou"] = (
        Path("plots/scores_by_stage.png"),
        f"{metric.subset.capitalize()} mIoU, mean F1 and OA per stage (±1 std over seeds; dots: seeds).",
    )
    if exp.classes:
        plot_per_class(exp, plots / "per_class_iou.png", metric)
        out["per_class"] = (
            Path("plots/per_class_iou.png"),
            f"Per-class {metric.subset} IoU per stage (mean ± std over seeds).",
        )
    if plot_learning_curves(exp, plots / "learning_curves.png"):
        out["curves"] = (
            Path("plots/learning_curves.png"),
            "Validation mIoU of each arm over its optimiser steps, pre-training (dashed) then fine-tuning "
            "(from each run's history.csv: one point per validation).",
        )
    else:
        notes.append("learning curves skipped: no run has a history.csv with val_miou")
    if plot_loss_terms(exp, plots / "loss_terms.png"):
        out["loss_terms"] = (
            Path("plots/loss_terms.png"),
            "Training loss terms over optimiser steps, one panel per arm, fine-tuning after "
            "pre-training (each method's terms as logged every trainer.log_every_n_steps steps: weighted "
            "as optimised).",
        )
