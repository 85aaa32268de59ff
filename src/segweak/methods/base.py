"""Training methods: the base class, what a method declares, and the registry.

A *training method* decides what a training step computes; everything else (the network, the
optimiser and schedule, validation and test metrics, history, checkpoints) belongs to the task,
:class:`~segweak.train.module.SegModule`, and is the same for every method.

A method

* is an :class:`torch.nn.Module` child of the task, so any state it keeps (an EMA teacher, a round
  counter: parameters with ``requires_grad=False`` or buffers) is saved in checkpoints and restored
  on resume. Create such state in :meth:`TrainingMethod.setup`, which runs when the task is built,
  i.e. before a checkpoint is restored into it;
* declares what it reads, :meth:`TrainingMethod.needs`: named sub-batches, each a subset of the
  split (``strong``, ``weak``, ``full``), the labels loaded with it (``mask``, ``weak`` or ``none``:
  unlabelled images whose proportions are never loaded) and how many views of a patch it uses;
* declares what it depends on: :attr:`TrainingMethod.requires_init` (a checkpoint to start from,
  ``init.checkpoint``); artefacts such as a teacher checkpoint are options of the method, checked by
  its ``Options.validate``. In an experiment, a method may also depend on another row's final
  checkpoint (:meth:`TrainingMethod.depends_on`), run in rounds (:meth:`TrainingMethod.rounds`),
  start each round from its teacher's weights (:meth:`TrainingMethod.init_from_teacher`) and write
  the artefact each round reads before it trains (:meth:`TrainingMethod.prepare`);
* computes a step, :meth:`TrainingMethod.training_step`: named sub-batches in, a dict of named loss
  terms out. Their sum is optimised; every term is logged (``train/<term>``, ``history.csv`` column
  ``train_<term>``) and plotted in the report.

Options: each method has one dataclass, :attr:`TrainingMethod.Options`, filled strictly from the
config section ``methods.<name>`` (an unknown key is an error naming ``methods.<name>.<key>``).

Adding a method is one new module in this package (or anywhere that is imported before training)::

    @register("my_method")
    class MyMethod(TrainingMethod):
        Options = MyOptions              # a dataclass; optional validate(self, prefix) method

        def needs(self):
            return {"weak": Need(subset="weak", labels="weak")}

        def training_step(self, task, batches):
            logits = task(batches["weak"]["image"])
            return {"my_term": ...}

Every module of the :mod:`segweak.methods` package is imported when the package is, so a new file
there is registered without editing any other file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from segweak.config import EXPERIMENT_STAGES, REMOVED_STAGES, TrainConfig, from_dict, to_dict
from segweak.errors import SegweakError


class Task(Protocol):
    """What a method may use of the task that runs it (:class:`~segweak.train.module.SegModule`).

    Methods depend on this protocol, not on the task class, so that ``methods/`` sits below
    ``train/`` (the task builds its method from the registry; a method never imports the task).
    """

    cfg: TrainConfig
    model: nn.Module
    global_step: int
    global_rank: int
    device: torch.device

    def pixel_loss(self, logits: Tensor, mask: Tensor) -> Tensor:
        """Pixel loss of ``logits`` (B, K, H, W) against ``mask`` (B, H, W) (ignore = 255)."""
        ...

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        """Log a scalar (Lightning's ``LightningModule.log``)."""
        ...


SUBSETS = ("strong", "weak", "full")
"""Split subsets a method can read: ``full`` = strong ∪ weak."""

LABELS = ("mask", "weak", "none")
"""What is loaded with a sub-batch: pixel masks, weak labels (proportions and presence; plus the
``valid`` map when ``weak.area: valid``), or nothing (images only)."""


@dataclass(frozen=True)
class Need:
    """One named sub-batch a method reads every training step.

    Attributes:
        subset: ``strong``, ``weak`` or ``full`` (strong ∪ weak).
        labels: ``mask`` (``mask`` (B, H, W) int64, 255 = ignore, and ``valid``; on ``weak`` only
            with ``masks_from``: the weak patches' own pixel labels are never read for training),
            ``weak`` (``weak`` and ``presence`` (B, K); ``valid`` (B, H, W) only with
            ``weak.area: valid``) or ``none`` (only ``image``, ``id``, ``index``).
        views: Views of each patch the method uses. The loader delivers one (``image``, with the
            dataset's flips/rotations); for ``views > 1`` the task calls
            :meth:`TrainingMethod.make_views` on the device and puts all views, the loaded one first,
            in the sub-batch's ``views`` list. Pixel positions correspond between views.
        batch_size: Default batch size of this sub-batch; ``data.batch_sizes.<name>`` overrides it,
            ``None`` uses ``data.batch_size``.
        masks_from: Directory of a mask artefact (:mod:`segweak.train.pseudo_labels`, written by
            ``segweak pseudo-label``) whose masks replace the store's for this sub-batch; needs
            ``labels: mask``. The datamodule opens it before training and refuses one made for
            another store, split or subset. The store's masks of the subset are then never read.

    Raises:
        SegweakError: For an invalid choice (a method's programming error, reported clearly).
    """

    subset: str
    labels: str
    views: int = 1
    batch_size: int | None = None
    masks_from: str | None = None

    def __post_init__(self) -> None:
        if self.subset not in SUBSETS:
            raise SegweakError(
                f"Need.subset: {self.subset!r} is not valid; choose one of {', '.join(SUBSETS)}"
            )
        if self.labels not in LABELS:
            raise SegweakError(
                f"Need.labels: {self.labels!r} is not valid; choose one of {', '.join(LABELS)}"
            )
        if self.masks_from is not None and self.labels != "mask":
            raise SegweakError(f"Need.masks_from needs labels 'mask', got labels {self.labels!r}")
        if self.subset == "weak" and self.labels == "mask" and self.masks_from is None:
            raise SegweakError(
                "Need: the weak subset has no pixel labels for training (labels 'mask'); give masks "
                "from an artefact with masks_from"
            )
        if self.views < 1:
            raise SegweakError(f"Need.views must be >= 1, got {self.views}")
        if self.batch_size is not None and self.batch_size < 1:
            raise SegweakError(f"Need.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class NoOptions:
    """Options of a method that has none (its ``methods.<name>`` section must be empty)."""


class TrainingMethod(nn.Module):
    """Base class of training methods (see the module docstring).

    Args:
        options: This method's :attr:`Options` instance (from ``methods.<name>``).
        cfg: The run's config (``weak.area``, ``loss.*`` and the rest are read from it).
        num_classes: Number of classes ``K``.

    Class attributes:
        name: Registry name (set by :func:`register`).
        Options: Options dataclass.
        pretrain: Learns from weak or unlabelled data only; the protocol then fine-tunes it on the
            strong subset (``weak`` + ``finetune`` rows of an experiment). False: one run is the
            whole method (e.g. ``supervised``, ``joint``).
        requires_init: Starts from a checkpoint: ``init.checkpoint`` must be set.
        artefact_option: Option naming the artefact a round reads (a method with
            :meth:`depends_on`): ``segweak run`` sets ``methods.<name>.<artefact_option>`` to the
            directory :meth:`prepare` writes, so a user's ``train`` section leaves it unset.
        planning_options: Options only ``segweak run`` reads to plan rows (e.g. ``rounds``): they do
            not change what one run trains, so a finished run whose recorded value differs is reused.
        control: A control arm rather than a candidate method: it removes or replaces one
            ingredient of the weak-label methods (e.g. the link between weak labels and images) to
            show what that ingredient contributes. Experiments record it in the ``role`` column and
            reports mark it; it trains like any other method.
        imported_weak_labels: Can train with imported weak labels (``weak.labels: NAME``, bags of
            patches): its weak terms are :class:`~segweak.methods.proportion.WeakLabelMethod`'s
            bag-aware terms, or it reads no weak labels. False refuses such a config up front.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    pretrain: ClassVar[bool] = False
    requires_init: ClassVar[bool] = False
    control: ClassVar[bool] = False
    imported_weak_labels: ClassVar[bool] = True
    artefact_option: ClassVar[str] = ""
    planning_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Any, cfg: TrainConfig, num_classes: int) -> None:
        super().__init__()
        self.options = options
        self.cfg = cfg
        self.num_classes = int(num_classes)

    def needs(self) -> dict[str, Need]:
        """Named sub-batches read every training step (at least one)."""
        raise NotImplementedError

    def training_step(self, task: Task, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        """Loss terms of one step.

        Args:
            task: The task: ``task(image)`` gives pixel logits (B, K, H, W); ``task.pixel_loss``,
                ``task.global_step``, ``task.log`` and ``task.cfg`` are available.
            batches: One collated batch per name of :meth:`needs`, e.g. ``batches["weak"]["image"]``
                (B, C, H, W).

        Returns:
            Named scalar loss terms (names without ``/``, not ``loss``), already weighted: their sum
            is what is optimised.
        """
        raise NotImplementedError

    def validation_terms(self, task: Task, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Extra scalars logged as ``val/<name>`` / ``test/<name>`` for a validation batch.

        Args:
            task: The task.
            logits: (B, K, H, W) logits of ``batch["image"]``.
            batch: A validation batch (``mask``, ``valid``, ``weak``, ``presence``).
        """
        return {}

    def make_views(self, task: Task, name: str, batch: dict[str, Any], n: int) -> list[Tensor]:
        """Make the ``n - 1`` extra views of sub-batch ``name`` (called when its need has ``views > 1``).

        Runs on the device, per batch, so views can differ per patch (e.g. a photometric strong
        augmentation of the loaded image).

        Returns:
            ``n - 1`` tensors shaped like ``batch["image"]`` (B, C, H, W).
        """
        raise NotImplementedError(
            f"method {self.name!r} declares views > 1 but does not implement make_views"
        )

    def setup(self, task: Task) -> None:
        """Run once when the task is built, after the network: create checkpointed state here."""

    def on_fit_start(self, task: Task) -> None:
        """Run when training starts (after ``init.checkpoint`` or a resumed checkpoint is loaded)."""

    def on_train_batch_end(self, task: Task) -> None:
        """Run after every optimiser step (e.g. to update an EMA teacher)."""

    def extra_repr(self) -> str:  # noqa: D102
        return f"name={self.name!r}, options={self.options!r}"

    # -- experiment protocol (``segweak run``): dependencies between rows -------------------------------

    @classmethod
    def depends_on(cls, options: Any) -> str | None:
        """Row of the experiment whose final checkpoint teaches this method's first round.

        ``baseline`` or the name of another compared method (its ``finetune`` row for a
        pre-training method, its last round otherwise), of the same split and seed; ``None``: the
        method depends on no other row (the default). A method that returns a row also implements
        :meth:`prepare` and sets :attr:`artefact_option`.
        """
        return None

    @classmethod
    def rounds(cls, options: Any) -> int:
        """Return how many runs this method has per split x seed (round ``r + 1`` taught by round ``r``)."""
        return 1

    @classmethod
    def init_from_teacher(cls, options: Any) -> bool:
        """Whether each round starts from its teacher checkpoint rather than ``model.weights``.

        Only for a method with :meth:`depends_on`: ``segweak run`` then sets each round's
        ``init.checkpoint`` to the checkpoint that teaches it (weights only, as a ``finetune`` row
        starts from its ``weak`` run), so the round starts after its teacher is final, and
        ``segweak train`` of such a method needs ``init.checkpoint``. Default: False.
        """
        return False

    @classmethod
    def prepare(cls, cfg: TrainConfig, teacher: Path, out: Path, log: Callable[[str], None]) -> bool:
        """Write the artefact one round reads into directory ``out``, from its teacher checkpoint.

        Called by ``segweak run`` before a round trains (never for a finished round; under DDP on
        rank 0 only, the other ranks wait until ``out`` exists). Must write atomically (``out``
        appears only when complete), and be a no-op when ``out`` already holds the artefact this
        request makes.

        Args:
            cfg: The round's resolved training config (store, split, options, accelerator).
            teacher: The teacher's ``best.ckpt``.
            out: Directory to write (``methods.<name>.<artefact_option>`` of ``cfg``).
            log: Progress messages, among them what was written or reused (the caller adds nothing).

        Returns:
            True when written, False when ``out`` was complete already.

        Raises:
            SegweakError: When ``out`` holds something else (another request, not an artefact).
        """
        raise NotImplementedError(f"method {cls.name!r} depends on another row but has no prepare()")


METHODS: dict[str, type[TrainingMethod]] = {}
"""Registry: ``method`` name -> :class:`TrainingMethod` subclass."""

_RESERVED = set(EXPERIMENT_STAGES) | set(REMOVED_STAGES)


def register(name: str) -> Callable[[type[TrainingMethod]], type[TrainingMethod]]:
    """Class decorator adding a :class:`TrainingMethod` subclass to :data:`METHODS` under ``name``.

    Raises:
        ValueError: For a name that is empty, has characters other than ``[a-z0-9_]``, is an
            experiment stage name (run directories would collide) or is taken by another class.
    """

    def deco(cls: type[TrainingMethod]) -> type[TrainingMethod]:
        if not name or not all(c.islower() or c.isdigit() or c == "_" for c in name):
            raise ValueError(f"method name {name!r}: use lower-case letters, digits and '_'")
        if name in _RESERVED:
            raise ValueError(f"method name {name!r} is an experiment stage name; choose another")
        if name in METHODS and METHODS[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"method name {name!r} is already registered by {METHODS[name].__qualname__}")
        if not dataclasses.is_dataclass(cls.Options):
            raise TypeError(f"{cls.__qualname__}.Options must be a dataclass")
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def method_class(name: str) -> type[TrainingMethod]:
    """Return the registered class of ``name``.

    Raises:
        SegweakError: For an unknown name, listing the valid ones.
    """
    cls = METHODS.get(name)
    if cls is None:
        raise SegweakError(f"method: unknown training method {name!r}; valid: {', '.join(sorted(METHODS))}")
    return cls


def method_options(cfg: TrainConfig, name: str | None = None) -> Any:
    """Options of method ``name`` (default ``cfg.method``) from ``cfg.methods[name]``, strictly.

    Raises:
        SegweakError: Unknown method, unknown option key or bad value (naming ``methods.<name>.<key>``).
    """
    name = name or cfg.method
    cls = method_class(name)
    prefix = f"methods.{name}."
    options = from_dict(cls.Options, cfg.methods.get(name), prefix=prefix)
    validate = getattr(options, "validate", None)
    if callable(validate):
        validate(prefix)
    return options


def build_method(cfg: TrainConfig, num_classes: int) -> TrainingMethod:
    """Instantiate ``cfg.method`` with its options.

    Raises:
        SegweakError: Unknown method or invalid options.
    """
    cls = method_class(cfg.method)
    return cls(method_options(cfg), cfg, num_classes)


def check_method_sections(cfg: TrainConfig) -> None:
    """Check every ``methods.<name>`` section: a registered name and valid options.

    Raises:
        SegweakError: Naming ``methods.<name>`` or ``methods.<name>.<key>``.
    """
    for name in cfg.methods:
        if name not in METHODS:
            raise SegweakError(
                f"methods.{name}: no training method of that name; valid: {', '.join(sorted(METHODS))}"
            )
        method_options(cfg, name)


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Check a training config where training starts, and resolve its method options.

    Checks what :meth:`TrainConfig.validate` cannot without the registries: the model architecture,
    the method name, every ``methods.<name>`` section (also those of other methods, so a typo in a
    shared experiment section fails before the first run) and the method's dependencies.

    Returns:
        A copy of ``cfg`` whose ``methods`` holds exactly the method's own section with every option
        resolved (what ``config.yaml`` records and experiments compare).

    Raises:
        SegweakError: Naming the key at fault.
    """
    from segweak.models.factory import check_architecture

    cfg.validate()
    check_architecture(cfg.model.arch)
    cls = method_class(cfg.method)
    check_method_sections(cfg)
    if cfg.weak.labels != "computed" and not cls.imported_weak_labels:
        raise SegweakError(
            f"weak.labels: method {cfg.method!r} cannot use imported weak labels yet ({cfg.weak.labels!r}); "
            "set weak.labels=computed for it"
        )
    options = method_options(cfg)
    if cls.requires_init and not cfg.init.checkpoint:
        raise SegweakError(
            f"method {cfg.method!r} starts from a checkpoint: set init.checkpoint "
            "(e.g. --set init.checkpoint=runs/proportion-seed0/checkpoints/best.ckpt)"
        )
    if cls.init_from_teacher(options) and not cfg.init.checkpoint:
        raise SegweakError(
            f"methods.{cfg.method}: its options start the run from its teacher's weights, but "
            "init.checkpoint is not set: give the teacher checkpoint (e.g. --set "
            "init.checkpoint=runs/supervised-seed0/checkpoints/best.ckpt; segweak run sets it itself)"
        )
    return dataclasses.replace(cfg, methods={cfg.method: to_dict(options)})
