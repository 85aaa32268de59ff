"""Results of an experiment: one row per run, ``results.json`` / ``results.csv`` (see docs/config.md)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from segweak.errors import SegweakError
from segweak.experiment.plan import PlannedRun
from segweak.io import atomic_write_json, atomic_write_text

RESULTS_FORMAT_VERSION = 1

#: Fixed leading columns of results.csv; ``iou_<class>`` and ``f1_<class>`` follow ``oa``.
RESULT_COLUMNS = (
    "stage",
    "method",
    "arm",
    "step_kind",
    "role",
    "split_seed",
    "seed",
    "round",
    "train_method",
    "miou",
    "mf1",
    "oa",
)
#: Trailing columns after the per-class ones.
RESULT_TAIL_COLUMNS = (
    "prop_mae",
    "presence_f1",
    "n_pixels",
    "absent_classes",
    "epochs",
    "best_epoch",
    "optimizer_steps",
    "data_passes",
    "train_seconds",
    "run_dir",
    "note",
)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """Return a finished run's ``metrics.json``.

    Raises:
        SegweakError: When it is missing or unreadable (naming what to delete to retrain).
    """
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SegweakError(f"cannot read {path}: {exc}; delete the run directory to retrain it") from exc


def result_row(run: PlannedRun, metrics: dict[str, Any], exp_dir: Path, run_dir: Path) -> dict[str, Any]:
    """One results row from a run's metrics (``per_class_*`` flattened to ``iou_<c>`` / ``f1_<c>``)."""
    row: dict[str, Any] = {
        "stage": run.stage,
        "method": run.method,
        "arm": run.arm,
        "step_kind": run.step_kind,
        "role": run.role,
        "split_seed": run.split_seed,
        "seed": run.seed,
        "round": run.round,
        "train_method": run.cfg.method,
        "miou": metrics.get("miou"),
        "mf1": metrics.get("mf1"),
        "oa": metrics.get("oa"),
    }
    classes = list(metrics.get("classes") or metrics.get("per_class_iou", {}).keys())
    for c in classes:
        row[f"iou_{c}"] = (metrics.get("per_class_iou") or {}).get(c)
    for c in classes:
        row[f"f1_{c}"] = (metrics.get("per_class_f1") or {}).get(c)
    row["prop_mae"] = metrics.get("prop_mae")
    row["presence_f1"] = metrics.get("presence_f1")
    row["n_pixels"] = metrics.get("n_pixels")
    row["absent_classes"] = list(metrics.get("absent_classes") or [])
    row["epochs"] = metrics.get("epochs")
    row["best_epoch"] = metrics.get("best_epoch")
    row["optimizer_steps"] = metrics.get("optimizer_steps")
    row["data_passes"] = metrics.get("data_passes")
    row["train_seconds"] = metrics.get("train_seconds")
    try:
        row["run_dir"] = run_dir.resolve().relative_to(exp_dir.resolve()).as_posix()
    except ValueError:
        row["run_dir"] = str(run_dir)
    row["note"] = run.note
    return row


def result_columns(classes: list[str]) -> list[str]:
    """All results.csv columns, in order, for class names ``classes``."""
    return (
        list(RESULT_COLUMNS)
        + [f"iou_{c}" for c in classes]
        + [f"f1_{c}" for c in classes]
        + list(RESULT_TAIL_COLUMNS)
    )


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(str(x) for x in v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def write_results(exp_dir: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.csv`` atomically; return their paths."""
    classes = list(meta.get("classes") or [])
    cols = result_columns(classes)
    payload = {"format_version": RESULTS_FORMAT_VERSION, **meta, "columns": cols, "rows": rows}
    jpath = atomic_write_json(exp_dir / "results.json", payload)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for r in rows:
        writer.writerow([_csv_value(r.get(c)) for c in cols])
    cpath = atomic_write_text(exp_dir / "results.csv", buf.getvalue())
    return jpath, cpath
