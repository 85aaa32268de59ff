"""Report generation on constructed results (numbers made up here, in the test only)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from segweak.experiment import results
from segweak.report import figures
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
    # Without a sweep: no curve section, no per-point blocks; validation numbers, said so.
    assert "## Curves" not in md and "## Point" not in md and "Label efficiency" not in md
    assert "Model selection: every run reports the checkpoint with the highest validation mIoU" in md
    assert "Headline numbers are on the validation subset the best checkpoint was chosen on" in md
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


def _arm_row(
    stage: str, seed: int, miou: float, method: str = "", role: str = "method", steps: int = 50
) -> dict:
    """A results row with the structured fields of an experiment that compares methods."""
    row = _row(stage, seed, miou, method)
    kind = {"weak": "pretrain", "finetune": "finetune"}.get(stage, "train")
    role = stage if stage in ("baseline", "full") else role
    row.update(arm=method or stage, step_kind=kind, role=role, optimizer_steps=steps, train_seconds=10.0)
    return row


def _comparison_rows() -> list[dict]:
    rows = []
    for s in range(3):
        rows.append(_arm_row("baseline", s, BASE[s], steps=40))
        for m, role, off in (("proportion", "method", 0.06), ("shuffled", "control", 0.01)):
            rows.append(_arm_row("weak", s, 0.3, m, role, steps=100))
            rows.append(_arm_row("finetune", s, BASE[s] + off + 0.005 * s * (m == "proportion"), m, role, 40))
        rows.append(_arm_row("semi_supervised", s, BASE[s] + 0.03, role="control", steps=140))
        rows.append(_arm_row("joint", s, BASE[s] + 0.045 - 0.01 * s, steps=140))
        rows.append(_arm_row("full", s, 0.70 + 0.01 * s))
    return rows


def _ranking(md: str) -> list[list[str]]:
    lines = md[md.index("## Ranking") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| rank |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip("|").split("|")])
    return [table[0]] + table[2:]


def test_ranking_of_arms_with_deltas_against_baseline_and_controls(tmp_path):
    rows = _comparison_rows()
    exp = _make_exp(tmp_path, rows, methods=("proportion", "shuffled", "semi_supervised", "joint"))
    rep.report(exp)
    md = (exp / "report.md").read_text()
    header, *table = _ranking(md)
    assert header == [
        "rank", "arm", "role", "training", "runs", "mIoU", "Δ vs baseline", "Δ vs shuffled",
        "Δ vs semi_supervised", "% of full", "optimiser steps", "train time",
    ]  # fmt: skip
    arms = [r[1].strip("*") for r in table]
    # Ranked by mean mIoU of the arm's final row (the fine-tuning of a pre-training method).
    assert arms == ["full", "proportion", "joint", "semi_supervised", "shuffled", "baseline"]
    by_arm = {r[1].strip("*"): dict(zip(header, r, strict=True)) for r in table}
    prop = by_arm["proportion"]
    fine = [BASE[s] + 0.06 + 0.005 * s for s in range(3)]
    shuf = [BASE[s] + 0.01 for s in range(3)]
    expected = sum(fine) / 3 - sum(shuf) / 3
    assert prop["Δ vs shuffled"].startswith(f"{expected:+.3f} (p = ")
    assert prop["Δ vs baseline"].startswith("+0.065 (p = ")
    assert prop["Δ vs semi_supervised"].startswith("+0.035")
    assert by_arm["shuffled"]["Δ vs shuffled"] == "–" and by_arm["baseline"]["Δ vs baseline"] == "–"
    assert prop["% of full"] == f"{100 * (sum(fine) / 3) / 0.71:.0f} %"
    assert prop["training"] == "pre-training + fine-tuning" and by_arm["joint"]["training"] == "one run"
    assert prop["optimiser steps"] == "100 + 40 = 140" and by_arm["joint"]["optimiser steps"] == "140"
    assert prop["train time"] == "20 s" and by_arm["joint"]["train time"] == "10 s"
    assert by_arm["shuffled"]["role"] == "control" and by_arm["semi_supervised"]["role"] == "control"
    assert prop["arm"] == "**proportion**" and by_arm["shuffled"]["arm"] == "shuffled"
    # The paired comparisons list every arm against the reference controls too.
    for line in ("finetune (proportion) − finetune (shuffled)", "joint − semi_supervised",
                 "finetune (shuffled) − semi_supervised"):  # fmt: skip
        assert f"| {line} |" in md
    # Loss-term and learning-curve figures are drawn per arm.
    assert "plots/loss_terms.png" not in md  # constructed histories have no step or term columns
    assert "plots/learning_curves.png" in md


def test_ranking_references_follow_the_report_config(tmp_path):
    exp = _make_exp(
        tmp_path, _comparison_rows(), methods=("proportion", "shuffled", "semi_supervised", "joint")
    )
    (exp / "config.yaml").write_text("name: c\nreport: {samples: 0, references: [joint, nothing]}\n")
    rep.report(exp)
    header = _ranking((exp / "report.md").read_text())[0]
    assert [h for h in header if h.startswith("Δ")] == ["Δ vs baseline", "Δ vs joint"]


def test_old_results_without_arm_fields_still_rank(tmp_path):
    # Results written before rows carried arm / step_kind / role (and with the removed control stage).
    rows = []
    for s in range(2):
        rows += [_row("baseline", s, 0.5), _row("weak", s, 0.3, "proportion")]
        rows += [_row("finetune", s, 0.56 + 0.01 * s, "proportion"), _row("control", s, 0.51)]
    assert not any("arm" in r for r in rows)
    exp = _make_exp(tmp_path, rows)
    rep.report(exp)
    header, *table = _ranking((exp / "report.md").read_text())
    by_arm = {r[1].strip("*"): dict(zip(header, r, strict=True)) for r in table}
    assert [r[1].strip("*") for r in table] == ["proportion", "control", "baseline"]
    assert by_arm["proportion"]["training"] == "pre-training + fine-tuning"
    assert by_arm["control"]["role"] == "control" and by_arm["proportion"]["optimiser steps"] == "–"
    assert results.row_arm(rows[1]) == "proportion" and results.row_step_kind(rows[1]) == "pretrain"
    assert results.row_role(rows[3]) == "control" and results.row_step_kind(rows[0]) == "train"


def _write_step_log(run: Path, version: int, steps: list[int], terms: dict[str, float]) -> None:
    """A Lightning-style CSV log: ``step`` is the 0-based step index, terms as ``train/<t>_step``."""
    path = run / "logs" / "csv" / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["epoch", "step", "train/loss_step", *(f"train/{t}_step" for t in terms), "val/miou"]
    lines = [",".join(cols)]
    for s in steps:
        lines.append(
            ",".join(
                [
                    "0",
                    str(s),
                    str(sum(terms.values()) + version),
                    *(str(v + version) for v in terms.values()),
                    "",
                ]
            )
        )
    lines.append(",".join(["0", str(steps[-1]), "", *("" for _ in terms), "0.4"]))  # a validation row
    path.write_text("\n".join(lines) + "\n")


def test_read_step_log_merges_resumed_versions(tmp_path):
    _write_step_log(tmp_path, 0, [1, 3, 5], {"pixel": 1.0, "proportion": 2.0})
    _write_step_log(tmp_path, 1, [5, 7], {"pixel": 1.0, "proportion": 2.0})
    log = results.read_step_log(tmp_path)
    # Step index s is optimiser step s + 1; the resumed run's values win where both logged.
    assert log["pixel"] == [(2, 1.0), (4, 1.0), (6, 2.0), (8, 2.0)]
    assert log["loss"] == [(2, 3.0), (4, 3.0), (6, 4.0), (8, 4.0)]
    assert results.read_step_log(tmp_path / "nothing") == {}


def test_curves_of_pretraining_arms_continue_over_optimiser_steps(tmp_path):
    rows = [r for r in _comparison_rows() if r["arm"] in ("baseline", "proportion", "joint")]
    exp = _make_exp(tmp_path, rows, methods=("proportion", "joint"))
    for r in rows:
        rd = exp / r["run_dir"]
        steps = r["optimizer_steps"]
        # Two validations per run: half-way and at the end.
        lines = ["epoch,step,train_loss,val_miou", f"1,{steps // 2},1.0,0.2", f"2,{steps},0.5,{r['miou']}"]
        (rd / "history.csv").write_text("\n".join(lines) + "\n")
        terms = {"proportion": 0.7} if r["step_kind"] == "pretrain" else {"pixel": 0.9}
        _write_step_log(rd, 0, list(range(0, steps, 10)), terms)
    loaded = results.load_experiment(exp)
    unit, curves = figures.learning_curve_series(loaded)
    assert unit == "step"
    (weak_x, _), *_ = curves["proportion"]["pretrain"]
    (fine_x, fine_y), *_ = curves["proportion"]["finetune"]
    assert weak_x.tolist() == [50, 100] and fine_x.tolist() == [120, 140]  # offset by the 100 weak steps
    assert fine_y[-1] == pytest.approx(BASE[0] + 0.06)
    assert [x.tolist() for x, _ in curves["joint"]["train"]] == [[70, 140]] * 3
    series, starts = figures.loss_term_series(loaded)
    assert set(series["proportion"]) == {("pretrain", "proportion"), ("finetune", "pixel")}
    (x, y), *_ = series["proportion"][("finetune", "pixel")]
    assert x[0] == 101 and x[-1] == 131 and starts["proportion"] == [[100.0]] * 3
    assert "baseline" not in starts
    rep.report(exp)
    md = (exp / "report.md").read_text()
    assert "plots/loss_terms.png" in md and "over its optimiser steps" in md


def test_arm_of_several_runs_per_seed_counts_all_its_steps_and_ranks_its_last(tmp_path):
    rows = []
    for s in range(2):
        rows.append(_arm_row("baseline", s, BASE[s], steps=40))
        # Two rounds of one arm per seed, in training order: the last is the arm's result.
        first, last = _arm_row("rounds", s, 0.2, steps=60), _arm_row("rounds", s, BASE[s] + 0.1, steps=60)
        first["round"], last["round"] = 1, 2
        last["run_dir"] += "-round2"
        rows += [first, last]
    exp = _make_exp(tmp_path, rows, methods=("rounds",))
    rep.report(exp)
    header, *table = _ranking((exp / "report.md").read_text())
    by_arm = {r[1].strip("*"): dict(zip(header, r, strict=True)) for r in table}
    assert by_arm["rounds"]["optimiser steps"] == "120" and by_arm["rounds"]["train time"] == "20 s"
    assert by_arm["rounds"]["Δ vs baseline"].startswith("+0.100")
    # Each round is a segment of the arm's curves, the second after the first's 60 steps.
    loaded = results.load_experiment(exp)
    for r in rows:
        (exp / r["run_dir"] / "history.csv").write_text(f"epoch,step,val_miou\n1,60,{r['miou']}\n")
        _write_step_log(exp / r["run_dir"], 0, [9, 59], {"pixel": 0.5, "pseudo": 0.2})
    _, curves = figures.learning_curve_series(loaded)
    assert list(curves["rounds"]) == ["train round 1", "train round 2"]
    assert [x.tolist() for x, _ in curves["rounds"]["train round 2"]] == [[120.0]] * 2
    series, starts = figures.loss_term_series(loaded)
    (x, _), _ = series["rounds"][("train round 2", "pseudo")]
    assert x.tolist() == [70.0, 120.0] and starts["rounds"] == [[60.0]] * 2


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


def test_control_equal_to_baseline_is_a_structured_field_not_a_note(tmp_path):
    rows = []
    for s in range(3):
        rows.append(_row("baseline", s, BASE[s]))
        rows.append(_row("finetune", s, FINE[s], "proportion"))
        # An old results.json: the fact was only in the note of the control rows.
        rows.append({**_row("control", s, BASE[s]), "note": "control = baseline (same init and settings)"})
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    exp = _make_exp(tmp_path / "old", rows)
    loaded = results.load_experiment(exp)
    assert [r["same_as"] for r in loaded.rows if r["stage"] == "control"] == ["baseline"] * 3
    assert any("Control = baseline" in h for h in rep.headlines(loaded))
    # The field decides, whatever a note says.
    for r in rows:
        if r["stage"] == "control":
            r.update(note="control = baseline", same_as=None)
    loaded = results.load_experiment(_make_exp(tmp_path / "new", rows))
    assert not any("Control = baseline" in h for h in rep.headlines(loaded))
