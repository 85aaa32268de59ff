"""Results of an experiment: one row per run, ``results.json`` / ``results.csv`` (see docs/config.md).

Writing (:func:`result_row`, :func:`write_results`, by :mod:`segweak.experiment.run`) and reading
(:func:`load_experiment`, :func:`read_history`, :func:`read_step_log`, by :mod:`segweak.report` and the
CLI) live together, so the format has one owner.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from segweak.errors import SegweakError
from segweak.experiment.plan import PlannedRun
from segweak.io import atomic_write_json, atomic_write_text

RESULTS_FORMAT_VERSION = 1

#: Fixed leading columns of results.csv; ``iou_<class>`` and ``f1_<class>`` follow ``oa``. In a sweep,
#: one ``factor:<dotted key>`` column per axis follows ``point``; ``test_iou_<class>`` columns come
#: before ``test_n_pixels``.
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
    "point",
    "selection",
    "strong_fraction",
    "weak_labels",
    "weak_noise",
    "miou",
    "mf1",
    "oa",
)
#: Trailing columns after the per-class ones.
RESULT_TAIL_COLUMNS = (
    "test_miou",
    "test_mf1",
    "test_oa",
    "test_n_pixels",
    "eroded_miou",
    "test_eroded_miou",
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
    "trained_at",
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


def noise_label(noise: Any) -> str:
    """Short label of a run's ``weak.noise`` (:class:`~segweak.config.NoiseConfig` or its mapping).

    ``none``, ``dirichlet(concentration=50)`` or ``relative(sigma=0.3)``.
    """
    get = noise.get if isinstance(noise, dict) else lambda key, default=None: getattr(noise, key, default)
    model = str(get("model", "none") or "none")
    parameter = {"dirichlet": "concentration", "relative": "sigma"}.get(model)
    if parameter is None:
        return model
    return f"{model}({parameter}={float(get(parameter)):g})"


def result_row(
    run: PlannedRun,
    metrics: dict[str, Any],
    exp_dir: Path,
    run_dir: Path,
    strong_fraction: float | None = None,
) -> dict[str, Any]:
    """One results row from a run's metrics (``per_class_*`` flattened to ``iou_<c>`` / ``f1_<c>``).

    Args:
        run: The planned run (at a sweep point: its ``point`` and ``factors`` go into the row).
        metrics: The run's ``metrics.json``.
        exp_dir: Experiment directory (``run_dir`` is written relative to it).
        run_dir: The run directory (an earlier point's for a run shared across points).
        strong_fraction: Achieved patch fraction of the strong subset of the point's split.
    """
    test = metrics.get("test") or {}
    pixel_only = run.cfg.method == "supervised"
    row: dict[str, Any] = {
        "point": run.point,
        "factors": dict(run.factors),
        "stage": run.stage,
        "method": run.method,
        "arm": run.arm,
        "step_kind": run.step_kind,
        "role": run.role,
        "split_seed": run.split_seed,
        "seed": run.seed,
        "round": run.round,
        "train_method": run.cfg.method,
        "selection": metrics.get("selection") or "best",  # runs before `selection` existed: best
        "strong_fraction": strong_fraction,
        # None for runs that read pixel labels only: no weak labels reached them (and such a run can be
        # shared across points of a weak-label axis, docs/config.md "Sweeps").
        "weak_labels": None if pixel_only else run.cfg.weak.labels,
        "weak_noise": None if pixel_only else noise_label(run.cfg.weak.noise),
        "miou": metrics.get("miou"),
        "mf1": metrics.get("mf1"),
        "oa": metrics.get("oa"),
    }
    classes = list(metrics.get("classes") or metrics.get("per_class_iou", {}).keys())
    for c in classes:
        row[f"iou_{c}"] = (metrics.get("per_class_iou") or {}).get(c)
    for c in classes:
        row[f"f1_{c}"] = (metrics.get("per_class_f1") or {}).get(c)
    for key in ("miou", "mf1", "oa"):
        row[f"test_{key}"] = test.get(key)
    for c in classes:
        row[f"test_iou_{c}"] = (test.get("per_class_iou") or {}).get(c)
    row["test_n_pixels"] = test.get("n_pixels")
    row["eroded_miou"] = (metrics.get("eroded") or {}).get("miou")
    row["test_eroded_miou"] = (test.get("eroded") or {}).get("miou")
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
    row["trained_at"] = run.trained_at
    row["note"] = run.note
    return row


def result_columns(classes: list[str], factors: list[str] | None = None) -> list[str]:
    """All results.csv columns, in order, for class names ``classes`` and sweep axes ``factors``."""
    lead = list(RESULT_COLUMNS)
    at = lead.index("point") + 1
    lead[at:at] = [f"factor:{key}" for key in factors or []]
    tail = list(RESULT_TAIL_COLUMNS)
    at = tail.index("test_n_pixels")
    tail[at:at] = [f"test_iou_{c}" for c in classes]
    return lead + [f"iou_{c}" for c in classes] + [f"f1_{c}" for c in classes] + tail


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, list):
        return ";".join(str(x) for x in v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def _cell(row: dict[str, Any], column: str) -> Any:
    """Return a row's value for a CSV column (``factor:<key>``: that factor, a list JSON-encoded)."""
    if column.startswith("factor:"):
        value = (row.get("factors") or {}).get(column[len("factor:") :])
        return json.dumps(value, separators=(",", ":")) if isinstance(value, list) else value
    return row.get(column)


def write_results(exp_dir: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.csv`` atomically; return their paths."""
    classes = list(meta.get("classes") or [])
    cols = result_columns(classes, list((meta.get("sweep") or {}).get("axes") or {}))
    payload = {"format_version": RESULTS_FORMAT_VERSION, **meta, "columns": cols, "rows": rows}
    jpath = atomic_write_json(exp_dir / "results.json", payload)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for r in rows:
        writer.writerow([_csv_value(_cell(r, c)) for c in cols])
    cpath = atomic_write_text(exp_dir / "results.csv", buf.getvalue())
    return jpath, cpath


# --------------------------------------------------------------------------------------------------
# Reading an experiment directory (results.json, config.yaml, each run's history and step log)
# --------------------------------------------------------------------------------------------------

STAGE_ORDER = ("baseline", "weak", "finetune", "full", "control")
"""Protocol stages in the order their rows are listed (``control``: results of older segweak versions)."""

DEFAULT_REFERENCES = ("shuffled", "semi_supervised")
"""Arms every other arm is compared with besides the baseline, unless ``report.references`` says otherwise."""


def row_arm(row: dict[str, Any]) -> str:
    """Arm of a results row: ``baseline``, ``full`` or the compared method (``arm``; derived for old rows)."""
    return str(row.get("arm") or row.get("method") or row["stage"])


def row_step_kind(row: dict[str, Any]) -> str:
    """``pretrain``, ``finetune`` or ``train`` (``step_kind``; derived from the stage for old rows)."""
    return str(
        row.get("step_kind") or {"weak": "pretrain", "finetune": "finetune"}.get(row["stage"], "train")
    )


def row_role(row: dict[str, Any]) -> str:
    """``baseline``, ``full``, ``control`` or ``method`` (``role``; derived from the stage for old rows)."""
    if row.get("role"):
        return str(row["role"])
    stage = row["stage"]
    return stage if stage in ("baseline", "full", "control") else "method"


def row_group(row: dict[str, Any]) -> tuple[str, str]:
    """``(stage, method)`` group of a results row; each round of a method with rounds is its own row.

    A round's stage reads ``<stage> round <r>`` (e.g. ``pseudo_label round 2``), so rounds are never
    averaged together as if they were seeds.
    """
    stage, rnd = str(row["stage"]), row.get("round")
    if rnd not in (None, ""):
        stage = f"{stage} round {int(rnd)}"
    return (stage, row.get("method") or "")


@dataclass
class Experiment:
    """What the report reads from an experiment directory.

    Attributes:
        path: Experiment directory.
        results: ``results.json`` content.
        config: ``config.yaml`` content (plain mapping; empty when missing).
    """

    path: Path
    results: dict[str, Any]
    config: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Results rows."""
        return list(self.results.get("rows", []))

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        return list(self.results.get("classes", []))

    def groups(self) -> list[tuple[str, str]]:
        """``(stage, method)`` groups present (:func:`row_group`), in protocol order.

        Protocol stages first, then the rows of single-run methods in the order of ``methods``, the
        rounds of a method in turn.
        """
        order = {s: i for i, s in enumerate(STAGE_ORDER)}
        methods = list(self.results.get("methods") or [])
        rank: dict[tuple[str, str], tuple[int, int, int]] = {}
        for r in self.rows:
            arm = r.get("method") or r["stage"]
            position = methods.index(arm) if arm in methods else -1
            rank.setdefault(row_group(r), (order.get(r["stage"], 99), position, int(r.get("round") or 0)))
        return sorted(rank, key=lambda g: (rank[g], g))

    def label(self, group: tuple[str, str]) -> str:
        """Display name of a ``(stage, method)`` group."""
        stage, method = group
        methods = {r.get("method") for r in self.rows if r.get("method")}
        return f"{stage} ({method})" if method and len(methods) > 1 else stage

    def arms(self) -> list[str]:
        """Arms present: ``baseline``, the compared methods in ``methods`` order, ``full``, then others."""
        present: list[str] = []
        for r in self.rows:
            if row_arm(r) not in present:
                present.append(row_arm(r))
        order = ["baseline", *(self.results.get("methods") or []), "full"]
        return sorted(present, key=lambda a: order.index(a) if a in order else len(order))

    def arm_rows(self, arm: str) -> list[dict[str, Any]]:
        """Results rows of ``arm`` (every step kind)."""
        return [r for r in self.rows if row_arm(r) == arm]

    def final_group(self, arm: str) -> tuple[str, str]:
        """Return the ``(stage, method)`` group of ``arm``'s result: its fine-tuning or its single run.

        Rows are in training order, so for an arm of several runs per seed (e.g. rounds) this is the
        last; an experiment that pre-trained without fine-tuning has only the pre-training to show.
        """
        rows = self.arm_rows(arm)
        final = [r for r in rows if row_step_kind(r) != "pretrain"] or rows
        return row_group(final[-1])

    def arm_role(self, arm: str) -> str:
        """Role of ``arm`` (``baseline``, ``full``, ``control`` or ``method``)."""
        rows = self.arm_rows(arm)
        return row_role(rows[0]) if rows else "method"

    def arm_pretrains(self, arm: str) -> bool:
        """Whether ``arm`` has pre-training rows (pre-training + fine-tuning)."""
        return any(row_step_kind(r) == "pretrain" for r in self.arm_rows(arm))

    def references(self) -> list[str]:
        """Arms compared with every other arm: ``baseline`` and ``report.references``, those present."""
        refs = (self.config.get("report") or {}).get("references")
        wanted = ["baseline", *(DEFAULT_REFERENCES if refs is None else refs)]
        arms = self.arms()
        return [a for i, a in enumerate(wanted) if a in arms and a not in wanted[:i]]

    def by_point(self) -> dict[str, Experiment]:
        """Each sweep point's rows as an experiment without a sweep, keyed by point label, in row order.

        Without a sweep: one entry, ``""``. A point is read alone because its rows repeat the
        ``(split_seed, seed)`` pairs of every other point; tables and paired tests are per point.
        """
        rows_of: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            rows_of.setdefault(str(r.get("point") or ""), []).append(r)
        return {
            label: Experiment(self.path, {**self.results, "rows": rows, "sweep": {}}, self.config)
            for label, rows in rows_of.items()
        }

    def values(self, group: tuple[str, str], key: str) -> dict[tuple[int, int], float | None]:
        """``{(split_seed, seed): row[key]}`` of one group."""
        return {
            (int(r["split_seed"]), int(r["seed"])): r.get(key) for r in self.rows if row_group(r) == group
        }


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Read ``results.json`` and ``config.yaml`` of an experiment directory.

    Raises:
        SegweakError: When ``results.json`` is missing or unreadable.
    """
    exp = Path(exp_dir)
    rpath = exp / "results.json"
    if not rpath.is_file():
        raise SegweakError(
            f"{rpath} not found: {exp} is not a finished experiment directory (run `segweak run` first)"
        )
    try:
        results = json.loads(rpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SegweakError(f"cannot read {rpath}: {exc}") from exc
    if not isinstance(results, dict) or "rows" not in results:
        raise SegweakError(f"{rpath} has no 'rows': it was not written by segweak run")
    config: dict[str, Any] = {}
    cpath = exp / "config.yaml"
    if cpath.is_file():
        try:
            loaded = yaml.safe_load(cpath.read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            config = {}
    results["rows"] = [_migrate_row(r) for r in results["rows"]]
    return Experiment(exp, results, config)


_LEGACY_SAME_AS = "control = baseline"
"""How segweak versions before training methods marked a ``control`` row that reused the baseline's
runs: in its free-text ``note``, the only place they recorded it."""


def _migrate_row(row: dict[str, Any]) -> dict[str, Any]:
    """Give a row of older results the structured fields readers use instead of free text.

    ``same_as``: the row whose runs this row's results are (``baseline`` for an old ``control`` row
    noted ``control = baseline``); readers never look into ``note``.
    """
    if "same_as" in row or row.get("stage") != "control":
        return row
    same = "baseline" if str(row.get("note") or "").startswith(_LEGACY_SAME_AS) else None
    return {**row, "same_as": same}


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of a run's ``history.csv`` with numeric values (empty cells dropped)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            row = {}
            for k, v in rec.items():
                if v not in (None, ""):
                    try:
                        row[k] = float(v)
                    except ValueError:
                        continue
            rows.append(row)
    return rows


def _version_number(path: Path) -> int:
    """N of a ``version_N`` log folder (-1 when the name has another form)."""
    tail = path.name.rpartition("_")[2]
    return int(tail) if tail.isdigit() else -1


def read_step_log(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Training loss terms per optimiser step from a run's CSV logs (``logs/csv/version_*/metrics.csv``).

    The task logs ``train/loss`` and ``train/<term>`` every ``trainer.log_every_n_steps`` steps; the
    logger's ``step`` of a value is the 0-based index of the step that computed it, so the value
    belongs to optimiser step ``step + 1``. A resumed run writes a new ``version_N``; where versions
    overlap (steps redone after the last checkpoint), the later one wins.

    Args:
        run_dir: A run directory.

    Returns:
        ``{term: [(optimiser step, value), ...]}`` sorted by step (``loss`` is the total); empty when
        the run has no CSV logs.
    """
    values: dict[str, dict[int, float]] = {}
    for path in sorted(
        (run_dir / "logs" / "csv").glob("version_*/metrics.csv"), key=lambda p: _version_number(p.parent)
    ):
        with path.open(newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                step = rec.get("step")
                if step in (None, ""):
                    continue
                for key, value in rec.items():
                    if not (key and key.startswith("train/") and key.endswith("_step")) or value in (
                        None,
                        "",
                    ):
                        continue
                    term = key[len("train/") : -len("_step")]
                    try:
                        values.setdefault(term, {})[int(step) + 1] = float(value)
                    except ValueError:
                        continue
    return {term: sorted(points.items()) for term, points in values.items()}
