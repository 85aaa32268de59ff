"""``supervised``: the pixel loss on pixel-labelled patches (baseline, fine-tuning, full supervision)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from segweak.errors import SegweakError
from segweak.methods.base import Need, Task, TrainingMethod, register


@dataclass
class SupervisedOptions:
    """Options of ``supervised``.

    Attributes:
        subset: Pixel-labelled patches to train on: ``strong`` (the strong subset: the baseline, and
            fine-tuning with ``init.checkpoint``) or ``full`` (strong ∪ weak with their pixel labels:
            the full-supervision upper bound).
    """

    subset: str = "strong"

    def validate(self, prefix: str) -> None:
        """Check the subset choice."""
        if self.subset not in ("strong", "full"):
            raise SegweakError(f"{prefix}subset: {self.subset!r} is not valid; choose one of strong, full")


@register("supervised")
class Supervised(TrainingMethod):
    """Cross-entropy (+ ``loss.dice_weight`` × Dice) on the pixel masks of ``subset``.

    Term: ``pixel``.
    """

    Options = SupervisedOptions

    def needs(self) -> dict[str, Need]:  # noqa: D102
        return {self.options.subset: Need(subset=self.options.subset, labels="mask")}

    def training_step(self, task: Task, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:  # noqa: D102
        batch = batches[self.options.subset]
        return {"pixel": task.pixel_loss(task(batch["image"]), batch["mask"])}
