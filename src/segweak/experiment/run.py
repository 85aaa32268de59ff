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
    to_dict,
)
from segweak.errors import SegweakError
from segweak.experiment.data import make_splits, prepare_data
from segweak.experiment.plan import (
    PlannedRun,
    check_runs,
    check_train_sections,
    methods_of,
    plan_runs,
    pop_keys,
)
from segweak.experiment.results import read_metrics, result_row, write_results
from segweak.io import atomic_write_text

ARTEFACT_WAIT_S = 1800.0
"""How long another DDP rank waits for rank 0 to write a round's artefact (torch's default
process-group timeout), polling every :data:`ARTEFACT_POLL_S` seconds."""
ARTEFACT_POLL_S = 0.5

#: Keys ignored when checking that a finished run was trained with the config asked for now
#: (paths may move with the experiment directory; the rest does not change the numbers).
_IGNORED_FOR_MATCH = (
    ("out_dir",),
    ("run_name",),
    ("resume",),
    ("data", "store"),
    ("data", "num_workers"),
    ("init", "checkpoint"),
    ("trainer", "progress_bar"),
    ("trainer", "log_every_n_steps"),
)

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
    a, b = _comparable(recorded_cfg), _comparable(run.cfg)
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


def _comparable(train_cfg: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    from segweak.methods import METHODS

    d = copy.deepcopy(to_dict(train_cfg) if not isinstance(train_cfg, dict) else train_cfg)
    for keys in _IGNORED_FOR_MATCH:
        pop_keys(d, keys)
    # The artefact a round reads is a path the experiment sets, like init.checkpoint; planning options
    # (more rounds) do not change a finished round.
    cls = METHODS.get(str(d.get("method")))
    if cls is not None:
        for option in (cls.artefact_option, *cls.planning_options):
            if option:
                pop_keys(d, ("methods", cls.name, option))
    return d


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
    check_runs(cfg)  # every run's config, the machine and the bands, before anything is written
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
    store_path = prepare_data(cfg, log)
    split_names = make_splits(cfg, store_path, log)
    runs = plan_runs(cfg, store_path)
    from segweak.data.store import Store
    from segweak.models.factory import check_in_channels
    from segweak.weak.table import COMPUTED, load_set

    store = Store(store_path)
    meta = store.meta
    for run in runs:  # a folder source's bands are known only now; fail before the first run trains
        try:
            check_in_channels(run.cfg.model.in_channels, meta, str(store_path))
            if run.cfg.weak.labels != COMPUTED:
                load_set(store, run.cfg.weak.labels)  # an imported weak-label set the store lacks
        except SegweakError as exc:
            raise SegweakError(f"stage {run.stage}: {exc}") from None
    log(
        f"{len(runs)} runs planned ({len(cfg.split.seeds)} split seed(s) x {len(cfg.seeds)} seed(s) x stages)"
    )

    done: dict[tuple[Any, ...], tuple[dict[str, Any], Path]] = {}
    rows: list[dict[str, Any]] = []
    trained = skipped = 0
    for i, run in enumerate(runs, 1):
        prefix = f"[{i}/{len(runs)}] {run.label}"
        rdir = run.cfg.run_dir
        if engine.is_complete(rdir):
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
        row = result_row(run, metrics, exp_dir, rdir)
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
        "store": _rel(store_path, exp_dir),
        "splits": {str(k): v for k, v in split_names.items()},
        "seeds": list(cfg.seeds),
        "split_seeds": list(cfg.split.seeds),
        "stages": [s for s in EXPERIMENT_STAGES if s in cfg.stages],
        "methods": methods_of(cfg),
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
