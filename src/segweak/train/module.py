"""SegModule: one LightningModule for every stage, with ONE shared step for train/val/test.

Stage logic lives in :meth:`SegModule._shared_step`:

* training, stages ``strong``/``finetune``/``full``: pixel loss (cross-entropy with ignore index 255,
  optional class weights, plus ``loss.dice_weight`` × multi-class Dice);
* training, stage ``weak``: the weak method's loss on the weak batch (which carries no ``mask``);
* validation/test (every stage): pixel loss on the pixel masks, a split-wide confusion matrix and the
  weak metrics (proportion MAE and presence F1 against the patches' weak labels), so every stage is
  comparable on validation mIoU.

Only plain data goes into the hyperparameters (the config as a dict, class count and names), so
checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from segweak.config import TrainConfig, from_dict, to_dict
from segweak.evaluate.evaluate import SegMetrics

IGNORE_INDEX = 255
PHASES = ("train", "val", "test")


def _as_config(cfg: TrainConfig | dict[str, Any]) -> TrainConfig:
    return cfg if isinstance(cfg, TrainConfig) else from_dict(TrainConfig, cfg)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Multi-class soft Dice loss over the non-ignored pixels.

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, H, W) int64 class indices, ``ignore_index`` excluded.
        ignore_index: Target value that is not counted.

    Returns:
        Scalar ``1 - mean_k dice_k`` over classes present in the target or the prediction.
    """
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1).to(logits.dtype)  # (B,1,H,W)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(0, num_classes - 1) * (target != ignore_index), num_classes)
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid  # (B,K,H,W)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    # Classes with neither prediction nor target mass carry no information: leave them out. Masked
    # arithmetic instead of boolean indexing keeps the GPU from synchronising every step.
    keep = (denom > 0).to(probs.dtype)
    dice = (2 * inter + 1e-6) / (denom + 1e-6)
    n_keep = keep.sum()
    mean_dice = (dice * keep).sum() / n_keep.clamp_min(1.0)
    # No class with any mass (an all-ignore batch): 0 loss, still connected to the graph.
    return torch.where(n_keep > 0, 1.0 - mean_dice, logits.sum() * 0.0)


def pixel_loss(
    logits: torch.Tensor,
    mask: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    dice_weight: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy (ignore 255, optional class weights) + ``dice_weight`` × Dice.

    Args:
        logits: (B, K, H, W) raw scores.
        mask: (B, H, W) int64 class indices, 255 = ignore.
        class_weights: Optional (K,) cross-entropy weights.
        dice_weight: Weight of :func:`dice_loss` (0 disables it).

    Returns:
        Scalar loss; 0 (still attached to the graph) for a batch whose pixels are all ignored.
    """
    weight = class_weights.to(logits.dtype) if class_weights is not None else None
    # Sum / (weighted) valid count equals cross_entropy's "mean" reduction, but an all-ignore batch
    # gives 0 instead of NaN (0/0), without a data-dependent branch that would make the GPU
    # synchronise every step.
    valid = mask != IGNORE_INDEX
    if weight is None:
        denom = valid.sum().to(logits.dtype)
    else:
        denom = (weight[torch.where(valid, mask, 0)] * valid).sum()
    total = F.cross_entropy(logits, mask, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    loss = total / denom.clamp_min(1e-12)
    if dice_weight > 0:
        loss = loss + dice_weight * dice_loss(logits, mask)
    return loss


def lr_lambda_factory(total_steps: int, warmup_steps: int, scheduler: str):
    """Per-step LR multiplier: linear warm-up, then cosine to zero (or constant).

    A plain closure (not a callable object) so ``LambdaLR.state_dict()`` stores nothing for it and
    checkpoints stay plain data.
    """
    total = max(1, int(total_steps))
    warm = max(0, int(warmup_steps))

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if scheduler == "none":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class SegModule(L.LightningModule):
    """Segmentation network + stage-dependent loss + validation metrics.

    Args:
        cfg: The run's :class:`TrainConfig` (or its dict form, as stored in checkpoints).
        num_classes: Number of classes ``K``.
        classes: Class names in index order (length ``K``).
        build_weights: Build the network with ``cfg.model.weights``; false builds it with
            ``weights: none`` (used when a checkpoint supplies every weight anyway).
    """

    def __init__(
        self,
        cfg: TrainConfig | dict[str, Any],
        num_classes: int,
        classes: list[str],
        build_weights: bool = True,
    ) -> None:
        super().__init__()
        from segweak.models.factory import build_model
        from segweak.weak.methods import build_weak_method

        self.cfg = _as_config(cfg)
        if len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names given for num_classes={num_classes}")
        self.num_classes = int(num_classes)
        self.classes = list(classes)
        # Plain data only: checkpoints must load with weights_only=True.
        self.save_hyperparameters(
            {"cfg": to_dict(self.cfg), "num_classes": self.num_classes, "classes": self.classes}
        )
        model_cfg = self.cfg.model
        if not build_weights:
            model_cfg = type(model_cfg)(**{**model_cfg.__dict__, "weights": "none"})
        self.model = build_model(model_cfg, self.num_classes)
        self.weak_method = build_weak_method(self.cfg.weak, self.num_classes)
        weights = self.cfg.loss.class_weights
        if weights is not None and len(weights) != self.num_classes:
            from segweak.errors import SegweakError

            raise SegweakError(
                f"loss.class_weights has {len(weights)} values but the store has {self.num_classes} classes "
                f"({', '.join(self.classes)}); give one weight per class"
            )
        self.register_buffer(
            "class_weights",
            torch.tensor(weights, dtype=torch.float32) if weights is not None else None,
            persistent=False,
        )
        self.val_metrics = SegMetrics(self.num_classes)
        self.test_metrics = SegMetrics(self.num_classes)
        self._train_loss_acc: torch.Tensor | None = None
        self.train_loss_count = 0
        # Per-epoch rows (epoch, train_loss, val_*) kept in checkpoints so a resumed run keeps them.
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        # Metrics of the latest validation/test pass, and the global step whose weights a validation
        # during fit measured (None after a validate/test call), so the engine can reuse it.
        self.last_metrics: dict[str, Any] | None = None
        self.last_metrics_step: int | None = None
        self._epoch_t0: float | None = None

    # ---- forward & losses --------------------------------------------------------------------------

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Pixel logits.

        Args:
            image: (B, C, H, W) float32 normalised image.

        Returns:
            (B, K, H, W) logits.
        """
        return self.model(image)

    def pixel_loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:func:`pixel_loss` with this run's class weights and Dice weight."""
        return pixel_loss(logits, mask, self.class_weights, self.cfg.loss.dice_weight)

    # ---- the one shared step -----------------------------------------------------------------------

    def _shared_step(self, batch: dict[str, Any], phase: str) -> torch.Tensor:
        """Forward, loss and metrics for one batch of any phase.

        Args:
            batch: Collated dataset dicts: ``image`` (B,C,H,W); ``mask`` (B,H,W) for pixel-labelled
                subsets; ``weak``/``presence`` (B,K); ``valid`` (B,H,W).
            phase: ``train``, ``val`` or ``test``.

        Returns:
            The loss that is optimised (train) or reported (val/test).
        """
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        logits = self(batch["image"])
        bsz = batch["image"].shape[0]
        if phase == "train":
            if self.cfg.stage == "weak":
                if "mask" in batch:  # guard the experiment's premise: weak training never sees pixels
                    raise RuntimeError(
                        "weak-stage training batch carries pixel masks; the weak stage must not"
                    )
                loss = self.weak_method.loss(logits, batch)
            else:
                loss = self.pixel_loss(logits, batch["mask"])
            self.log(
                "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bsz, sync_dist=True
            )
            # Accumulate on the device: a float() here would synchronise the GPU every step.
            acc = loss.detach().to(torch.float64) * bsz
            self._train_loss_acc = acc if self._train_loss_acc is None else self._train_loss_acc + acc
            self.train_loss_count += bsz
            return loss
        # Validation / test: every stage gets the same pixel metrics (and weak metrics).
        loss = self.pixel_loss(logits, batch["mask"])
        self.log(f"{phase}/loss", loss, on_step=False, on_epoch=True, batch_size=bsz, sync_dist=True)
        if self.cfg.stage == "weak":
            self.log(
                f"{phase}/weak_loss",
                self.weak_method.loss(logits, batch),
                on_step=False,
                on_epoch=True,
                batch_size=bsz,
                sync_dist=True,
            )
        metrics = self.val_metrics if phase == "val" else self.test_metrics
        metrics.update(logits.detach(), batch, self.weak_method)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Run :meth:`_shared_step` with phase ``train``."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Run :meth:`_shared_step` with phase ``val``."""
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Run :meth:`_shared_step` with phase ``test``."""
        return self._shared_step(batch, "test")

    # ---- epoch hooks -------------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        """Reset the epoch's loss accumulator and timer (RNG reseeding: ``datamodule.EpochReseed``)."""
        self._train_loss_acc, self.train_loss_count = None, 0
        self._epoch_t0 = time.perf_counter()

    def _epoch_train_loss(self) -> float | None:
        loss_sum = float(self._train_loss_acc) if self._train_loss_acc is not None else 0.0
        total = torch.tensor([loss_sum, float(self.train_loss_count)], dtype=torch.float64)
        if self.trainer is not None and self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total.to(self.device), reduce_op="sum").cpu()
        return float(total[0] / total[1]) if float(total[1]) > 0 else None

    def _record_epoch(self, val: dict[str, Any] | None) -> None:
        epoch = self.current_epoch + 1
        if self.history and self.history[-1]["epoch"] == epoch:
            return
        if self._epoch_t0 is not None:
            self.train_seconds += time.perf_counter() - self._epoch_t0
            self._epoch_t0 = None
        row: dict[str, Any] = {"epoch": epoch, "train_loss": self._epoch_train_loss()}
        for key in ("loss", "miou", "mf1", "oa", "prop_mae", "presence_f1"):
            row[f"val_{key}"] = None if val is None else val.get(key)
        self.history.append(row)

    def _finish_eval_epoch(self, phase: str) -> None:
        metrics = self.val_metrics if phase == "val" else self.test_metrics
        result = metrics.compute(self.classes)
        metrics.reset()
        if self.trainer.sanity_checking:
            return
        loss = self.trainer.callback_metrics.get(f"{phase}/loss")
        result["loss"] = float(loss) if loss is not None else None
        self.last_metrics = result
        self.last_metrics_step = self.trainer.global_step if self.trainer.state.fn == "fit" else None
        scalars = {f"{phase}/{k}": result[k] for k in ("miou", "mf1", "oa", "prop_mae", "presence_f1")}
        for name, iou in result["per_class_iou"].items():
            if iou is not None:
                scalars[f"{phase}/iou_{name}"] = iou
        # Values are already reduced over all processes by the metric objects.
        self.log_dict(
            {k: float("nan") if v is None else float(v) for k, v in scalars.items()}, sync_dist=False
        )
        if phase == "val" and self.trainer.state.fn == "fit":
            self._record_epoch(result)

    def on_validation_epoch_end(self) -> None:
        """Split-wide metrics from the accumulated confusion matrix; record the epoch's history row."""
        self._finish_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Split-wide test metrics."""
        self._finish_eval_epoch("test")

    def on_train_epoch_end(self) -> None:
        """Record a history row for epochs that ran no validation."""
        self._record_epoch(None)

    # ---- checkpoint extras (plain data only) ---------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add segweak's metadata: format version, model signature, classes, history, time."""
        from segweak.models.factory import model_signature

        checkpoint["segweak"] = {
            "format_version": 1,
            "signature": model_signature(self.cfg.model, self.num_classes),
            "classes": list(self.classes),
            "stage": self.cfg.stage,
            "history": [dict(r) for r in self.history],
            "train_seconds": float(self.train_seconds),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the history and training time of a resumed run."""
        extra = checkpoint.get("segweak") or {}
        self.history = [dict(r) for r in extra.get("history", [])]
        self.train_seconds = float(extra.get("train_seconds", 0.0))

    # ---- optimisation ------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW/Adam/SGD with encoder and non-encoder parameter groups, per-step LR schedule."""
        from segweak.models.factory import encoder_parameters

        oc = self.cfg.optim
        enc = [p for p in encoder_parameters(self.model) if p.requires_grad]
        enc_ids = {id(p) for p in enc}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in enc_ids]
        groups = [
            {"params": enc, "lr": oc.encoder_lr if oc.encoder_lr is not None else oc.lr, "name": "encoder"},
            {"params": rest, "lr": oc.lr, "name": "decoder_head"},
        ]
        groups = [g for g in groups if g["params"]]
        if oc.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, lr=oc.lr, weight_decay=oc.weight_decay)
        elif oc.optimizer == "adam":
            opt = torch.optim.Adam(groups, lr=oc.lr, weight_decay=oc.weight_decay)
        else:
            opt = torch.optim.SGD(groups, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)
        if oc.scheduler == "none" and oc.warmup_steps <= 0:
            return {"optimizer": opt}
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda_factory(total, oc.warmup_steps, oc.scheduler)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}


def count_parameters(module: nn.Module) -> int:
    """Count the trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
