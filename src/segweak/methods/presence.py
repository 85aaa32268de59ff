"""``presence``: pre-training from class presence only (a control of the proportion methods).

The weak label is reduced to which classes occur in a patch, y_c = [p_c > threshold] (the split's
presence threshold). Every pixel must belong to one of the present classes: with q = softmax(z) per
pixel and the averaging area v (the whole patch with ``weak.area: patch``),

    L = −(1/N) Σ_i v_i log Σ_{c : y_c = 1} q_{c,i},   N = Σ_i v_i

(:func:`segweak.weak.constraints.presence_loss_mean`). It only pushes probability mass off absent
classes: how the mass is split among the present ones does not change it. This is the candidate-set
likelihood of Jin & Ghahramani ("Learning with multiple labels", NeurIPS 2002) with the patch's
present classes as each pixel's candidates, the supervision of the closest published protocol, which
used class presence instead of proportions. Compared with ``proportion`` it shows what the *amounts*
in a weak label add to knowing which classes occur.

With imported weak labels (``weak.labels: NAME``, bags of patches) every patch of a bag carries the
bag's presence: the classes present somewhere in the bag, a set that still contains every class of
each of its patches, so the loss stays true per patch (only less tight).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from segweak.methods.base import register
from segweak.methods.proportion import WeakLabelMethod
from segweak.weak.constraints import presence_loss_mean


@register("presence")
class Presence(WeakLabelMethod):
    """Pre-training on the weak subset with the presence (candidate-set) loss. Term: ``presence``.

    No options: which classes count as present is the split's ``presence_threshold``.
    """

    control = True

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:  # noqa: D102
        y = self.target(batch, "presence", logits)
        return {"presence": presence_loss_mean(logits, y, self.area(batch))}
