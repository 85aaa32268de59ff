"""Report of a sweep built from results.json alone (rows made by hand here, following docs/config.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from segweak.experiment.results import load_experiment
from segweak.report import report as rep
from segweak.report import views

CLASSES = ["impervious", "building", "car"]
FRACTIONS = [0.01, 0.05, 0.2]
# Mean test mIoU per fraction; seeds add -0.01, 0, +0.01 so the means are exact.
BASE = [0.40, 0.50, 0.60]
PROP = [0.48, 0.55, 0.61]
OFFSETS = [-0.01, 0.0, 0.01]


def _point(factors: dict) -> str:
    return ",".join(
        f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, dict) else v}"
        for k, v in factors.items()
    )


def _row(arm: str, stage: str, kind: str, role: str, seed: int, miou: float, factors: dict, **extra) -> dict:
    """One results row with the structured fields a sweep writes (docs/config.md, results columns)."""
    point = _point(factors)
    row = {
        "stage": stage,
        "method": "" if arm in ("baseline", "full") else arm,
        "arm": arm,
        "step_kind": kind,
        "role": role,
        "split_seed": 0,
        "seed": seed,
        "round": None,
        "train_method": "supervised" if arm in ("baseline", "full") or kind == "finetune" else arm,
        "miou": miou,
        "mf1": miou + 0.1,
        "oa": miou + 0.2,
        **{f"iou_{c}": miou for c in CLASSES},
        **{f"f1_{c}": miou + 0.1 for c in CLASSES},
        "factors": factors,
        "point": point,
        "selection": "best",
        "strong_fraction": factors.get("split.strong"),
        "weak_labels": "computed",
        "weak_noise": "none",
        "run_dir": f"runs/{point}/{arm}-{kind}-seed{seed}",
        "note": "",
    }
    row.update(extra)
    return row


def _write(tmp_path: Path, rows: list[dict], axes: dict) -> Path:
    """An experiment directory holding results.json and nothing else (no config, store or runs)."""
    exp = tmp_path / "exp"
    exp.mkdir()
    results = {
        "format_version": 1,
        "name": "sweep",
        "synthetic": True,
        "classes": CLASSES,
        "seeds": [0, 1, 2],
        "split_seeds": [0],
        "methods": ["proportion"],
        "sweep": {"axes": axes},
        "rows": rows,
    }
    (exp / "results.json").write_text(json.dumps(results))
    return exp


def _strong_rows(fractions: list[float] = FRACTIONS) -> list[dict]:
    rows = []
    for i, frac in enumerate(fractions):
        factors = {"split.strong": frac}
        for s, off in enumerate(OFFSETS):
            test = {"test_eroded_miou": None}

            def scored(value: float) -> dict:
                # Validation is optimistic (the checkpoint was chosen on it); test is the headline.
                return {
                    "test_miou": value,
                    "test_mf1": value + 0.1,
                    "test_oa": value + 0.2,
                    **{f"test_iou_{c}": value for c in CLASSES},
                    "eroded_miou": value + 0.06,
                    "test_eroded_miou": value + 0.02,
                }

            test = scored(BASE[i] + off)
            rows.append(
                _row("baseline", "baseline", "train", "baseline", s, BASE[i] + off + 0.05, factors, **test)
            )
            weak = scored(0.3)
            rows.append(
                _row(
                    "proportion", "weak", "pretrain", "method", s, 0.35, factors,
                    weak_noise="dirichlet(concentration=50)", **weak,
                )
            )  # fmt: skip
            rows.append(
                _row(
                    "proportion", "finetune", "finetune", "method", s, PROP[i] + off + 0.05, factors,
                    weak_noise="dirichlet(concentration=50)", **scored(PROP[i] + off),
                )
            )  # fmt: skip
    return rows


def test_sweep_report_draws_curves_and_reads_label_efficiency_from_results_json_alone(tmp_path):
    exp = _write(tmp_path, _strong_rows(), {"split.strong": FRACTIONS})
    assert [p.name for p in exp.iterdir()] == ["results.json"]
    rep.report(exp)
    md = (exp / "report.md").read_text()
    html = (exp / "report.html").read_text()

    # The curve figure, from the rows alone.
    png = exp / "plots" / "sweep_0_split_strong.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plots/sweep_0_split_strong.png" in md
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) == 1
    curves = views.axis_curves(
        load_experiment(exp), "split.strong", views.headline_metric(load_experiment(exp))
    )
    assert curves.log and curves.numeric and len(curves.panels) == 1
    (base, prop) = curves.panels[0].curves
    assert (base.arm, prop.arm) == ("baseline", "proportion")
    assert (
        base.xs == pytest.approx(FRACTIONS)
        and base.means == pytest.approx(BASE)
        and prop.means == pytest.approx(PROP)
    )
    assert base.stds == pytest.approx([0.01] * 3) and base.ns == [3, 3, 3]

    # The answer: label efficiency at the method's largest gain (1 %), on the test subset, interpolated
    # in the figure's log x: 0.48 is 80 % of the way from 0.40 to 0.50, i.e. 1 % × 5^0.8 = 3.62 %
    # (linear in the fraction would say 4.2 %).
    head = md[: md.index("## ")]
    assert (
        "Label efficiency: to match **proportion** at 1 % pixel labels (test mIoU 0.480), the baseline needs "
        "**≈ 3.62 % pixel labels**, 3.6× as many (interpolated between its swept fractions on a log scale, "
        "as the curve figure draws them)."
    ) in head
    assert "selected on validation, reported on the held-out test subset" in head
    assert "`selection: best`" in head
    # Every swept fraction in the label-efficiency table, outside the range never extrapolated.
    table = md[md.index("*Label efficiency:") :]
    assert "| proportion | 5 % | 0.550 | 0.500 | ≈ 10 % | 2.0× |" in table  # half-way in log x: 10 %
    assert "the baseline's swept fractions on a log scale, as the curve figure draws them" in table
    assert "| proportion | 20 % | 0.610 | 0.600 | > 20 % | > 1.0× |" in table

    # Tables stay, one block per point, below the curves, on the test subset with val and eroded beside.
    assert (
        md.index("## Curves")
        < md.index("## Point `split.strong=0.01`")
        < md.index("## Point `split.strong=0.2`")
    )
    block = md[md.index("## Point `split.strong=0.01`") : md.index("## Point `split.strong=0.05`")]
    ranking = [line for line in block.splitlines() if line.startswith("| ")]
    header = ["rank", "arm", "role", "training", "runs", "test mIoU", "test mIoU (eroded labels)", "val mIoU"]
    assert ranking[0].startswith("| " + " | ".join([*header, "Δ vs baseline"]) + " |")
    # proportion at 1 %: test 0.480, eroded test 0.500, validation 0.530, paired Δ +0.080.
    assert ranking[1].startswith(
        "| 1 | **proportion** | method | pre-training + fine-tuning | 3 | 0.480 ± 0.010 |"
    )
    assert "| 0.500 ± 0.010 | 0.530 ± 0.010 | +0.080 (p = " in ranking[1]
    assert "### Per-class IoU on the test subset (mean ± std over seeds)" in block
    assert "Weak pre-training + fine-tuning: test mIoU 0.480 ± 0.010 vs baseline 0.400 ± 0.010" in block
    # Setup: the sweep and the weak-label provenance per arm; every run with its point.
    assert "`split.strong` ∈ {0.01, 0.05, 0.2}" in md
    assert "proportion computed, noise `dirichlet(concentration=50)`" in md
    assert "| finetune | split.strong=0.05 | 0 | 1 |" in md
    # No per-stage bars mixing the points.
    assert "scores_by_stage.png" not in md


def test_label_efficiency_interpolates_in_the_scale_the_curve_figure_draws(tmp_path):
    # 5-20 % spans 4×, not more: the figure's x axis is linear, and so is the reading.
    fractions = [0.05, 0.1, 0.2]
    exp = _write(tmp_path, _strong_rows(fractions), {"split.strong": fractions})
    loaded = load_experiment(exp)
    metric = views.headline_metric(loaded)
    curves = views.axis_curves(loaded, "split.strong", metric)
    assert not curves.log and views.log_x(fractions) is False and views.log_x(FRACTIONS) is True
    readings = {round(e.fraction, 4): e.crossing for e in views.label_efficiency(curves)}
    assert not readings[0.05].log and readings[0.05].x == pytest.approx(0.05 + 0.8 * 0.05)  # 0.48 of 0.4..0.5
    rep.report(exp, samples=0)
    md = (exp / "report.md").read_text()
    assert "**≈ 9 % pixel labels**, 1.8× as many (linearly interpolated between its swept fractions)." in md
    assert "linearly interpolated between the baseline's swept fractions" in md and "log scale" not in md

    # The same curve drawn on a log x axis (more than 4×) is read in log x: another number.
    log_curves = views.AxisCurves(**{**vars(curves), "log": True})
    log_reading = next(e.crossing for e in views.label_efficiency(log_curves) if round(e.fraction, 4) == 0.05)
    assert log_reading.log and log_reading.x == pytest.approx(0.05 * 2**0.8)  # 8.71 %, not 9 %


def test_sweep_of_two_axes_draws_panels_and_a_categorical_axis(tmp_path):
    noises = [{"kind": "none"}, {"kind": "dirichlet", "concentration": 50}]
    # The noisy panel's baseline dips at 5 %: not monotone.
    base = {0: BASE, 1: [0.40, 0.56, 0.52]}
    rows = []
    for j, noise in enumerate(noises):
        for i, frac in enumerate(FRACTIONS):
            factors = {"split.strong": frac, "weak.noise": noise}
            for s, off in enumerate(OFFSETS):
                rows.append(_row("baseline", "baseline", "train", "baseline", s, base[j][i] + off, factors))
                rows.append(
                    _row(
                        "joint",
                        "joint",
                        "train",
                        "method",
                        s,
                        PROP[i] + off,
                        factors,
                        selection="last" if s else "best",
                    )
                )
    exp = _write(tmp_path, rows, {"split.strong": FRACTIONS, "weak.noise": noises})
    rep.report(exp)
    md = (exp / "report.md").read_text()
    for name in ("sweep_0_split_strong.png", "sweep_1_weak_noise.png"):
        assert (exp / "plots" / name).is_file() and f"plots/{name}" in md
    loaded = load_experiment(exp)
    metric = views.headline_metric(loaded)
    assert metric.subset == "validation"
    by_noise = views.axis_curves(loaded, "weak.noise", metric)
    assert not by_noise.numeric and not by_noise.log
    assert [label for _, label in by_noise.ticks] == [
        '{"kind":"none"}',
        '{"concentration":50,"kind":"dirichlet"}',
    ]
    assert [p.title for p in by_noise.panels] == [f"split.strong={f}" for f in FRACTIONS]
    assert by_noise.panels[1].curves[0].xs == [0.0, 1.0]
    assert by_noise.panels[1].curves[0].means == pytest.approx([0.50, 0.56])
    assert len(views.axis_curves(loaded, "split.strong", metric).panels) == 2
    head = md[: md.index("## ")]
    # One reading per panel; the non-monotone baseline is stated.
    assert head.count("Label efficiency (weak.noise=") == 2
    assert "not monotone in the strong fraction" in head
    assert "Model selection is MIXED across runs (`best` in 24 run(s); `last` in 12 run(s))" in head
    assert '| joint | {"concentration":50,"kind":"dirichlet"} | 5 % |' in md
    assert "(first crossing)" in md
    assert "| selection |" in md  # every run shows its selection when they differ


def test_headline_stays_on_validation_unless_every_run_has_test_metrics(tmp_path):
    rows = _strong_rows()
    rows[0]["test_miou"] = None
    exp = load_experiment(_write(tmp_path, rows, {"split.strong": FRACTIONS}))
    metric = views.headline_metric(exp)
    assert (metric.subset, metric.partial) == ("validation", len(rows) - 1)
    assert (
        f"Only {len(rows) - 1} of {len(rows)} runs have a held-out test subset"
        in views.selection_sentence(exp, metric)
    )
    # What `segweak run` prints and the report shows: one table per point, with the headline subset.
    points = views.sweep_points(exp)
    assert [p.label for p in points] == [f"split.strong={f}" for f in FRACTIONS]
    for point in points:
        header, table = rep.summary_table(point.exp, metric)
        assert header[:3] == ["stage", "runs", "mIoU"] and "val mIoU" not in header and len(table) == 3


def test_cli_prints_one_readable_table_per_point_at_80_columns(tmp_path):
    # A long dotted sweep key used to fill a "point" column and squeeze every number to "…".
    from rich.console import Console

    from segweak.cli import _print_results

    key = "train.methods.pseudo_label.student_init"
    rows = []
    for value, miou in (("imagenet", 0.70), ("teacher", 0.72)):
        factors = {key: value}
        for s, off in enumerate(OFFSETS):
            rows.append(_row("baseline", "baseline", "train", "baseline", s, 0.63 + off, factors))
            rows.append(_row("pseudo_label", "pseudo_label", "train", "method", s, miou + off, factors))
    exp = _write(tmp_path, rows, {key: ["imagenet", "teacher"]})

    console = Console(width=80, record=True)
    _print_results(exp, console)
    text = console.export_text()
    assert "…" not in text
    for value in ("imagenet", "teacher"):
        assert f"{key}={value}" in text
    # Each point's table names its rows whole and shows its own numbers (they may wrap, never "…").
    lines = text.splitlines()
    assert sum(line.startswith("baseline ") for line in lines) == 2
    assert sum(line.startswith("pseudo_label ") for line in lines) == 2
    assert text.count("0.630 ±") >= 2 and "0.700 ±" in text and "0.720 ±" in text


def test_curve_scale_follows_the_declared_values_not_the_achieved_shares(tmp_path):
    # A 5-20 % sweep (4×) whose split achieved 4.9-20.5 % (4.2×) stays linear: the rounding of one
    # dataset's split must not change the scale, and with it the label-efficiency reading.
    fractions = [0.05, 0.1, 0.2]
    achieved = {0.05: 0.049, 0.1: 0.1, 0.2: 0.205}
    rows = _strong_rows(fractions)
    for r in rows:
        r["strong_fraction"] = achieved[r["factors"]["split.strong"]]
    exp = load_experiment(_write(tmp_path, rows, {"split.strong": fractions}))
    curves = views.axis_curves(exp, "split.strong", views.headline_metric(exp))
    assert views.log_x(list(achieved.values())) is True
    assert not curves.log
