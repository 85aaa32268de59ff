"""Experiment report: ``report.md`` + self-contained ``report.html`` + ``plots/*.png``.

The report answers the experiment's question on its first screen ("does weak pre-training followed
by fine-tuning beat the strong-only baseline, and by how much?") with a *paired* comparison over the
seeds, then gives the setup, per-stage tables (mean ± std over seeds), all paired comparisons, the
figures and every run.

Everything is read from the experiment directory (:func:`segweak.experiment.results.load_experiment`);
the statistics are :mod:`segweak.report.stats`, the figures :mod:`segweak.report.figures` and the
Markdown/HTML rendering :mod:`segweak.report.document`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from segweak.errors import SegweakError
from segweak.experiment.results import (
    Experiment,
    load_experiment,
    row_group,
    row_step_kind,
)
from segweak.io import atomic_write_text
from segweak.report import figures
from segweak.report.document import Doc, render_html, render_markdown
from segweak.report.stats import Paired, format_p, mean_std, paired_test
from segweak.report.views import (
    STRONG_AXIS,
    Metric,
    axis_curves,
    efficiency_sentence,
    has_values,
    headline_metric,
    interpolation_phrase,
    label_efficiency,
    largest_gains,
    percent,
    selection_sentence,
    selections,
    sweep_axes,
    sweep_points,
    value_label,
    weak_provenance,
)
from segweak.report.wording import data_wording, read_store_meta

_AREA_TEXT = {
    "patch": "predicted proportions averaged over the **whole patch** (`weak.area: patch`, leak-free: "
    "weak batches carry no pixel map)",
    "valid": "predicted proportions averaged over the **valid (non-ignore) pixels** only (opt-in "
    "`weak.area: valid`: weak batches carry the valid map, which traces ignored regions such as eroded "
    "boundaries and clutter, i.e. more than a weak label gives)",
}


def _reads_weak_labels(cfg: dict[str, Any]) -> bool:
    """Whether a (migrated) run config trains with weak labels (any method but ``supervised``)."""
    return cfg.get("method") not in (None, "supervised")


# ``control`` rows exist only in results written before training methods replaced that stage; they
# are still titled and compared so old experiment directories keep their reports.
STAGE_TITLES = {
    "baseline": "Baseline (strong labels only)",
    "weak": "Weak labels only",
    "finetune": "Weak pre-training + fine-tuning",
    "full": "Full supervision (upper bound)",
    "control": "Control (fine-tuning recipe, no weak pre-training)",
}


# --------------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------------


def _ms(values: Sequence[float | None], digits: int = 3) -> str:
    m, sd, n = mean_std(values)
    if m is None:
        return "–"
    if n == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _cell(v: Any) -> str:
    """Format a per-run metric cell (4 decimals; ``–`` when not recorded)."""
    return "–" if v is None else f"{float(v):.4f}"


def _signed(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"


def _int(n: Any) -> str:
    return "–" if n is None else f"{int(n):,}"


def _ran(row: dict[str, Any]) -> str:
    """Format a results row's optimiser steps and data passes (``–`` when not recorded)."""
    steps, passes = row.get("optimizer_steps"), row.get("data_passes")
    if steps is None:
        return "–"
    return f"{int(steps):,} steps" + ("" if passes is None else f" ({float(passes):.2f} passes)")


def _pairs_phrase(pr: Paired, n_split: int) -> str:
    unit = "seed" if n_split <= 1 else "split×seed pair"
    return f"paired over {pr.n} {unit}{'s' if pr.n != 1 else ''}"


def _headline(
    exp: Experiment, group: tuple[str, str], ref: tuple[str, str], n_split: int, metric: Metric
) -> str:
    key = metric.key("miou")
    a = [v for v in exp.values(group, key).values()]
    b = [v for v in exp.values(ref, key).values()]
    ref_name = "baseline" if ref[0] == "baseline" else exp.label(ref)
    pr = paired_test(exp.values(group, key), exp.values(ref, key), f"the {ref_name}")
    title = STAGE_TITLES.get(group[0], f"Method {group[0]}")
    if group[1] and len(exp.results.get("methods") or []) > 1:
        title += f" ({group[1]})"
    parts = [f"Δ {_signed(pr.mean)}", _pairs_phrase(pr, n_split)]
    if pr.n >= 1:
        parts.append(f"{pr.improved}/{pr.n} {'seeds' if n_split <= 1 else 'pairs'} improved")
    if pr.p is not None:
        parts.append(f"paired t-test p = {format_p(pr.p)}")
    subset = "test " if metric.subset == "test" else ""
    text = f"**{title}: {subset}mIoU {_ms(a)} vs {ref_name} {_ms(b)}** ({', '.join(parts)}). "
    text += f"Verdict: {pr.verdict}."
    return text


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _store_info(exp: Experiment) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """Store summary and per-split summaries (``segweak.data.store.info``), or ``None`` when unavailable."""
    store_rel = exp.results.get("store")
    if not store_rel:
        return None, {}
    store = Path(store_rel)
    store = store if store.is_absolute() else exp.path / store
    if not (store / "store.json").is_file():
        return None, {}
    from segweak.data.info import info

    base = info(store)
    splits: dict[str, dict[str, Any]] = {}
    for k, name in (exp.results.get("splits") or {}).items():
        try:
            splits[str(k)] = info(store, name)["split"]
        except SegweakError:
            continue
    base["path_abs"] = str(store)
    return base, splits


def _weak_source(exp: Experiment, row: dict[str, Any], cfg: dict[str, Any]) -> str:
    """Where a run's weak labels came from, for the report (its ``metrics.json`` ``weak_labels``)."""
    labels = (cfg.get("weak") or {}).get("labels", "computed")
    rec: dict[str, Any] = {}
    path = exp.path / row["run_dir"] / "metrics.json"
    if path.is_file():
        try:
            rec = json.loads(path.read_text(encoding="utf-8")).get("weak_labels") or {}
        except (OSError, json.JSONDecodeError):
            rec = {}
    if labels == "computed":
        return "computed per patch from the masks"
    if not rec:
        return f"imported set `{labels}` (no provenance recorded)"
    used = f", {rec['bags_used']} bag(s) used" if "bags_used" in rec else ""
    return f"imported set `{labels}` from `{rec.get('file')}` (sha256 `{str(rec.get('sha256'))[:12]}`{used})"


def _run_configs(exp: Experiment) -> dict[tuple[str, str], dict[str, Any]]:
    """Return the recorded TrainConfig (run ``config.yaml``) of the first run of every group.

    Configs of the layout before training methods are migrated, so old and new runs read alike.
    """
    from segweak.config import migrate_train_dict

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in exp.rows:
        g = row_group(r)
        if g in out:
            continue
        path = exp.path / r["run_dir"] / "config.yaml"
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                continue
            if isinstance(data, dict):
                try:
                    out[g] = migrate_train_dict(data)[0]
                except SegweakError:
                    out[g] = data
    return out


def _metric_headers(exp: Experiment, metric: Metric) -> tuple[list[str], list[str]]:
    """Headers of the extra mIoU columns: ``(eroded, validation)``, each empty when not shown.

    Eroded-label mIoU sits next to the full-label one when rows have it; validation mIoU is shown
    beside a test-subset headline.
    """
    eroded = [f"{'test ' if metric.subset == 'test' else ''}mIoU (eroded labels)"]
    return (
        eroded if has_values(exp, metric.eroded_key) else [],
        ["val mIoU"] if metric.subset == "test" else [],
    )


def _miou_header(metric: Metric) -> str:
    return "test mIoU" if metric.subset == "test" else "mIoU"


def summary_table(exp: Experiment, metric: Metric | None = None) -> tuple[list[str], list[list[str]]]:
    """Per-stage summary: runs, mIoU / mean F1 / OA (mean ± std), paired Δ mIoU vs baseline, % of full.

    Of an experiment without a sweep, or of one sweep point (:attr:`segweak.report.views.Point.exp`):
    rows of different points share seeds, so every statistic is within a point.

    Args:
        exp: The experiment, or one sweep point of it.
        metric: Headline subset (default: :func:`segweak.report.views.headline_metric`).

    Returns:
        ``(header, rows)`` of formatted cells (also printed by ``segweak run`` / ``segweak demo``, one
        table per sweep point).
    """
    metric = metric or headline_metric(exp)
    groups = exp.groups()
    baseline, full = ("baseline", ""), ("full", "")
    has = set(groups)
    key = metric.key("miou")
    eroded, val = _metric_headers(exp, metric)
    header = ["stage", "runs", _miou_header(metric), *eroded, *val, "mean F1", "OA"]
    header += ["Δ mIoU vs baseline", "% of full mIoU"]
    rows = []
    fm = mean_std(list(exp.values(full, key).values()))[0] if full in has else None
    for g in groups:
        miou = list(exp.values(g, key).values())
        delta = "–"
        if baseline in has and g != baseline:
            pr = paired_test(exp.values(g, key), exp.values(baseline, key))
            delta = _signed(pr.mean) + (f" (p = {format_p(pr.p)})" if pr.p is not None else "")
        gm = mean_std(miou)[0]
        share = f"{100 * gm / fm:.0f} %" if fm and gm is not None else "–"
        rows.append(
            [
                exp.label(g),
                str(len(miou)),
                _ms(miou),
                *(_ms(list(exp.values(g, metric.eroded_key).values())) for _ in eroded),
                *(_ms(list(exp.values(g, "miou").values())) for _ in val),
                _ms(list(exp.values(g, metric.key("mf1")).values())),
                _ms(list(exp.values(g, metric.key("oa")).values())),
                delta,
                share,
            ]
        )
    return header, rows


def _delta_cell(pr: Paired) -> str:
    if pr.mean is None:
        return "–"
    return _signed(pr.mean) + (f" (p = {format_p(pr.p)})" if pr.p is not None else "")


def _arm_cost(exp: Experiment, arm: str) -> tuple[str, str]:
    """Mean optimiser steps and training time of ``arm`` over its seeds, every step kind summed.

    Returns:
        Formatted ``(steps, time)``; steps of a pre-training arm read ``pre-training + fine-tuning``.
    """
    kinds = ("pretrain", "finetune", "train")
    # Per seed: the steps of each kind (summed over runs of one kind, e.g. rounds) and the time.
    steps_of: dict[tuple[int, int], dict[str, float | None]] = {}
    seconds: dict[tuple[int, int], float] = {}
    for r in exp.arm_rows(arm):
        key = (int(r["split_seed"]), int(r["seed"]))
        kind, n = row_step_kind(r), r.get("optimizer_steps")
        done = steps_of.setdefault(key, {})
        done[kind] = None if n is None or (kind in done and done[kind] is None) else done.get(kind, 0.0) + n
        if r.get("train_seconds") is not None:
            seconds[key] = seconds.get(key, 0.0) + float(r["train_seconds"])
    present = [k for k in kinds if any(k in d for d in steps_of.values())]
    means = {k: mean_std([d.get(k) for d in steps_of.values()])[0] for k in present}
    if not means or any(m is None for m in means.values()):
        steps = "–"
    else:
        parts = [f"{means[k]:,.0f}" for k in kinds if k in means]
        steps = parts[0] if len(parts) == 1 else " + ".join(parts) + f" = {sum(means.values()):,.0f}"
    wall = mean_std(list(seconds.values()))[0]
    return steps, "–" if wall is None else f"{wall:,.0f} s"


def ranking_table(exp: Experiment, metric: Metric | None = None) -> tuple[list[str], list[list[str]]]:
    """Arms ranked by mean mIoU of their final rows, with paired Δ against each reference arm.

    An arm is the baseline, full supervision or a compared method; its final row is the fine-tuning of
    a pre-training method, the last round of a method with rounds, else its single run. Δ columns:
    the baseline and ``report.references`` (default ``shuffled``, ``semi_supervised``) when present;
    each is a paired mean over the seeds both ran, with the paired t-test p-value.

    ``metric``: the headline subset (default: :func:`segweak.report.views.headline_metric`); eroded-label
    and (beside a test headline) validation mIoU columns follow the mIoU when rows have them.

    Returns:
        ``(header, rows)`` of formatted cells, best arm first.
    """
    metric = metric or headline_metric(exp)
    arms = exp.arms()
    finals = {a: exp.final_group(a) for a in arms}
    miou = {a: exp.values(finals[a], metric.key("miou")) for a in arms}
    eroded, val = _metric_headers(exp, metric)
    means = {a: mean_std(list(miou[a].values()))[0] for a in arms}
    refs = exp.references()
    full = means.get("full")
    ranked = sorted(arms, key=lambda a: (means[a] is None, -(means[a] or 0.0)))
    header = ["rank", "arm", "role", "training", "runs", _miou_header(metric), *eroded, *val]
    header += [f"Δ vs {r}" for r in refs]
    header += ["% of full", "optimiser steps", "train time"]
    rows = []
    for i, a in enumerate(ranked, 1):
        deltas = ["–" if a == r else _delta_cell(paired_test(miou[a], miou[r])) for r in refs]
        steps, wall = _arm_cost(exp, a)
        rows.append(
            [
                str(i),
                f"**{a}**" if exp.arm_role(a) == "method" else a,
                exp.arm_role(a),
                "pre-training + fine-tuning" if exp.arm_pretrains(a) else "one run",
                str(len([v for v in miou[a].values() if v is not None])),
                _ms(list(miou[a].values())),
                *(_ms(list(exp.values(finals[a], metric.eroded_key).values())) for _ in eroded),
                *(_ms(list(exp.values(finals[a], "miou").values())) for _ in val),
                *deltas,
                f"{100 * means[a] / full:.0f} %" if full and means[a] is not None else "–",
                steps,
                wall,
            ]
        )
    return header, rows


def headlines(exp: Experiment, metric: Metric | None = None) -> list[str]:
    """Return the report's answer sentences (``**bold**`` marks the key numbers).

    With a sweep: the label-efficiency readings (:func:`sweep_headlines`), then each point's paired
    sentences prefixed with the point.
    """
    metric = metric or headline_metric(exp)
    if not sweep_axes(exp):
        return _point_headlines(exp, metric)
    heads = sweep_headlines(exp, metric)
    for point in sweep_points(exp):
        heads += [f"{point.label}: {text}" for text in _point_headlines(point.exp, metric)]
    return heads


def _point_headlines(exp: Experiment, metric: Metric) -> list[str]:
    """Paired answer sentences of an experiment without a sweep, or of one sweep point."""
    groups = exp.groups()
    n_split = len(exp.results.get("split_seeds") or [0])
    baseline, control = ("baseline", ""), ("control", "")
    has = set(groups)
    heads: list[str] = []
    finetunes = [g for g in groups if g[0] == "finetune"]
    # Rows of single-run methods (e.g. joint) are named after the method, not a protocol stage.
    arms = [g for g in groups if g[0] not in STAGE_TITLES]
    if baseline in has:
        for g in finetunes + arms:
            heads.append(_headline(exp, g, baseline, n_split, metric))
        if not finetunes + arms:
            others = [g for g in groups if g != baseline]
            if others:
                heads.append(_headline(exp, others[0], baseline, n_split, metric))
    control_rows = [r for r in exp.rows if r["stage"] == "control"]
    control_is_baseline = bool(control_rows) and all(r.get("same_as") == "baseline" for r in control_rows)
    if control in has and not control_is_baseline:
        for g in finetunes:
            heads.append(_headline(exp, g, control, n_split, metric))
    if not heads:
        heads.append(
            "No comparison is possible: the experiment needs a `baseline` stage and another stage "
            f"(stages run: {', '.join(exp.label(g) for g in groups)})."
        )
    if control_is_baseline:
        heads.append(
            "Control = baseline: the control stage has the baseline's encoder initialisation and "
            "hyper-parameters, so the baseline runs serve as the control."
        )
    return heads


def sweep_headlines(exp: Experiment, metric: Metric) -> list[str]:
    """Answer sentences of a sweep: each method's label efficiency at its largest gain.

    The reading is taken where the method gains most over the baseline at the same strong fraction
    (one sentence per method, and per value of the other axes); the readings at every swept fraction
    are in the label-efficiency table (:func:`efficiency_table`).
    """
    axes = sweep_axes(exp)
    if "split.strong" not in axes:
        swept = ", ".join(f"`{k}`" for k in axes)
        return [f"Sweep over {swept}: the curves and each point's paired comparisons follow."]
    readings = largest_gains(label_efficiency(axis_curves(exp, "split.strong", metric)))
    if not readings:
        return [
            "No label-efficiency reading: it needs the baseline and a compared method at distinct "
            "achieved strong fractions (see the curves and each point's comparisons)."
        ]
    return [efficiency_sentence(e, metric) for e in readings]


def efficiency_table(exp: Experiment, metric: Metric) -> tuple[list[str], list[list[str]]]:
    """Label efficiency of every method at every swept strong fraction (empty without that axis).

    Returns:
        ``(header, rows)``: method, the other axes' values (when swept), the method's fraction and
        mIoU, the baseline's mIoU there, and the baseline's interpolated equivalent fraction.
    """
    if "split.strong" not in sweep_axes(exp):
        return [], []
    readings = label_efficiency(axis_curves(exp, "split.strong", metric))
    others = [k for k in sweep_axes(exp) if k != "split.strong"]
    subset = "test " if metric.subset == "test" else ""
    header = ["method", *others, "strong fraction", f"{subset}mIoU", f"baseline {subset}mIoU there"]
    header += ["baseline needs", "labels saved"]
    rows = []
    for e in readings:
        c = e.crossing
        if c.kind == "interpolated":
            needs, saved = f"≈ {percent(c.x)}", f"{c.x / e.fraction:.1f}×"
        elif c.kind == "above":
            needs, saved = f"> {percent(c.x)}", f"> {c.x / e.fraction:.1f}×"
        else:
            needs, saved = f"< {percent(c.x)}", "–"
        rows.append(
            [
                e.arm,
                *(value_label(e.fixed.get(k)) for k in others),
                percent(e.fraction),
                f"{e.miou:.3f}",
                "–" if e.baseline_miou is None else f"{e.baseline_miou:.3f}",
                needs + ("" if c.monotone else " (first crossing)"),
                saved,
            ]
        )
    return header, rows


def _full_share(doc: Doc, exp: Experiment, metric: Metric) -> None:
    """Add the share of the full-supervision mIoU each other row reaches (nothing without ``full``)."""
    groups, full, key = exp.groups(), ("full", ""), metric.key("miou")
    if full not in groups:
        return
    fm, _, _ = mean_std(list(exp.values(full, key).values()))
    if not fm:
        return
    shares = []
    for g in groups:
        gm = mean_std(list(exp.values(g, key).values()))[0] if g != full else None
        if gm is not None:
            shares.append(f"{exp.label(g)} {100 * gm / fm:.0f} %")
    if shares:
        doc.p(f"Share of the full-supervision mIoU ({fm:.3f}): " + ", ".join(shares) + ".")


def _curves_section(doc: Doc, exp: Experiment, metric: Metric, plots: dict[str, tuple[Path, str]]) -> None:
    """Add the sweep's curve figures, one per axis, and the strong axis's label-efficiency table."""
    doc.h(2, "Curves")
    axes = sweep_axes(exp)
    doc.p(
        "Swept: "
        + "; ".join(f"`{k}` ∈ {{{', '.join(value_label(v) for v in vs)}}}" for k, vs in axes.items())
        + f" ({len(sweep_points(exp))} points, each with every arm and seed).",
        "note",
    )
    for axis in axes:
        if f"sweep:{axis}" in plots:
            doc.img(*plots[f"sweep:{axis}"])
    header, rows = efficiency_table(exp, metric)
    if rows:
        between = interpolation_phrase(
            axis_curves(exp, STRONG_AXIS, metric).log, "the baseline's swept fractions"
        )
        doc.table(
            header,
            rows,
            caption="Label efficiency: the strong fraction at which the baseline's mean curve reaches each "
            f"method's mean mIoU, {between} (achieved "
            "shares of the patches; never extrapolated: > or < the swept range). labels saved: that "
            "fraction over the method's. 'first crossing': the baseline's curve is not monotone, the "
            "smallest fraction where it reaches the value is given.",
        )


def _tables(doc: Doc, exp: Experiment, metric: Metric, level: int) -> None:
    """Ranking, results by stage, weak-label fit, paired comparisons and per-class tables.

    ``exp`` is an experiment without a sweep or one sweep point (its rows share no seed twice);
    ``level`` is the heading level of the sections.
    """
    groups = exp.groups()
    has = set(groups)
    baseline, control = ("baseline", ""), ("control", "")
    finetunes = [g for g in groups if g[0] == "finetune"]
    key = metric.key("miou")

    # ---- ranking of arms ---------------------------------------------------------------------------
    doc.h(level, "Ranking")
    header, rows = ranking_table(exp, metric)
    doc.table(header, rows)
    refs = ", ".join(f"`{r}`" for r in exp.references())
    doc.p(
        "Each arm's final row (the fine-tuning of a pre-training method, the last round of a method with "
        f"rounds, else its one run), ranked by mean {metric.subset} mIoU over seeds. Δ: paired mean "
        f"difference against {refs} over the seeds both ran, with the two-sided paired t-test p-value. "
        "Roles: `control` arms remove one ingredient of the weak-label methods (docs/methods.md). "
        "Optimiser steps and training time are per seed, summed over the arm's own runs (pre-training + "
        "fine-tuning, every round); a teacher from another row (pseudo_label) is that row's cost.",
        "note",
    )

    # ---- summary table ---------------------------------------------------------------------------
    doc.h(level, "Results by stage")
    header, rows = summary_table(exp, metric)
    doc.table(header, rows)
    weak_groups = [g for g in groups if any(v is not None for v in exp.values(g, "prop_mae").values())]
    if weak_groups:
        doc.table(
            ["stage", "proportion MAE", "presence F1"],
            [
                [
                    exp.label(g),
                    _ms(list(exp.values(g, "prop_mae").values()), 4),
                    _ms(list(exp.values(g, "presence_f1").values())),
                ]
                for g in weak_groups
            ],
            caption="Weak-label fit on the validation split (predicted vs true class proportions per patch).",
        )

    # ---- paired statistics ---------------------------------------------------------------------------
    comparisons: list[tuple[tuple[str, str], tuple[str, str]]] = []
    if baseline in has:
        comparisons += [(g, baseline) for g in groups if g != baseline]
    if control in has:
        comparisons += [(g, control) for g in finetunes]
    for g in finetunes:
        wk = ("weak", g[1])
        if wk in has:
            comparisons.append((g, wk))
    # Every compared method against each reference arm other than the baseline (compared above).
    methods = [a for a in exp.arms() if exp.arm_role(a) in ("method", "control")]
    for ref_arm in [r for r in exp.references() if r != "baseline"]:
        ref = exp.final_group(ref_arm)
        comparisons += [(exp.final_group(a), ref) for a in methods if a != ref_arm]
    if comparisons:
        doc.h(level, f"Paired comparisons ({_miou_header(metric)})")
        rows = []
        for g, ref in comparisons:
            pr = paired_test(exp.values(g, key), exp.values(ref, key), f"the {exp.label(ref)}")
            rows.append(
                [
                    f"{exp.label(g)} − {exp.label(ref)}",
                    str(pr.n),
                    _signed(pr.mean),
                    "–" if pr.std is None else f"{pr.std:.3f}",
                    "–" if pr.ci is None else f"[{pr.ci[0]:+.3f}, {pr.ci[1]:+.3f}]",
                    f"{pr.improved}/{pr.n}",
                    "–" if pr.t is None or math.isinf(pr.t) else f"{pr.t:.2f}",
                    format_p(pr.p),
                    pr.verdict,
                ]
            )
        doc.table(
            ["comparison", "pairs", "mean Δ", "std Δ", "95 % CI", "improved", "t", "p", "verdict"], rows
        )
        doc.p(
            "Two-sided paired t-test on per-seed differences (H0: mean Δ = 0); the CI uses Student's t with "
            "n − 1 degrees of freedom. With few seeds a large p means 'not shown', not 'no effect'.",
            "note",
        )

    # ---- per-class tables ------------------------------------------------------------------------------
    classes = exp.classes
    if classes:
        # Per-class F1 is recorded on validation only; IoU follows the headline subset.
        for prefix, title in ((metric.key("iou_"), "Per-class IoU"), ("f1_", "Per-class F1")):
            subset = " on the test subset" if prefix.startswith("test_") else ""
            doc.h(level, f"{title}{subset} (mean ± std over seeds)")
            rows = [
                [exp.label(g)] + [_ms(list(exp.values(g, f"{prefix}{c}").values())) for c in classes]
                for g in groups
            ]
            doc.table(["stage"] + classes, rows)
        absent = sorted({c for r in exp.rows for c in (r.get("absent_classes") or [])})
        if absent:
            doc.p(
                "Absent from the validation split in some runs (excluded from means there): "
                f"{', '.join(absent)}.",
                "note",
            )


def build_document(exp: Experiment, plots: dict[str, tuple[Path, str]], notes: list[str]) -> Doc:
    """Assemble the report blocks.

    The answer first, then (for a sweep) the curves, the tables (one block per sweep point), the
    plots, the setup and every run.
    """
    doc = Doc()
    name = exp.results.get("name") or exp.path.name
    metric = headline_metric(exp)
    n_split = len(exp.results.get("split_seeds") or [0])
    seeds = exp.results.get("seeds") or sorted({int(r["seed"]) for r in exp.rows})
    doc.h(1, f"segweak experiment report: {name}")
    if exp.results.get("synthetic"):
        doc.p(
            "SYNTHETIC DATA: these numbers come from procedurally generated Vaihingen-layout tiles, "
            "not from the ISPRS Vaihingen data set. They test the pipeline; they say nothing about real "
            "imagery.",
            "warn",
        )

    # ---- the answer ----------------------------------------------------------------------------
    sweep = bool(sweep_axes(exp))
    for text in sweep_headlines(exp, metric) if sweep else headlines(exp, metric):
        doc.p(text, "headline")
    if not sweep:
        _full_share(doc, exp, metric)
    doc.p(
        f"{len(seeds)} training seed(s) {list(seeds)}"
        + (f" × {n_split} split seeds" if n_split > 1 else "")
        + "; mean ± sample std over seeds; Δ and tests are paired per seed (runs with the same split "
        "and training seed are compared with each other" + (", at the same sweep point)." if sweep else ")."),
        "note",
    )
    doc.p(selection_sentence(exp, metric), "note")

    if sweep:
        _curves_section(doc, exp, metric, plots)
        for point in sweep_points(exp):
            doc.h(2, f"Point `{point.label}`")
            for text in _point_headlines(point.exp, metric):
                doc.p(text)
            _tables(doc, point.exp, metric, 3)
            for key in (f"curves:{point.label}", f"samples:{point.label}"):
                if key in plots:
                    doc.img(*plots[key])
    else:
        _tables(doc, exp, metric, 2)

    # ---- plots ---------------------------------------------------------------------------------------------
    shown = [k for k in ("miou", "per_class", "curves", "loss_terms", "samples") if k in plots]
    if shown:
        doc.h(2, "Plots")
        for key in shown:
            doc.img(plots[key][0], plots[key][1])
    for n in notes:
        doc.p(n, "note")

    # ---- setup ---------------------------------------------------------------------------------------
    _setup_section(doc, exp)

    # ---- every run -----------------------------------------------------------------------------------
    doc.h(2, "All runs")
    # Optional columns, only where some row has them: the sweep point, test and eroded-label mIoU.
    extra = [
        (title, k)
        for title, k in (
            ("test mIoU", "test_miou"),
            ("eroded mIoU", "eroded_miou"),
            ("test eroded mIoU", "test_eroded_miou"),
        )
        if has_values(exp, k)
    ]
    mixed = len(selections(exp)) > 1
    rows = []
    for r in exp.rows:
        rows.append(
            [
                exp.label(row_group(r)),
                *([str(r.get("point") or "–")] if sweep else []),
                str(r["split_seed"]),
                str(r["seed"]),
                *(_cell(r.get(k)) for k in ("miou", *(k for _, k in extra), "mf1", "oa")),
                "–" if r.get("best_epoch") is None else str(r["best_epoch"]),
                *([str(r.get("selection") or "best")] if mixed else []),
                _ran(r),
                "–" if r.get("train_seconds") is None else f"{float(r['train_seconds']):.0f}",
                f"`{r.get('run_dir', '')}`" + (f" ({r['note']})" if r.get("note") else ""),
            ]
        )
    doc.table(
        ["stage", *(["point"] if sweep else []), "split", "seed", "mIoU", *(t for t, _ in extra)]
        + ["mF1", "OA", "best epoch", *(["selection"] if mixed else []), "ran", "train s", "run"],
        rows,
        caption="mIoU, mF1, OA: validation subset. ran: optimiser steps taken and the passes over the "
        "training data they amount to (what ran, whatever the configured epochs; – for runs that did "
        "not record it).",
    )
    doc.p(
        "Every number above is read from `results.json` (one row per run; columns in docs/config.md).", "note"
    )
    return doc


def _environment_items(exp: Experiment) -> list[str]:
    """Return setup bullets on software and hardware: results.json's environment, and runs that differ."""
    from segweak import runtime

    env = exp.results.get("environment")
    if env:
        items = runtime.describe_environment(env)
    else:
        items = ["Software and machine: not recorded (results.json written by an older segweak)"]
    run_envs: dict[str, dict[str, Any]] = {}
    for r in exp.rows:
        path = exp.path / str(r.get("run_dir", "")) / "environment.json"
        try:
            run_envs[str(r.get("run_dir"))] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    for key, values in runtime.environment_differences(run_envs).items():
        listed = "; ".join(f"{value} ({len(names)} run(s))" for value, names in values.items())
        items.append(f"Runs trained in different environments: `{key}` is {listed}")
    return items


def _setup_section(doc: Doc, exp: Experiment) -> None:
    doc.h(2, "Setup")
    cfg = exp.config
    ds = cfg.get("dataset") or {}
    items = []
    source = exp.results.get("source") or ds.get("source") or "unknown"
    src_text = f"Data source: **{source}**"
    if exp.results.get("synthetic"):
        syn = ds.get("synthetic") or {}
        src_text += (
            f" (SYNTHETIC: {syn.get('tiles')} generated tiles of {syn.get('height')}×{syn.get('width')} px, "
            f"generator seed {syn.get('seed')})"
        )
    elif ds.get("root"):
        src_text += f" from `{ds.get('root')}`"
    elif ds.get("images"):
        src_text += f" from `{ds.get('images')}` + `{ds.get('masks')}`"
    items.append(src_text)
    try:
        store, splits = _store_info(exp)
    except SegweakError as exc:
        store, splits = None, {}
        items.append(f"Store unreadable: {exc}")
    classes = exp.classes
    items.append(f"Classes ({len(classes)}, index order): {', '.join(classes)}; pixel value 255 = ignore")
    if store:
        items.append(
            f"Store `{exp.results.get('store')}`: {store['n_tiles']} tiles → {_int(store['n_patches'])} "
            f"patches of {store['patch']}×{store['patch']} px (stride {store['stride']}); "
            f"{data_wording(read_store_meta(store.get('path_abs'))).channels}"
        )
        cpf = store.get("class_pixel_fraction") or {}
        if cpf:
            items.append(
                "Class pixel share (all valid pixels): "
                + ", ".join(f"{c} {100 * v:.1f} %" for c, v in cpf.items() if v is not None)
            )
    axes = sweep_axes(exp)
    if axes:
        items.append(
            "Sweep (cross product, every arm and seed at each point): "
            + "; ".join(f"`{k}` ∈ {{{', '.join(value_label(v) for v in vs)}}}" for k, vs in axes.items())
        )
    provenance = weak_provenance(exp)
    if provenance:
        items.append(
            "Weak labels per arm (results.json `weak_labels`, `weak_noise`): "
            + "; ".join(
                f"{arm} {', '.join(labels)}, noise {', '.join(f'`{n}`' for n in noise)}"
                for arm, (labels, noise) in provenance.items()
            )
        )
    items += _environment_items(exp)
    doc.ul(items)
    doc.p(
        "Reproducibility: rerunning with the same seeds on the same machine, with the same library "
        "versions and the same number of threads, gives identical digits. On another CPU or with another "
        "BLAS build the digits differ slightly (floating-point sums in another order); conclusions should "
        "not.",
        "note",
    )
    if splits:
        rows = []
        for k, sp in splits.items():
            for sub in [x for x in ("strong", "weak", "val", "test") if x in sp["subsets"] or x != "test"]:
                s = sp["subsets"].get(sub, {})
                rows.append(
                    [
                        f"{sp['name']} (seed {k}, by {sp['by']})",
                        sub,
                        _int(s.get("patches")),
                        f"{100 * s.get('patch_fraction', 0):.1f} %",
                        _int(s.get("pixels")),
                        f"{100 * s.get('pixel_fraction', 0):.1f} %",
                    ]
                )
        doc.table(
            ["split", "subset", "patches", "% patches", "valid pixels", "% pixels"],
            rows,
            caption="Split sizes. strong: pixel labels; weak: only class proportions are used; "
            "val: evaluation and model selection; test (when held out): evaluation only.",
        )
    cfgs = _run_configs(exp)
    if cfgs:
        areas = {g: (c.get("weak") or {}).get("area", "patch") for g, c in cfgs.items()}
        weak_groups = [g for g, c in cfgs.items() if _reads_weak_labels(c)]
        used = {areas[g] for g in weak_groups} or set(areas.values())
        items = [f"Weak-label area: {_AREA_TEXT[a]}" for a in sorted(used) if a in _AREA_TEXT]
        if len(used) > 1:
            items.append(
                "Runs differ in weak.area: " + ", ".join(f"{exp.label(g)} `{areas[g]}`" for g in weak_groups)
            )
        first = {g: next(r for r in exp.rows if row_group(r) == g) for g in cfgs}
        sources = {g: _weak_source(exp, first[g], cfgs[g]) for g in weak_groups}
        if sources:
            items.append("Weak labels: " + "; ".join(f"{exp.label(g)} {text}" for g, text in sources.items()))
        budget = [
            f"{exp.label(g)} {_ran(first[g])}" for g in cfgs if first[g].get("optimizer_steps") is not None
        ]
        if budget:
            items.append("Optimiser steps run (first run of each row): " + "; ".join(budget))
        doc.ul(items)
        rows = []
        for g, c in cfgs.items():
            m, o, t, d = c.get("model", {}), c.get("optim", {}), c.get("trainer", {}), c.get("data", {})
            method = str(c.get("method"))
            options = (c.get("methods") or {}).get(method) or {}
            extra = ", ".join(f"{k} {v}" for k, v in options.items())
            init = str(m.get("weights"))
            checkpoint = (c.get("init") or {}).get("checkpoint")
            if checkpoint:
                init = "weak best.ckpt" if g[0] == "finetune" else f"`{checkpoint}`"
                extra = ", ".join(
                    x for x in (extra, "head reset" if (c.get("init") or {}).get("reset_head") else "") if x
                )
            limit = t.get("limit_train_batches", 1.0)
            epochs = str(t.get("max_epochs")) + (
                f" (max_steps {t.get('max_steps')})" if (t.get("max_steps") or -1) > 0 else ""
            )
            if limit not in (1, 1.0, None):
                epochs += f" × limit_train_batches {limit}"
            rows.append(
                [
                    exp.label(g),
                    method,
                    f"{m.get('arch')} / {m.get('encoder')}",
                    init,
                    epochs,
                    str(d.get("batch_size"))
                    + (
                        " (" + ", ".join(f"{k} {v}" for k, v in d["batch_sizes"].items()) + ")"
                        if d.get("batch_sizes")
                        else ""
                    ),
                    f"{o.get('optimizer')} lr {o.get('lr')}"
                    + (f", enc {o.get('encoder_lr')}" if o.get("encoder_lr") else ""),
                    str(t.get("precision")),
                    extra,
                ]
            )
        doc.table(
            [
                "stage",
                "method",
                "arch / encoder",
                "init weights",
                "epochs (configured)",
                "batch",
                "optimiser",
                "precision",
                "options",
            ],
            rows,
            caption="Training configuration per row (from each run's config.yaml; what actually ran is "
            "in the 'ran' column of All runs).",
        )
    ignored = data_wording(read_store_meta(store.get("path_abs") if store else None)).ignore
    doc.p(
        "Metric conventions: one confusion matrix accumulated over every pixel of the whole validation "
        f"split (not averaged per patch); pixels labelled 255 ({ignored}) are ignored; a class with no "
        "ground-truth pixel in the validation split is absent: excluded "
        "from mIoU / mean F1 (null in per-class columns), while its false positives still lower the IoU "
        "of the true classes; the test subset, when held out, is scored the same way. "
        + _selection_convention(exp)
        + (
            " Eroded-label mIoU: the same predictions scored against the eroded (`_noBoundary`) labels, "
            "boundary bands ignored (the ISPRS benchmark's convention)."
            if has_values(exp, "eroded_miou") or has_values(exp, "test_eroded_miou")
            else ""
        ),
        "note",
    )


def _selection_convention(exp: Experiment) -> str:
    """Say which weights the metrics are of (``selection`` column; rows without it were ``best``)."""
    sel = selections(exp)
    if set(sel) == {"best"}:
        return "Metrics are those of the best checkpoint (highest validation mIoU)."
    if set(sel) == {"last"}:
        return "Metrics are those of the last epoch's weights (`selection: last`)."
    return "Metrics are those of each run's `selection` (mixed: see All runs)."


def report(exp_dir: str | Path, *, samples: int | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` for an experiment directory.

    Args:
        exp_dir: Directory written by :func:`segweak.experiment.run.run_experiment`.
        samples: Validation patches in the sample grid; ``None`` uses ``report.samples`` of the
            experiment config (4 when unset).

    Returns:
        Path of ``report.html``.

    Raises:
        SegweakError: When the directory holds no ``results.json``.
    """
    exp = load_experiment(exp_dir)
    rep_cfg = exp.config.get("report") or {}
    n_samples = samples if samples is not None else int(rep_cfg.get("samples", 4))
    sample_seed = int(rep_cfg.get("sample_seed", 0))
    plots, notes = figures.make_plots(exp, n_samples=n_samples, sample_seed=sample_seed)
    doc = build_document(exp, plots, notes)
    title = f"segweak report: {exp.results.get('name') or exp.path.name}"
    atomic_write_text(exp.path / "report.md", render_markdown(doc))
    return atomic_write_text(exp.path / "report.html", render_html(doc, exp.path, title))
