"""Training budgets: refused up front when they cannot work, and the weights they end with validated.

segweak keeps the checkpoint with the best validation mIoU and reports its metrics, so every run must
validate the weights it finishes with, however its budget is expressed:

* ``trainer.max_epochs``: the last epoch is validated even when ``trainer.check_val_every_n_epoch``
  would skip it (e.g. 3 epochs validated every 2);
* ``trainer.max_steps``: when the step budget runs out inside an epoch, that step is validated
  (Lightning alone stops there without validating, so no best checkpoint would exist);
* ``trainer.limit_train_batches``: every epoch is shorter and ends, as usual, with validation.

:func:`check_budget` refuses budgets that train or validate nothing before any work starts, and
:class:`ValidateFinalStep` is the callback that makes Lightning validate the final step.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from segweak.config import TrainerConfig
from segweak.errors import SegweakError


def _check_limit(key: str, value: float | int, what: str) -> None:
    # Lightning reads a float as a fraction of the batches and an int as a number of batches.
    if isinstance(value, bool) or value <= 0:
        raise SegweakError(
            f"trainer.{key}={value} {what}; give a fraction in (0, 1] or a number of batches >= 1"
        )
    if isinstance(value, float) and value > 1.0:
        raise SegweakError(
            f"trainer.{key}={value} is a fraction above 1; "
            "give a fraction in (0, 1] or an int number of batches"
        )


def check_budget(tc: TrainerConfig) -> None:
    """Refuse a training budget that trains or validates nothing.

    Args:
        tc: The run's ``trainer`` section.

    Raises:
        SegweakError: Naming the key at fault.
    """
    if tc.max_steps == 0 or tc.max_steps < -1:
        raise SegweakError(
            f"trainer.max_steps={tc.max_steps}: give -1 (epochs decide) or a number of steps >= 1"
        )
    if tc.max_epochs == 0 or tc.max_epochs < -1 or (tc.max_epochs == -1 and tc.max_steps == -1):
        raise SegweakError(
            f"trainer.max_epochs={tc.max_epochs}: give a number of epochs >= 1 "
            "(or -1 together with trainer.max_steps >= 1)"
        )
    if tc.check_val_every_n_epoch < 1:
        raise SegweakError(
            f"trainer.check_val_every_n_epoch={tc.check_val_every_n_epoch}: give an interval >= 1 "
            "(validation picks the best checkpoint)"
        )
    _check_limit("limit_train_batches", tc.limit_train_batches, "trains nothing")
    _check_limit(
        "limit_val_batches",
        tc.limit_val_batches,
        "disables validation, but the best checkpoint is chosen on it",
    )


def ends_in_this_epoch(trainer: L.Trainer) -> bool:
    """Whether the training budget runs out during the trainer's current epoch.

    Args:
        trainer: A trainer inside ``fit``, at or after the start of the epoch.
    """
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    # segweak never accumulates gradients, so every training batch is one optimiser step.
    steps_left = trainer.max_steps - trainer.global_step
    return trainer.max_steps > 0 and steps_left <= trainer.num_training_batches


class ValidateFinalStep(L.Callback):
    """Make Lightning validate the weights that training ends with.

    Lightning validates at the end of epochs that ``check_val_every_n_epoch`` selects, and inside such
    an epoch at any step where ``trainer.should_stop`` is set. This callback turns the budget's last
    epoch into a validation epoch and, when ``max_steps`` runs out before the epoch's last batch, asks
    for the stop at that step, so validation (and the checkpoint callbacks after it) runs on the final
    weights. Every rank takes the same decisions: they depend only on step and epoch counters.
    """

    def __init__(self) -> None:
        self._interval: int | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        interval = trainer.check_val_every_n_epoch
        if interval in (None, 1) or (trainer.current_epoch + 1) % interval == 0:
            return
        if ends_in_this_epoch(trainer):
            # Lightning reads this attribute at every batch end (to decide on validation) and in
            # ModelCheckpoint (to decide when to save); it is restored when training ends.
            self._interval = interval
            trainer.check_val_every_n_epoch = 1

    def on_train_batch_end(  # noqa: D102
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if self._interval is not None:
            trainer.check_val_every_n_epoch = self._interval
            self._interval = None
