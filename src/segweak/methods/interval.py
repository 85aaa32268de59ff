"""``interval``: weak-label pre-training with the size-interval constraint (Kervadec et al., 2019).

Instead of matching the weak label exactly, each class's predicted share p̂_c of a patch only has to
lie in the interval [(1 − τ) p_c, (1 + τ) p_c] around its proportion: a squared hinge outside it, no
loss inside (:func:`segweak.weak.constraints.interval_loss_mean`). It tolerates noisy proportions and
does not push a prediction that is already close enough.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from segweak.methods.base import register
from segweak.methods.proportion import WeakLabelMethod, check_non_negative


@dataclass
class IntervalOptions:
    """Options of ``interval``.

    Attributes:
        tau: Relative half-width τ of the interval around each class proportion (0 = squared error).
    """

    tau: float = 0.1

    def validate(self, prefix: str) -> None:
        """Check τ >= 0."""
        check_non_negative(prefix, tau=self.tau)


@register("interval")
class Interval(WeakLabelMethod):
    """Pre-training on the weak subset with the interval loss. Term: ``interval``."""

    Options = IntervalOptions

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:  # noqa: D102
        return {"interval": self.interval_term(logits, batch, self.area(batch), self.options.tau)}
