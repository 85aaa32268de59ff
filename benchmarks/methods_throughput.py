"""Training throughput of every registered training method, relative to plain ``supervised``.

Each method trains the same network (FPN + EfficientNet-Lite0 by default, ``--tiny`` for the
smallest timm encoder) with the same ``data.batch_size`` on the same synthetic store, through the
real task and datamodule (:class:`~segweak.train.module.SegModule`,
:class:`~segweak.train.datamodule.SegDataModule`, a Lightning ``Trainer``) with validation,
checkpoints and loggers off. A callback times ``--steps`` optimiser steps after ``--warmup`` untimed
ones (data loading included; on CUDA the device is synchronised at both ends). Methods run in
``--rounds`` round-robin rounds, so load from other processes hits them alike; the median round of
each method is reported.

Columns: the method's sub-batches, images loaded per step (every sub-batch; extra views a method makes
on the device are not counted), steps/s, images/s and steps/s relative to ``supervised`` (strong
subset, one sub-batch): what one optimiser step of the method costs. A method that cannot run
without an artefact or a checkpoint (e.g. ``pseudo_label`` without ``methods.pseudo_label.labels``, a
``requires_init`` method without ``--init``) is listed as skipped with the reason; ``--set`` passes
training-config overrides to every method (e.g. ``--set methods.pseudo_label.labels=DIR``).

On a machine shared with other busy processes the numbers are not meaningful; the load average is
printed before and after. Threads follow segweak's defaults (:mod:`segweak.runtime`: passive OpenMP
waiting, ``SEGWEAK_THREADS`` / ``OMP_NUM_THREADS``); prefer ``--threads 1`` on a loaded CPU.

Usage::

    python benchmarks/methods_throughput.py [--tiny] [--device cpu|cuda] [--patch 64] [--batch 16]
        [--warmup 3] [--steps 20] [--rounds 3] [--threads N] [--methods supervised proportion ...]
        [--init CKPT] [--set key=value ...] [--store STORE --split NAME]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import synthetic_store

SPLIT = "bench"
FRACTIONS = (0.3, 0.5, 0.2)
"""strong / weak / val: a strong subset large enough for whole batches of the strong sub-batches."""


def _images(batch: Any, names: list[str]) -> int:
    """Images loaded in one training batch (one collated dict, or one per sub-batch name)."""
    if len(names) == 1:
        return int(batch["image"].shape[0])
    return sum(int(batch[n]["image"].shape[0]) for n in names)


def measure(cfg: Any, warmup: int, steps: int, device: str) -> dict[str, Any]:
    """Train ``warmup + steps`` optimiser steps of ``cfg.method`` and time the last ``steps``.

    Returns:
        ``{"steps_per_s", "images_per_step", "subbatches"}``.

    Raises:
        SegweakError: When the method cannot be built or run with this config.
    """
    import lightning as L
    import torch

    from segweak.data.store import Store
    from segweak.methods import check_config
    from segweak.train.datamodule import SegDataModule
    from segweak.train.engine import _init_from_checkpoint
    from segweak.train.module import SegModule

    cfg = check_config(cfg)
    classes = list(Store(cfg.data.store).classes)
    module = SegModule(cfg, len(classes), classes)
    if cfg.init.checkpoint:
        _init_from_checkpoint(module, cfg)
    datamodule = SegDataModule(cfg, module.needs)
    names = list(module.needs)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.t0: float | None = None
            self.t1 = 0.0
            self.images: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: D102
            if trainer.global_step == warmup:
                sync()
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
            if self.t0 is not None:
                self.images.append(_images(batch, names))
                if trainer.global_step == warmup + steps:
                    sync()
                    self.t1 = time.perf_counter()

    timer = Timer()
    trainer = L.Trainer(
        max_steps=warmup + steps,
        max_epochs=-1,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=cfg.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    if timer.t0 is None or len(timer.images) != steps:
        raise RuntimeError(f"timed {len(timer.images)} of {steps} steps of {cfg.method}")
    return {
        "steps_per_s": steps / (timer.t1 - timer.t0),
        "images_per_step": statistics.mean(timer.images),
        "subbatches": ", ".join(f"{n}:{need.subset}/{need.labels}" for n, need in module.needs.items()),
    }


def method_config(args: argparse.Namespace, store: Path, method: str, out: Path) -> Any:
    """Training config of ``method`` for the benchmark (same network, batch and store for all)."""
    from segweak.config import TrainConfig, load_config

    sets = [
        f"method={method}",
        f"data.store={store}",
        f"data.split={args.split}",
        f"data.batch_size={args.batch}",
        f"out_dir={out}",
        f"run_name={method}",
        f"model.encoder={'tu-test_efficientnet' if args.tiny else args.encoder}",
        "model.weights=none",  # weights do not change the cost of a step
        "trainer.progress_bar=false",
        f"trainer.precision={args.precision}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
    ]
    if args.init:
        sets.append(f"init.checkpoint={args.init}")
    return load_config(TrainConfig, None, sets + list(args.set))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print the table and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tu-test_efficientnet instead of --encoder")
    parser.add_argument("--encoder", default="tu-tf_efficientnet_lite0")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", default="32-true", help="trainer.precision, e.g. 16-mixed on CUDA")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--tiles", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16, help="data.batch_size of every method")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    parser.add_argument("--init", default=None, help="init.checkpoint for methods that require one")
    parser.add_argument("--set", action="append", default=[], help="training-config override (repeatable)")
    parser.add_argument("--cache", default=None, help="directory for the synthetic store (default: temp)")
    parser.add_argument("--store", default=None, help="a prepared store instead of the synthetic one")
    parser.add_argument("--split", default=SPLIT, help="split of --store")
    args = parser.parse_args(argv)

    import logging

    from segweak import runtime

    # Before torch loads OpenMP: segweak's thread defaults (passive waiting), as the CLI sets them.
    runtime.configure_threads()
    import torch

    from segweak.errors import SegweakError
    from segweak.methods import METHODS

    # Lightning's per-fit notices (devices, tips, "max_steps reached") would bury the table.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.methods or ["supervised", *sorted(m for m in METHODS if m != "supervised")]
    if "supervised" not in names:
        names = ["supervised", *names]
    with tempfile.TemporaryDirectory(prefix="segweak-methods-") as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        if args.store:
            store = Path(args.store)
        else:
            store = synthetic_store(
                cache, "methods", patch=args.patch, tile=args.tile, tiles=args.tiles, split=SPLIT,
                fractions=FRACTIONS,
            )  # fmt: skip
        load0 = os.getloadavg()
        results: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
        skipped: dict[str, str] = {}
        for rnd in range(args.rounds):
            for m in names:
                if m in skipped:
                    continue
                try:
                    cfg = method_config(args, store, m, Path(tmp) / f"runs-{rnd}")
                    results[m].append(measure(cfg, args.warmup, args.steps, args.device))
                except SegweakError as exc:
                    skipped[m] = str(exc)
        load1 = os.getloadavg()

    encoder = "tu-test_efficientnet" if args.tiny else args.encoder
    size = "store " + str(args.store) if args.store else f"{args.patch} px"
    print(
        f"FPN + {encoder}, {size}, data.batch_size {args.batch}, {args.device}, "
        f"{runtime.thread_summary().split(';')[0]}, {args.steps} timed steps after {args.warmup}, "
        f"median of {args.rounds} round(s); load average {load0[0]:.1f} -> {load1[0]:.1f}"
    )
    rows = []
    ref = (
        statistics.median(r["steps_per_s"] for r in results["supervised"])
        if results["supervised"]
        else math.nan
    )
    header = f"{'method':<20} {'sub-batches':<38} {'img/step':>8} {'steps/s':>8} {'img/s':>8} "
    header += f"{'vs supervised':>13}"
    print(header)
    print("-" * len(header))
    for m in names:
        if m in skipped:
            print(f"{m:<20} skipped: {skipped[m]}")
            rows.append({"method": m, "skipped": skipped[m]})
            continue
        rate = statistics.median(r["steps_per_s"] for r in results[m])
        per_step = results[m][0]["images_per_step"]
        row = {
            "method": m,
            "subbatches": results[m][0]["subbatches"],
            "images_per_step": per_step,
            "steps_per_s": rate,
            "images_per_s": rate * per_step,
            "relative_steps_per_s": rate / ref,
        }
        rows.append(row)
        print(
            f"{m:<20} {row['subbatches']:<38} {per_step:>8.1f} {rate:>8.2f} {row['images_per_s']:>8.1f} "
            f"{row['relative_steps_per_s']:>13.2f}"
        )
    return rows


if __name__ == "__main__":
    main()
