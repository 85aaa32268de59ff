"""Pluggable weak-learning methods: pixel logits + weak labels -> a training loss.

A method turns the network's pixel logits ``z`` (B, K, H, W) and a batch's weak labels into a
scalar loss; all methods also give the same predicted proportions p̂ (for metrics). Notation:
``q = softmax_k(z)`` per pixel, ``v`` (B, H, W) the valid-area mask (1 = pixel counted in the weak
label; all ones when ``weak.use_valid_area`` is false), ``p`` the weak proportions, ``y`` the
presence labels. Formulas are in ``docs/methods.md``:

* ``proportion`` (default): p̂_k = Σ_px v·q_k / Σ_px v, loss = ``weak.loss``(p̂, p).
* ``presence_lse``: s_k = (1/r) log( (1/Σv) Σ_px v·exp(r z_k) ) (LSE pooling, r = ``weak.lse_r``),
  loss = BCE-with-logits(s, y), mean over batch and classes.
* ``proportion_presence``: proportion loss + λ·BCE(s, y) with s LSE- or max-pooled
  (``weak.presence_pooling``), λ = ``weak.presence_weight``.
* ``proportion_entropy``: proportion loss + w·(mean over valid pixels of −Σ_k q_k log q_k),
  w = ``weak.entropy_weight``.

Patches with no valid pixel carry no information and are left out of the loss (a batch made only of
such patches gives a zero loss that still depends on the logits, so backward works).
Computation is done in float32 even under mixed precision, for the logs and exps.

Register a new method with the :func:`register` decorator; it becomes a valid ``weak.method``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from segweak.config import WeakConfig
from segweak.errors import SegweakError
from segweak.weak.losses import proportion_loss, proportion_loss_rows

WEAK_METHODS: dict[str, type[WeakMethod]] = {}
"""Registry: ``weak.method`` name -> :class:`WeakMethod` subclass."""


def register(name: str) -> Callable[[type[WeakMethod]], type[WeakMethod]]:
    """Class decorator adding a :class:`WeakMethod` subclass to :data:`WEAK_METHODS` under ``name``."""

    def deco(cls: type[WeakMethod]) -> type[WeakMethod]:
        cls.name = name
        WEAK_METHODS[name] = cls
        return cls

    return deco


def _valid_mask(logits: Tensor, valid: Tensor | None) -> Tensor:
    """(B, H, W) float mask on ``logits``' device; all ones when ``valid`` is None."""
    b, _, h, w = logits.shape
    if valid is None:
        return logits.new_ones((b, h, w), dtype=torch.float32)
    if valid.shape != (b, h, w):
        raise ValueError(f"valid mask must be (B, H, W) = {(b, h, w)}, got {tuple(valid.shape)}")
    return valid.to(device=logits.device, dtype=torch.float32)


def soft_proportions(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean per-pixel softmax over the valid area: p̂ (B, K), rows summing to 1.

    Args:
        logits: (B, K, H, W) pixel logits.
        valid: (B, H, W) 0/1 mask, or None for the whole patch. A patch with no valid pixel falls
            back to the whole patch (so rows always sum to 1).

    Returns:
        (B, K) float32 proportions.
    """
    v = _valid_mask(logits, valid)
    n = v.sum(dim=(1, 2))
    v = torch.where((n > 0)[:, None, None], v, torch.ones_like(v))
    q = torch.softmax(logits.float(), dim=1)
    return (q * v[:, None]).sum(dim=(2, 3)) / v.sum(dim=(1, 2))[:, None]


def hard_proportions(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Fraction of valid pixels whose argmax is each class: (B, K), rows sum to 1.

    A patch with no valid pixel falls back to the whole patch.
    """
    v = _valid_mask(logits, valid)
    n = v.sum(dim=(1, 2))
    v = torch.where((n > 0)[:, None, None], v, torch.ones_like(v))
    k = logits.shape[1]
    onehot = F.one_hot(logits.argmax(dim=1), k).permute(0, 3, 1, 2).float()
    return (onehot * v[:, None]).sum(dim=(2, 3)) / v.sum(dim=(1, 2))[:, None]


def lse_pool(logits: Tensor, valid: Tensor | None = None, r: float = 5.0) -> Tensor:
    """Log-sum-exp pooling of class logits over the valid area (Pinheiro & Collobert, 2015).

    s_k = (1/r) · log( (1/N) Σ_{valid px} exp(r · z_k) ), N = number of valid pixels. It lies between
    the mean (r → 0) and the max (r → ∞) of z_k over the valid pixels.

    Args:
        logits: (B, K, H, W).
        valid: (B, H, W) 0/1 or None. A patch with no valid pixel falls back to the whole patch.
        r: Sharpness (> 0).

    Returns:
        (B, K) float32 pooled scores.
    """
    v = _valid_mask(logits, valid)
    n = v.sum(dim=(1, 2))
    v = torch.where((n > 0)[:, None, None], v, torch.ones_like(v))
    z = logits.float().flatten(2)  # (B, K, HW)
    mask = (v.flatten(1) > 0)[:, None, :]
    rz = (r * z).masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(rz, dim=2) - torch.log(v.sum(dim=(1, 2)))[:, None]
    return lse / r


def max_pool(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Max of each class logit over the valid area: (B, K) float32."""
    v = _valid_mask(logits, valid)
    n = v.sum(dim=(1, 2))
    v = torch.where((n > 0)[:, None, None], v, torch.ones_like(v))
    z = logits.float().flatten(2)
    mask = (v.flatten(1) > 0)[:, None, :]
    return z.masked_fill(~mask, float("-inf")).amax(dim=2)


class WeakMethod:
    """Base class of weak-learning methods.

    Subclasses implement :meth:`loss`; :meth:`proportions` (soft p̂) and :meth:`predict_presence` are shared.

    Args:
        cfg: The ``weak`` config section.
        num_classes: K.
    """

    name: str = "base"

    def __init__(self, cfg: WeakConfig, num_classes: int) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.eps = float(cfg.eps)

    def proportions(self, logits: Tensor, valid: Tensor | None) -> Tensor:
        """Predicted proportions p̂ (B, K), rows sum to 1.

        Mean softmax over ``valid`` (B, H, W) 0/1, or over all pixels when ``valid`` is None.
        """
        return soft_proportions(logits, valid)

    def predict_presence(self, logits: Tensor, valid: Tensor | None) -> Tensor:
        """Predicted presence (B, K) 0/1.

        A class is present when its share of argmax pixels exceeds ``weak.presence_threshold`` (the
        same rule that makes presence labels from pixel counts).
        """
        return (hard_proportions(logits, valid) > self.cfg.presence_threshold).float()

    def loss(self, logits: Tensor, batch: Mapping[str, Any]) -> Tensor:
        """Training loss (scalar).

        Args:
            logits: (B, K, H, W) pixel logits.
            batch: Has ``weak`` (B, K) proportions, ``presence`` (B, K) 0/1 and ``valid`` (B, H, W).
        """
        raise NotImplementedError

    # -- shared pieces ------------------------------------------------------------------------------

    def _valid(self, logits: Tensor, batch: Mapping[str, Any]) -> Tensor | None:
        """Return the valid mask to use: the batch's ``valid`` when ``weak.use_valid_area``, else None."""
        if not self.cfg.use_valid_area:
            return None
        if "valid" not in batch:
            raise SegweakError(
                "weak.use_valid_area is true but the batch has no 'valid' mask; "
                "set weak.use_valid_area=false to average over whole patches"
            )
        return batch["valid"]

    def _target(self, batch: Mapping[str, Any], key: str, logits: Tensor) -> Tensor:
        if key not in batch:
            raise SegweakError(f"weak method {self.name!r} needs batch[{key!r}] (B, K)")
        t = batch[key].to(device=logits.device, dtype=torch.float32)
        if t.shape != (logits.shape[0], logits.shape[1]):
            raise ValueError(
                f"batch[{key!r}] must be (B, K) = {tuple(logits.shape[:2])}, got {tuple(t.shape)}"
            )
        return t

    @staticmethod
    def _keep(valid: Tensor | None, logits: Tensor) -> Tensor:
        """(B,) float 0/1: patches that carry information (at least one valid pixel)."""
        if valid is None:
            return logits.new_ones(logits.shape[0], dtype=torch.float32)
        return (valid.to(logits.device).flatten(1).sum(dim=1) > 0).float()

    @staticmethod
    def _masked_mean(rows: Tensor, keep: Tensor) -> Tensor:
        """Mean of per-patch losses over kept patches; 0 (still attached to the graph) if none.

        Uses arithmetic instead of boolean indexing so that no GPU->CPU synchronisation happens.
        """
        return (rows * keep).sum() / keep.sum().clamp_min(1.0)

    def _proportion_term(self, logits: Tensor, batch: Mapping[str, Any], valid: Tensor | None) -> Tensor:
        p = self._target(batch, "weak", logits)
        keep = self._keep(valid, logits)
        p_hat = self.proportions(logits, valid)
        # Dropped patches get a finite stand-in target, so neither value nor gradient can be NaN there.
        p = torch.where(keep[:, None] > 0, p, p_hat.detach())
        rows = proportion_loss_rows(self.cfg.loss)(p_hat, p, self.eps)
        return self._masked_mean(rows, keep)

    def _presence_term(
        self, scores: Tensor, batch: Mapping[str, Any], keep: Tensor, logits: Tensor
    ) -> Tensor:
        y = self._target(batch, "presence", logits)
        rows = F.binary_cross_entropy_with_logits(scores, y, reduction="none").mean(dim=1)
        return self._masked_mean(rows, keep)


@register("proportion")
class ProportionMethod(WeakMethod):
    """Learning from label proportions: ``weak.loss``(mean softmax over the valid area, p)."""

    def loss(self, logits: Tensor, batch: Mapping[str, Any]) -> Tensor:  # noqa: D102
        return self._proportion_term(logits, batch, self._valid(logits, batch))


@register("presence_lse")
class PresenceLSEMethod(WeakMethod):
    """Multi-label presence learning (MIL style): BCE-with-logits on LSE-pooled class logits."""

    def loss(self, logits: Tensor, batch: Mapping[str, Any]) -> Tensor:  # noqa: D102
        valid = self._valid(logits, batch)
        scores = lse_pool(logits, valid, self.cfg.lse_r)
        return self._presence_term(scores, batch, self._keep(valid, logits), logits)


@register("proportion_presence")
class ProportionPresenceMethod(WeakMethod):
    """Proportion loss + ``presence_weight`` · presence BCE on LSE- or max-pooled class logits."""

    def __init__(self, cfg: WeakConfig, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        if cfg.presence_pooling not in ("lse", "max"):
            raise SegweakError(
                f"weak.presence_pooling: {cfg.presence_pooling!r} is not valid; choose lse or max"
            )

    def loss(self, logits: Tensor, batch: Mapping[str, Any]) -> Tensor:  # noqa: D102
        valid = self._valid(logits, batch)
        if self.cfg.presence_pooling == "max":
            scores = max_pool(logits, valid)
        else:
            scores = lse_pool(logits, valid, self.cfg.lse_r)
        presence = self._presence_term(scores, batch, self._keep(valid, logits), logits)
        return self._proportion_term(logits, batch, valid) + self.cfg.presence_weight * presence


@register("proportion_entropy")
class ProportionEntropyMethod(WeakMethod):
    """Proportion loss + ``entropy_weight`` · mean pixel entropy over the valid area (confident pixels)."""

    def loss(self, logits: Tensor, batch: Mapping[str, Any]) -> Tensor:  # noqa: D102
        valid = self._valid(logits, batch)
        base = self._proportion_term(logits, batch, valid)
        v = _valid_mask(logits, valid)
        logq = torch.log_softmax(logits.float(), dim=1)
        entropy = -(logq.exp() * logq).sum(dim=1)  # (B, H, W), finite: log_softmax never gives -inf·0
        return base + self.cfg.entropy_weight * (entropy * v).sum() / v.sum().clamp_min(1.0)


def build_weak_method(cfg: WeakConfig, num_classes: int) -> WeakMethod:
    """Instantiate the method named by ``cfg.method``.

    Args:
        cfg: The ``weak`` config section.
        num_classes: K.

    Raises:
        SegweakError: For an unknown method or loss name, or an invalid option.
    """
    cls = WEAK_METHODS.get(cfg.method)
    if cls is None:
        raise SegweakError(f"weak.method: unknown method {cfg.method!r}; valid: {', '.join(WEAK_METHODS)}")
    proportion_loss(cfg.loss)  # fail early on a bad weak.loss
    if cfg.lse_r <= 0:
        raise SegweakError(f"weak.lse_r must be > 0, got {cfg.lse_r}")
    if cfg.eps <= 0 or cfg.eps >= 1:
        raise SegweakError(f"weak.eps must be in (0, 1), got {cfg.eps}")
    return cls(cfg, num_classes)
