"""Two-view consistency methods: ``mean_teacher`` and the ``semi_supervised`` control.

Both read a ``strong`` sub-batch (pixel masks) and a ``weak`` sub-batch of two views of each weak
patch: the loaded image ``x`` (the dataset's flips and 90° rotations: the *weak* augmentation) and a
strong photometric view ``A(x)`` made on the device (:func:`~segweak.weak.augment.strong_photometric`:
channel jitter, noise, cutout; no geometric change, so pixel ``i`` of both views is the same ground
location and a per-pixel target taken from one view holds for the other).

``mean_teacher`` (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017)::

    L = L_pixel(strong) + w_p · loss(p̂(z_s), p) + λ(t) · MSE(softmax z_s, softmax z_t)
    z_s = f_θ(A(x)),  z_t = f_θ'(x),  θ' ← d_t θ' + (1 − d_t) θ after every optimiser step

The student f_θ sees the strong view; the teacher f_θ', an exponential moving average of the student
(no gradient, always in eval mode), sees the weak view. ``loss`` is a proportion loss of the weak
label p on the student's predicted proportions p̂ (``docs/methods.md``), weighted by
``proportion_weight``. With ``ema_warmup`` the decay is d_t = min(d, 1 − 1/(t + 1)) after t steps
(the reference implementation: early on the teacher is the plain average of the students so far).

``semi_supervised`` (FixMatch: Sohn et al., NeurIPS 2020) is the control that uses the weak patches as
*unlabelled* images (``labels: none``: their proportions are never loaded)::

    L = L_pixel(strong) + λ(t) · CE(z(A(x)), ŷ),   ŷ_i = argmax_k q_{k,i}(x) where max_k q_{k,i}(x) ≥ τ

Pixels below the confidence threshold τ get no target. Comparing the two with ``joint`` shows what
the proportions add beyond having the weak images.

λ(t) = ``consistency_weight`` · r(t / ``ramp_steps``), r the sigmoid-shaped exp(−5 (1 − x)²) or the
linear ramp of :mod:`segweak.weak.teacher` (Laine & Aila, ICLR 2017); it is logged as
``train/consistency_weight``. The strong view's random draws come from a generator seeded with
(``trainer.seed``, optimiser step, process rank), so a resumed run draws the same augmentations.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from segweak.errors import SegweakError
from segweak.methods.base import Need, Task, TrainingMethod, register
from segweak.methods.proportion import WeakLabelMethod, check_non_negative, check_proportion_loss
from segweak.weak.augment import strong_photometric
from segweak.weak.consistency import REDUCTIONS, consistency_ce, fixmatch_targets, softmax_mse
from segweak.weak.teacher import BUFFER_MODES, ema_update, linear_rampup, sigmoid_rampup

RAMPS = {"sigmoid": sigmoid_rampup, "linear": linear_rampup}


@dataclass
class TwoViewOptions:
    """Options shared by the two-view methods: weak batch size, loss weight ramp, strong augmentation.

    Attributes:
        weak_ratio: Size of the weak sub-batch as a multiple of the strong one (FixMatch's μ):
            round(``weak_ratio`` × strong batch size), at least 1; ``data.batch_sizes.weak`` overrides.
        consistency_weight: λ once the ramp is over.
        ramp: Shape of λ's ramp: ``sigmoid`` (exp(−5 (1 − x)²)) or ``linear``.
        ramp_steps: Optimiser steps over which λ rises to ``consistency_weight``; 0 = no ramp.
        brightness: Strong view: half-range of the per-channel additive shift (dataset-std units).
        contrast: Strong view: half-range of the per-channel gain around 1, in [0, 1].
        noise_std: Strong view: standard deviation of the per-pixel gaussian noise.
        cutout_boxes: Strong view: cutout squares per patch (0 = none).
        cutout_size: Strong view: side of a cutout square as a fraction of the patch side, in (0, 1].
    """

    weak_ratio: float = 1.0
    consistency_weight: float = 1.0
    ramp: str = "sigmoid"
    ramp_steps: int = 0
    brightness: float = 0.4
    contrast: float = 0.4
    noise_std: float = 0.1
    cutout_boxes: int = 1
    cutout_size: float = 0.25

    def validate(self, prefix: str) -> None:
        """Check every range and choice, naming ``<prefix><key>``."""
        if self.weak_ratio <= 0:
            raise SegweakError(f"{prefix}weak_ratio must be > 0, got {self.weak_ratio}")
        check_non_negative(
            prefix,
            consistency_weight=self.consistency_weight,
            ramp_steps=self.ramp_steps,
            brightness=self.brightness,
            noise_std=self.noise_std,
            cutout_boxes=self.cutout_boxes,
        )
        if self.ramp not in RAMPS:
            raise SegweakError(f"{prefix}ramp: {self.ramp!r} is not valid; choose one of {', '.join(RAMPS)}")
        if not 0.0 <= self.contrast <= 1.0:
            raise SegweakError(f"{prefix}contrast must be in [0, 1], got {self.contrast}")
        if not 0.0 < self.cutout_size <= 1.0:
            raise SegweakError(f"{prefix}cutout_size must be in (0, 1], got {self.cutout_size}")


@dataclass
class MeanTeacherOptions(TwoViewOptions):
    """Options of ``mean_teacher`` (and those of :class:`TwoViewOptions`).

    Attributes:
        ema_decay: EMA decay d of the teacher, in [0, 1].
        ema_warmup: Use d_t = min(d, 1 − 1/(t + 1)) after t optimiser steps (the reference
            implementation); false: d from the first step.
        ema_buffers: BatchNorm statistics of the teacher: ``ema`` (averaged like the weights) or
            ``copy`` (the student's current ones).
        proportion_weight: Weight w_p of the proportion loss on the student's strong-view prediction.
        loss: Proportion loss: ``ce``, ``kl``, ``l1`` or ``mse``.
        eps: Clamp for p̂ before taking logs.
    """

    ema_decay: float = 0.99
    ema_warmup: bool = True
    ema_buffers: str = "ema"
    proportion_weight: float = 1.0
    loss: str = "ce"
    eps: float = 1e-6

    def validate(self, prefix: str) -> None:
        """Check the shared options, the EMA settings and the proportion loss."""
        super().validate(prefix)
        if not 0.0 <= self.ema_decay <= 1.0:
            raise SegweakError(f"{prefix}ema_decay must be in [0, 1], got {self.ema_decay}")
        if self.ema_buffers not in BUFFER_MODES:
            choices = ", ".join(BUFFER_MODES)
            raise SegweakError(
                f"{prefix}ema_buffers: {self.ema_buffers!r} is not valid; choose one of {choices}"
            )
        check_non_negative(prefix, proportion_weight=self.proportion_weight)
        check_proportion_loss(prefix, self.loss, self.eps)


@dataclass
class SemiSupervisedOptions(TwoViewOptions):
    """Options of ``semi_supervised`` (and those of :class:`TwoViewOptions`).

    Attributes:
        threshold: Confidence threshold τ of a pseudo-label, in [0, 1] (FixMatch: 0.95).
        reduction: Normalisation of the pseudo-label loss: ``all`` (sum over confident pixels / all
            pixels, FixMatch's) or ``kept`` (mean over the confident pixels).
    """

    threshold: float = 0.95
    reduction: str = "all"

    def validate(self, prefix: str) -> None:
        """Check the shared options, the threshold and the reduction."""
        super().validate(prefix)
        if not 0.0 <= self.threshold <= 1.0:
            raise SegweakError(f"{prefix}threshold must be in [0, 1], got {self.threshold}")
        if self.reduction not in REDUCTIONS:
            raise SegweakError(
                f"{prefix}reduction: {self.reduction!r} is not valid; choose one of {', '.join(REDUCTIONS)}"
            )


def view_seed(seed: int, step: int, rank: int, view: int) -> int:
    """32-bit seed of the strong view ``view`` at optimiser step ``step`` on process ``rank``.

    Derived from the run's seed and the step, not from a generator carried along, so a run resumed at
    any step draws exactly what the uninterrupted run drew; processes draw independently.
    """
    return int(np.random.SeedSequence([int(seed), int(step), int(rank), int(view)]).generate_state(1)[0])


class TwoViewMethod(TrainingMethod):
    """Shared parts: the strong + two-view weak needs, the strong views and the ramped weight.

    Subclasses set :attr:`weak_labels` (``weak`` or ``none``) and implement ``training_step``.
    """

    weak_labels: ClassVar[str] = "weak"

    def needs(self) -> dict[str, Need]:  # noqa: D102
        data = self.cfg.data
        strong = data.batch_sizes.get("strong", data.batch_size)
        weak = max(1, round(self.options.weak_ratio * strong))
        return {
            "strong": Need(subset="strong", labels="mask"),
            "weak": Need(subset="weak", labels=self.weak_labels, views=2, batch_size=weak),
        }

    def make_views(self, task: Task, name: str, batch: dict[str, Any], n: int) -> list[Tensor]:
        """Strong photometric views of ``batch["image"]`` (B, C, H, W), seeded by :func:`view_seed`."""
        o = self.options
        image = batch["image"]
        return [
            strong_photometric(
                image,
                view_seed(task.cfg.trainer.seed, int(task.global_step), int(task.global_rank), v),
                brightness=o.brightness,
                contrast=o.contrast,
                noise_std=o.noise_std,
                cutout_boxes=o.cutout_boxes,
                cutout_size=o.cutout_size,
            )
            for v in range(1, n)
        ]

    def consistency_weight(self, step: int) -> float:
        """λ after ``step`` optimiser steps."""
        o = self.options
        return o.consistency_weight * RAMPS[o.ramp](step, o.ramp_steps)

    def forward_student(self, task: Task, strong: Mapping[str, Any], *views: Tensor) -> list[Tensor]:
        """Student logits of the strong patches and of each view, from one forward pass.

        One concatenated batch, so BatchNorm statistics cover every image of the step (as FixMatch
        does). Returns ``[strong logits, view logits, ...]``, each (B_part, K, H, W).
        """
        images = [strong["image"], *views]
        logits = task(torch.cat(images))
        return list(torch.split(logits, [int(x.shape[0]) for x in images]))


@register("mean_teacher")
class MeanTeacher(TwoViewMethod, WeakLabelMethod):
    """Mean teacher with proportions: pixel loss, proportion loss and teacher consistency.

    Terms: ``pixel``, ``proportion`` (× ``proportion_weight``), ``consistency`` (× λ(t)). State: the
    EMA teacher ``teacher`` (a copy of the network, ``requires_grad=False``, always in eval mode) and
    ``teacher_initialised``; both are in checkpoints under ``method.`` and restored on resume.
    ``evaluate``, ``predict`` and validation use the student (the checkpoint's ``model.`` weights).
    """

    Options = MeanTeacherOptions
    pretrain = False
    weak_labels: ClassVar[str] = "weak"

    def setup(self, task: Task) -> None:
        """Create the teacher as a frozen copy of the network (its weights are set in on_fit_start)."""
        self.teacher = copy.deepcopy(task.model).requires_grad_(False).eval()
        # Lightning warns about modules in eval mode when training starts; the teacher's are meant
        # to be. Silence exactly that count, so any other module left in eval mode is still reported.
        n_teacher = sum(1 for _ in self.teacher.modules())
        warnings.filterwarnings(
            "ignore", message=re.escape(f"Found {n_teacher} module(s) in eval mode at the start of training")
        )
        # Whether the teacher was set from the student: a resumed checkpoint restores it as true,
        # so on_fit_start leaves the restored teacher alone.
        self.register_buffer("teacher_initialised", torch.zeros((), dtype=torch.bool))

    def train(self, mode: bool = True) -> MeanTeacher:
        """Set the training mode, but keep the teacher in eval mode (its BatchNorm is never batch-fed)."""
        super().train(mode)
        if hasattr(self, "teacher"):
            self.teacher.eval()
        return self

    def on_fit_start(self, task: Task) -> None:
        """Copy the student into the teacher, unless the teacher came from a resumed checkpoint.

        Runs after ``init.checkpoint`` was loaded (and the head reset), so the teacher starts equal to
        the network training starts from.
        """
        if not bool(self.teacher_initialised):
            with torch.no_grad():
                self.teacher.load_state_dict(task.model.state_dict())
            self.teacher_initialised.fill_(True)

    def ema_decay(self, step: int) -> float:
        """Decay d_t used for the update after ``step`` (≥ 1) optimiser steps."""
        o = self.options
        if not o.ema_warmup:
            return o.ema_decay
        return min(o.ema_decay, 1.0 - 1.0 / (step + 1))

    def on_train_batch_end(self, task: Task) -> None:
        """θ' ← d_t θ' + (1 − d_t) θ (:func:`~segweak.weak.teacher.ema_update`)."""
        ema_update(self.teacher, task.model, self.ema_decay(int(task.global_step)), self.options.ema_buffers)

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Return the unweighted proportion term (also logged as ``val/weak_loss``)."""
        o = self.options
        return {"proportion": self.proportion_term(logits, batch, self.area(batch), o.loss, o.eps)}

    def training_step(self, task: Task, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:  # noqa: D102
        strong, weak = batches["strong"], batches["weak"]
        weak_view, strong_view = weak["views"]
        z_strong, z_student = self.forward_student(task, strong, strong_view)
        with torch.no_grad():
            z_teacher = self.teacher(weak_view)
        lam = self.consistency_weight(int(task.global_step))
        task.log("train/consistency_weight", lam, on_step=True, on_epoch=False, batch_size=len(z_student))
        (proportion,) = self.weak_terms(z_student, weak).values()
        return {
            "pixel": task.pixel_loss(z_strong, strong["mask"]),
            "proportion": self.options.proportion_weight * proportion,
            "consistency": lam * softmax_mse(z_student, z_teacher),
        }


@register("semi_supervised")
class SemiSupervised(TwoViewMethod):
    """FixMatch control: pixel loss + confidence-thresholded pseudo-labels on unlabelled weak patches.

    Terms: ``pixel``, ``consistency`` (× λ(t)). The fraction of pixels with a pseudo-label is logged
    as ``train/confident_fraction``.
    """

    Options = SemiSupervisedOptions
    pretrain = False
    control = True
    weak_labels: ClassVar[str] = "none"

    def training_step(self, task: Task, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:  # noqa: D102
        strong, weak = batches["strong"], batches["weak"]
        z_strong, z_weak, z_aug = self.forward_student(task, strong, *weak["views"])
        # fixmatch_targets runs without gradient: the weak view's prediction is a fixed target.
        targets, fraction = fixmatch_targets(z_weak, self.options.threshold)
        lam = self.consistency_weight(int(task.global_step))
        n = len(z_aug)
        task.log("train/consistency_weight", lam, on_step=True, on_epoch=False, batch_size=n)
        task.log("train/confident_fraction", fraction, on_step=True, on_epoch=True, batch_size=n)
        return {
            "pixel": task.pixel_loss(z_strong, strong["mask"]),
            "consistency": lam * consistency_ce(z_aug, targets, self.options.reduction),
        }
