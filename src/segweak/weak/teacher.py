"""Teacher models for self-training: exponential moving average of the student, and weight ramps.

* :func:`ema_update`: the mean teacher (Tarvainen & Valpola, "Mean teachers are better role models",
  NeurIPS 2017): after each student step, θ_t ← d·θ_t + (1 − d)·θ_s.
* :func:`sigmoid_rampup` / :func:`linear_rampup`: weights that grow from 0 to 1 over the first steps
  of training, so that a consistency or pseudo-label loss does not dominate while the teacher is
  still random (Laine & Aila, "Temporal ensembling for semi-supervised learning", ICLR 2017).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segweak.errors import SegweakError

BUFFER_MODES = ("ema", "copy")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, buffers: str = "ema") -> None:
    """Move the teacher's weights towards the student's, in place.

    For every parameter, in the arithmetic of its dtype:

        θ_t ← d·θ_t + (1 − d)·θ_s

    computed as ``θ_t · d`` then ``+ θ_s · (1 − d)`` (two roundings, the same as writing the formula
    with tensors). Floating-point buffers (BatchNorm running mean and variance) follow ``buffers``:

    * ``"ema"`` (default): averaged like the parameters, as timm's ``ModelEma`` does. The teacher's
      weights average the student over the last ~1/(1 − d) steps, and its normalisation statistics
      then average over the same window, so the two stay consistent;
    * ``"copy"``: the student's current statistics.

    Non-floating buffers (``num_batches_tracked``) are always copied. The teacher is expected to be a
    ``copy.deepcopy`` of the student with ``requires_grad_(False)``; this function does not touch
    gradients or modes.

    Args:
        teacher: Module updated in place.
        student: Module with the same parameter and buffer names and shapes.
        decay: d in [0, 1]; 0 copies the student, 1 keeps the teacher's parameters and
            floating-point buffers.
        buffers: ``"ema"`` or ``"copy"`` for floating-point buffers.

    Raises:
        SegweakError: When ``decay`` or ``buffers`` is invalid.
        ValueError: When the two modules do not have the same parameters and buffers.
    """
    d = float(decay)
    if not 0.0 <= d <= 1.0:
        raise SegweakError(f"EMA teacher: decay must be in [0, 1], got {decay}")
    if buffers not in BUFFER_MODES:
        raise SegweakError(f"EMA teacher: buffers must be one of {', '.join(BUFFER_MODES)}, got {buffers!r}")
    pairs = _pairs(dict(teacher.named_parameters()), dict(student.named_parameters()), "parameters")
    for t, s in pairs:
        t.mul_(d).add_(s * (1.0 - d))
    for t, s in _pairs(dict(teacher.named_buffers()), dict(student.named_buffers()), "buffers"):
        if buffers == "ema" and t.is_floating_point():
            t.mul_(d).add_(s * (1.0 - d))
        else:
            t.copy_(s)


def _pairs(
    t: dict[str, torch.Tensor], s: dict[str, torch.Tensor], what: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if t.keys() != s.keys():
        diff = sorted(set(t) ^ set(s))
        raise ValueError(f"EMA teacher: teacher and student {what} differ: {', '.join(diff[:5])}")
    for name in t:
        if t[name].shape != s[name].shape:
            raise ValueError(
                f"EMA teacher: {what[:-1]} {name!r} has shape {tuple(t[name].shape)} "
                f"in the teacher but {tuple(s[name].shape)} in the student"
            )
    return [(t[name], s[name]) for name in t]


def _progress(step: float, length: float) -> float:
    if length < 0:
        raise SegweakError(f"ramp-up length must be >= 0, got {length}")
    if length == 0:
        return 1.0
    return min(max(float(step) / float(length), 0.0), 1.0)


def sigmoid_rampup(step: float, length: float) -> float:
    """Sigmoid-shaped ramp exp(−5 (1 − t)²), t = clip(step / length, 0, 1) (Laine & Aila, ICLR 2017).

    Args:
        step: Current step (or epoch); may be fractional.
        length: Ramp-up length in the same unit; 0 means no ramp (always 1).

    Returns:
        Weight in [exp(−5), 1]: exp(−5) ≈ 0.0067 at step 0, exp(−1.25) ≈ 0.287 half-way, 1 from
        ``length`` on.
    """
    t = _progress(step, length)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def linear_rampup(step: float, length: float) -> float:
    """Linear ramp t = clip(step / length, 0, 1): 0 at step 0, 1 from ``length`` on (0 length: 1)."""
    return _progress(step, length)
