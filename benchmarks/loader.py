"""Benchmark the training input pipeline: patches/s from ``SegweakDataset`` through a DataLoader.

Uses the default training augmentations (flips + 90° rotations) and normalisation, batch size 8,
256x256 patches. Builds (once, cached) a small synthetic store unless ``--store`` is given.

Target: >= 50 patches/s.

Usage::

    python benchmarks/loader.py [--store STORE] [--workers 2] [--batch 8] [--subset weak] [--batches 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import synthetic_store


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--split", default="default")
    parser.add_argument("--subset", default="weak")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=100, help="batches to time (after 2 warm-up batches)")
    parser.add_argument("--patch", type=int, default=256, help="patch size of the generated store")
    parser.add_argument("--no-augment", action="store_true")
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from segweak.data.dataset import SegweakDataset
    from segweak.data.transforms import default_train_transform

    cache = Path(tempfile.gettempdir()) / "segweak-bench"
    store = args.store or synthetic_store(cache, "loader", patch=args.patch, tile=1024, tiles=4)
    torch.manual_seed(0)
    ds = SegweakDataset(
        store, args.split, args.subset, transform=None if args.no_augment else default_train_transform()
    )
    loader = DataLoader(
        ds,
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        drop_last=True,
    )
    n = 0
    done = 0
    t0 = None
    while done < args.batches + 2:
        for batch in loader:
            done += 1
            if done == 3:  # exclude worker start-up and the first batches from the timing
                t0 = time.perf_counter()
            elif done > 3:
                n += len(batch["index"])
            if done >= args.batches + 2:
                break
    seconds = time.perf_counter() - t0
    shape = tuple(batch["image"].shape)
    print(f"store:        {store} ({len(ds)} patches in subset {args.subset!r})")
    print(f"batch shape:  {shape}, workers {args.workers}, augment {not args.no_augment}")
    print(f"patches/s:    {n / seconds:.0f}   (target >= 50)")


if __name__ == "__main__":
    main()
