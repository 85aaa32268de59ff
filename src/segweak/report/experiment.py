"""The experiment protocol in one call: prepare -> split(s) -> rows x seeds -> results -> report.

``run_experiment(cfg)`` trains, for every split seed x training seed, these rows (each one run of a
training method, :mod:`segweak.methods`):

* ``baseline``: ``supervised`` on the strong subset (ImageNet/offline encoder),
* ``weak``: each pre-training method of ``methods`` (e.g. ``proportion``: weak labels of the weak
  subset only),
* ``finetune``: ``supervised`` on the strong subset from the same split/seed/method's weak
  ``best.ckpt`` (``init.checkpoint``),
* one row per other method of ``methods`` (e.g. ``joint``), named after the method; a method that
  depends on another row (:meth:`~segweak.methods.TrainingMethod.depends_on`, e.g. ``pseudo_label``
  taught by ``finetune-proportion``) gives one run per round, each preceded by the artefact it reads
  (:meth:`~segweak.methods.TrainingMethod.prepare`, written under ``EXP/pseudo/``),
* ``full``: ``supervised`` on strong + weak pixel labels (the upper bound).

Each run lives in ``EXP/runs/<stage>[-<method>]-split<k>-seed<s>/`` (a single-run method's row:
``<method>-split<k>-seed<s>``; a round of a method with rounds: ``<method>-split<k>-seed<s>-round<r>``,
its artefact in ``EXP/pseudo/`` under the same name). A run whose results exist
(:func:`segweak.train.engine.is_complete`) is skipped, an interrupted one resumes from its last
checkpoint, so rerunning the same command after a crash continues where it stopped. A completed run
whose recorded config differs from what the experiment now asks for is an error (never silently
mixed into the results).

Results (``results.json`` / ``results.csv``) have one row per stage x method x split seed x seed (x
round); see
:data:`RESULT_COLUMNS` and ``docs/config.md``.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
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
    load_config,
    migrate_train_dict,
    parse_overrides,
    read_yaml,
    to_dict,
)
from segweak.errors import SegweakError
from segweak.io import atomic_write_json, atomic_write_text

RESULTS_FORMAT_VERSION = 1

ARTEFACTS_DIR = "pseudo"
"""Experiment subdirectory of the artefacts rounds read (``EXP/pseudo/<run name>/``)."""

ARTEFACT_WAIT_S = 1800.0
"""How long another DDP rank waits for rank 0 to write a round's artefact (torch's default
process-group timeout), polling every :data:`ARTEFACT_POLL_S` seconds."""
ARTEFACT_POLL_S = 0.5

#: Supervised subset of each supervised protocol stage (``methods.supervised.subset``).
SUPERVISED_STAGES = {"baseline": "strong", "finetune": "strong", "full": "full"}

#: TrainConfig keys the experiment sets itself; a ``train`` / ``stage_overrides`` entry for them is an
#: error (``stage`` and ``finetune.init_from``: their names before training methods).
CONTROLLED_KEYS = (
    ("method",),
    ("stage",),
    ("out_dir",),
    ("run_name",),
    ("resume",),
    ("data", "store"),
    ("data", "split"),
    ("trainer", "seed"),
    ("init", "checkpoint"),
    ("finetune", "init_from"),
)

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


@dataclass
class PlannedRun:
    """One training run of the protocol.

    Attributes:
        stage: Row name: a protocol stage (``baseline``, ``weak``, ``finetune``, ``full``) or the
            name of a single-run method (e.g. ``joint``).
        method: Pre-training method of ``weak``/``finetune`` rows, else ``""``.
        split_seed: Split seed.
        split_name: Split manifest name inside the store.
        seed: Training seed.
        cfg: Resolved training config.
        note: Human-readable remark stored in the results row.
        round: Round (1-based) of a method that depends on another row, else ``None``.
        teacher: ``best.ckpt`` of the run that teaches this round (a method with rounds).
        artefact: Directory of the artefact the round reads, written from ``teacher`` before it
            trains (:meth:`~segweak.methods.TrainingMethod.prepare`).
    """

    stage: str
    method: str
    split_seed: int
    split_name: str
    seed: int
    cfg: TrainConfig
    note: str = ""
    round: int | None = None
    teacher: str | None = None
    artefact: str | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """``(stage, method, split_seed, seed)``, plus ``round`` for a round of a method with rounds."""
        key = (self.stage, self.method, self.split_seed, self.seed)
        return key if self.round is None else (*key, self.round)

    @property
    def arm(self) -> str:
        """What the row belongs to in a comparison: ``baseline``, ``full`` or the compared method."""
        return self.method or self.stage

    @property
    def step_kind(self) -> str:
        """``pretrain`` (a ``weak`` row), ``finetune`` (its fine-tuning) or ``train`` (a whole arm)."""
        return {"weak": "pretrain", "finetune": "finetune"}.get(self.stage, "train")

    @property
    def role(self) -> str:
        """``baseline``, ``full``, ``control`` (a method with ``control = True``) or ``method``."""
        if self.stage in ("baseline", "full"):
            return self.stage
        from segweak.methods import method_class

        return "control" if method_class(self.arm).control else "method"

    @property
    def label(self) -> str:
        """Short description for progress output."""
        name = f"{self.stage}:{self.method}" if self.method else self.stage
        rnd = f" round{self.round}" if self.round is not None else ""
        return f"{name} split{self.split_seed} seed{self.seed}{rnd}"


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


def load_experiment_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, check and return an experiment config (YAML file + ``key=value`` overrides).

    Every run's training config is resolved and validated here, so a typo or a bad value in
    ``train`` or ``stage_overrides`` fails before anything is prepared or trained. The config must say
    what data to run on (``dataset.source``): an empty or unrelated YAML file is an error rather than
    a full default experiment started without a word.

    Raises:
        SegweakError: Naming the file and key at fault.
    """
    source = str(path) if path is not None else "the experiment config"
    data = deep_merge(read_yaml(path) if path is not None else {}, parse_overrides(overrides))
    dataset = data.get("dataset")
    if not isinstance(dataset, dict) or "source" not in dataset:
        what = "is empty" if not data else "does not set dataset.source"
        raise SegweakError(
            f"{source} {what}: say what data to run on with dataset.source: synthetic, vaihingen (and "
            "dataset.root), folder (and dataset.images, dataset.masks, dataset.palette) or store (and "
            "dataset.store), and out_dir for where to write; see configs/demo.yaml and docs/config.md"
        )
    cfg = load_config(ExperimentConfig, path, overrides).validate()
    check_train_sections(cfg)
    plan_runs(cfg, _store_path(cfg))  # validates every run's resolved TrainConfig
    return cfg


def _get(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = d
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return _MISSING
        node = node[k]
    return node


def _pop(d: dict[str, Any], keys: tuple[str, ...]) -> None:
    node: Any = d
    for k in keys[:-1]:
        if not isinstance(node, dict) or k not in node:
            return
        node = node[k]
    if isinstance(node, dict):
        node.pop(keys[-1], None)


_MISSING = object()


def check_train_sections(cfg: ExperimentConfig) -> None:
    """Check ``train``, ``stage_overrides`` and ``methods`` before anything is prepared or trained.

    Every section must hold valid TrainConfig keys, none the experiment controls, and valid options
    in each ``methods.<name>`` section; every compared method must exist, and a pre-training method
    needs the ``weak`` stage.

    Raises:
        SegweakError: Naming the dotted key at fault.
    """
    from segweak.methods import check_method_sections, method_class

    sections = {"train": cfg.train}
    for stage, over in cfg.stage_overrides.items():
        if not isinstance(over, dict):
            raise SegweakError(
                f"stage_overrides.{stage}: expected a mapping of TrainConfig keys, got {over!r}"
            )
        sections[f"stage_overrides.{stage}"] = over
    for where, section in sections.items():
        for keys in CONTROLLED_KEYS:
            if _get(section, keys) is not _MISSING:
                dotted = ".".join(keys)
                raise SegweakError(
                    f"{where}.{dotted}: this key is set by the experiment for every run; remove it "
                    "(see docs/config.md, 'Keys the experiment sets')"
                )
        try:
            check_method_sections(
                from_dict(TrainConfig, deep_merge(cfg.train, section) if where != "train" else section)
            )
        except SegweakError as exc:
            raise SegweakError(f"{where}: {exc}") from None
    for i, m in enumerate(cfg.compared_methods()):
        try:
            cls = method_class(m)
        except SegweakError as exc:
            raise SegweakError(f"methods[{i}]: {exc}") from None
        if m == "supervised":
            raise SegweakError(
                f"methods[{i}]: 'supervised' is what the baseline, finetune and full rows train; "
                "list the methods to compare with them"
            )
        if cls.pretrain and "weak" not in cfg.stages:
            raise SegweakError(
                f"methods[{i}]: {m!r} pre-trains on weak labels and is then fine-tuned: add 'weak' "
                "(and 'finetune') to stages, or remove it from methods"
            )
    _check_dependencies(cfg)


def _arm_options(cfg: ExperimentConfig, method: str) -> Any:
    """Options of a single-run method's row: ``train`` <- ``stage_overrides.<method>``, resolved."""
    from segweak.methods import method_options

    data = deep_merge(cfg.train, cfg.stage_overrides.get(method, {}))
    return method_options(from_dict(TrainConfig, data), method)


def teacher_rows(cfg: ExperimentConfig, upto: str) -> list[str]:
    """Rows whose final checkpoint a method can depend on: those trained before ``upto``'s row.

    ``baseline`` (when a stage), each pre-training method (its ``finetune`` row, when a stage) and
    the single-run methods listed before ``upto``. Never ``full``: it reads the weak pixel labels.
    """
    rows = ["baseline"] if "baseline" in cfg.stages else []
    methods = methods_of(cfg)
    if "finetune" in cfg.stages:
        rows += [m for m in methods if _pretrains(m)]
    return rows + [m for m in methods[: methods.index(upto)] if not _pretrains(m)]


def _check_dependencies(cfg: ExperimentConfig) -> None:
    """Check that every method depending on a row finds it trained earlier; its artefact option unset."""
    from segweak.methods import method_class

    for i, m in enumerate(methods_of(cfg)):
        cls = method_class(m)
        if cls.pretrain:
            continue
        options = _arm_options(cfg, m)
        row = cls.depends_on(options)
        if row is None:
            continue
        rows = teacher_rows(cfg, m)
        if row not in rows:
            raise SegweakError(
                f"methods[{i}]: {m!r} starts from the final checkpoint of row {row!r}, which this experiment "
                f"does not train before it (it can use: {', '.join(rows) or 'none'}); add that row (a "
                f"method before {m!r} in methods, or its stages) or choose another in methods.{m}"
            )
        if getattr(options, cls.artefact_option, None) is not None:
            raise SegweakError(
                f"methods.{m}.{cls.artefact_option}: the experiment sets it for every round (to "
                f"<out_dir>/{ARTEFACTS_DIR}/...); remove it"
            )


def _source_bands(cfg: ExperimentConfig) -> tuple[int, str] | None:
    """``(channels, description)`` of the store the experiment will train on, when known up front.

    Known before anything is prepared for a prepared store (its ``store.json``) and for the
    Vaihingen-layout sources (IRRG, or the chosen Potsdam product, plus the DSM channel if asked);
    a ``folder`` source's bands are known only once its images are read.
    """
    ds = cfg.dataset
    if ds.source == "store":
        try:
            meta = json.loads((_store_path(cfg) / "store.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # reported by prepare_data with its own message
        channels = meta.get("channels") if isinstance(meta, dict) else None
        return (int(channels), f"store {_store_path(cfg)}") if isinstance(channels, int) else None
    if ds.source in ("synthetic", "vaihingen"):
        bands = ["IR", "R", "G"]
    elif ds.source == "potsdam":
        from segweak.data.potsdam import POTSDAM_IMAGERY

        product = POTSDAM_IMAGERY.get(ds.imagery.upper())
        if product is None:
            return None  # an unknown product is reported by the Potsdam source
        bands = list(product[1])
    else:
        return None
    if ds.dsm is not None:
        bands.append("DSM")
    return len(bands), f"dataset.source {ds.source} ({'+'.join(bands)})"


def check_runs(cfg: ExperimentConfig) -> list[PlannedRun]:
    """Resolve and validate every run's training config, and check them against this machine and data.

    Called by :func:`run_experiment` before anything is written; :func:`load_experiment_config` only
    validates the values (a GPU config loads on a CPU machine). Checks each run's training budget,
    that this machine has the accelerator and devices it asks for, and that ``model.in_channels``
    matches the bands of the data when they are known before preparing (see :func:`_source_bands`).
    Runs whose results already exist are skipped (they will not train), so a finished GPU experiment
    can still be collected on a CPU machine.

    Returns:
        The planned runs (see :func:`plan_runs`).

    Raises:
        SegweakError: Naming the stage and key at fault.
    """
    from segweak.train.budget import check_budget
    from segweak.train.engine import is_complete
    from segweak.train.preflight import check_trainer_hardware

    runs = plan_runs(cfg, _store_path(cfg))
    bands = _source_bands(cfg)
    for run in runs:
        if is_complete(run.cfg.run_dir):
            continue
        try:
            check_budget(run.cfg.trainer)
            check_trainer_hardware(run.cfg.trainer, prefix="train.trainer.")
            if bands is not None and run.cfg.model.in_channels != bands[0]:
                raise SegweakError(
                    f"train.model.in_channels is {run.cfg.model.in_channels} but {bands[1]} has "
                    f"{bands[0]} band(s); set train.model.in_channels={bands[0]}"
                )
        except SegweakError as exc:
            raise SegweakError(f"stage {run.stage}: {exc}") from None
    return runs


def methods_of(cfg: ExperimentConfig) -> list[str]:
    """Methods the experiment compares (``methods``; default ``[proportion]`` with a ``weak`` stage)."""
    return cfg.compared_methods()


def _pretrains(method: str) -> bool:
    from segweak.methods import method_class

    return method_class(method).pretrain


def run_name(stage: str, method: str, split_seed: int, seed: int, round: int | None = None) -> str:
    """Run directory name ``<stage>[-<method>]-split<k>-seed<s>[-round<r>]``."""
    middle = f"-{method}" if method else ""
    suffix = f"-round{round}" if round is not None else ""
    return f"{stage}{middle}-split{split_seed}-seed{seed}{suffix}"


def split_name(cfg: ExperimentConfig, split_seed: int) -> str:
    """Split manifest name for ``split_seed`` (``<name>`` alone, ``<name>-seed<k>`` for several seeds)."""
    if len(cfg.split.seeds) == 1:
        return cfg.split.name
    return f"{cfg.split.name}-seed{split_seed}"


def resolve_train_config(
    cfg: ExperimentConfig,
    stage: str,
    *,
    method: str,
    split_seed: int,
    seed: int,
    store: str | Path,
    init_from: str | None = None,
    round: int | None = None,
    artefact: str | None = None,
) -> TrainConfig:
    """Resolve one run's TrainConfig: defaults <- ``train`` <- ``stage_overrides`` <- experiment keys.

    Override layers: a protocol stage's own (``stage_overrides.<stage>``); a ``weak`` row adds its
    method's (``stage_overrides.<method>``); a single-run method row has only its own. The experiment
    then sets ``method``, the run's name and paths, the seed, ``init.checkpoint`` (finetune) and the
    supervised subset. The result is checked and its method options resolved
    (:func:`segweak.methods.check_config`).

    Args:
        cfg: The experiment config.
        stage: Row name: ``baseline``, ``weak``, ``finetune``, ``full`` or a single-run method.
        method: The pre-training method of a ``weak``/``finetune`` row, else ``""``.
        split_seed: Split seed.
        seed: Training seed.
        store: Prepared store path.
        init_from: ``init.checkpoint`` of a ``finetune`` row.
        round: Round of a method with rounds (part of the run's name).
        artefact: The round's artefact directory, set as the method's ``artefact_option``.
    """
    from segweak.methods import check_config

    data = copy.deepcopy(cfg.train)
    layers = [stage] + ([method] if stage == "weak" and method else [])
    for layer in layers:
        data = deep_merge(data, copy.deepcopy(cfg.stage_overrides.get(layer, {})))
    forced: dict[str, Any] = {
        "out_dir": str(Path(cfg.out_dir) / "runs"),
        "run_name": run_name(stage, method, split_seed, seed, round),
        "resume": True,
        "data": {"store": str(store), "split": split_name(cfg, split_seed)},
        "trainer": {"seed": seed},
    }
    if stage in SUPERVISED_STAGES:
        forced["method"] = "supervised"
        forced["methods"] = {"supervised": {"subset": SUPERVISED_STAGES[stage]}}
    else:
        forced["method"] = method or stage
    if init_from is not None:
        forced["init"] = {"checkpoint": init_from}
    if artefact is not None:
        from segweak.methods import method_class

        forced["methods"] = {forced["method"]: {method_class(forced["method"]).artefact_option: artefact}}
    data = deep_merge(data, forced)
    try:
        return check_config(from_dict(TrainConfig, data))
    except SegweakError as exc:
        raise SegweakError(f"stage {stage}: {exc}") from None


def _comparable(train_cfg: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    from segweak.methods import METHODS

    d = copy.deepcopy(to_dict(train_cfg) if not isinstance(train_cfg, dict) else train_cfg)
    for keys in _IGNORED_FOR_MATCH:
        _pop(d, keys)
    # The artefact a round reads is a path the experiment sets, like init.checkpoint; planning options
    # (more rounds) do not change a finished round.
    cls = METHODS.get(str(d.get("method")))
    if cls is not None:
        for option in (cls.artefact_option, *cls.planning_options):
            if option:
                _pop(d, ("methods", cls.name, option))
    return d


def plan_runs(cfg: ExperimentConfig, store: str | Path) -> list[PlannedRun]:
    """Every run of the protocol, in the order they must train (weak before finetune).

    Per split seed x seed: ``baseline``; ``weak`` then ``finetune`` for each pre-training method;
    one row per single-run method (one run per round for a method that depends on another row:
    round 1 taught by that row's final ``best.ckpt``, round r + 1 by round r's); ``full``.

    Args:
        cfg: Validated experiment config.
        store: Path of the prepared store.

    Returns:
        Planned runs.
    """
    runs: list[PlannedRun] = []
    for k in cfg.split.seeds:
        for s in cfg.seeds:
            runs += _plan_split_seed(cfg, store, k, s)
    return runs


def _plan_split_seed(cfg: ExperimentConfig, store: str | Path, k: int, s: int) -> list[PlannedRun]:
    """Plan the runs of split seed ``k`` x training seed ``s`` (see :func:`plan_runs`)."""
    from segweak.methods import method_class

    methods = methods_of(cfg)
    runs: list[PlannedRun] = []
    final: dict[str, str] = {}  # row -> best.ckpt of its last run (what a dependant starts from)

    def add(
        stage: str,
        method: str = "",
        *,
        init_from: str | None = None,
        round: int | None = None,
        teacher: str | None = None,
        artefact: str | None = None,
    ) -> str:
        """Plan one run; return its best.ckpt path."""
        tc = resolve_train_config(
            cfg, stage, method=method, split_seed=k, seed=s, store=store, init_from=init_from,
            round=round, artefact=artefact,
        )  # fmt: skip
        sname = split_name(cfg, k)
        run = PlannedRun(stage, method, k, sname, s, tc, round=round, teacher=teacher, artefact=artefact)
        runs.append(run)
        return str(tc.run_dir / "checkpoints" / "best.ckpt")

    if "baseline" in cfg.stages:
        final["baseline"] = add("baseline")
    pretrain = [m for m in methods if _pretrains(m)]
    if "weak" in cfg.stages:
        for m in pretrain:
            add("weak", m)
    if "finetune" in cfg.stages:
        for m in pretrain:
            weak_dir = Path(cfg.out_dir) / "runs" / run_name("weak", m, k, s)
            final[m] = add("finetune", m, init_from=str(weak_dir / "checkpoints" / "best.ckpt"))
    for m in (m for m in methods if not _pretrains(m)):
        cls = method_class(m)
        options = _arm_options(cfg, m)
        row = cls.depends_on(options)
        if row is None:
            final[m] = add(m)
            continue
        teacher = final[row]  # present: check_train_sections checked the dependency
        for r in range(1, cls.rounds(options) + 1):
            artefact = str(Path(cfg.out_dir) / ARTEFACTS_DIR / run_name(m, "", k, s, r))
            teacher = add(m, round=r, artefact=artefact, teacher=teacher)
        final[m] = teacher
    if "full" in cfg.stages:
        add("full")
    return runs


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def _store_path(cfg: ExperimentConfig) -> Path:
    return Path(cfg.dataset.store) if cfg.dataset.store else Path(cfg.out_dir) / "store"


def _dsm(cfg: ExperimentConfig) -> Any:
    """Return the DSM channel rule of ``dataset.dsm`` (None without a DSM channel)."""
    ds = cfg.dataset
    if ds.dsm is None:
        return None
    from segweak.data.dsm import DsmNormalisation

    rng = tuple(ds.dsm_range) if ds.dsm_range is not None else None
    return DsmNormalisation(method=ds.dsm, range_m=rng, window_m=ds.dsm_window)  # type: ignore[arg-type]


def _make_source(cfg: ExperimentConfig, exp_dir: Path, log: Callable[[str], None]) -> Any:
    """Build the data source the store is prepared from (generating synthetic data if asked)."""
    ds = cfg.dataset
    from segweak.data import sources

    dsm = _dsm(cfg)
    if ds.source == "synthetic":
        from segweak.data.synthetic import synthesize

        root = exp_dir / "synthetic"
        if not root.exists():
            log(
                f"generating SYNTHETIC Vaihingen-layout data: {ds.synthetic.tiles} tiles of "
                f"{ds.synthetic.height}x{ds.synthetic.width} px -> {root}"
            )
            synthesize(
                root,
                n_tiles=ds.synthetic.tiles,
                height=ds.synthetic.height,
                width=ds.synthetic.width,
                seed=ds.synthetic.seed,
                zips=False,
                eroded=ds.synthetic.eroded,
                log=log,
                dsm=dsm is not None,
            )
        return sources.VaihingenSource(
            root, keep_clutter=ds.keep_clutter, eroded=ds.eroded, tolerance=ds.tolerance, dsm=dsm
        )
    if ds.source == "vaihingen":
        return sources.VaihingenSource(
            ds.root, keep_clutter=ds.keep_clutter, eroded=ds.eroded, tolerance=ds.tolerance, dsm=dsm
        )
    if ds.source == "potsdam":
        from segweak.data.potsdam import PotsdamSource

        return PotsdamSource(
            ds.root,
            imagery=ds.imagery,
            keep_clutter=ds.keep_clutter,
            eroded=ds.eroded,
            tolerance=ds.tolerance,
            dsm=dsm,
        )
    if ds.source == "folder":
        return sources.FolderSource(
            ds.images,
            ds.masks,
            ds.palette,
            group_by=ds.group_by,
            tolerance=ds.tolerance,
            band_order=ds.band_order,
        )
    raise SegweakError(f"dataset.source {ds.source!r} has no source to prepare from")


def _store_mismatches(meta: dict[str, Any], cfg: ExperimentConfig, source: Any) -> list[str]:
    """Differences between an existing store's metadata and what the experiment would prepare."""
    ds = cfg.dataset
    stride = ds.stride or ds.patch
    out = []
    if meta.get("patch") != ds.patch:
        out.append(f"patch {meta.get('patch')} != dataset.patch {ds.patch}")
    if meta.get("stride") != stride:
        out.append(f"stride {meta.get('stride')} != dataset.stride {stride}")
    from segweak.data.store import class_names

    classes = class_names(source.classes)
    if list(meta.get("classes", [])) != classes:
        out.append(f"classes {meta.get('classes')} != {classes}")
    band_order = getattr(source, "band_order", None)
    if band_order is not None and meta.get("band_order") != band_order:
        out.append(f"bands {meta.get('band_order')} != {band_order}")
    n_tiles = meta.get("n_tiles")
    expected_tiles = len(source.tiles())
    if n_tiles is not None and n_tiles != expected_tiles:
        out.append(f"{n_tiles} tiles != {expected_tiles} tiles in the source")
    return out


def prepare_data(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> Path:
    """Return the prepared store of the experiment, preparing it when needed.

    An existing store is reused when its metadata (patch, stride, classes, tiles) matches the
    config; otherwise this is an error (the runs trained on it would no longer match).

    Raises:
        SegweakError: When an existing store does not match, or preparation fails.
    """
    from segweak.data.store import Store, prepare

    exp_dir = Path(cfg.out_dir)
    store_path = _store_path(cfg)
    if cfg.dataset.source == "store":
        if not (store_path / "store.json").is_file():
            raise SegweakError(
                f"dataset.store {store_path} is not a prepared store (no store.json); run segweak prepare"
            )
        Store(store_path)  # validates the format version
        log(f"using prepared store {store_path}")
        return store_path
    source = _make_source(cfg, exp_dir, log)
    if (store_path / "store.json").is_file():
        meta = Store(store_path).meta
        bad = _store_mismatches(meta, cfg, source)
        if bad:
            raise SegweakError(
                f"the existing store {store_path} does not match the config ({'; '.join(bad)}); "
                "delete it (and the runs trained on it) or set dataset.store / out_dir to a new path"
            )
        log(f"store {store_path} is up to date ({meta.get('n_patches')} patches), skipping prepare")
        return store_path
    stride = cfg.dataset.stride or cfg.dataset.patch
    log(f"preparing store {store_path} (patch {cfg.dataset.patch}, stride {stride})")
    prepare(
        source,
        store_path,
        patch=cfg.dataset.patch,
        stride=stride,
        overwrite=False,
        progress=False,
        log=log,
    )
    return store_path


def make_splits(
    cfg: ExperimentConfig, store_path: Path, log: Callable[[str], None] = print
) -> dict[int, str]:
    """Make (or check and reuse) one split manifest per split seed; return ``{split_seed: name}``.

    Raises:
        SegweakError: When a manifest of that name exists with other fractions/unit/seed.
    """
    from segweak.data.splits import fraction_warning, load_split, make_split
    from segweak.data.store import Store

    store = Store(store_path)
    names: dict[int, str] = {}
    want_fr = dict(zip(("strong", "weak", "val"), cfg.split.fractions, strict=True))
    for k in cfg.split.seeds:
        name = split_name(cfg, k)
        names[k] = name
        manifest = store_path / "splits" / f"{name}.json"
        if manifest.is_file():
            existing = _split_dict(load_split(store, name))
            same = (
                existing.get("seed") == k
                and existing.get("by") == cfg.split.by
                and all(
                    abs(float(existing.get("fractions", {}).get(s, -1)) - f) < 1e-9
                    for s, f in want_fr.items()
                )
            )
            if not same:
                raise SegweakError(
                    f"split manifest {manifest} exists with other settings (seed {existing.get('seed')}, "
                    f"by {existing.get('by')}, fractions {existing.get('fractions')}); set split.name to a "
                    "new name or delete the manifest and the runs trained on it"
                )
            log(f"split {name!r} exists, reusing it")
            continue
        log(f"making split {name!r} (fractions {cfg.split.fractions}, by {cfg.split.by}, seed {k})")
        made = make_split(store, name, fractions=cfg.split.fractions, by=cfg.split.by, seed=k)
        warning = fraction_warning(made)
        if warning:
            log(f"warning: {warning}")
    return names


def _split_dict(split: Any) -> dict[str, Any]:
    """Return a split manifest as a plain dict, whatever object ``load_split`` returns."""
    if isinstance(split, dict):
        return split
    for attr in ("to_dict", "as_dict"):
        if hasattr(split, attr):
            return getattr(split, attr)()
    import dataclasses

    if dataclasses.is_dataclass(split):
        return dataclasses.asdict(split)  # type: ignore[arg-type]
    return dict(vars(split))


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


def _read_metrics(run_dir: Path) -> dict[str, Any]:
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
        make_report: Write ``report.md`` / ``report.html`` / ``plots`` at the end.
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
        metrics = _read_metrics(rdir)
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
        from segweak.report.report import report

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
