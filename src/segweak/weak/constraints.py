"""Constraint losses on what a patch contains: class-size intervals and class presence.

Both losses take pixel predictions (B, K, H, W) and a patch-level weak label, work in float32 even
under mixed precision, and are computed over an optional area mask (B, H, W) (the pixels the weak
label was computed over). A patch whose area is empty carries no information: its per-patch value is
0 and the ``*_mean`` helpers leave it out. Formulas and references are in ``docs/methods.md``.

* :func:`interval_loss`: squared hinge outside the interval [(1 − τ) p_c, (1 + τ) p_c] on the
  predicted share of each class (Kervadec et al., MedIA 2019; the interval idea of MixBag, Asanomi
  et al., ICCV 2023).
* :func:`presence_loss`: −mean over pixels of log Σ_{c present} q_c (every pixel must belong to one
  of the present classes; the candidate-set likelihood of Jin & Ghahramani, NeurIPS 2002).
"""

from __future__ import annotations

import torch
from torch import Tensor

from segweak.errors import SegweakError
from segweak.weak.area import area_weights, masked_patch_mean


def area_shares(probs: Tensor, area_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean class probability over the area of each patch.

    p̂_c = Σ_i v_i q_{c,i} / N,  N = Σ_i v_i  (p̂ = 0 for a patch with an empty area).

    Args:
        probs: (B, K, H, W) per-pixel class probabilities.
        area_mask: (B, H, W) non-zero = counted, or None for the whole patch.

    Returns:
        ``(shares, keep)``: (B, K) float32 predicted shares and (B,) float 0/1, 1 where the area is
        not empty.
    """
    b, _, h, w = probs.shape
    v = area_weights(area_mask, b, h, w, probs.device)
    n = v.sum(dim=(1, 2))
    shares = (probs.float() * v[:, None]).sum(dim=(2, 3)) / n.clamp_min(1.0)[:, None]
    return shares, (n > 0).float()


def interval_penalty(p_hat: Tensor, p: Tensor, tau: float | Tensor) -> Tensor:
    """Squared-hinge penalty of predicted shares outside the relative interval around the weak label.

    Per class, with a_c = max(0, (1 − τ) p_c) and b_c = (1 + τ) p_c:

        pen_c = max(0, a_c − p̂_c)² + max(0, p̂_c − b_c)²

    summed over classes. It is 0 (with zero gradient) while a_c ≤ p̂_c ≤ b_c; a class with p_c = 0
    has a_c = b_c = 0, so any predicted share p̂_c > 0 is penalised by p̂_c². τ = 0 gives the squared
    error Σ_c (p̂_c − p_c)². Kervadec et al. (MedIA 2019) penalise sizes in pixels; shares are sizes
    divided by N, which keeps the loss in the range of the proportion losses (≤ 2).

    Args:
        p_hat: (B, K) predicted shares.
        p: (B, K) weak-label proportions.
        tau: Relative half-width τ ≥ 0 of the interval, a float or a tensor broadcastable to (B, K).

    Returns:
        (B,) float32 per-patch penalties.

    Raises:
        SegweakError: When ``tau`` is a negative number.
        ValueError: When ``p_hat`` and ``p`` are not both (B, K).
    """
    if p_hat.ndim != 2 or p_hat.shape != p.shape:
        raise ValueError(
            f"interval penalty: p_hat and p must both be (B, K); got {tuple(p_hat.shape)}, {tuple(p.shape)}"
        )
    if not isinstance(tau, Tensor) and not float(tau) >= 0.0:
        raise SegweakError(
            f"interval loss: tau must be >= 0 (relative half-width of the interval), got {tau}"
        )
    p_hat = p_hat.float()
    p = p.to(device=p_hat.device, dtype=torch.float32)
    lower = ((1.0 - tau) * p).clamp_min(0.0)
    upper = (1.0 + tau) * p
    below = (lower - p_hat).clamp_min(0.0)
    above = (p_hat - upper).clamp_min(0.0)
    return (below.square() + above.square()).sum(dim=1)


def interval_loss(
    scores: Tensor,
    p: Tensor,
    tau: float | Tensor,
    area_mask: Tensor | None = None,
    *,
    probs: bool = False,
) -> Tensor:
    """Size-interval loss of each patch (see :func:`interval_penalty`).

    p̂_c is the mean softmax of class c over the patch, or over ``area_mask`` when given.

    Args:
        scores: (B, K, H, W) logits (default) or probabilities (``probs=True``).
        p: (B, K) weak-label proportions.
        tau: Relative half-width τ ≥ 0 of the interval.
        area_mask: (B, H, W) non-zero = counted, or None for the whole patch.
        probs: True when ``scores`` are already probabilities.

    Returns:
        (B,) float32 per-patch losses; 0 for a patch with an empty area.
    """
    q = scores.float() if probs else torch.softmax(scores.float(), dim=1)
    p_hat, keep = area_shares(q, area_mask)
    return interval_penalty(p_hat, p, tau) * keep


def interval_loss_mean(
    scores: Tensor,
    p: Tensor,
    tau: float | Tensor,
    area_mask: Tensor | None = None,
    *,
    probs: bool = False,
) -> Tensor:
    """:func:`interval_loss` averaged over the patches with a non-empty area (scalar; 0 if none)."""
    q = scores.float() if probs else torch.softmax(scores.float(), dim=1)
    p_hat, keep = area_shares(q, area_mask)
    return masked_patch_mean(interval_penalty(p_hat, p, tau), keep)


def _presence_rows(logits: Tensor, presence: Tensor, area_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    b, k, h, w = logits.shape
    if tuple(presence.shape) != (b, k):
        raise ValueError(f"presence must be (B, K) = {(b, k)}, got {tuple(presence.shape)}")
    z = logits.float()
    present = presence.to(z.device) > 0.5
    v = area_weights(area_mask, b, h, w, z.device)
    n = v.sum(dim=(1, 2))
    keep = (n > 0) & present.any(dim=1)
    # A patch without any present class has no candidate set; treating every class as present there
    # makes its term exactly 0 with a zero gradient (it is masked out anyway) instead of +inf / NaN.
    present = present | ~keep[:, None]
    log_all = torch.logsumexp(z, dim=1)  # (B, H, W)
    log_present = torch.logsumexp(z.masked_fill(~present[:, :, None, None], float("-inf")), dim=1)
    nll = log_all - log_present  # −log Σ_{c present} q_c  ≥ 0
    rows = (nll * v).sum(dim=(1, 2)) / n.clamp_min(1.0)
    keep = keep.float()
    return rows * keep, keep


def presence_loss(logits: Tensor, presence: Tensor, area_mask: Tensor | None = None) -> Tensor:
    """Candidate-set loss of class presence: each pixel must belong to one of the present classes.

    With present set P = {c : y_c = 1} and q = softmax(z) per pixel,

        L = −(1/N) Σ_i v_i log Σ_{c ∈ P} q_{c,i}
          = (1/N) Σ_i v_i [logsumexp_c z_{c,i} − logsumexp_{c ∈ P} z_{c,i}].

    It only pushes probability mass off absent classes: how the mass is split among present classes
    does not change it (0 whenever absent classes get no mass). This is the likelihood of a label
    known only up to a candidate set (Jin & Ghahramani, "Learning with multiple labels", NeurIPS
    2002), with the patch's present classes as every pixel's candidate set.

    Args:
        logits: (B, K, H, W) pixel logits.
        presence: (B, K) 0/1 class presence (> 0.5 = present).
        area_mask: (B, H, W) non-zero = counted, or None for the whole patch.

    Returns:
        (B,) float32 per-patch losses; 0 for a patch with an empty area or no present class.
    """
    return _presence_rows(logits, presence, area_mask)[0]


def presence_loss_mean(logits: Tensor, presence: Tensor, area_mask: Tensor | None = None) -> Tensor:
    """:func:`presence_loss` averaged over patches with a non-empty area and a present class (scalar)."""
    return masked_patch_mean(*_presence_rows(logits, presence, area_mask))
