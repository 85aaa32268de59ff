"""Weak-label noise: a fixed, seeded corruption of class proportions (``weak.noise``).

Real proportion labels are estimates (a survey, a regional statistic, a classifier's area count),
not the exact counts of the ground truth. To ask how accurate they must be, training can read
corrupted proportions p' instead of the clean p. Two models, both keeping absent classes absent
(p_c = 0 ⇒ p'_c = 0), so a corrupted label still names only classes the patch shows:

* ``dirichlet``: p' ~ Dirichlet(κ · p) over the present classes (κ = ``concentration``).
  Unbiased: E[p'] = p; Var[p'_c] = p_c (1 − p_c) / (κ + 1), so the typical error shrinks as
  1/√κ and a small share is noisier, in absolute terms, than a large one only up to p_c = 0.5.
* ``relative``: p'_c ∝ p_c · exp(σ ε_c), ε_c ~ N(0, 1) independent (σ = ``sigma``), i.e. each
  present share is mis-estimated by a log-normal factor, then the row is renormalised to sum to 1.
  *Biased*: renormalising by the random sum pulls every row towards the uniform share of its present
  classes: on average a dominant class loses share and a minor class gains it (for p = (0.9, 0.1)
  and σ = 0.5, E[p'] ≈ (0.88, 0.12); tested). The log-normal factor never reaches zero, so a
  present class stays present.

The corruption is *fixed per label*, like a real estimate that does not change between epochs: the
noise of a patch is drawn from a generator seeded with ``(seed, 0, patch index)``, the noise of an
imported bag from ``(seed, 1, CRC-32 of the bag id)``. Every epoch, every process of a multi-GPU
run and every resume therefore sees the same noisy label, and a patch keeps its noisy label whatever
other patches its subset holds (e.g. at every point of a strong-fraction sweep).

Not modelled: leakage of mass into absent classes (an estimator that reports a little of a class the
patch does not show). Consequently the class *presence* derived from noisy proportions with the
default threshold 0 equals the clean presence, except where a Dirichlet draw underflows a tiny
share to exactly 0.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from segweak.config import NOISE_MODELS

PATCH_DOMAIN = 0
"""Generator key domain of per-patch labels (the key is the store patch index)."""
BAG_DOMAIN = 1
"""Generator key domain of imported bags (the key is the CRC-32 of the bag id)."""


def is_active(noise: Any) -> bool:
    """Return whether ``noise`` (a :class:`~segweak.config.NoiseConfig` or None) corrupts labels."""
    return noise is not None and noise.model != "none"


def bag_key(bag_id: str) -> int:
    """Return the generator key of an imported bag: a CRC-32 of its id (not of its row in the file)."""
    return zlib.crc32(str(bag_id).encode("utf-8"))


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` log-weights where ``-inf`` marks classes that must stay 0."""
    top = np.max(logits, axis=1, keepdims=True)
    weights = np.exp(logits - top)
    return weights / weights.sum(axis=1, keepdims=True)


def corrupt(
    props: np.ndarray,
    keys: Sequence[int] | np.ndarray,
    model: str,
    *,
    concentration: float = 100.0,
    sigma: float = 0.2,
    seed: int = 0,
    domain: int = PATCH_DOMAIN,
) -> np.ndarray:
    """Corrupt each row of ``props`` with noise drawn from the generator of ``(seed, domain, key)``.

    Args:
        props: ``(N, K)`` class proportions, rows summing to 1; all-NaN rows (no label) stay NaN.
        keys: ``(N,)`` non-negative integer key of each row (store patch index, or :func:`bag_key`).
            Equal keys get equal draws, so a row's noise does not depend on the other rows.
        model: ``none`` (returns a float64 copy), ``dirichlet`` or ``relative`` (module docstring).
        concentration: κ > 0 of ``dirichlet``.
        sigma: σ >= 0 of ``relative``.
        seed: Noise seed (>= 0).
        domain: Key domain (:data:`PATCH_DOMAIN` or :data:`BAG_DOMAIN`).

    Returns:
        ``(N, K)`` float64 noisy proportions: rows sum to 1, zero where ``props`` is zero.

    Raises:
        ValueError: For an unknown model, a parameter out of range, a negative key or mismatched
            shapes (a user's ``weak.noise`` is checked with the key named by ``TrainConfig.validate``).
    """
    props = np.asarray(props, dtype=np.float64)
    keys = np.asarray(keys, dtype=np.int64)
    if props.ndim != 2 or keys.shape != (props.shape[0],):
        raise ValueError(f"corrupt needs (N, K) proportions and N keys, got {props.shape} and {keys.shape}")
    if model not in NOISE_MODELS:
        raise ValueError(f"unknown noise model {model!r}; one of {', '.join(NOISE_MODELS)}")
    if not (np.isfinite(concentration) and concentration > 0 and np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"need concentration > 0 and sigma >= 0, got {concentration} and {sigma}")
    if int(seed) < 0 or (keys.size and int(keys.min()) < 0):
        raise ValueError("noise seed and keys must be >= 0")
    out = props.copy()
    if model == "none" or props.shape[0] == 0:
        return out
    k = props.shape[1]
    labelled = ~np.isnan(props).any(axis=1)
    present = (props > 0) & labelled[:, None]
    # α = κ p over the present classes; 1 stands in where there is no component (α = 0), whose draw
    # is then discarded.
    alpha = np.where(present, concentration * np.nan_to_num(props), 1.0)
    # Every row draws K values per stream (absent classes included) from its own generator, so which
    # draw lands in which class depends on the key only, never on the other rows.
    draws = np.empty((props.shape[0], 2, k), dtype=np.float64)
    for row, key in enumerate(keys.tolist()):
        gen = np.random.default_rng([int(seed), int(domain), key])
        if model == "dirichlet":
            draws[row, 0] = gen.standard_gamma(alpha[row] + 1.0)
            draws[row, 1] = 1.0 - gen.random(k)  # in (0, 1]: its log is finite
        else:
            draws[row, 0] = gen.standard_normal(k)
    with np.errstate(divide="ignore"):
        if model == "dirichlet":
            # Gamma(α) = Gamma(α + 1) · U^(1/α) (Marsaglia & Tsang): in log space a tiny α (a small share
            # times κ) cannot underflow every component to 0, which plain Gamma(α) draws can.
            logits = np.log(draws[:, 0]) + np.log(draws[:, 1]) / alpha
        else:
            logits = np.log(np.where(present, props, 1.0)) + sigma * draws[:, 0]
    # α = 0 (an absent class) has no Dirichlet component: it is pinned to 0 here, not drawn.
    logits = np.where(present, logits, -np.inf)
    out[labelled] = _softmax_rows(logits[labelled])
    return out


def apply(
    props: np.ndarray, keys: Sequence[int] | np.ndarray, noise: Any, domain: int = PATCH_DOMAIN
) -> np.ndarray:
    """:func:`corrupt` with the parameters of a :class:`~segweak.config.NoiseConfig` (None = no noise)."""
    if not is_active(noise):
        return np.asarray(props, dtype=np.float64).copy()
    return corrupt(
        props,
        keys,
        noise.model,
        concentration=noise.concentration,
        sigma=noise.sigma,
        seed=noise.seed,
        domain=domain,
    )


def parameters(noise: Any) -> dict[str, Any]:
    """Return the model and the parameters it uses, for records (``{"model": "none"}`` without noise)."""
    if not is_active(noise):
        return {"model": "none"}
    used = {"dirichlet": "concentration", "relative": "sigma"}[noise.model]
    return {"model": noise.model, used: float(getattr(noise, used)), "seed": int(noise.seed)}


def summary(clean: np.ndarray, noisy: np.ndarray, presence_threshold: float = 0.0) -> dict[str, Any]:
    """How far the noisy labels are from the clean ones (``metrics.json`` ``weak_labels.noise``).

    Args:
        clean: ``(N, K)`` clean proportions (NaN rows are skipped).
        noisy: ``(N, K)`` their corrupted versions.
        presence_threshold: Presence threshold of the split (a class is present above it).

    Returns:
        ``n_labels`` (labelled rows), ``mae`` (mean |p' − p| over rows and classes: the definition of
        the ``prop_mae`` metric), ``max_abs_error`` (largest single-class error), ``mean_l1`` (mean
        per-row Σ_c |p'_c − p_c|) and ``presence_changed`` (rows whose present-class set differs);
        ``None`` values when no row is labelled.
    """
    clean = np.asarray(clean, dtype=np.float64)
    noisy = np.asarray(noisy, dtype=np.float64)
    rows = ~np.isnan(clean).any(axis=1)
    err = np.abs(noisy[rows] - clean[rows])
    n = int(rows.sum())
    if n == 0:
        return {"n_labels": 0, "mae": None, "max_abs_error": None, "mean_l1": None, "presence_changed": None}
    changed = (clean[rows] > presence_threshold) != (noisy[rows] > presence_threshold)
    return {
        "n_labels": n,
        "mae": float(err.mean()),
        "max_abs_error": float(err.max()),
        "mean_l1": float(err.sum(axis=1).mean()),
        "presence_changed": int(changed.any(axis=1).sum()),
    }


__all__ = [
    "BAG_DOMAIN",
    "NOISE_MODELS",
    "PATCH_DOMAIN",
    "apply",
    "bag_key",
    "corrupt",
    "is_active",
    "parameters",
    "summary",
]
