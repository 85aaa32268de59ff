"""Planning an experiment: its config, every run of the protocol and what each run trains with.

The protocol is a declaration, :data:`PROTOCOL`: a tuple of :class:`StageSpec`, each saying which
rows the stage plans (one run, one per pre-training method of ``methods``, or one per other method),
what they train (``supervised`` on a subset, or the row's method) and which earlier stage's selected
checkpoint (:func:`segweak.train.engine.selected_checkpoint`) they start from (``consumes``). The
planner walks the declarations in order, for every split seed x training seed; a new protocol is a
new declaration, not an edit of the planner. The shipped one plans these rows:

* ``baseline``: ``supervised`` on the strong subset (ImageNet/offline encoder),
* ``weak``: each pre-training method of ``methods`` (e.g. ``proportion``: weak labels of the weak
  subset only),
* ``finetune``: ``supervised`` on the strong subset from the same split/seed/method's weak run's
  selected checkpoint (``consumes={"init.checkpoint": "weak"}``),
* one row per other method of ``methods`` (e.g. ``joint``), named after the method; a method that
  depends on another row (:meth:`~segweak.methods.TrainingMethod.depends_on`, e.g. ``pseudo_label``
  taught by ``finetune-proportion``) gives one run per round, each preceded by the artefact it reads
  (:meth:`~segweak.methods.TrainingMethod.prepare`, written under ``EXP/pseudo/``) and, when the
  method says so (:meth:`~segweak.methods.TrainingMethod.init_from_teacher`), starting from its
  teacher checkpoint (``init.checkpoint``): these rows follow the methods' own declarations
  (``depends_on``, ``rounds``, ``init_from_teacher``, ``prepare``),
* ``full``: ``supervised`` on strong + weak pixel labels (the upper bound).

Each run lives in ``EXP/runs/<stage>[-<method>]-split<k>-seed<s>/`` (a single-run method's row:
``<method>-split<k>-seed<s>``; a round of a method with rounds: ``<method>-split<k>-seed<s>-round<r>``,
its artefact in ``EXP/pseudo/`` under the same name).

A sweep (:mod:`segweak.experiment.sweep`) repeats all of this at every point, in
``EXP/runs/<point slug>/`` and ``EXP/pseudo/<point slug>/``; a run with the same inputs at several
points trains once and is reported at each (:func:`plan_runs`).

Running the plan is :mod:`segweak.experiment.run`; its results rows are
:mod:`segweak.experiment.results`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segweak.config import (
    ExperimentConfig,
    TrainConfig,
    deep_merge,
    from_dict,
    load_config,
    parse_overrides,
    read_yaml,
    to_dict,
)
from segweak.errors import SegweakError
from segweak.experiment.sweep import SweepPoint, expand, sweep_axes

ARTEFACTS_DIR = "pseudo"
"""Experiment subdirectory of the artefacts rounds read (``EXP/pseudo/<run name>/``)."""

#: TrainConfig keys a stage can set to the selected checkpoint of a stage it consumes
#: (:attr:`StageSpec.consumes`): where a run starts from.
CONSUMABLE_KEYS = ("init.checkpoint",)

ROW_KINDS = ("one", "pretrain", "methods")
"""What rows a stage plans (:attr:`StageSpec.rows`)."""

STEP_KINDS = ("pretrain", "finetune", "train")
"""What a stage's runs are to their arm (:attr:`StageSpec.step_kind`, the results' ``step_kind``)."""


@dataclass(frozen=True)
class StageSpec:
    """Declaration of one protocol stage: the rows it plans and what each of them trains with.

    Attributes:
        name: Stage name: what ``stages`` lists, the ``stage_overrides`` layer and the prefix of its
            runs' names (the ``methods`` stage is not listed in ``stages``: it is planned whenever
            ``methods`` has a single-run method).
        rows: ``one`` (one run, ``<name>-split<k>-seed<s>``), ``pretrain`` (one run per pre-training
            method of ``methods``, ``<name>-<method>-...``) or ``methods`` (one row per other method
            of ``methods``, named after it, following the method's own ``depends_on`` / ``rounds``
            / ``init_from_teacher`` / ``prepare``).
        trains: ``supervised`` (on ``subset``) or ``method`` (the row's method).
        subset: Supervised subset (``strong`` or ``full``, ``methods.supervised.subset``) when
            ``trains`` is ``supervised``, else ``None``.
        consumes: ``{TrainConfig dotted key: stage}``: the key (one of :data:`CONSUMABLE_KEYS`) is
            set to that earlier stage's selected checkpoint, of the same method for a ``pretrain``
            stage (e.g. ``{"init.checkpoint": "weak"}``). The stage needs that stage in ``stages``.
        step_kind: ``pretrain``, ``finetune`` or ``train`` (see :data:`STEP_KINDS`).
        role: ``baseline`` or ``full`` for a reference row; ``None``: ``method`` or ``control``
            after the row's method (:attr:`~segweak.methods.TrainingMethod.control`).
        teaches: Whether its runs' final checkpoints are rows a method can depend on
            (:meth:`~segweak.methods.TrainingMethod.depends_on`): the stage's name for a ``one``
            stage, the method's name for a ``pretrain`` stage (the last teaching stage of that
            method wins). Only stages before the ``methods`` stage teach.
        method_overrides: Whether a ``pretrain`` row also takes ``stage_overrides.<method>``.
    """

    name: str
    rows: str = "one"
    trains: str = "supervised"
    subset: str | None = None
    consumes: Mapping[str, str] = field(default_factory=dict)
    step_kind: str = "train"
    role: str | None = None
    teaches: bool = False
    method_overrides: bool = False

    def __post_init__(self) -> None:
        # A declaration error is a programming error in segweak (or a test), not a user's config.
        where = f"StageSpec {self.name!r}"
        if self.rows not in ROW_KINDS or self.step_kind not in STEP_KINDS:
            raise ValueError(f"{where}: rows must be one of {ROW_KINDS}, step_kind one of {STEP_KINDS}")
        if self.trains not in ("supervised", "method"):
            raise ValueError(f"{where}: trains must be 'supervised' or 'method', got {self.trains!r}")
        if (self.trains == "supervised") != (self.subset is not None):
            raise ValueError(f"{where}: a subset goes with trains='supervised', and only with it")
        if self.trains == "method" and self.rows == "one":
            raise ValueError(f"{where}: a one-run stage has no method to train; say trains='supervised'")
        if self.rows == "methods" and (self.trains != "method" or self.consumes or self.method_overrides):
            raise ValueError(f"{where}: the methods stage trains each method as the method declares")
        if bad := [key for key in self.consumes if key not in CONSUMABLE_KEYS]:
            raise ValueError(f"{where}: cannot consume into {bad}; choose from {CONSUMABLE_KEYS}")
        if self.method_overrides and self.rows != "pretrain":
            raise ValueError(f"{where}: method_overrides needs rows='pretrain'")


#: The shipped protocol, in the order its stages train.
PROTOCOL: tuple[StageSpec, ...] = (
    StageSpec("baseline", subset="strong", role="baseline", teaches=True),
    StageSpec("weak", rows="pretrain", trains="method", step_kind="pretrain", method_overrides=True),
    StageSpec(
        "finetune",
        rows="pretrain",
        subset="strong",
        consumes={"init.checkpoint": "weak"},
        step_kind="finetune",
        teaches=True,
    ),  # fmt: skip
    StageSpec("methods", rows="methods", trains="method", teaches=True),
    # Never a teacher: it reads the weak subset's pixel labels.
    StageSpec("full", subset="full", role="full"),
)


def check_protocol(protocol: Sequence[StageSpec]) -> None:
    """Check that the stages of a protocol fit together.

    Names are unique, exactly one stage plans the ``methods`` rows, and every consumed stage is
    declared earlier (the declaration order is the training order, so it must be topological) and
    gives one checkpoint per consumer row (a ``one`` stage cannot consume a ``pretrain`` stage).

    Raises:
        ValueError: Naming the stage at fault (a declaration error, not a user error).
    """
    names = [spec.name for spec in protocol]
    if len(set(names)) != len(names):
        raise ValueError(f"protocol {names}: a stage name is declared twice")
    if [spec.rows for spec in protocol].count("methods") != 1:
        raise ValueError(f"protocol {names}: exactly one stage must have rows='methods'")
    seen: dict[str, StageSpec] = {}
    for spec in protocol:
        for key, source in spec.consumes.items():
            src = seen.get(source)
            if src is None:
                raise ValueError(
                    f"StageSpec {spec.name!r}: {key} consumes {source!r}, not declared before it"
                )
            if src.rows == "methods" or (src.rows == "pretrain" and spec.rows != "pretrain"):
                raise ValueError(
                    f"StageSpec {spec.name!r}: {source!r} has one run per method; only a per-method "
                    "stage can consume it"
                )
        seen[spec.name] = spec


check_protocol(PROTOCOL)


def stage_spec(stage: str, protocol: Sequence[StageSpec] = PROTOCOL) -> StageSpec:
    """Return the declaration of row ``stage``: its stage, or the ``methods`` stage for a method's row."""
    for spec in protocol:
        if spec.name == stage and spec.rows != "methods":
            return spec
    return next(spec for spec in protocol if spec.rows == "methods")


def planned_stages(cfg: ExperimentConfig, protocol: Sequence[StageSpec] = PROTOCOL) -> list[StageSpec]:
    """Return the stages of ``protocol`` the experiment plans: those in ``stages``, and ``methods``."""
    return [spec for spec in protocol if spec.rows == "methods" or spec.name in cfg.stages]


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
        spec: Declaration of the row's stage (the ``methods`` stage for a method's row).
        note: Human-readable remark stored in the results row.
        round: Round (1-based) of a method that depends on another row, else ``None``.
        teacher: ``best.ckpt`` of the run that teaches this round (a method with rounds).
        artefact: Directory of the artefact the round reads, written from ``teacher`` before it
            trains (:meth:`~segweak.methods.TrainingMethod.prepare`).
        point: Label of the sweep point the row belongs to (``""`` without a sweep).
        factors: ``{dotted key: value}`` of that point.
        trained_at: Label of the point whose identical run this row reports (its ``cfg`` is that
            run's), or ``None`` when the run is this point's own.
        upstream: Run directory of the run this one starts from (``init.checkpoint`` or ``teacher``).
    """

    stage: str
    method: str
    split_seed: int
    split_name: str
    seed: int
    cfg: TrainConfig
    spec: StageSpec = field(repr=False)
    note: str = ""
    round: int | None = None
    teacher: str | None = None
    artefact: str | None = None
    point: str = ""
    factors: dict[str, Any] = field(default_factory=dict)
    trained_at: str | None = None
    upstream: str | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """``(stage, method, split_seed, seed)``, plus ``round`` for a round of a method with rounds.

        In a sweep the point's label comes first: ``(point, stage, method, split_seed, seed[, round])``.
        """
        key = (self.stage, self.method, self.split_seed, self.seed)
        key = key if self.round is None else (*key, self.round)
        return (self.point, *key) if self.point else key

    @property
    def arm(self) -> str:
        """What the row belongs to in a comparison: ``baseline``, ``full`` or the compared method."""
        return self.method or self.stage

    @property
    def step_kind(self) -> str:
        """``pretrain`` (a ``weak`` row), ``finetune`` (its fine-tuning) or ``train`` (a whole arm)."""
        return self.spec.step_kind

    @property
    def role(self) -> str:
        """``baseline``, ``full``, ``control`` (a method with ``control = True``) or ``method``."""
        if self.spec.role is not None:
            return self.spec.role
        from segweak.methods import method_class

        return "control" if method_class(self.arm).control else "method"

    @property
    def label(self) -> str:
        """Short description for progress output."""
        name = f"{self.stage}:{self.method}" if self.method else self.stage
        rnd = f" round{self.round}" if self.round is not None else ""
        at = f" @ {self.point}" if self.point else ""
        return f"{name} split{self.split_seed} seed{self.seed}{rnd}{at}"


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
    plan_runs(cfg)  # validates every sweep point and every run's resolved TrainConfig
    return cfg


def _get(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = d
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return _MISSING
        node = node[k]
    return node


def pop_keys(d: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Remove the nested key ``keys`` (e.g. ``("data", "store")``) from ``d`` when present."""
    node: Any = d
    for k in keys[:-1]:
        if not isinstance(node, dict) or k not in node:
            return
        node = node[k]
    if isinstance(node, dict):
        node.pop(keys[-1], None)


_MISSING = object()


def _and(names: list[str]) -> str:
    """Join ``names`` as ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else ""


def check_train_sections(cfg: ExperimentConfig, protocol: Sequence[StageSpec] = PROTOCOL) -> None:
    """Check ``train``, ``stage_overrides`` and ``methods`` before anything is prepared or trained.

    Every section must hold valid TrainConfig keys, none the experiment controls, and valid options
    in each ``methods.<name>`` section; every compared method must exist, a pre-training method
    needs the stage that pre-trains (``weak``), and every planned stage the stages it consumes.

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
            supervised = [spec.name for spec in protocol if spec.trains == "supervised"]
            raise SegweakError(
                f"methods[{i}]: 'supervised' is what the {_and(supervised)} rows train; "
                "list the methods to compare with them"
            )
        pretrains = [spec.name for spec in protocol if spec.rows == "pretrain" and spec.trains == "method"]
        if cls.pretrain and not set(pretrains) & set(cfg.stages):
            then = [repr(spec.name) for spec in protocol if set(spec.consumes.values()) & set(pretrains)]
            add = " or ".join(map(repr, pretrains)) + (f" (and {_and(then)})" if then else "")
            raise SegweakError(
                f"methods[{i}]: {m!r} pre-trains on weak labels and is then fine-tuned: add {add} "
                "to stages, or remove it from methods"
            )
    for spec in planned_stages(cfg, protocol):
        for source in spec.consumes.values():
            if source not in cfg.stages:
                raise SegweakError(
                    f"stages: {spec.name!r} starts from the {source!r} checkpoints, so add {source!r} "
                    "to stages"
                )
    _check_dependencies(cfg, protocol)


def _arm_options(cfg: ExperimentConfig, method: str) -> Any:
    """Options of a single-run method's row: ``train`` <- ``stage_overrides.<method>``, resolved."""
    from segweak.methods import method_options

    data = deep_merge(cfg.train, cfg.stage_overrides.get(method, {}))
    return method_options(from_dict(TrainConfig, data), method)


def teacher_rows(cfg: ExperimentConfig, upto: str, protocol: Sequence[StageSpec] = PROTOCOL) -> list[str]:
    """Rows whose final checkpoint a method can depend on: those trained before ``upto``'s row.

    The rows of the planned teaching stages before the ``methods`` stage (:attr:`StageSpec.teaches`;
    shipped: ``baseline``, and each pre-training method through its ``finetune`` row) and the
    single-run methods listed before ``upto``. Never ``full``: it reads the weak pixel labels.
    """
    rows: list[str] = []
    methods = methods_of(cfg)
    for spec in planned_stages(cfg, protocol):
        if spec.rows == "methods":
            break  # what trains after the methods' rows teaches none of them
        if spec.teaches:
            new = [spec.name] if spec.rows == "one" else [m for m in methods if _pretrains(m)]
            rows += [row for row in new if row not in rows]
    return rows + [m for m in methods[: methods.index(upto)] if not _pretrains(m)]


def _check_dependencies(cfg: ExperimentConfig, protocol: Sequence[StageSpec] = PROTOCOL) -> None:
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
        rows = teacher_rows(cfg, m, protocol)
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
            meta = json.loads((experiment_store(cfg) / "store.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # reported by prepare_data with its own message
        channels = meta.get("channels") if isinstance(meta, dict) else None
        return (int(channels), f"store {experiment_store(cfg)}") if isinstance(channels, int) else None
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


def check_runs(cfg: ExperimentConfig, points: list[SweepPoint] | None = None) -> list[PlannedRun]:
    """Resolve and validate every run's training config, and check them against this machine and data.

    Called by :func:`run_experiment` before anything is written; :func:`load_experiment_config` only
    validates the values (a GPU config loads on a CPU machine). Checks each run's training budget,
    that this machine has the accelerator and devices it asks for, and that ``model.in_channels``
    matches the bands of the data when they are known before preparing (see :func:`_source_bands`).
    Runs whose results already exist are skipped (they will not train), so a finished GPU experiment
    can still be collected on a CPU machine.

    Args:
        cfg: Validated experiment config.
        points: Its sweep points (:func:`sweep_points`), when already expanded.

    Returns:
        The planned runs (see :func:`plan_runs`).

    Raises:
        SegweakError: Naming the stage and key at fault.
    """
    from segweak.train.budget import check_budget
    from segweak.train.engine import is_complete
    from segweak.train.preflight import check_trainer_hardware

    runs = plan_runs(cfg, points=points)
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
    return manifest_name(cfg.split.name, len(cfg.split.seeds), split_seed)


def manifest_name(base: str, n_split_seeds: int, split_seed: int) -> str:
    """Split manifest name of ``split_seed`` among ``n_split_seeds`` split seeds named ``base``.

    The one naming rule, also for readers that only have ``results.json`` (the sample predictions).
    """
    return base if n_split_seeds == 1 else f"{base}-seed{split_seed}"


def resolve_train_config(
    cfg: ExperimentConfig,
    stage: str,
    *,
    method: str,
    split_seed: int,
    seed: int,
    store: str | Path,
    consumed: Mapping[str, str] | None = None,
    round: int | None = None,
    artefact: str | None = None,
    slug: str = "",
    protocol: Sequence[StageSpec] = PROTOCOL,
) -> TrainConfig:
    """Resolve one run's TrainConfig: defaults <- ``train`` <- ``stage_overrides`` <- experiment keys.

    Override layers: a protocol stage's own (``stage_overrides.<stage>``); a ``pretrain`` row of a
    stage with :attr:`StageSpec.method_overrides` (``weak``) adds its method's
    (``stage_overrides.<method>``); a single-run method row has only its own. The experiment then
    sets ``method``, the run's name and paths, the seed, the consumed checkpoints (e.g.
    ``init.checkpoint`` of a ``finetune`` row) and the supervised subset, as the stage's
    :class:`StageSpec` declares. The result is checked and its method options resolved
    (:func:`segweak.methods.check_config`).

    Args:
        cfg: The experiment config.
        stage: Row name: a stage of ``protocol`` (``baseline``, ``weak``, ``finetune``, ``full``) or a
            single-run method.
        method: The pre-training method of a ``pretrain`` row (``weak``/``finetune``), else ``""``.
        split_seed: Split seed.
        seed: Training seed.
        store: Prepared store path.
        consumed: ``{dotted key: checkpoint}`` of what the stage consumes (:attr:`StageSpec.consumes`).
        round: Round of a method with rounds (part of the run's name).
        artefact: The round's artefact directory, set as the method's ``artefact_option``.
        slug: The sweep point's directory name (``""`` without a sweep): runs go to
            ``<out_dir>/runs/<slug>/``.
        protocol: The protocol declaring ``stage``.
    """
    from segweak.methods import check_config

    spec = stage_spec(stage, protocol)
    data = copy.deepcopy(cfg.train)
    layers = [stage] + ([method] if spec.method_overrides and method else [])
    for layer in layers:
        data = deep_merge(data, copy.deepcopy(cfg.stage_overrides.get(layer, {})))
    forced: dict[str, Any] = {
        "out_dir": str(runs_root(cfg, slug)),
        "run_name": run_name(stage, method, split_seed, seed, round),
        "resume": True,
        "data": {"store": str(store), "split": split_name(cfg, split_seed)},
        "trainer": {"seed": seed},
    }
    if spec.trains == "supervised":
        forced["method"] = "supervised"
        forced["methods"] = {"supervised": {"subset": spec.subset}}
    else:
        forced["method"] = method or stage
    for dotted, checkpoint in (consumed or {}).items():
        node = forced
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = checkpoint
    if artefact is not None:
        from segweak.methods import method_class

        forced["methods"] = {forced["method"]: {method_class(forced["method"]).artefact_option: artefact}}
    data = deep_merge(data, forced)
    try:
        return check_config(from_dict(TrainConfig, data))
    except SegweakError as exc:
        raise SegweakError(f"stage {stage}: {exc}") from None


def runs_root(cfg: ExperimentConfig, slug: str = "") -> Path:
    """Directory of a sweep point's runs: ``<out_dir>/runs`` (no sweep) or ``<out_dir>/runs/<slug>``."""
    root = Path(cfg.out_dir) / "runs"
    return root / slug if slug else root


def artefacts_root(cfg: ExperimentConfig, slug: str = "") -> Path:
    """Directory of a sweep point's artefacts: ``<out_dir>/pseudo[/<slug>]``."""
    root = Path(cfg.out_dir) / ARTEFACTS_DIR
    return root / slug if slug else root


def sweep_points(cfg: ExperimentConfig, protocol: Sequence[StageSpec] = PROTOCOL) -> list[SweepPoint]:
    """Return the experiment's sweep points (one without a sweep), each point's config and runs checked.

    Raises:
        SegweakError: Naming ``sweep.<key>`` or the point at fault (:func:`segweak.experiment.sweep.expand`).
    """

    def check(point: ExperimentConfig) -> None:
        check_train_sections(point, protocol)
        registry: dict[str, PlannedRun] = {}
        for k in point.split.seeds:
            for s in point.seeds:
                _plan_split_seed(point, experiment_store(point), k, s, "", registry, protocol=protocol)

    return expand(cfg, check=check if sweep_axes(cfg) else None)


def plan_runs(
    cfg: ExperimentConfig,
    store: str | Path | None = None,
    points: list[SweepPoint] | None = None,
    protocol: Sequence[StageSpec] = PROTOCOL,
) -> list[PlannedRun]:
    """Every run of the protocol at every sweep point, in the order they must train.

    Per point, per split seed x seed, the planned stages of ``protocol`` in their declared order
    (shipped: ``baseline``; ``weak`` then ``finetune`` for each pre-training method; one row per
    single-run method, one run per round for a method that depends on another row: round 1 taught
    by that row's final selected checkpoint, round r + 1 by round r's; ``full``).

    A run whose inputs are the same as a run planned at an earlier point (resolved training config,
    store, the split subsets it reads, the run it starts from) is not planned again: its row at the
    later point carries the earlier run's config and ``trained_at`` (e.g. ``full`` across a
    ``split.strong`` sweep: strong ∪ weak and val are the same patches at every point).

    Args:
        cfg: Validated experiment config.
        store: Path of the prepared store every point uses (tests, single-store experiments);
            ``None``: each point's own (:func:`experiment_store`).
        points: The sweep points (:func:`sweep_points`), when already expanded.
        protocol: The stages to plan (:data:`PROTOCOL`; checked by :func:`check_protocol`).

    Returns:
        Planned runs.
    """
    if protocol is not PROTOCOL:
        check_protocol(protocol)
    registry: dict[str, PlannedRun] = {}
    runs: list[PlannedRun] = []
    for point in points if points is not None else sweep_points(cfg, protocol):
        point_store = store if store is not None else experiment_store(point.cfg)
        for k in point.cfg.split.seeds:
            for s in point.cfg.seeds:
                runs += _plan_split_seed(point.cfg, point_store, k, s, point.slug, registry, point, protocol)
    return runs


def split_weak_labels(cfg: ExperimentConfig) -> str | None:
    """Return the imported weak-label set the experiment's splits are made with (``train.weak.labels``).

    ``None`` when the runs use labels computed from the masks; with an imported set, the patches of
    images without masks that one of its bags covers join the weak subset
    (:func:`segweak.data.splits.make_split`, ``weak_labels``).
    """
    from segweak.data.weak_tables import COMPUTED

    labels = ((cfg.train.get("weak") or {}).get("labels")) or COMPUTED
    return None if labels == COMPUTED else str(labels)


def _split_reads(cfg: ExperimentConfig, train_cfg: TrainConfig, split_seed: int) -> dict[str, Any]:
    """Return the split settings that fix the patches a run reads (its share of the run's identity).

    A supervised ``full`` run reads strong ∪ weak, val and test: with nested splits those do not
    depend on how strong and weak share their fraction, so only the val/test fractions count.
    Any other run may read every subset, so every setting counts.
    """
    sp = cfg.split
    fractions: list[Any] = list(sp.fractions)
    subset = (
        train_cfg.methods.get("supervised", {}).get("subset") if train_cfg.method == "supervised" else None
    )
    if subset == "full" and sp.nested:
        fractions = ["strong+weak", *fractions[2:]]
    return {
        "seed": split_seed,
        "by": sp.by,
        "nested": sp.nested,
        "test": sp.test,
        "fractions": fractions,
        "weak_labels": split_weak_labels(cfg),
    }


def _identity(
    cfg: ExperimentConfig, run: PlannedRun, store: str | Path, registry: dict[str, PlannedRun]
) -> str:
    """Return a string equal for two planned runs exactly when they would train the same thing."""
    upstream = None
    if run.upstream is not None:
        owner = registry.get(f"dir:{run.upstream}")
        upstream = owner.cfg.run_dir.as_posix() if owner is not None else run.upstream
    comparable = comparable_config(run.cfg)
    pop_keys(comparable, ("data", "split"))
    split = _split_reads(cfg, run.cfg, run.split_seed)
    if run.cfg.method == "supervised":
        # Pixel labels only: which weak labels (computed, imported, noisy) the experiment gives the
        # weak patches changes nothing this run trains on or measures (validation uses the masks),
        # so a `train.weak.labels` or `train.weak.noise` axis shares it across points.
        pop_keys(comparable, ("weak", "labels"))
        pop_keys(comparable, ("weak", "noise"))
        split.pop("weak_labels")
    return json.dumps(
        {
            "config": comparable,
            "store": Path(store).as_posix(),
            "split": split,
            "row": [run.stage, run.method, run.round],
            "upstream": upstream,
        },
        sort_keys=True,
        default=str,
    )


def _plan_split_seed(
    cfg: ExperimentConfig,
    store: str | Path,
    k: int,
    s: int,
    slug: str,
    registry: dict[str, PlannedRun],
    point: SweepPoint | None = None,
    protocol: Sequence[StageSpec] = PROTOCOL,
) -> list[PlannedRun]:
    """Plan the runs of split seed ``k`` x training seed ``s`` at one point (see :func:`plan_runs`).

    ``registry`` maps each planned run's identity (and ``dir:<run dir>``) to the run that trains it,
    across points; a run already there is reported, not planned again.
    """
    from segweak.methods import method_class
    from segweak.train.engine import selected_checkpoint

    methods = methods_of(cfg)
    runs: list[PlannedRun] = []
    final: dict[str, str] = {}  # row -> selected checkpoint of its last run (what a dependant starts from)
    done: dict[tuple[str, str], str] = {}  # (stage, method) -> selected checkpoint (what a consumer reads)
    label = point.label if point is not None else ""
    factors = dict(point.factors) if point is not None else {}

    def add(
        spec: StageSpec,
        stage: str,
        method: str = "",
        *,
        consumed: dict[str, str] | None = None,
        round: int | None = None,
        teacher: str | None = None,
        artefact: str | None = None,
        note: str = "",
    ) -> str:
        """Plan one run (or report an identical earlier one); return its selected checkpoint."""
        tc = resolve_train_config(
            cfg, stage, method=method, split_seed=k, seed=s, store=store, consumed=consumed,
            round=round, artefact=artefact, slug=slug, protocol=protocol,
        )  # fmt: skip
        # CONSUMABLE_KEYS has one key, so a run has at most one upstream run.
        source = next(iter((consumed or {}).values()), teacher)
        run = PlannedRun(
            stage, method, k, split_name(cfg, k), s, tc, spec, note, round=round, teacher=teacher,
            artefact=artefact, point=label, factors=factors,
            upstream=str(Path(source).parent.parent) if source is not None else None,
        )  # fmt: skip
        identity = _identity(cfg, run, store, registry)
        owner = registry.get(identity)
        if owner is not None and owner.point != label:
            run.cfg, run.teacher, run.artefact = owner.cfg, owner.teacher, owner.artefact
            run.trained_at = owner.point
        else:
            registry[identity] = run
        registry[f"dir:{run.cfg.run_dir}"] = run
        runs.append(run)
        return str(selected_checkpoint(run.cfg))

    def add_methods(spec: StageSpec) -> None:
        """Plan the single-run methods' rows, each as its method declares (teacher, rounds)."""
        for m in (m for m in methods if not _pretrains(m)):
            cls = method_class(m)
            options = _arm_options(cfg, m)
            row = cls.depends_on(options)
            if row is None:
                final[m] = add(spec, m)
                continue
            teacher = final[row]  # present: check_train_sections checked the dependency
            from_teacher = cls.init_from_teacher(options)
            for r in range(1, cls.rounds(options) + 1):
                artefact = str(artefacts_root(cfg, slug) / run_name(m, "", k, s, r))
                # A student that starts from its teacher consumes it like a finetune row its weak run
                # (init.checkpoint): the resume, missing-checkpoint and identity checks then apply.
                consumed = {"init.checkpoint": teacher} if from_teacher else None
                note = (
                    f"starts from its teacher's weights ({Path(teacher).parent.parent.name})"
                    if from_teacher
                    else ""
                )
                teacher = add(
                    spec, m, consumed=consumed, round=r, artefact=artefact, teacher=teacher, note=note
                )
            final[m] = teacher

    specs = {spec.name: spec for spec in protocol}
    for spec in planned_stages(cfg, protocol):
        if spec.rows == "methods":
            add_methods(spec)
            continue
        for m in [m for m in methods if _pretrains(m)] if spec.rows == "pretrain" else [""]:
            # Present: the declaration order is topological and check_train_sections checked stages.
            consumed = {
                key: done[source, m if specs[source].rows == "pretrain" else ""]
                for key, source in spec.consumes.items()
            }
            done[spec.name, m] = add(spec, spec.name, m, consumed=consumed)
            if spec.teaches:
                final[m or spec.name] = done[spec.name, m]
    return runs


#: Keys ignored when checking that a finished run was trained with the config asked for now
#: (paths may move with the experiment directory; the rest does not change the numbers).
IGNORED_FOR_MATCH = (
    ("out_dir",),
    ("run_name",),
    ("resume",),
    ("data", "store"),
    ("data", "num_workers"),
    ("init", "checkpoint"),
    ("trainer", "progress_bar"),
    ("trainer", "log_every_n_steps"),
)


def comparable_config(train_cfg: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Return a run's training config as a mapping without the keys that do not change its numbers.

    Drops :data:`IGNORED_FOR_MATCH`, and a method's artefact path and planning options (more rounds
    do not change a finished round).
    """
    from segweak.methods import METHODS

    d = copy.deepcopy(to_dict(train_cfg) if not isinstance(train_cfg, dict) else train_cfg)
    for keys in IGNORED_FOR_MATCH:
        pop_keys(d, keys)
    cls = METHODS.get(str(d.get("method")))
    if cls is not None:
        for option in (cls.artefact_option, *cls.planning_options):
            if option:
                pop_keys(d, ("methods", cls.name, option))
    return d


def experiment_store(cfg: ExperimentConfig) -> Path:
    """Path of the prepared store the experiment trains on (``dataset.store``, else ``<out_dir>/store``)."""
    return Path(cfg.dataset.store) if cfg.dataset.store else Path(cfg.out_dir) / "store"
