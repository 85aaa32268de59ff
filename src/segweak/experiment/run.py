"""Running an experiment: prepare -> split(s) -> every planned run -> results -> report.

``run_experiment(cfg)`` prepares the data (:mod:`segweak.experiment.data`), trains every run of the
plan (:mod:`segweak.experiment.plan`) in order and writes the results
(:mod:`segweak.experiment.results`) and, unless asked not to, the report (:mod:`segweak.report`).

A run whose results exist (:func:`segweak.train.engine.is_complete`) is skipped, an interrupted one
resumes from its last checkpoint, so rerunning the same command after a crash continues where it
stopped. A completed run whose recorded config differs from what the experiment now asks for is an
error (never silently mixed into the results). The experiment directory is locked for the whole call
(:mod:`segweak.lock`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from segweak.config import (
    EXPERIMENT_STAGES,
    ExperimentConfig,
    TrainConfig,
    deep_merge,
    dump_yaml,
    from_dict,
    migrate_train_dict,
)
from segweak.errors import SegweakError
from segweak.experiment.data import check_weak_label_imports, import_weak_labels, make_splits, prepare_data
from segweak.experiment.plan import (
    PlannedRun,
    check_runs,
    check_train_sections,
    comparable_config,
    experiment_store,
    methods_of,
    plan_runs,
    sweep_points,
)
from segweak.experiment.results import read_metrics, result_row, write_results
from segweak.experiment.sweep import sweep_axes
from segweak.io import atomic_write_text

ARTEFACT_WAIT_S = 1800.0
"""How long another DDP rank waits for rank 0 to write a round's artefact (torch's default
process-group timeout), polling every :data:`ARTEFACT_POLL_S` seconds."""
ARTEFACT_POLL_S = 0.5

# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def _read_run_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _check_same_config(run: PlannedRun) -> None:
    """Refuse to reuse a finished run trained with a different config.

    A ``config.yaml`` of the layout before training methods is migrated first, so experiment
    directories written then keep resuming when their settings still match.
    """
    from segweak.methods import check_config

    recorded = _read_run_config(run.cfg.run_dir)
    if recorded is None:
        return
    try:
        recorded_cfg = check_config(from_dict(TrainConfig, migrate_train_dict(recorded)[0]))
    except SegweakError:
        return  # written by another segweak version: nothing reliable to compare
    a, b = comparable_config(recorded_cfg), comparable_config(run.cfg)
    if a != b:
        diffs = _diff_keys(a, b)
        hint = ""
        if "weak.area" in diffs and (a.get("weak") or {}).get("area") == "valid":
            hint = (
                "; runs written before weak.area existed averaged over the valid area: add "
                "--set train.weak.area=valid to continue them"
            )
        raise SegweakError(
            f"run {run.cfg.run_dir} finished with a different config than the experiment now asks for "
            f"(differs at: {', '.join(diffs[:6])}){hint}; use a new out_dir, or delete that run to retrain it"
        )


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def run_experiment(
    cfg: ExperimentConfig,
    *,
    console: Any = None,
    make_report: bool = True,
    quiet_training: bool = True,
    wait: bool = False,
) -> Path:
    """Run the whole protocol; return the experiment directory.

    The experiment directory is locked for the whole call (:mod:`segweak.lock`): a second process on
    the same directory refuses (or waits), instead of training the same runs at the same time.

    Args:
        cfg: Experiment config (validated here).
        console: A ``rich.console.Console`` for progress; ``None`` creates one.
        make_report: Write the sample predictions (``samples.npz``), ``report.md`` / ``report.html`` /
            ``plots`` at the end.
        quiet_training: Turn Lightning's per-run progress bars off (the experiment prints its own).
        wait: Wait for another process using the experiment (or one of its runs) instead of refusing.

    Returns:
        The experiment directory ``cfg.out_dir`` holding ``config.yaml``, ``results.json``,
        ``results.csv``, ``runs/`` and the report.

    Raises:
        SegweakError: On config, data or consistency problems (each names what to fix), or when
            another segweak process uses the experiment directory and ``wait`` is false.
    """
    from segweak.lock import DirectoryLock, waiting

    cfg.validate()
    check_weak_label_imports(cfg)
    check_train_sections(cfg)
    with DirectoryLock(cfg.out_dir, "experiment directory", wait=wait), waiting(wait):
        return _run_experiment_locked(cfg, console, make_report, quiet_training)


def _run_experiment_locked(
    cfg: ExperimentConfig, console: Any, make_report: bool, quiet_training: bool
) -> Path:
    """:func:`run_experiment` while holding the experiment directory's lock."""
    from rich.console import Console

    from segweak import runtime
    from segweak.train import engine

    cfg.validate()
    check_train_sections(cfg)
    if quiet_training:
        cfg = copy.deepcopy(cfg)
        cfg.train = deep_merge(cfg.train, {"trainer": {"progress_bar": False}})
    points = sweep_points(cfg)  # every sweep point's config, before anything is written
    check_runs(cfg, points)  # every run's config, the machine and the bands
    # Under trainer.strategy=ddp Lightning runs this whole command again for every other rank; those
    # ranks only take part in training: they print nothing and write nothing.
    rank_zero = engine.is_global_zero()
    console = console or Console(quiet=not rank_zero)
    exp_dir = Path(cfg.out_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        console.print(f"[dim]segweak run[/dim] {msg}", highlight=False, soft_wrap=True)

    log(f"experiment directory {exp_dir.resolve()} (data: {cfg.dataset.source})")

    synthetic = cfg.dataset.source == "synthetic"
    if synthetic:
        console.print(
            "[bold yellow]NOTE: this experiment uses SYNTHETIC data, not the real Vaihingen tiles.[/]"
        )
    if rank_zero:
        atomic_write_text(exp_dir / "config.yaml", dump_yaml(cfg))
        log(runtime.thread_summary())
    stores: dict[str, Path] = {}  # one store per distinct dataset section, shared by its points
    split_names: dict[str, dict[int, str]] = {}
    for point in points:
        where = f"sweep point {point.label}: " if point.label else ""
        key = str(experiment_store(point.cfg))
        if key not in stores:
            stores[key] = prepare_data(point.cfg, lambda msg, w=where: log(f"{w}{msg}"))
            # Before the splits: a split made with an imported set reads it (weak-only images).
            import_weak_labels(point.cfg, stores[key], lambda msg, w=where: log(f"{w}{msg}"))
        split_key = f"{key}|{point.cfg.split.name}"
        if split_key not in split_names:
            # Checked before the splits are made: make_split reads an imported weak-label set.
            _check_store_for_runs(plan_runs(point.cfg, stores[key]), stores[key])
            split_names[split_key] = make_splits(point.cfg, stores[key], log)
    runs = plan_runs(cfg, points=points)
    _check_shared_splits(runs)
    n_points = f"{len(points)} sweep point(s) x " if len(points) > 1 else ""
    n_shared = sum(run.trained_at is not None for run in runs)
    shared = f", {n_shared} of them the same run as at an earlier point" if n_shared else ""
    log(
        f"{len(runs)} runs planned ({n_points}{len(cfg.split.seeds)} split seed(s) x {len(cfg.seeds)} "
        f"seed(s) x stages{shared})"
    )

    done: dict[tuple[Any, ...], tuple[dict[str, Any], Path]] = {}
    rows: list[dict[str, Any]] = []
    trained = skipped = 0
    for i, run in enumerate(runs, 1):
        prefix = f"[{i}/{len(runs)}] {run.label}"
        rdir = run.cfg.run_dir
        if run.trained_at is not None and engine.is_complete(rdir):
            log(f"{prefix}: the same run as at {run.trained_at} ({rdir}), reported here too")
        elif engine.is_complete(rdir):
            _check_same_config(run)
            log(f"{prefix}: finished earlier, skipping")
            skipped += 1
        else:
            if run.cfg.init.checkpoint:
                init = Path(run.cfg.init.checkpoint)
                if not init.is_file():
                    raise SegweakError(
                        f"{prefix}: the checkpoint {init} it starts from is missing although the run "
                        "that writes it is complete; delete that run directory and rerun"
                    )
            if run.artefact is not None:
                _prepare_artefact(run, prefix, log)
            resumed = (rdir / "checkpoints" / "last.ckpt").is_file()
            log(f"{prefix}: {'resuming' if resumed else 'training'} -> {rdir}")
            engine.train(run.cfg)
            trained += 1
            if not engine.is_complete(rdir):
                raise SegweakError(
                    f"{prefix}: training returned but {rdir} is not complete (no metrics.json)"
                )
        metrics = read_metrics(rdir)
        done[run.key] = (metrics, rdir)
        row = result_row(run, metrics, exp_dir, rdir, strong_fraction=_strong_fraction(run))
        rows.append(row)
        log(f"{prefix}: mIoU {_fmt(row['miou'])}  mF1 {_fmt(row['mf1'])}  OA {_fmt(row['oa'])}")

    if not rank_zero:
        return exp_dir
    classes = list(next(iter(done.values()))[0].get("classes") or []) if done else []
    meta = {
        "name": cfg.name,
        "synthetic": synthetic,
        "source": cfg.dataset.source,
        "classes": classes,
        "store": _rel(next(iter(stores.values())), exp_dir),
        "splits": {str(k): v for k, v in next(iter(split_names.values())).items()},
        "seeds": list(cfg.seeds),
        "split_seeds": list(cfg.split.seeds),
        "stages": [s for s in EXPERIMENT_STAGES if s in cfg.stages],
        "methods": methods_of(cfg),
        "sweep": {"axes": sweep_axes(cfg)} if len(points) > 1 or points[0].label else {},
        "points": [
            {
                "point": p.label,
                "factors": p.factors,
                "slug": p.slug,
                "store": _rel(experiment_store(p.cfg), exp_dir),
                "split": p.cfg.split.name,
                # Each point's manifests per split seed: the sample predictions show every point.
                "splits": {
                    str(k): v for k, v in split_names[f"{experiment_store(p.cfg)}|{p.cfg.split.name}"].items()
                },
            }
            for p in points
        ],
        "environment": runtime.environment(),
    }
    previous = (exp_dir / "results.json").read_bytes() if (exp_dir / "results.json").is_file() else None
    write_results(exp_dir, rows, meta)
    unchanged = previous == (exp_dir / "results.json").read_bytes()
    log(f"{trained} run(s) trained, {skipped} skipped as finished; results in {exp_dir / 'results.csv'}")
    if make_report and unchanged and (exp_dir / "report.html").is_file():
        log(f"results unchanged, keeping the report {exp_dir / 'report.html'} (segweak report rewrites it)")
    elif make_report:
        from segweak.experiment.samples import ensure_samples
        from segweak.report.report import report

        ensure_samples(exp_dir, log=log)  # the report's sample grid reads it, never predicts
        path = report(exp_dir)
        log(f"report: {path}")
    return exp_dir


def _check_store_for_runs(runs: list[PlannedRun], store_path: Path) -> None:
    """Check, before the first run trains, what only the prepared store tells.

    A folder source's bands are known only once prepared; an imported weak-label set must exist.

    Raises:
        SegweakError: Naming the stage at fault.
    """
    from segweak.data.store import Store
    from segweak.data.weak_tables import COMPUTED, load_set
    from segweak.models.factory import check_in_channels

    store = Store(store_path)
    for run in runs:
        try:
            check_in_channels(run.cfg.model.in_channels, store.meta, str(store_path))
            if run.cfg.weak.labels != COMPUTED:
                load_set(store, run.cfg.weak.labels)  # an imported weak-label set the store lacks
        except SegweakError as exc:
            raise SegweakError(f"stage {run.stage}: {exc}") from None


def _read_subsets(store: str | Path, split: str, full: bool, pixel_only: bool) -> dict[str, list[int]]:
    """Return the subsets of a split manifest a run reads (``full``: strong ∪ weak as one).

    ``pixel_only`` (a run that reads pixel labels only) leaves out the weak patches of images without
    masks (``weak_only``): such a run never reads them, whichever weak-label set put them there.
    """
    from segweak.data.splits import load_split

    manifest = load_split(store, split)
    subsets = dict(manifest["subsets"])
    if pixel_only and manifest.get("weak_only"):
        maskless = set(manifest["weak_only"])
        subsets["weak"] = [i for i in subsets["weak"] if i not in maskless]
    if full:
        subsets = {"full": sorted(subsets.pop("strong") + subsets.pop("weak")), **subsets}
    return subsets


def _check_shared_splits(runs: list[PlannedRun]) -> None:
    """Check that a run reported at several sweep points reads the same patches at each.

    The planner shares a run when the split settings it depends on are the same; this confirms it on
    the manifests made (e.g. ``full`` over nested splits: strong ∪ weak, val, test identical).

    Raises:
        SegweakError: When the manifests disagree (a run would be reported for data it did not see).
    """
    for run in runs:
        if run.trained_at is None:
            continue
        pixel_only = run.cfg.method == "supervised"
        full = pixel_only and run.cfg.methods.get("supervised", {}).get("subset") == "full"
        store = run.cfg.data.store
        here, there = (
            _read_subsets(store, run.split_name, full, pixel_only),
            _read_subsets(store, run.cfg.data.split, full, pixel_only),
        )
        if here != there:
            raise SegweakError(
                f"{run.label}: split {run.split_name!r} and split {run.cfg.data.split!r} of {store} hold "
                f"other patches, so the run of {run.trained_at} cannot stand for this point; delete "
                "those manifests and rerun"
            )


def _strong_fraction(run: PlannedRun) -> float | None:
    """Achieved patch fraction of the strong subset of the split of the run's point (its x-axis)."""
    from segweak.data.splits import load_split

    achieved = load_split(run.cfg.data.store, run.split_name).get("achieved", {})
    fraction = (achieved.get("strong") or {}).get("patch_fraction")
    return float(fraction) if fraction is not None else None


def _prepare_artefact(run: PlannedRun, prefix: str, log: Callable[[str], None]) -> None:
    """Write the artefact a round reads from its teacher (skipped when complete for that teacher).

    Under ``trainer.strategy: ddp`` the other ranks run this command too: only rank 0 writes, the
    others wait until the artefact exists (``prepare`` renames it into place only when complete).

    Raises:
        SegweakError: Missing teacher checkpoint, an artefact ``prepare`` refuses, or (another rank)
            no artefact after :data:`ARTEFACT_WAIT_S` seconds.
    """
    import time

    from segweak.methods import method_class
    from segweak.train import engine

    assert run.teacher is not None and run.artefact is not None
    teacher, artefact = Path(run.teacher), Path(run.artefact)
    if not engine.is_global_zero():
        deadline = time.monotonic() + ARTEFACT_WAIT_S
        while not artefact.exists():
            if time.monotonic() > deadline:
                raise SegweakError(
                    f"{prefix}: waited {ARTEFACT_WAIT_S:.0f} s for rank 0 to write {artefact}; see rank 0's "
                    "output for why it did not"
                )
            time.sleep(ARTEFACT_POLL_S)
        return
    if not teacher.is_file():
        raise SegweakError(
            f"{prefix}: its teacher checkpoint {teacher} is missing although the run that writes it is "
            "complete; delete that run directory and rerun"
        )
    # prepare() reports what it wrote or reused through the log.
    cls = method_class(run.cfg.method)
    cls.prepare(run.cfg, teacher, artefact, lambda msg: log(f"{prefix}: {msg}"))


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"
