"""Proportion losses: compare predicted class proportions p̂ with weak labels p.

Every loss takes ``p_hat`` (B, K) predicted proportions, ``p`` (B, K) target proportions (rows sum
to 1) and ``eps`` (clamp for p̂ before a log), and returns the **sum over the classes** per patch, (B,)
(the methods average it over the kept patches or bags):

* ``ce``  : −Σ_k p_k · log max(p̂_k, eps)                          (default)
* ``kl``  : Σ_k p_k · (log p_k − log max(p̂_k, eps)), with 0·log 0 = 0  (KL(p‖p̂) = ce − H(p))
* ``l1``  : Σ_k |p_k − p̂_k|
* ``mse`` : Σ_k (p_k − p̂_k)²

``ce`` and ``kl`` have the same gradient in p̂ (they differ by the target entropy H(p), a constant);
``kl`` is 0 at p̂ = p, which makes its value easier to read. Zero proportions are safe: ``torch.xlogy``
gives 0·log 0 = 0 and p̂ is clamped before the log, so values and gradients stay finite.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from segweak.errors import SegweakError

ProportionLoss = Callable[[Tensor, Tensor, float], Tensor]


def _check(p_hat: Tensor, p: Tensor) -> None:
    if p_hat.shape != p.shape or p_hat.ndim != 2:
        raise ValueError(
            f"proportion loss: p_hat and p must both be (B, K); got {tuple(p_hat.shape)}, {tuple(p.shape)}"
        )


def ce_rows(p_hat: Tensor, p: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch cross-entropy −Σ_k p_k log max(p̂_k, eps).

    Args:
        p_hat: (B, K) predicted proportions.
        p: (B, K) target proportions.
        eps: Lower clamp of p̂ inside the log.

    Returns:
        (B,) losses.
    """
    _check(p_hat, p)
    return -torch.xlogy(p, p_hat.clamp_min(eps)).sum(dim=1)


def kl_rows(p_hat: Tensor, p: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch KL(p‖p̂) = Σ_k p_k (log p_k − log max(p̂_k, eps)); p_k = 0 terms are 0 (``xlogy``)."""
    _check(p_hat, p)
    return (torch.xlogy(p, p) - torch.xlogy(p, p_hat.clamp_min(eps))).sum(dim=1)


def l1_rows(p_hat: Tensor, p: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch Σ_k |p_k − p̂_k| (``eps`` unused; kept for a uniform signature)."""
    _check(p_hat, p)
    return (p - p_hat).abs().sum(dim=1)


def mse_rows(p_hat: Tensor, p: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch Σ_k (p_k − p̂_k)² (``eps`` unused; kept for a uniform signature)."""
    _check(p_hat, p)
    return (p - p_hat).pow(2).sum(dim=1)


PROPORTION_LOSSES: dict[str, ProportionLoss] = {
    "ce": ce_rows,
    "kl": kl_rows,
    "l1": l1_rows,
    "mse": mse_rows,
}
"""Registry: ``weak.loss`` name -> ``rows(p_hat (B,K), p (B,K), eps) -> (B,)`` per-patch losses.

Per patch, so callers can mask patches (or average over bags) without a GPU synchronisation; the
loss of a batch is the mean of the rows over the kept patches."""


def proportion_loss_rows(name: str) -> ProportionLoss:
    """Look up a proportion loss by name, in its per-patch form ``(p_hat, p, eps) -> (B,)``.

    Raises:
        SegweakError: Listing the valid names when ``name`` is unknown.
    """
    try:
        return PROPORTION_LOSSES[name]
    except KeyError:
        raise SegweakError(
            f"weak.loss: unknown proportion loss {name!r}; valid: {', '.join(PROPORTION_LOSSES)}"
        ) from None
