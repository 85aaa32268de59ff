"""Weak-label pre-training from class proportions and presence.

Methods: ``proportion``, ``presence_lse``, ``proportion_presence``, ``proportion_entropy``. Each
reads the weak subset with its weak labels only (``weak`` proportions p and ``presence`` y per
patch, never a pixel mask) and is a pre-training method: the protocol fine-tunes it on the strong
subset afterwards. Notation (``docs/methods.md``): pixel logits ``z`` (B, K, H, W),
``q = softmax_k(z)``, the averaging area ``v`` (the whole patch with ``weak.area: patch``, the valid
map with ``weak.area: valid``), p̂ = mean of q over the area
(:func:`~segweak.weak.pooling.soft_proportions`).

:class:`WeakLabelMethod` holds the pieces other weak-label methods reuse (area, targets, masked means).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from segweak.errors import SegweakError
from segweak.methods.base import Need, Task, TrainingMethod, register
from segweak.weak.bags import bag_inverse, bag_max, bag_mean, bag_sum
from segweak.weak.losses import PROPORTION_LOSSES, proportion_loss_rows
from segweak.weak.pooling import area_mask, lse_pool, max_pool, soft_proportions


def check_proportion_loss(prefix: str, loss: str, eps: float) -> None:
    """Check a proportion-loss name and its log clamp (``<prefix>loss``, ``<prefix>eps``)."""
    if loss not in PROPORTION_LOSSES:
        raise SegweakError(
            f"{prefix}loss: {loss!r} is not valid; choose one of {', '.join(PROPORTION_LOSSES)}"
        )
    if not 0.0 < eps < 1.0:
        raise SegweakError(f"{prefix}eps must be in (0, 1), got {eps}")


def check_non_negative(prefix: str, **values: float) -> None:
    """Check that every named weight is >= 0."""
    for key, value in values.items():
        if value < 0:
            raise SegweakError(f"{prefix}{key} must be >= 0, got {value}")


@dataclass
class ProportionOptions:
    """Options of ``proportion``.

    Attributes:
        loss: Proportion loss: ``ce`` (−Σ p log p̂, default), ``kl`` (KL(p‖p̂)), ``l1``, ``mse``.
        eps: Clamp for p̂ before taking logs (numerical safety).
    """

    loss: str = "ce"
    eps: float = 1e-6

    def validate(self, prefix: str) -> None:
        """Check the loss name and ``eps``."""
        check_proportion_loss(prefix, self.loss, self.eps)


@dataclass
class PresenceLSEOptions:
    """Options of ``presence_lse``.

    Attributes:
        lse_r: Sharpness r of log-sum-exp pooling: small r ~ mean pooling, large r ~ max pooling.
    """

    lse_r: float = 5.0

    def validate(self, prefix: str) -> None:
        """Check ``lse_r`` > 0."""
        if self.lse_r <= 0:
            raise SegweakError(f"{prefix}lse_r must be > 0, got {self.lse_r}")


@dataclass
class ProportionPresenceOptions(ProportionOptions):
    """Options of ``proportion_presence``.

    Attributes:
        lse_r: Sharpness r of log-sum-exp pooling (``presence_pooling: lse``).
        presence_weight: Weight λ of the presence BCE term.
        presence_pooling: Class-score pooling: ``lse`` or ``max``.
    """

    lse_r: float = 5.0
    presence_weight: float = 0.5
    presence_pooling: str = "lse"

    def validate(self, prefix: str) -> None:
        """Check the loss, ``lse_r``, the weight and the pooling choice."""
        super().validate(prefix)
        PresenceLSEOptions(self.lse_r).validate(prefix)
        check_non_negative(prefix, presence_weight=self.presence_weight)
        if self.presence_pooling not in ("lse", "max"):
            raise SegweakError(
                f"{prefix}presence_pooling: {self.presence_pooling!r} is not valid; choose lse or max"
            )


@dataclass
class ProportionEntropyOptions(ProportionOptions):
    """Options of ``proportion_entropy``.

    Attributes:
        entropy_weight: Weight w of the mean pixel-entropy term.
    """

    entropy_weight: float = 0.1

    def validate(self, prefix: str) -> None:
        """Check the loss and the weight."""
        super().validate(prefix)
        check_non_negative(prefix, entropy_weight=self.entropy_weight)


class WeakLabelMethod(TrainingMethod):
    """Base of methods that read weak labels: shared area, target and masking logic.

    Subclasses implement :meth:`weak_terms`; by default the method pre-trains on the ``weak``
    sub-batch (the weak subset with its weak labels).
    """

    pretrain = True

    def needs(self) -> dict[str, Need]:  # noqa: D102
        return {"weak": Need(subset="weak", labels="weak")}

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Loss terms of a weakly labelled batch.

        Args:
            logits: (B, K, H, W) pixel logits.
            batch: ``weak`` (B, K) proportions, ``presence`` (B, K) 0/1; ``valid`` (B, H, W) with
                ``weak.area: valid``.
        """
        raise NotImplementedError

    def training_step(self, task: Task, batches: dict[str, dict[str, Any]]) -> dict[str, Tensor]:  # noqa: D102
        batch = batches["weak"]
        return self.weak_terms(task(batch["image"]), batch)

    def validation_terms(self, task: Task, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        """``weak_loss``: the sum of the weak terms on a validation batch."""
        total: Tensor | None = None
        for term in self.weak_terms(logits, batch).values():
            total = term if total is None else total + term
        return {} if total is None else {"weak_loss": total}

    # -- shared pieces ------------------------------------------------------------------------------

    def area(self, batch: Mapping[str, Any]) -> Tensor | None:
        """Averaging area: None (whole patch) with ``weak.area: patch``, else the batch's ``valid``."""
        if self.cfg.weak.area == "patch":
            return None
        if "valid" not in batch:
            raise SegweakError(
                "weak.area is 'valid' but the batch has no 'valid' map; set weak.area=patch to average "
                "over whole patches"
            )
        return batch["valid"]

    def target(self, batch: Mapping[str, Any], key: str, logits: Tensor) -> Tensor:
        """Batch entry ``key`` as (B, K) float32 on the logits' device."""
        if key not in batch:
            raise SegweakError(f"method {self.name!r} needs batch[{key!r}] (B, K)")
        t = batch[key].to(device=logits.device, dtype=torch.float32)
        if t.shape != (logits.shape[0], logits.shape[1]):
            raise ValueError(
                f"batch[{key!r}] must be (B, K) = {tuple(logits.shape[:2])}, got {tuple(t.shape)}"
            )
        return t

    @staticmethod
    def keep(valid: Tensor | None, logits: Tensor) -> Tensor:
        """(B,) float 0/1: patches that carry information (at least one pixel in the area)."""
        if valid is None:
            return logits.new_ones(logits.shape[0], dtype=torch.float32)
        return (valid.to(logits.device).flatten(1).sum(dim=1) > 0).float()

    @staticmethod
    def masked_mean(rows: Tensor, keep: Tensor) -> Tensor:
        """Mean of per-patch losses over kept patches; 0 (still attached to the graph) if none.

        Arithmetic instead of boolean indexing, so no GPU->CPU synchronisation happens.
        """
        return (rows * keep).sum() / keep.sum().clamp_min(1.0)

    def proportion_term(
        self, logits: Tensor, batch: Mapping[str, Any], valid: Tensor | None, loss: str, eps: float
    ) -> Tensor:
        """Mean over kept patches (or bags) of the proportion loss ``loss``(p̂ over the area, p).

        With ``bag`` in the batch (imported weak labels) the loss is taken per bag, between the bag's
        proportions and the area-weighted mean p̂ of its patches, and averaged over bags.
        """
        p = self.target(batch, "weak", logits)
        if "bag" in batch:
            p_hat, p, keep = self.bag_proportions(logits, batch, valid, p)
        else:
            keep = self.keep(valid, logits)
            p_hat = soft_proportions(logits, valid)
        # Dropped patches get a finite stand-in target, so neither value nor gradient can be NaN there.
        p = torch.where(keep[:, None] > 0, p, p_hat.detach())
        rows = proportion_loss_rows(loss)(p_hat, p, eps)
        return self.masked_mean(rows, keep)

    @staticmethod
    def bag_proportions(
        logits: Tensor, batch: Mapping[str, Any], valid: Tensor | None, p: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-bag predicted and target proportions of a batch with ``bag`` ids.

        Args:
            logits: (B, K, H, W) pixel logits.
            batch: Has ``bag`` (B,) int64.
            valid: (B, H, W) area or None (whole patch).
            p: (B, K) targets (equal within a bag).

        Returns:
            ``(p_hat, p, keep)``: (G, K) Σ v q / Σ v over each bag's pixels (uniform for a bag with an
            empty area), (G, K) the bag's targets and (G,) float 0/1, 1 where the bag's area is not
            empty. For one-patch bags these equal the per-patch values exactly.
        """
        inverse, g = bag_inverse(batch["bag"].to(logits.device))
        v = area_mask(logits, valid)
        q = torch.softmax(logits.float(), dim=1)
        num = bag_sum((q * v[:, None]).sum(dim=(2, 3)), inverse, g)  # (G, K)
        den = bag_sum(v.sum(dim=(1, 2)), inverse, g)  # (G,)
        keep = (den > 0).float()
        p_hat = torch.where(
            keep[:, None] > 0, num / den.clamp_min(1.0)[:, None], torch.full_like(num, 1.0 / num.shape[1])
        )
        return p_hat, bag_mean(p, inverse, g), keep

    def interval_term(
        self, logits: Tensor, batch: Mapping[str, Any], valid: Tensor | None, tau: float
    ) -> Tensor:
        """Mean over kept patches (or bags) of the size-interval loss (``interval_loss_mean``).

        A patch with an empty area has NaN proportions (nothing to count them over); the constraint
        leaves it out, but NaN × 0 is NaN, so it gets a finite stand-in target first. With ``bag`` in
        the batch the interval applies to each bag's area-weighted shares.
        """
        from segweak.weak.area import masked_patch_mean
        from segweak.weak.constraints import interval_loss_mean, interval_penalty

        p = self.target(batch, "weak", logits)
        if "bag" in batch:
            p_hat, p, keep = self.bag_proportions(logits, batch, valid, p)
            p = torch.where(keep[:, None] > 0, p, torch.zeros_like(p))
            return masked_patch_mean(interval_penalty(p_hat, p, tau), keep)
        p = torch.where(self.keep(valid, logits)[:, None] > 0, p, torch.zeros_like(p))
        return interval_loss_mean(logits, p, tau, valid)

    def presence_term(self, scores: Tensor, batch: Mapping[str, Any], keep: Tensor, logits: Tensor) -> Tensor:
        """Mean over kept patches of BCE-with-logits(pooled class scores, presence), mean over classes.

        With ``bag`` in the batch a bag's class score is the maximum of its patches' pooled scores
        (multiple-instance rule: a class is present in a bag when it is present in some patch) and the
        mean is over bags.
        """
        y = self.target(batch, "presence", logits)
        if "bag" in batch:
            inverse, g = bag_inverse(batch["bag"].to(logits.device))
            scores = bag_max(scores.float(), inverse, g)
            y = bag_mean(y, inverse, g)
            keep = bag_max(keep[:, None], inverse, g)[:, 0]
        rows = F.binary_cross_entropy_with_logits(scores, y, reduction="none").mean(dim=1)
        return self.masked_mean(rows, keep)


@register("proportion")
class Proportion(WeakLabelMethod):
    """Learning from label proportions: ``loss``(p̂, p). Term: ``proportion``."""

    Options = ProportionOptions

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:  # noqa: D102
        o = self.options
        return {"proportion": self.proportion_term(logits, batch, self.area(batch), o.loss, o.eps)}


@register("presence_lse")
class PresenceLSE(WeakLabelMethod):
    """Multi-label presence (MIL style): BCE-with-logits on LSE-pooled class logits. Term: ``presence``."""

    Options = PresenceLSEOptions

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:  # noqa: D102
        valid = self.area(batch)
        scores = lse_pool(logits, valid, self.options.lse_r)
        return {"presence": self.presence_term(scores, batch, self.keep(valid, logits), logits)}


@register("proportion_presence")
class ProportionPresence(WeakLabelMethod):
    """Proportion loss + λ · presence BCE on LSE- or max-pooled logits.

    Terms: ``proportion``, ``presence``.
    """

    Options = ProportionPresenceOptions

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:  # noqa: D102
        o = self.options
        valid = self.area(batch)
        scores = max_pool(logits, valid) if o.presence_pooling == "max" else lse_pool(logits, valid, o.lse_r)
        presence = self.presence_term(scores, batch, self.keep(valid, logits), logits)
        return {
            "proportion": self.proportion_term(logits, batch, valid, o.loss, o.eps),
            "presence": o.presence_weight * presence,
        }


@register("proportion_entropy")
class ProportionEntropy(WeakLabelMethod):
    """Proportion loss + w · mean pixel entropy over the area. Terms: ``proportion``, ``entropy``."""

    Options = ProportionEntropyOptions

    def weak_terms(self, logits: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:  # noqa: D102
        o = self.options
        valid = self.area(batch)
        base = self.proportion_term(logits, batch, valid, o.loss, o.eps)
        v = area_mask(logits, valid)
        logq = torch.log_softmax(logits.float(), dim=1)
        entropy = -(logq.exp() * logq).sum(dim=1)  # (B, H, W), finite: log_softmax never gives -inf·0
        return {
            "proportion": base,
            "entropy": o.entropy_weight * (entropy * v).sum() / v.sum().clamp_min(1.0),
        }
