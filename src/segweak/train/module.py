"""SegModule: the training task shared by every training method.

The task owns what does not depend on the method: the network, the optimiser and LR schedule,
validation and test (pixel loss, a split-wide confusion matrix and the weak metrics: proportion MAE and
presence F1 against the patches' weak labels, so every method is comparable on validation mIoU), the
per-epoch history and the checkpoint extras. What a training step computes belongs to the method
(:mod:`segweak.methods`), a child module ``self.method`` whose state is therefore in checkpoints:

* :meth:`SegModule.training_step` hands the method its named sub-batches and gets named loss terms;
  their sum is optimised, and each term is logged (``train/<term>``, per-epoch means in
  ``history.csv`` as ``train_<term>``) next to ``train/loss``;
* protocol guards: a sub-batch whose need has no pixel labels must not carry ``mask``, and an
  unlabelled one no weak labels either (a bug in data code must not leak labels silently).

Only plain data goes into the hyperparameters (the config as a dict, class count and names), so
checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch

from segweak.config import TrainConfig, from_dict, migrate_train_dict, to_dict
from segweak.errors import SegweakError
from segweak.methods import build_method
from segweak.metrics import SegMetrics
from segweak.models.factory import build_model, encoder_parameters, model_signature
from segweak.models.losses import pixel_loss

EVAL_PHASES = ("val", "test")
CHECKPOINT_FORMAT_VERSION = 2
"""Version of the ``segweak`` checkpoint extras (2: training methods; 1 had ``stage``)."""


def _as_config(cfg: TrainConfig | dict[str, Any]) -> TrainConfig:
    return cfg if isinstance(cfg, TrainConfig) else from_dict(TrainConfig, migrate_train_dict(cfg)[0])


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
    """Segmentation network + training method + validation metrics.

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
        self.method = build_method(self.cfg, self.num_classes)
        self.needs = self.method.needs()
        weights = self.cfg.loss.class_weights
        if weights is not None and len(weights) != self.num_classes:
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
        # Per-epoch sums on the device (a float() per step would synchronise the GPU every step):
        # the total loss, then each term, all weighted by the step's number of images.
        self._train_acc: torch.Tensor | None = None
        self._term_names: list[str] = []
        self.train_loss_count = 0
        # Per-epoch rows (epoch, step, train_loss, val_*, train_<term>) kept in checkpoints so a
        # resumed run keeps them.
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        # Metrics of the latest validation/test pass, and the global step whose weights a validation
        # during fit measured (None after a validate/test call), so the engine can reuse it.
        self.last_metrics: dict[str, Any] | None = None
        self.last_metrics_step: int | None = None
        self._epoch_t0: float | None = None
        # Last: a method may build state from the network (e.g. a teacher copy) here.
        self.method.setup(self)

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

    # ---- training: the method's loss terms ----------------------------------------------------------

    def _named_batches(self, batch: Any) -> dict[str, dict[str, Any]]:
        """Return the step's sub-batches by need name, checked against what each need may carry."""
        batches = {next(iter(self.needs)): batch} if len(self.needs) == 1 else dict(batch)
        for name, need in self.needs.items():
            sub = batches.get(name)
            if sub is None:
                raise RuntimeError(f"training batch has no sub-batch {name!r} (method {self.method.name!r})")
            # Guard the experiment's premise: data without pixel labels never reaches a method with them.
            if need.labels != "mask" and "mask" in sub:
                raise RuntimeError(
                    f"sub-batch {name!r} carries pixel masks but its need has labels {need.labels!r}"
                )
            if need.labels == "none" and ("weak" in sub or "presence" in sub or "valid" in sub):
                raise RuntimeError(f"unlabelled sub-batch {name!r} carries weak labels or a valid map")
            if need.labels == "weak" and self.cfg.weak.area == "patch" and "valid" in sub:
                raise RuntimeError(f"sub-batch {name!r} carries a valid map although weak.area is 'patch'")
            if need.views > 1:
                extra = self.method.make_views(self, name, sub, need.views)
                if len(extra) != need.views - 1:
                    raise RuntimeError(
                        f"method {self.method.name!r} made {len(extra)} extra views of {name!r}, "
                        f"expected {need.views - 1}"
                    )
                sub["views"] = [sub["image"], *extra]
        return batches

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Sum and log the method's loss terms for one step.

        Args:
            batch: The collated batch of the method's only need, or ``{need name: collated batch}``
                for several needs (``CombinedLoader``).
            batch_idx: Index of the batch in the epoch.

        Returns:
            The optimised loss: the sum of the terms, in the order the method returned them.
        """
        batches = self._named_batches(batch)
        terms = self.method.training_step(self, batches)
        if not terms:
            raise RuntimeError(f"method {self.method.name!r} returned no loss terms")
        loss: torch.Tensor | None = None
        for name, term in terms.items():
            if name == "loss" or "/" in name:
                raise RuntimeError(
                    f"method {self.method.name!r}: loss term name {name!r} is reserved or has '/'"
                )
            loss = term if loss is None else loss + term
        assert loss is not None
        bsz = sum(int(sub["image"].shape[0]) for sub in batches.values())
        # sync_dist: under DDP the logged loss is the mean over the ranks, not rank 0's share.
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bsz, sync_dist=True
        )
        for name, term in terms.items():
            self.log(
                f"train/{name}", term.detach(), on_step=True, on_epoch=True, batch_size=bsz, sync_dist=True
            )
        if self._train_acc is None:
            self._term_names = list(terms)
        elif self._term_names != list(terms):
            raise RuntimeError(
                f"method {self.method.name!r} returned loss terms {list(terms)} after {self._term_names} "
                "in the same epoch; return the same terms every step (a zero term is fine)"
            )
        # Accumulate on the device: a float() here would synchronise the GPU every step.
        values = torch.stack([loss.detach(), *(t.detach() for t in terms.values())]).to(torch.float64) * bsz
        self._train_acc = values if self._train_acc is None else self._train_acc + values
        self.train_loss_count += bsz
        return loss

    def on_fit_start(self) -> None:
        """Let the method prepare (after any checkpoint was loaded)."""
        self.method.on_fit_start(self)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Let the method update its state after the optimiser step (e.g. an EMA teacher)."""
        self.method.on_train_batch_end(self)

    # ---- validation / test: one shared step ------------------------------------------------------

    def _eval_step(self, batch: dict[str, Any], phase: str) -> torch.Tensor:
        """Forward, pixel loss and metrics for one validation or test batch (same for every method).

        Args:
            batch: Collated dataset dicts: ``image`` (B,C,H,W), ``mask`` (B,H,W), ``weak``/``presence``
                (B,K), ``valid`` (B,H,W).
            phase: ``val`` or ``test``.

        Returns:
            The pixel loss (reported).
        """
        if phase not in EVAL_PHASES:
            raise ValueError(f"phase must be one of {EVAL_PHASES}, got {phase!r}")
        logits = self(batch["image"])
        bsz = batch["image"].shape[0]
        loss = self.pixel_loss(logits, batch["mask"])
        self.log(f"{phase}/loss", loss, on_step=False, on_epoch=True, batch_size=bsz, sync_dist=True)
        for name, value in self.method.validation_terms(self, logits, batch).items():
            self.log(f"{phase}/{name}", value, on_step=False, on_epoch=True, batch_size=bsz, sync_dist=True)
        metrics = self.val_metrics if phase == "val" else self.test_metrics
        metrics.update(logits.detach(), batch, self.cfg.weak.area, self.cfg.weak.presence_threshold)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Run :meth:`_eval_step` with phase ``val``."""
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Run :meth:`_eval_step` with phase ``test``."""
        return self._eval_step(batch, "test")

    # ---- epoch hooks -------------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        """Reset the epoch's loss accumulators and timer (RNG reseeding: ``datamodule.EpochReseed``)."""
        self._train_acc, self.train_loss_count = None, 0
        self._epoch_t0 = time.perf_counter()

    def _epoch_train_means(self) -> dict[str, float | None]:
        """Image-weighted means over the epoch: ``train_loss`` and ``train_<term>``, reduced over ranks."""
        names = ["train_loss", *(f"train_{t}" for t in self._term_names)]
        sums = self._train_acc.cpu() if self._train_acc is not None else torch.zeros(1, dtype=torch.float64)
        total = torch.cat([sums, torch.tensor([float(self.train_loss_count)], dtype=torch.float64)])
        if self.trainer is not None and self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total.to(self.device), reduce_op="sum").cpu()
        count = float(total[-1])
        if count <= 0:
            return {"train_loss": None}
        return {name: float(total[i] / count) for i, name in enumerate(names)}

    def _record_epoch(self, val: dict[str, Any] | None) -> None:
        epoch = self.current_epoch + 1
        if self.history and self.history[-1]["epoch"] == epoch:
            return
        if self._epoch_t0 is not None:
            self.train_seconds += time.perf_counter() - self._epoch_t0
            self._epoch_t0 = None
        means = self._epoch_train_means()
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": int(self.global_step),
            "train_loss": means.pop("train_loss"),
        }
        for key in ("loss", "miou", "mf1", "oa", "prop_mae", "presence_f1"):
            row[f"val_{key}"] = None if val is None else val.get(key)
        row.update(means)
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
        checkpoint["segweak"] = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "signature": model_signature(self.cfg.model, self.num_classes),
            "classes": list(self.classes),
            "method": self.cfg.method,
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
