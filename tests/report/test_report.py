"""Report generation on constructed results (numbers made up here, in the test only)."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import pytest

from segweak.report import report as rep

CLASSES = ["impervious", "building", "low_vegetation", "tree", "car"]


def _row(stage: str, seed: int, miou: float, method: str = "", split_seed: int = 0) -> dict:
    row = {
        "stage": stage,
        "method": method,
        "split_seed": split_seed,
        "seed": seed,
        "train_stage": {"baseline": "strong", "control": "strong"}.get(stage, stage),
        "miou": miou,
        "mf1": miou + 0.1,
        "oa": miou + 0.2,
    }
    for i, c in enumerate(CLASSES):
        row[f"iou_{c}"] = None if (c == "car" and stage == "weak") else round(miou + 0.01 * (i - 2), 6)
    for i, c in enumerate(CLASSES):
        row[f"f1_{c}"] = round(miou + 0.1 + 0.01 * (i - 2), 6)
    row.update(
        prop_mae=0.05 if stage == "weak" else None,
        presence_f1=0.9 if stage == "weak" else None,
        n_pixels=1000,
        absent_classes=["car"] if stage == "weak" else [],
        epochs=3,
        best_epoch=2,
        train_seconds=1.5,
        run_dir=f"runs/{stage}{'-' + method if method else ''}-split{split_seed}-seed{seed}",
        note="",
    )
    return row


def _make_exp(tmp_path: Path, rows: list[dict], synthetic: bool = True, methods=("proportion",)) -> Path:
    exp = tmp_path / "exp"
    exp.mkdir()
    for r in rows:
        rd = exp / r["run_dir"]
        rd.mkdir(parents=True, exist_ok=True)
        lines = ["epoch,train_loss,val_loss,val_miou"]
        for e in range(1, 4):
            lines.append(f"{e},{1.0 / e:.3f},{1.2 / e:.3f},{r['miou'] * e / 3:.4f}")
        (rd / "history.csv").write_text("\n".join(lines) + "\n")
    results = {
        "format_version": 1,
        "name": "constructed",
        "synthetic": synthetic,
        "source": "synthetic" if synthetic else "vaihingen",
        "classes": CLASSES,
        "store": "store",  # absent on purpose: the report must cope
        "splits": {"0": "default"},
        "seeds": sorted({r["seed"] for r in rows}),
        "split_seeds": [0],
        "stages": sorted({r["stage"] for r in rows}),
        "methods": list(methods),
        "rows": rows,
    }
    (exp / "results.json").write_text(json.dumps(results))
    cfg = "name: constructed\ndataset: {source: synthetic}\nreport: {samples: 2}\n"
    (exp / "config.yaml").write_text(cfg)
    return exp


BASE = [0.50, 0.52, 0.55]
FINE = [0.56, 0.57, 0.62]


def _protocol_rows() -> list[dict]:
    rows = []
    for s in range(3):
        rows.append(_row("baseline", s, BASE[s]))
        rows.append(_row("weak", s, 0.30 + 0.01 * s, "proportion"))
        rows.append(_row("finetune", s, FINE[s], "proportion"))
        rows.append(_row("full", s, 0.70 + 0.01 * s))
    return rows


def test_paired_test_matches_scipy_ttest_rel():
    scipy_stats = pytest.importorskip("scipy.stats")
    a = {(0, s): v for s, v in enumerate(FINE)}
    b = {(0, s): v for s, v in enumerate(BASE)}
    pr = rep.paired_test(a, b)
    ref = scipy_stats.ttest_rel(FINE, BASE)
    assert pr.n == 3 and pr.improved == 3
    assert pr.mean == pytest.approx(sum(FINE) / 3 - sum(BASE) / 3)
    assert pr.t == pytest.approx(ref.statistic)
    assert pr.p == pytest.approx(ref.pvalue)
    lo, hi = pr.ci
    assert lo < pr.mean < hi


def test_own_t_distribution_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for t, df in [(0.3, 1), (2.1, 2), (4.5, 3), (1.0, 10), (12.0, 4)]:
        own = rep._betai(df / 2.0, 0.5, df / (df + t * t))
        assert own == pytest.approx(2 * scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-12)


def test_paired_test_small_and_degenerate_cases():
    one = rep.paired_test({(0, 0): 0.6}, {(0, 0): 0.5})
    assert one.n == 1 and one.p is None and "no statistical test" in one.verdict
    same = rep.paired_test({(0, 0): 0.5, (0, 1): 0.4}, {(0, 0): 0.5, (0, 1): 0.4})
    assert same.mean == 0 and same.p is None and "identical" in same.verdict
    const = rep.paired_test({(0, 0): 0.6, (0, 1): 0.5}, {(0, 0): 0.5, (0, 1): 0.4})
    assert const.mean == pytest.approx(0.1) and "same difference" in const.verdict
    unpaired = rep.paired_test({(0, 0): 0.6}, {(0, 1): 0.5})
    assert unpaired.n == 0 and unpaired.mean is None
    noisy = rep.paired_test({(0, 0): 0.6, (0, 1): 0.4}, {(0, 0): 0.5, (0, 1): 0.45})
    assert noisy.p is not None and noisy.p > 0.05 and "noise" in noisy.verdict and "n = 2" in noisy.verdict


def test_mean_std_skips_nulls():
    m, sd, n = rep.mean_std([0.2, None, 0.4])
    assert n == 2 and m == pytest.approx(0.3) and sd == pytest.approx(math.sqrt(0.02))
    assert rep.mean_std([None]) == (None, None, 0)


def test_report_headline_tables_and_self_contained_html(tmp_path):
    exp = _make_exp(tmp_path, _protocol_rows())
    html_path = rep.report(exp)
    md = (exp / "report.md").read_text()
    html = html_path.read_text()

    delta = sum(FINE) / 3 - sum(BASE) / 3
    # The answer comes first (before any section heading), with the paired statistics.
    first_section = md.index("## ")
    head = md[:first_section]
    assert "SYNTHETIC" in head
    assert "Weak pre-training + fine-tuning: mIoU 0.583 ± 0.032 vs baseline 0.523 ± 0.025" in head
    assert f"Δ {delta:+.3f}" in head
    assert "paired over 3 seeds" in head and "3/3 seeds improved" in head and "paired t-test p = " in head
    p = re.search(r"paired t-test p = ([0-9.e-]+)", head).group(1)
    assert 0 < float(p) < 1
    # % of full supervision
    assert "Share of the full-supervision mIoU (0.710)" in md
    assert f"finetune {100 * (sum(FINE) / 3) / 0.71:.0f} %" in md
    # tables: per-stage summary, per-class IoU with absent class as dash, paired comparisons
    assert "| stage | runs | mIoU | mean F1 | OA | Δ mIoU vs baseline | % of full mIoU |" in md
    assert "| stage | impervious | building | low_vegetation | tree | car |" in md
    weak_iou_line = next(line for line in md.splitlines() if line.startswith("| weak |") and "–" in line)
    assert weak_iou_line.rstrip().endswith("| – |")
    assert "finetune − baseline" in md and "finetune − weak" in md
    assert "Metric conventions" in md and "ignored" in md
    # plots written and referenced
    for name in ("scores_by_stage.png", "per_class_iou.png", "learning_curves.png"):
        png = exp / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in md
    # the sample grid needs a store: the report says why it is missing
    assert "sample predictions skipped" in md
    # HTML: self-contained
    assert 'src="http' not in html and 'href="http' not in html and "<link" not in html
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(imgs) == 3 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert base64.b64decode(imgs[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<style>" in html and "SYNTHETIC" in html
    assert html.index("Weak pre-training + fine-tuning") < html.index("<h2>")


def test_report_small_n_is_stated_plainly(tmp_path):
    rows = [
        _row("baseline", 0, 0.5),
        _row("weak", 0, 0.3, "proportion"),
        _row("finetune", 0, 0.55, "proportion"),
    ]
    exp = _make_exp(tmp_path, rows, synthetic=False)
    rep.report(exp)
    md = (exp / "report.md").read_text()
    head = md[: md.index("## ")]
    assert "only 1 seed: no statistical test is possible" in head
    assert "paired over 1 seed" in head
    assert "SYNTHETIC" not in md


def test_report_several_methods_and_control(tmp_path):
    rows = []
    for s in range(2):
        rows.append(_row("baseline", s, 0.5 + 0.01 * s))
        for m, off in (("proportion", 0.05), ("mil", -0.02)):
            rows.append(_row("weak", s, 0.3, m))
            rows.append(_row("finetune", s, 0.5 + off + 0.012 * s, m))
        rows.append(_row("control", s, 0.51 + 0.01 * s))
    exp = _make_exp(tmp_path, rows, methods=("proportion", "mil"))
    rep.report(exp)
    md = (exp / "report.md").read_text()
    head = md[: md.index("## ")]
    assert "Weak pre-training + fine-tuning (proportion)" in head
    assert "Weak pre-training + fine-tuning (mil)" in head
    assert "vs control" in head
    assert "| finetune (mil) |" in md and "finetune (proportion) − control" in md


def test_report_of_missing_directory_is_a_clear_error(tmp_path):
    from segweak.errors import SegweakError

    with pytest.raises(SegweakError, match="results.json not found"):
        rep.report(tmp_path)


def _write_run(exp: Path, row: dict, config: dict, terms: dict[str, float]) -> None:
    """Give a constructed row a run config.yaml and a history.csv with step and loss-term columns."""
    import yaml

    rd = exp / row["run_dir"]
    (rd / "config.yaml").write_text(yaml.safe_dump(config))
    cols = ["epoch", "step", "train_loss", "val_miou", *(f"train_{t}" for t in terms)]
    lines = [",".join(cols)]
    for e in range(1, 4):
        values = [str(e), str(10 * e), str(sum(terms.values()) / e), str(row["miou"])]
        lines.append(",".join(values + [str(v / e) for v in terms.values()]))
    (rd / "history.csv").write_text("\n".join(lines) + "\n")


def test_report_single_run_method_area_and_what_ran(tmp_path):
    rows = []
    for s in range(3):
        rows.append(_row("baseline", s, BASE[s]))
        rows.append(_row("joint", s, FINE[s]))
    for r in rows:
        r.update(train_method="supervised" if r["stage"] == "baseline" else "joint", optimizer_steps=300)
        r["data_passes"] = 0.136
    exp = _make_exp(tmp_path, rows, methods=("joint",))
    for r in rows:
        if r["stage"] == "joint":
            cfg = {"method": "joint", "weak": {"area": "patch"}, "methods": {"joint": {"weight": 0.5}}}
            _write_run(exp, r, cfg, {"pixel": 1.0, "proportion": 0.5})
        else:
            _write_run(exp, r, {"method": "supervised", "weak": {"area": "patch"}}, {"pixel": 1.0})
    rep.report(exp)
    md = (exp / "report.md").read_text()
    head = md[: md.index("## ")]
    assert "Method joint: mIoU 0.583 ± 0.032 vs baseline 0.523 ± 0.025" in head
    assert "Weak-label area: predicted proportions averaged over the **whole patch**" in md
    assert "| joint | joint |" in md and "weight 0.5" in md  # setup row: method and its options
    assert "300 steps (0.14 passes)" in md  # what ran, not the configured epochs
    assert "plots/loss_terms.png" in md and (exp / "plots" / "loss_terms.png").is_file()


def test_report_of_old_runs_states_the_valid_area(tmp_path):
    # An experiment written before training methods: old config keys, no steps recorded.
    rows = [
        _row("baseline", 0, 0.5),
        _row("weak", 0, 0.3, "proportion"),
        _row("finetune", 0, 0.55, "proportion"),
    ]
    exp = _make_exp(tmp_path, rows)
    old = {"stage": "weak", "weak": {"method": "proportion", "loss": "ce", "use_valid_area": True}}
    import yaml

    (exp / rows[1]["run_dir"] / "config.yaml").write_text(yaml.safe_dump(old))
    rep.report(exp)
    md = (exp / "report.md").read_text()
    assert "**valid (non-ignore) pixels** only" in md and "whole patch" not in md
    assert "| weak | proportion |" in md and "loss ce" in md
    assert not (exp / "plots" / "loss_terms.png").exists()  # no step / term columns in old histories


def test_report_says_where_the_weak_labels_came_from(tmp_path):
    rows = []
    for s in range(3):
        rows.append(_row("baseline", s, BASE[s]))
        rows.append(_row("joint", s, FINE[s]))
    for r in rows:
        r.update(train_method="supervised" if r["stage"] == "baseline" else "joint")
    exp = _make_exp(tmp_path, rows, methods=("joint",))
    prov = {
        "kind": "imported",
        "name": "fields",
        "file": "/data/fields.csv",
        "sha256": "ab" * 32,
        "bags_used": 7,
    }
    for r in rows:
        if r["stage"] == "joint":
            _write_run(
                exp, r, {"method": "joint", "weak": {"area": "patch", "labels": "fields"}}, {"pixel": 1.0}
            )
            (exp / r["run_dir"] / "metrics.json").write_text(json.dumps({"weak_labels": prov}))
        else:
            _write_run(exp, r, {"method": "supervised", "weak": {"area": "patch"}}, {"pixel": 1.0})
    rep.report(exp)
    md = (exp / "report.md").read_text()
    assert "Weak labels: " in md
    assert "imported set `fields` from `/data/fields.csv` (sha256 `abababababab`, 7 bag(s) used)" in md
