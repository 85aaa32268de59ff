"""``train(cfg)``: one training run, written to its run directory.

Run directory (``cfg.run_dir``)::

    config.yaml              resolved TrainConfig (written before training starts)
    checkpoints/last.ckpt    end of the latest validated epoch (used by ``resume``)
    checkpoints/best.ckpt    best validation mIoU
    logs/csv/version_N/      Lightning CSV logs;  logs/tensorboard/version_N/: TensorBoard
    history.csv              per-epoch metrics: epoch (1-based), train_loss, val_loss, val_miou, val_mf1,
                             val_oa, val_prop_mae, val_presence_f1
    metrics.json             validation metrics of the best checkpoint (written last: marks completion)

``metrics.json`` keys: ``stage, seed, epochs, classes, miou, mf1, oa, per_class_iou, per_class_f1,
absent_classes, n_pixels, checkpoint`` (path of the best checkpoint relative to the run directory),
``prop_mae, presence_f1, train_seconds, best_epoch`` (1-based), ``run_dir``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from segweak.config import TrainConfig, dump_yaml
from segweak.errors import SegweakError
from segweak.io import atomic_write_json, atomic_write_text
from segweak.train.checkpoint import AtomicCheckpointIO, check_classes, load_checkpoint, model_state_dict
from segweak.train.datamodule import EpochReseed, SegDataModule, check_store_and_split
from segweak.train.module import SegModule
from segweak.train.preflight import check_in_channels, check_trainer_hardware

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_miou",
    "val_mf1",
    "val_oa",
    "val_prop_mae",
    "val_presence_f1",
)
"""Columns of ``history.csv`` (empty cells where a value does not exist)."""

MONITOR = "val/miou"


def is_complete(run_dir: str | Path) -> bool:
    """Whether a run directory holds a finished run (its ``metrics.json`` exists and parses)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return False
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return True


def _store_classes(store: str | Path) -> list[str]:
    from segweak.data.store import Store

    return list(Store(store).classes)


def _init_from_checkpoint(module: SegModule, cfg: TrainConfig) -> None:
    """Load ``finetune.init_from`` into ``module.model`` weights-only, check it, optionally reset the head."""
    from segweak.models.factory import check_signature, model_signature, reset_head

    path = cfg.finetune.init_from
    assert path is not None
    ckpt = load_checkpoint(path)
    saved_classes = (ckpt.get("hyper_parameters") or {}).get("classes")
    if saved_classes is not None:
        check_classes(list(saved_classes), module.classes, path, f"data.store {cfg.data.store}")
    saved_sig = (ckpt.get("segweak") or {}).get("signature")
    if saved_sig is None:
        raise SegweakError(
            f"finetune.init_from: checkpoint {path} has no model signature; it was not written by segweak"
        )
    check_signature(saved_sig, model_signature(cfg.model, module.num_classes), source=f"checkpoint {path}")
    try:
        module.model.load_state_dict(model_state_dict(ckpt), strict=True)
    except RuntimeError as exc:
        raise SegweakError(f"finetune.init_from: checkpoint {path} does not fit the model: {exc}") from None
    if cfg.finetune.reset_head:
        reset_head(module.model)


def _trainer_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    tc = cfg.trainer
    deterministic: bool | str = tc.deterministic
    if tc.deterministic and tc.accelerator != "cpu":
        # Some CUDA kernels (e.g. bilinear upsampling backward) have no deterministic version; warn
        # instead of failing so GPU runs work with the default config.
        deterministic = "warn"
    return dict(
        max_epochs=tc.max_epochs,
        max_steps=tc.max_steps,
        accelerator=tc.accelerator,
        devices=tc.devices,
        strategy=tc.strategy,
        precision=tc.precision,
        deterministic=deterministic,
        log_every_n_steps=tc.log_every_n_steps,
        check_val_every_n_epoch=tc.check_val_every_n_epoch,
        enable_progress_bar=tc.progress_bar,
        limit_train_batches=tc.limit_train_batches,
        limit_val_batches=tc.limit_val_batches,
        enable_model_summary=False,
    )


def _progress_bar() -> L.Callback:
    try:
        import rich  # noqa: F401
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar()
    except (ImportError, ModuleNotFoundError):
        from lightning.pytorch.callbacks import TQDMProgressBar

        return TQDMProgressBar()


def _history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in HISTORY_COLUMNS})
    return buf.getvalue()


# Lightning warnings that say nothing actionable about a segweak run: a deprecation inside Lightning
# itself, the logging interval exceeding a small epoch, and the checkpoint folder being non-empty on
# resume (which is how resuming works).
_KNOWN_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"The number of training batches \(\d+\) is smaller than the logging interval.*",
    r"Checkpoint directory .* exists and is not empty.*",
)


def _silence_known_lightning_noise() -> None:
    for pattern in _KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)


def train(cfg: TrainConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train one stage and write the run directory (see the module docstring).

    With ``cfg.resume`` a completed run (``metrics.json`` present) is not retrained: its metrics are
    returned; an interrupted one continues from ``checkpoints/last.ckpt``.

    Args:
        cfg: The run's configuration.
        callbacks: Extra Lightning callbacks (e.g. for monitoring or tests).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        SegweakError: Invalid config, missing store/split/checkpoint, class-count or model mismatch,
            or a run directory that already holds a run while ``resume`` is false.
    """
    cfg.validate()
    run_dir = cfg.run_dir
    if cfg.resume and is_complete(run_dir):
        return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    resume_from = last if cfg.resume and last.is_file() else None
    if not cfg.resume and (is_complete(run_dir) or any(ckpt_dir.glob("*.ckpt"))):
        raise SegweakError(
            f"run directory {run_dir} already holds a run; set resume=true to continue/reuse it, "
            "choose another run_name, or delete the directory"
        )
    check_store_and_split(cfg.data.store, cfg.data.split)
    # Before anything is written or built: a missing GPU or a band mismatch would otherwise surface as
    # a traceback from Lightning or from the first convolution.
    check_trainer_hardware(cfg.trainer)
    check_in_channels(cfg.model.in_channels, cfg.data.store)
    classes = _store_classes(cfg.data.store)
    if resume_from is not None:
        # Refuse non-weights-only content with a clear message before Lightning reads it.
        saved = load_checkpoint(resume_from)
        check_classes(
            list((saved.get("hyper_parameters") or {}).get("classes", classes)),
            classes,
            resume_from,
            f"data.store {cfg.data.store}",
        )
        del saved

    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))

    module = SegModule(cfg, len(classes), classes, build_weights=resume_from is None)
    if cfg.stage == "finetune" and resume_from is None:
        _init_from_checkpoint(module, cfg)
    datamodule = SegDataModule(cfg)

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = [
        CSVLogger(run_dir / "logs", name="csv"),
        TensorBoardLogger(run_dir / "logs", name="tensorboard"),
    ]
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_last=False,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # Lightning 2.6 writes save_last=True's last.ckpt only when a top-k checkpoint was saved in the same
    # step, i.e. only when val mIoU improved; a separate unmonitored callback writes it every epoch.
    # It comes after ``checkpoint`` so last.ckpt records the updated best-so-far state.
    last_checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    all_callbacks: list[L.Callback] = [
        checkpoint,
        last_checkpoint,
        EpochReseed(cfg.trainer.seed),
        *(callbacks or []),
    ]
    if cfg.trainer.progress_bar:
        all_callbacks.append(_progress_bar())
    # Lightning's "GPU available but not used" style notices are noise in logs of CPU runs.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    _silence_known_lightning_noise()
    trainer = L.Trainer(
        logger=loggers,
        callbacks=all_callbacks,
        default_root_dir=run_dir,
        plugins=[AtomicCheckpointIO()],
        **_trainer_kwargs(cfg),
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    fit_seconds = time.perf_counter() - t0
    if trainer.interrupted:
        raise SegweakError(f"training of {run_dir} was interrupted; rerun with resume=true to continue")

    # trainer.validate below restores the best checkpoint (and its older history): keep the final ones.
    history = [dict(r) for r in module.history]
    train_seconds = float(module.train_seconds)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else ckpt_dir / "best.ckpt"
    if not best.is_file():
        raise SegweakError(
            f"no best checkpoint was written in {ckpt_dir}; did validation run (trainer.limit_val_batches)?"
        )
    best_ckpt = load_checkpoint(best)
    best_epoch = int(best_ckpt.get("epoch", -1)) + 1
    del best_ckpt
    # Evaluate the best weights on the whole val subset with the same metric code as validation.
    trainer.validate(module, datamodule=datamodule, ckpt_path=str(best), weights_only=True, verbose=False)
    val = module.last_metrics
    if val is None:
        raise SegweakError(f"validation of {best} produced no metrics")
    metrics: dict[str, Any] = {
        "stage": cfg.stage,
        "seed": cfg.trainer.seed,
        "epochs": int(trainer.current_epoch),
        "classes": list(classes),
        **{k: v for k, v in val.items() if k != "loss"},
        "val_loss": val.get("loss"),
        "checkpoint": str(best.relative_to(run_dir)) if best.is_relative_to(run_dir) else str(best),
        "train_seconds": round(train_seconds if train_seconds > 0 else fit_seconds, 3),
        "best_epoch": best_epoch,
        "run_dir": str(run_dir),
    }
    if trainer.is_global_zero:
        atomic_write_text(run_dir / "history.csv", _history_csv(history))
        atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def load_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Read ``history.csv`` of a run as rows of floats (None for empty cells; ``epoch`` as int)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise SegweakError(f"{path} not found; is {run_dir} a finished training run?")
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rows.append(
                {
                    k: (int(v) if k == "epoch" else float(v)) if v not in ("", None) else None
                    for k, v in row.items()
                }
            )
    return rows
