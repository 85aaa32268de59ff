"""``train(cfg)``: one training run, written to its run directory.

Run directory (``cfg.run_dir``)::

    config.yaml              resolved TrainConfig (written before training starts; ``methods`` holds
                             the method's resolved options)
    checkpoints/last.ckpt    end of the latest validated epoch (used by ``resume``); once training is
                             over, the final weights (``selection: last`` reports them)
    checkpoints/best.ckpt    best validation mIoU (``selection: best`` reports it)
    logs/csv/version_N/      Lightning CSV logs;  logs/tensorboard/version_N/: TensorBoard
    history.csv              per-epoch metrics: epoch (1-based), step (optimiser steps so far),
                             train_loss, val_loss, val_miou, val_mf1, val_oa, val_prop_mae,
                             val_presence_f1, then train_<term> per loss term of the method
    environment.json         library versions, CPU/GPU, threads, segweak commit (segweak.runtime)
    metrics.json             validation (and test) metrics of the selected checkpoint (written last:
                             marks completion)
    .segweak.lock            while a process trains it (segweak.lock)

``metrics.json`` keys: ``method, seed, epochs, steps, classes, miou, mf1, oa, per_class_iou,
per_class_f1, absent_classes, n_pixels, n_patches, checkpoint`` (path of the selected checkpoint
relative to the run directory), ``selection`` (``best`` or ``last``), ``selected_epoch`` and
``selected_step`` (when the selected weights were saved; 1-based epoch), ``prop_mae, presence_f1,
val_loss, train_seconds, best_epoch`` (1-based epoch of ``best.ckpt``, whatever the selection),
``run_dir`` and what ran: ``optimizer_steps`` (optimiser steps taken; the same number as ``steps``,
both kept for readers of either name), ``steps_per_epoch`` (training batches per epoch after
``trainer.limit_train_batches``), ``epoch_length`` (batches in one full pass of the training loader,
per process), ``data_passes`` (``optimizer_steps / epoch_length``: a run capped by
``limit_train_batches`` or ``max_steps`` shows the fraction of the data it saw) and
``limit_train_batches``; ``weak_labels``: where the weak labels came from (``kind: computed`` from
the masks, or ``kind: imported`` with the set's ``name``, table ``file`` and ``sha256``, ``bags``,
``patches``, ``bags_used``, ``bags_left_out``) and ``used`` (whether the method read weak labels).
With a store that holds eroded-boundary masks, ``eroded``: the same metric keys (and ``n_patches``)
on those. With a split that holds out a ``test`` subset, ``test``: the selected checkpoint's metrics
on the whole test subset (the validation keys ``miou, mf1, oa, per_class_iou, per_class_f1,
absent_classes, absent_false_positives, n_pixels, n_patches, prop_mae, presence_f1, loss`` and, with
eroded masks, ``eroded``); ``segweak evaluate CKPT --subset test`` gives the same numbers.

The final metrics always cover every patch of the ``val`` subset, whatever
``trainer.limit_val_batches`` says (that key only shortens the validations during training). When
the selected checkpoint holds the weights of the last validation and that validation saw the whole
subset, its metrics are reused; otherwise the selected checkpoint is validated once more. The test
subset is evaluated once, after training, and never takes part in the selection.

Several processes (``trainer.strategy: ddp``): every rank runs this function; only rank 0 writes
files, and every rank returns only once ``metrics.json`` exists.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from segweak.config import TrainConfig, dump_yaml
from segweak.data.splits import check_store_and_split
from segweak.errors import SegweakError
from segweak.io import atomic_write_json, atomic_write_text
from segweak.lock import DirectoryLock
from segweak.runtime import record_environment
from segweak.train.budget import ValidateFinalStep, check_budget
from segweak.train.checkpoint import AtomicCheckpointIO, check_classes, load_checkpoint, model_state_dict
from segweak.train.datamodule import EpochReseed, SegDataModule
from segweak.train.module import SegModule
from segweak.train.preflight import check_trainer_hardware

HISTORY_COLUMNS = (
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "val_miou",
    "val_mf1",
    "val_oa",
    "val_prop_mae",
    "val_presence_f1",
)
"""Leading columns of ``history.csv`` (empty cells where a value does not exist); one ``train_<term>``
column per loss term of the method follows."""

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


def is_global_zero() -> bool:
    """Whether this process is rank 0 (always true without ``trainer.strategy: ddp``).

    Under DDP Lightning starts the other ranks as copies of the command; they know their rank from
    the environment (``LOCAL_RANK``, ``RANK``) from the start, and Lightning's DDP strategy sets it
    again when :func:`train` builds its trainer.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _store_classes(store: str | Path, in_channels: int) -> list[str]:
    """Class names of the store; checks that its channels match ``model.in_channels`` first."""
    from segweak.data.store import Store
    from segweak.models.factory import check_in_channels

    st = Store(store)
    check_in_channels(in_channels, st.meta, str(store))
    return list(st.classes)


def _init_from_checkpoint(module: SegModule, cfg: TrainConfig) -> None:
    """Load ``init.checkpoint`` into ``module.model`` weights-only, check it, optionally reset the head."""
    from segweak.models.factory import check_signature, model_signature, reset_head

    path = cfg.init.checkpoint
    assert path is not None
    ckpt = load_checkpoint(path)
    saved_classes = (ckpt.get("hyper_parameters") or {}).get("classes")
    if saved_classes is not None:
        check_classes(list(saved_classes), module.classes, path, f"data.store {cfg.data.store}")
    saved_sig = (ckpt.get("segweak") or {}).get("signature")
    if saved_sig is None:
        raise SegweakError(
            f"init.checkpoint: checkpoint {path} has no model signature; it was not written by segweak"
        )
    check_signature(saved_sig, model_signature(cfg.model, module.num_classes), source=f"checkpoint {path}")
    try:
        module.model.load_state_dict(model_state_dict(ckpt), strict=True)
    except RuntimeError as exc:
        raise SegweakError(f"init.checkpoint: checkpoint {path} does not fit the model: {exc}") from None
    if cfg.init.reset_head:
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
        # SegDataModule shards the data per rank itself: an unpadded validation shard (Lightning's
        # DistributedSampler repeats patches to even out the ranks) and the seeded epoch order.
        use_distributed_sampler=False,
    )


def _check_launcher(trainer: L.Trainer, strategy: str) -> None:
    """Refuse strategies that run training in child processes and hand back only the weights."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        raise SegweakError(
            f"trainer.strategy={strategy!r} trains in spawned/forked processes, whose history and metrics "
            "do not come back to this one; use trainer.strategy=ddp"
        )


def selected_checkpoint(cfg: TrainConfig) -> Path:
    """Path of the checkpoint a finished run of ``cfg`` reports and hands on (``selection``).

    What evaluation, prediction, fine-tuning (``init.checkpoint``) or a teacher should read from the
    run: ``checkpoints/best.ckpt`` for ``selection: best``, ``checkpoints/last.ckpt`` (the final
    weights) for ``selection: last``. ``metrics.json`` ``checkpoint`` names the same file.
    """
    return cfg.run_dir / "checkpoints" / ("last.ckpt" if cfg.selection == "last" else "best.ckpt")


def _saved_at(path: Path) -> tuple[int, int]:
    """``(1-based epoch, global step)`` a checkpoint was saved at."""
    ckpt = load_checkpoint(path)
    return int(ckpt.get("epoch", -1)) + 1, int(ckpt.get("global_step", -1))


def _final_metrics(
    trainer: L.Trainer, module: SegModule, datamodule: SegDataModule, selected: Path, selected_step: int
) -> dict[str, Any]:
    """Return the validation metrics of ``selected`` over the whole validation subset.

    Reuses the last validation of ``fit`` when it measured the selected checkpoint's weights (same
    global step) on every validation patch; otherwise validates ``selected`` again, with
    ``trainer.limit_val_batches`` lifted so that every patch counts.

    Args:
        trainer: The trainer that ran ``fit``.
        module: Its module (``last_metrics`` / ``last_metrics_step`` of the last validation).
        datamodule: Its datamodule.
        selected: The selected checkpoint (``best.ckpt`` or ``last.ckpt``).
        selected_step: The global step ``selected`` was saved at.

    Raises:
        SegweakError: When no validation metrics come out, or they do not cover the whole subset.
    """
    n_val = len(datamodule.val_dataset)
    val = module.last_metrics
    if val is None or module.last_metrics_step != selected_step or val["n_patches"] != n_val:
        # Lightning reads this attribute when the validation loop sets up its batches.
        trainer.limit_val_batches = 1.0
        trainer.validate(
            module, datamodule=datamodule, ckpt_path=str(selected), weights_only=True, verbose=False
        )
        val = module.last_metrics
    if val is None:
        raise SegweakError(f"validation of {selected} produced no metrics")
    if val["n_patches"] != n_val:
        raise SegweakError(
            f"the final validation of {selected} covered {val['n_patches']} of {n_val} validation patches"
        )
    return val


def _test_metrics(
    trainer: L.Trainer, module: SegModule, datamodule: SegDataModule, selected: Path
) -> dict[str, Any]:
    """Evaluate ``selected`` once on the whole ``test`` subset of the split.

    Runs Lightning's test loop on every rank: the subset is sharded without padding (as validation)
    and the metric states are summed over the ranks, so each test patch counts once.

    Raises:
        SegweakError: When the metrics do not cover the whole test subset.
    """
    n_test = len(datamodule.test_dataset)
    trainer.test(module, datamodule=datamodule, ckpt_path=str(selected), weights_only=True, verbose=False)
    test = module.last_metrics
    if test is None or test["n_patches"] != n_test:
        covered = None if test is None else test["n_patches"]
        raise SegweakError(f"the test evaluation of {selected} covered {covered} of {n_test} test patches")
    return {k: v for k, v in test.items() if k != "classes"}


def _progress_bar() -> L.Callback:
    try:
        import rich  # noqa: F401
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar()
    except (ImportError, ModuleNotFoundError):
        from lightning.pytorch.callbacks import TQDMProgressBar

        return TQDMProgressBar()


def _history_csv(rows: list[dict[str, Any]]) -> str:
    columns = list(HISTORY_COLUMNS)
    for row in rows:
        columns += [k for k in row if k.startswith("train_") and k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


# Lightning warnings that say nothing actionable about a segweak run: a deprecation inside Lightning
# itself, the logging interval exceeding a small epoch, the checkpoint folder being non-empty on
# resume (which is how resuming works), and, under DDP, advice to sync the validation metrics that
# SegMetrics has already summed over all ranks.
_KNOWN_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"The number of training batches \(\d+\) is smaller than the logging interval.*",
    r"Checkpoint directory .* exists and is not empty.*",
    r"It is recommended to use `self\.log\('(val|test)/.*sync_dist=True.*",
)


def _silence_known_lightning_noise() -> None:
    for pattern in _KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)


def train(
    cfg: TrainConfig, callbacks: list[L.Callback] | None = None, *, wait: bool | None = None
) -> dict[str, Any]:
    """Train one run of ``cfg.method`` and write the run directory (see the module docstring).

    With ``cfg.resume`` a completed run (``metrics.json`` present) is not retrained: its metrics are
    returned; an interrupted one continues from ``checkpoints/last.ckpt``. The run directory is locked
    for the whole call (:mod:`segweak.lock`), so a second process cannot train into it at the same time.

    Args:
        cfg: The run's configuration.
        callbacks: Extra Lightning callbacks (e.g. for monitoring or tests).
        wait: When another process holds the run directory, wait for it instead of refusing;
            ``None``: the default of the enclosing :func:`segweak.lock.waiting` block (refuse).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        SegweakError: Invalid config (unknown method or option), missing store/split/checkpoint,
            class-count or model mismatch, a run directory that already holds a run while ``resume``
            is false, or one that another segweak process is using.
    """
    from segweak.methods import check_config

    cfg = check_config(cfg)
    check_budget(cfg.trainer)
    if not (cfg.resume and is_complete(cfg.run_dir)):
        # Before the lock creates the run directory: a missing GPU, store, split or a band mismatch
        # would otherwise leave an empty run directory behind or surface as a Lightning traceback.
        check_trainer_hardware(cfg.trainer)
        check_store_and_split(cfg.data.store, cfg.data.split)
        _store_classes(cfg.data.store, cfg.model.in_channels)
        _weak_provenance(cfg)  # an imported weak-label set that is missing fails here, before the lock
    with DirectoryLock(cfg.run_dir, "run directory", wait=wait):
        return _train_locked(cfg, callbacks)


def _weak_provenance(cfg: TrainConfig, datamodule: SegDataModule | None = None) -> dict[str, Any]:
    """Where the run's weak labels came from (``metrics.json`` ``weak_labels``).

    Returns:
        ``{kind: computed, from}`` or ``{kind: imported, name, file, sha256, bags, patches}``; with the
        datamodule also ``used`` (the method read weak labels), ``noise`` (``weak.noise``: ``model``
        and the parameters it uses; with a model, also :func:`segweak.weak.noise.summary` of the
        weak subset's noisy against clean labels) and, for an imported set, ``bags_used`` and
        ``bags_left_out`` (cut by the split).

    Raises:
        SegweakError: When ``weak.labels`` names a set the store does not have.
    """
    from segweak.data.store import open_store
    from segweak.data.weak_tables import provenance

    out = provenance(open_store(cfg.data.store), cfg.weak.labels)
    if datamodule is None:
        return out
    # A method without weak sub-batches (supervised) ran with the setting but never read a label.
    out["used"] = any(need.labels == "weak" for need in datamodule.needs.values())
    for dataset in datamodule.train_datasets.values():
        if getattr(dataset, "bags", None) is not None:
            out["bags_used"] = len(set(dataset.bags.tolist()))
            out["bags_left_out"] = int(dataset.bags_dropped)
    out["noise"] = _noise_record(cfg, datamodule)
    return out


def _noise_record(cfg: TrainConfig, datamodule: SegDataModule) -> dict[str, Any]:
    """``weak_labels.noise``: the model, its parameters and how far it moved the weak subset's labels.

    Measured on the whole weak subset, one row per label (per patch, or per bag wholly inside the
    subset with imported labels), whichever sub-batches the method reads: ``pseudo_label`` reads the
    noisy proportions through its quotas only.
    """
    import numpy as np

    from segweak.data.dataset import SegweakDataset
    from segweak.weak.noise import is_active, parameters, summary

    record = parameters(cfg.weak.noise)
    if not is_active(cfg.weak.noise):
        return record
    weak = SegweakDataset(
        datamodule.store,
        cfg.data.split,
        "weak",
        with_mask=False,
        with_valid=False,
        weak_set=datamodule.weak_set(),
        noise=cfg.weak.noise,
    )
    assert weak.weak is not None and weak.clean_weak is not None
    rows = slice(None) if weak.bags is None else np.unique(weak.bags, return_index=True)[1]
    return {**record, **summary(weak.clean_weak[rows], weak.weak[rows], weak.presence_threshold)}


def _train_locked(cfg: TrainConfig, callbacks: list[L.Callback] | None) -> dict[str, Any]:
    """:func:`train` while holding the run directory's lock (``cfg`` already checked)."""
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
    classes = _store_classes(cfg.data.store, cfg.model.in_channels)  # store checked by train()
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
        ValidateFinalStep(),
        *(callbacks or []),
    ]
    if cfg.trainer.progress_bar:
        all_callbacks.append(_progress_bar())
    # Lightning's "GPU available but not used" style notices are noise in logs of CPU runs.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    _silence_known_lightning_noise()
    # The trainer is built before anything is written: it knows this process's rank.
    trainer = L.Trainer(
        logger=loggers,
        callbacks=all_callbacks,
        default_root_dir=run_dir,
        plugins=[AtomicCheckpointIO()],
        **_trainer_kwargs(cfg),
    )
    _check_launcher(trainer, cfg.trainer.strategy)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))

    module = SegModule(cfg, len(classes), classes, build_weights=resume_from is None)
    if cfg.init.checkpoint and resume_from is None:
        _init_from_checkpoint(module, cfg)
    datamodule = SegDataModule(cfg, module.needs)
    datamodule.check_world_size(trainer.world_size)

    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    fit_seconds = time.perf_counter() - t0
    if trainer.interrupted:
        raise SegweakError(f"training of {run_dir} was interrupted; rerun with resume=true to continue")
    if trainer.is_global_zero:
        record_environment(run_dir)  # library versions, CPU/GPU, threads, commit: what fixes the digits
    # What ran (before the final validation restores the best checkpoint's state).
    steps_per_epoch = trainer.num_training_batches
    epoch_length = datamodule.epoch_length(trainer.world_size)

    # Validating the selected checkpoint below restores its older history: keep the final one.
    history = [dict(r) for r in module.history]
    train_seconds = float(module.train_seconds)
    epochs, steps = int(trainer.current_epoch), int(trainer.global_step)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else ckpt_dir / "best.ckpt"
    if not best.is_file():
        # ValidateFinalStep validates the last step of every budget, so this is not a config problem.
        raise SegweakError(f"no best checkpoint was written in {ckpt_dir}: training ended without validating")
    best_epoch, best_step = _saved_at(best)
    selected = best if cfg.selection == "best" else last
    selected_epoch, selected_step = (best_epoch, best_step) if selected == best else _saved_at(selected)
    if cfg.selection == "last" and selected_step != steps:
        # last.ckpt is saved after every validation and ValidateFinalStep validates the final step.
        raise SegweakError(
            f"{last} holds step {selected_step}, not the final step {steps}; rerun the training"
        )
    val = _final_metrics(trainer, module, datamodule, selected, selected_step)
    test = (
        _test_metrics(trainer, module, datamodule, selected) if datamodule.test_dataset is not None else None
    )
    metrics: dict[str, Any] = {
        "method": cfg.method,
        "seed": cfg.trainer.seed,
        "epochs": epochs,
        "steps": steps,
        "optimizer_steps": steps,
        "steps_per_epoch": int(steps_per_epoch) if math.isfinite(steps_per_epoch) else None,
        "epoch_length": epoch_length,
        "data_passes": round(steps / epoch_length, 4) if epoch_length else None,
        "limit_train_batches": cfg.trainer.limit_train_batches,
        "classes": list(classes),
        **{k: v for k, v in val.items() if k != "loss"},
        "val_loss": val.get("loss"),
        "checkpoint": str(selected.relative_to(run_dir))
        if selected.is_relative_to(run_dir)
        else str(selected),
        "selection": cfg.selection,
        "selected_epoch": selected_epoch,
        "selected_step": selected_step,
        "train_seconds": round(train_seconds if train_seconds > 0 else fit_seconds, 3),
        "best_epoch": best_epoch,
        "run_dir": str(run_dir),
        "weak_labels": _weak_provenance(cfg, datamodule),
    }
    if test is not None:
        metrics["test"] = test
    if trainer.is_global_zero:
        atomic_write_text(run_dir / "history.csv", _history_csv(history))
        atomic_write_json(run_dir / "metrics.json", metrics)
    # Other ranks return only once the run is complete on disk (segweak run checks it next).
    trainer.strategy.barrier("segweak-metrics-written")
    return metrics
