"""Evaluate a checkpoint on a subset of a split: the same metrics as training's validation.

:class:`~segweak.metrics.SegMetrics` is the one metric accumulator used both by
:class:`~segweak.train.module.SegModule` (validation/test, DDP-synced via torchmetrics) and by
:func:`evaluate` (a plain PyTorch loop), so a run's ``metrics.json`` and ``segweak evaluate`` agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segweak.data.dataset import SegweakDataset
from segweak.data.store import Store
from segweak.errors import SegweakError
from segweak.io import atomic_write_json
from segweak.metrics import SegMetrics
from segweak.models.factory import check_in_channels
from segweak.train.checkpoint import build_model_from_checkpoint, check_classes, load_checkpoint
from segweak.train.preflight import check_device, check_output_file, check_positive


def evaluate(
    checkpoint: str | Path,
    store: str | Path,
    split: str = "default",
    subset: str = "val",
    batch_size: int = 16,
    device: str = "cpu",
    out: str | Path | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one subset of a split of a prepared store.

    The checkpoint is loaded weights-only; the network is rebuilt from the model config recorded in
    its hyperparameters.

    Args:
        checkpoint: ``.ckpt`` written by ``segweak train``.
        store: Prepared store directory.
        split: Split manifest name.
        subset: ``val``, ``test`` (a split that has one), ``strong``, ``weak``, ``full`` or ``all``
            (masks are loaded for all of them; eroded masks too when the store has them).
        batch_size: Batch size.
        device: Torch device string, e.g. ``cpu`` or ``cuda``.
        out: Optional JSON file to write the metrics to (atomically).
        num_workers: DataLoader workers.

    Returns:
        ``metrics_from_confusion`` keys (miou, mf1, oa, per_class_iou, ..., n_pixels) plus
        ``n_patches``, ``prop_mae``, ``presence_f1``, ``checkpoint``, ``store``, ``split``, ``subset``,
        and ``eroded`` (metrics on the eroded-boundary masks) when the store has them.

    Raises:
        SegweakError: Bad options (device, batch size, ``out``), missing checkpoint/store/split, or
            classes or input bands that differ between checkpoint and store; all before any work.
    """
    dev = check_device(device)
    check_positive(batch_size, "--batch-size")
    if num_workers < 0:
        raise SegweakError(f"num_workers must be >= 0, got {num_workers}")
    if out is not None:
        check_output_file(out)
    ckpt = load_checkpoint(checkpoint)
    model, cfg, classes = build_model_from_checkpoint(ckpt, checkpoint)
    st = Store(store)
    check_classes(classes, st.classes, checkpoint, f"store {store}")
    check_in_channels(cfg.model.in_channels, st.meta, str(store), str(checkpoint))
    dataset = SegweakDataset(st, split, subset, with_mask=True, with_eroded=st.has_eroded_masks)
    if len(dataset) == 0:
        raise SegweakError(
            f"subset {subset!r} of split {split!r} in store {store} is empty; nothing to evaluate"
        )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    model.to(dev)
    metrics = SegMetrics(len(classes)).to(dev)
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            metrics.update(model(batch["image"]), batch, cfg.weak.area, cfg.weak.presence_threshold)
    result = metrics.compute(classes)
    result.update(checkpoint=str(checkpoint), store=str(store), split=split, subset=subset)
    if out is not None:
        atomic_write_json(out, result)
    return result
