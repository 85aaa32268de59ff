"""``joint``: one run on strong and weak patches together (no separate pre-training).

Every step reads a ``strong`` sub-batch (pixel masks) and a ``weak`` sub-batch (weak labels only) and
optimises

    L = L_pixel(strong) + λ(t) · L_weak(weak)

where L_pixel is the task's pixel loss (cross-entropy, plus Dice with ``loss.dice_weight``), L_weak is
the proportion loss (``weak_loss: proportion``) or the size-interval loss (``weak_loss: interval``),
and λ(t) rises from 0 to ``weight`` over the first ``ramp_steps`` optimiser steps (linear, or the
sigmoid-shaped exp(−5 (1 − t)²) of Laine & Aila, ICLR 2017), so the pixel loss shapes the network
before the weaker signal counts fully. Both sub-batches go through the network in one forward pass
(one concatenated batch: BatchNorm statistics cover both). Batch sizes: ``data.batch_sizes.strong`` and
``data.batch_sizes.weak``; their ratio is the strong/weak ratio of every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from segweak.errors import SegweakError
from segweak.methods.base import Need, Task, register
from segweak.methods.proportion import WeakLabelMethod, check_non_negative, check_proportion_loss
from segweak.weak.teacher import linear_rampup, sigmoid_rampup

WEAK_LOSSES = ("proportion", "interval")
RAMPS = ("linear", "sigmoid")


def ramp(step: int, steps: int, shape: str) -> float:
    """Warm-up factor in [0, 1] after ``step`` optimiser steps of a ``steps``-long ramp.

    Args:
        step: Optimiser steps taken so far.
        steps: Ramp length; ``<= 0`` means no ramp (factor 1).
        shape: ``linear`` (t) or ``sigmoid`` (exp(−5 (1 − t)²)), t = min(1, step / steps).
    """
    if steps <= 0:
        return 1.0
    # The same ramps as the teacher/consistency methods use (weak/teacher.py).
    return linear_rampup(step, steps) if shape == "linear" else sigmoid_rampup(step, steps)


@dataclass
class JointOptions:
    """Options of ``joint``.

    Attributes:
        weak_loss: Weak term: ``proportion`` (``loss``(p̂, p)) or ``interval`` (size interval ``tau``).
        loss: Proportion loss of ``weak_loss: proportion``: ``ce``, ``kl``, ``l1`` or ``mse``.
        eps: Clamp for p̂ before taking logs (``weak_loss: proportion``).
        tau: Relative half-width of the interval (``weak_loss: interval``).
        weight: λ once the ramp is over.
        ramp: Ramp shape: ``linear`` or ``sigmoid``.
        ramp_steps: Optimiser steps over which λ rises from 0 to ``weight``; 0 = no ramp.
    """

    weak_loss: str = "proportion"
    loss: str = "ce"
    eps: float = 1e-6
    tau: float = 0.1
    weight: float = 1.0
    ramp: str = "linear"
    ramp_steps: int = 0

    def validate(self, prefix: str) -> None:
        """Check every choice and range."""
        if self.weak_loss not in WEAK_LOSSES:
            raise SegweakError(
                f"{prefix}weak_loss: {self.weak_loss!r} is not valid; choose one of {', '.join(WEAK_LOSSES)}"
            )
        check_proportion_loss(prefix, self.loss, self.eps)
        check_non_negative(prefix, tau=self.tau, weight=self.weight, ramp_steps=self.ramp_steps)
        if self.ramp not in RAMPS:
            raise SegweakError(f"{prefix}ramp: {self.ramp!r} is not valid; choose one of {', '.join(RAMPS)}")


@register("joint")
class Joint(WeakLabelMethod):
    """Pixel loss on strong patches + ramped weak loss on weak patches, in every step.

    Terms: ``pixel`` and ``proportion`` or ``interval`` (already multiplied by λ(t), which is logged
    as ``train/weak_weight``).
    """

    Options = JointOptions
    pretrain = False

    def needs(self) -> dict[str, Need]:  # noqa: D102
        return {"strong": Need(subset="strong", labels="mask"), "weak": Need(subset="weak", labels="weak")}

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Return the unweighted weak term of a weakly labelled batch."""
        o = self.options
        valid = self.area(batch)
        if o.weak_loss == "interval":
            return {"interval": self.interval_term(logits, batch, valid, o.tau)}
        return {"proportion": self.proportion_term(logits, batch, valid, o.loss, o.eps)}

    def weak_weight(self, step: int) -> float:
        """λ after ``step`` optimiser steps."""
        o = self.options
        return o.weight * ramp(step, o.ramp_steps, o.ramp)

    def training_step(self, task: Task, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:  # noqa: D102
        strong, weak = batches["strong"], batches["weak"]
        n_strong = strong["image"].shape[0]
        logits = task(torch.cat([strong["image"], weak["image"]]))
        pixel = task.pixel_loss(logits[:n_strong], strong["mask"])
        ((name, weak_term),) = self.weak_terms(logits[n_strong:], weak).items()
        lam = self.weak_weight(int(task.global_step))
        task.log("train/weak_weight", lam, on_step=True, on_epoch=False, batch_size=n_strong)
        return {"pixel": pixel, name: lam * weak_term}
