"""``pseudo_label``: self-training on proportion-guided pseudo-labels of the weak patches.

In the spirit of learning from label proportions with pseudo-labels (Matsuo et al., "Learning from
label proportion with online pseudo-label decision by regret minimization", ICASSP 2023): a teacher
scores every pixel of each weak patch, and the pixels are given classes so that the class counts are
the patch's quotas n_c = round(p_c · N) (greedy top-k on the teacher's probabilities, or an
entropic optimal-transport plan made exact; :mod:`segweak.weak.pseudo`). A class with p_c = 0 is never
assigned; with ``keep < 1`` only the most confident share of each patch is labelled (the rest 255).
A student then trains on the strong patches and the pseudo-labelled weak patches:

    L = L_pixel(strong, mask) + λ · L_pixel(weak, pseudo-label)

with L_pixel the task's pixel loss (cross-entropy ignoring 255, plus Dice with ``loss.dice_weight``)
and λ = ``weight``. Both sub-batches go through the network in one forward pass.

The pseudo-labels are an on-disk artefact (:mod:`segweak.train.pseudo_labels`): ``segweak
pseudo-label`` writes it from a teacher checkpoint, and this method reads it through its need's
``masks_from`` (``methods.pseudo_label.labels``), so teacher -> pseudo-labels -> student can be rerun
stage by stage. In ``segweak run`` the method is a row of ``rounds`` runs: round 1's teacher is the
final checkpoint of the row ``teacher`` names (``proportion``: the ``finetune-proportion`` run of the
same split and seed; ``baseline``), round r + 1's teacher is round r's student, and each round's
artefact is written under ``EXP/pseudo/`` before the round trains. Each student starts from
``model.weights`` (ImageNet, ``student_init: imagenet``) or from its teacher's weights
(``student_init: teacher``: the round's ``init.checkpoint`` is its teacher checkpoint, the same
mechanism as a ``finetune`` row's; optimiser, schedule and step counter start fresh).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from segweak.config import TrainConfig
from segweak.errors import SegweakError
from segweak.methods.base import Need, Task, TrainingMethod, method_options, register
from segweak.methods.proportion import check_non_negative
from segweak.train.pseudo_labels import ASSIGNMENTS, inference_device, is_complete, make_pseudo_labels

STUDENT_INITS = ("imagenet", "teacher")
"""Where a student of ``segweak run`` starts (``methods.pseudo_label.student_init``)."""


@dataclass
class PseudoLabelOptions:
    """Options of ``pseudo_label``.

    Attributes:
        labels: Pseudo-label artefact directory (``segweak pseudo-label --out``) of the store and
            split trained on. ``segweak run`` sets it for every round; leave it unset there.
        weight: λ, the weight of the pseudo-label term.
        teacher: ``segweak run``: the row whose final checkpoint teaches round 1: ``baseline``, or a
            method compared before this one (a pre-training method's ``finetune`` row, e.g.
            ``proportion``; another method's last round).
        rounds: ``segweak run``: students trained in turn; round r + 1's teacher is round r's student.
        assignment: ``segweak run``: how pixels get classes under the quotas: ``topk`` (greedy on the
            teacher's probabilities) or ``sinkhorn`` (optimal transport, then exact counts).
        keep: ``segweak run``: fraction in (0, 1] of each weak patch's pixels labelled (the teacher's
            most confident per class); the others are ignored (255).
        student_init: ``segweak run``: where each round's student starts: ``imagenet`` (the network
            as ``model.weights`` builds it) or ``teacher`` (the round's teacher checkpoint, as
            ``init.checkpoint``: weights only). ``segweak train`` starts from ``init.checkpoint``
            when it is set, whatever this says; with ``teacher`` it must be set.
    """

    labels: str | None = None
    weight: float = 1.0
    teacher: str = "proportion"
    rounds: int = 1
    assignment: str = "topk"
    keep: float = 1.0
    student_init: str = "imagenet"

    def validate(self, prefix: str) -> None:
        """Check every choice and range (the teacher row is checked against the experiment)."""
        check_non_negative(prefix, weight=self.weight)
        if self.rounds < 1:
            raise SegweakError(f"{prefix}rounds must be >= 1, got {self.rounds}")
        if self.assignment not in ASSIGNMENTS:
            valid = ", ".join(ASSIGNMENTS)
            raise SegweakError(f"{prefix}assignment: {self.assignment!r} is not valid; choose one of {valid}")
        if self.student_init not in STUDENT_INITS:
            valid = ", ".join(STUDENT_INITS)
            raise SegweakError(
                f"{prefix}student_init: {self.student_init!r} is not valid; choose one of {valid}"
            )
        if not 0.0 < self.keep <= 1.0:
            raise SegweakError(f"{prefix}keep must be in (0, 1], got {self.keep}")
        if not self.teacher:
            raise SegweakError(f"{prefix}teacher is empty: name a row, e.g. proportion or baseline")
        if self.labels == "":
            raise SegweakError(f"{prefix}labels is empty: give a pseudo-label directory, or leave it unset")


@register("pseudo_label")
class PseudoLabel(TrainingMethod):
    """Pixel loss on strong patches + λ × pixel loss on pseudo-labelled weak patches.

    Terms: ``pixel`` and ``pseudo`` (already multiplied by λ). Sub-batches: ``strong`` (pixel masks)
    and ``weak`` (the weak patches with the artefact's pseudo-labels as masks).
    """

    Options = PseudoLabelOptions
    pretrain = False
    # Its pseudo-labels are made per patch from the computed proportions (segweak pseudo-label).
    imported_weak_labels = False
    artefact_option = "labels"
    planning_options = ("rounds",)

    def needs(self) -> dict[str, Need]:  # noqa: D102
        if self.options.labels is None:
            raise SegweakError(
                "methods.pseudo_label.labels is not set: give the directory written by `segweak "
                "pseudo-label CKPT --store S --split NAME --out DIR` (segweak run sets it itself)"
            )
        return {
            "strong": Need(subset="strong", labels="mask"),
            "weak": Need(subset="weak", labels="mask", masks_from=self.options.labels),
        }

    def training_step(self, task: Task, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:  # noqa: D102
        strong, weak = batches["strong"], batches["weak"]
        n_strong = strong["image"].shape[0]
        logits = task(torch.cat([strong["image"], weak["image"]]))
        return {
            "pixel": task.pixel_loss(logits[:n_strong], strong["mask"]),
            "pseudo": self.options.weight * task.pixel_loss(logits[n_strong:], weak["mask"]),
        }

    @classmethod
    def depends_on(cls, options: PseudoLabelOptions) -> str | None:  # noqa: D102
        return options.teacher

    @classmethod
    def rounds(cls, options: PseudoLabelOptions) -> int:  # noqa: D102
        return options.rounds

    @classmethod
    def init_from_teacher(cls, options: PseudoLabelOptions) -> bool:  # noqa: D102
        return options.student_init == "teacher"

    @classmethod
    def prepare(cls, cfg: TrainConfig, teacher: Path, out: Path, log: Callable[[str], None]) -> bool:
        """Write the round's pseudo-labels from ``teacher`` (no-op when ``out`` is complete for it)."""
        options = method_options(cfg, cls.name)
        existed = is_complete(out)
        make_pseudo_labels(
            teacher,
            cfg.data.store,
            cfg.data.split,
            out,
            assignment=options.assignment,
            keep=options.keep,
            batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
            device=inference_device(cfg.trainer.accelerator),
            noise=cfg.weak.noise,
            log=log,
        )
        return not existed
