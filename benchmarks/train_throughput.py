"""Engine overhead: segweak's training/inference paths vs bare PyTorch loops on the same model and data.

Training: the same model, batch size and training subset go

* through ``segweak.train.engine.train`` itself (the real SegModule, SegDataModule, Trainer, callbacks,
  CSV + TensorBoard loggers, progress bar as configured) with a step-timing callback, and
* through a bare loop: ``DataLoader`` over the same ``SegweakDataset`` (same augmentations),
  forward, cross-entropy (ignore 255), backward, AdamW step.

The arms are interleaved step by step: a callback runs one bare step after each engine step, so load
from other processes hits both alike. Each of ``--rounds`` rounds is a fresh engine run (one epoch of
``--warmup + --steps`` batches) with a fresh bare model; the first ``--warmup`` steps of each arm are
excluded. An engine step is the interval between its ``on_train_batch_end`` calls minus the bare step
run in between (data loading, logging, progress bar, LR schedule included); the engine's validation
runs after the timed steps and is excluded. Target: engine/bare images/s (wall clock) >= 0.95; the
CPU-time ratio is printed too (less sensitive to other processes with ``--threads 1``).

Inference: ``segweak.evaluate.predict.predict_probabilities`` (sliding window, Gaussian blending) over
one whole tile vs a bare ``model(x)`` forward over the same windows (already cut out, same batch size).
``--infer-rounds`` alternating rounds. Target: engine/bare windows/s >= 0.9.

Both arms use the same ``torch.set_num_threads`` (``--threads``, default: torch's current value). The
machine may be shared: the load average is printed before and after; rerun when it is high. On a
loaded 2-core machine prefer ``--threads 1``: OpenMP threads spin-waiting against other processes
make 2-thread timings several times slower and very noisy.

Usage::

    python benchmarks/train_throughput.py [--arch fpn] [--encoder tu-tf_efficientnet_lite0] [--patch 128]
        [--batch 8] [--rounds 3] [--warmup 2] [--steps 10] [--threads 2] [--workers 0] [--no-progress-bar]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

from _common import synthetic_store

TRAIN_TARGET = 0.95
INFER_TARGET = 0.9
SPLIT = "bench"
STRONG_FRACTION = 0.8


def _ensure_store(cache: Path, patch: int, tile: int, min_strong: int) -> Path:
    """Build (once) a synthetic store whose ``bench`` split has >= ``min_strong`` strong patches."""
    per_tile = (tile // patch) ** 2
    n_tiles = max(2, math.ceil(min_strong / (per_tile * STRONG_FRACTION * 0.95)) + 1)
    val = 1.0 - STRONG_FRACTION - 0.05
    return synthetic_store(
        cache, "throughput", patch=patch, tile=tile, tiles=n_tiles, split=SPLIT,
        fractions=(STRONG_FRACTION, 0.05, val),
    )  # fmt: skip


class BareLoop:
    """A plain PyTorch training loop over the strong subset, advanced one step at a time.

    DataLoader over the same ``SegweakDataset`` (same augmentations), forward, cross-entropy (ignore
    255), backward, AdamW step with the engine's default ``lr``/``weight_decay``.
    """

    def __init__(self, args: argparse.Namespace, store: Path, rnd: int) -> None:
        import torch
        from torch.utils.data import DataLoader

        from segweak.config import ModelConfig, OptimConfig
        from segweak.data.dataset import SegweakDataset
        from segweak.data.transforms import default_train_transform
        from segweak.models.factory import build_model

        torch.manual_seed(rnd)
        ds = SegweakDataset(store, SPLIT, "strong", transform=default_train_transform(seed=rnd))
        gen = torch.Generator()
        gen.manual_seed(rnd)
        loader = DataLoader(
            ds, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers, generator=gen
        )
        self.batches = iter(loader)
        self.model = build_model(
            ModelConfig(arch=args.arch, encoder=args.encoder, weights="none"), ds.num_classes
        ).train()
        oc = OptimConfig()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=oc.lr, weight_decay=oc.weight_decay)
        self.threads = args.threads

    def step(self) -> tuple[float, float]:
        """One full iteration (data included): (wall seconds, process CPU seconds)."""
        import torch
        import torch.nn.functional as F

        t0, c0 = time.perf_counter(), time.process_time()
        with torch.enable_grad():
            batch = next(self.batches)
            loss = F.cross_entropy(self.model(batch["image"]), batch["mask"], ignore_index=255)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        if torch.get_num_threads() != self.threads:
            raise RuntimeError("torch thread count changed during the bare loop")
        return time.perf_counter() - t0, time.process_time() - c0


def train_round(args: argparse.Namespace, store: Path, out: Path, rnd: int) -> dict[str, float]:
    """One engine run through ``engine.train`` with a bare step after each engine step.

    Interleaving step by step makes load from other processes hit both arms alike. The engine's
    step times are the intervals between its ``on_train_batch_end`` calls minus the bare step run in
    between. Returns summed wall and CPU seconds of the timed steps of each arm.
    """
    import lightning as L
    import torch

    from segweak.config import TrainConfig, load_config
    from segweak.train.engine import train

    n = args.warmup + args.steps
    # The bare arm is built first so it does not disturb the engine's seeding.
    bare = BareLoop(args, store, rnd)
    eng_wall: list[float] = []
    eng_cpu: list[float] = []
    bare_wall: list[float] = []
    bare_cpu: list[float] = []
    threads: set[int] = set()

    class Interleave(L.Callback):
        last: tuple[float, float] | None = None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # noqa: D102
            now = (time.perf_counter(), time.process_time())
            threads.add(torch.get_num_threads())
            if self.last is not None:
                eng_wall.append(now[0] - self.last[0])
                eng_cpu.append(now[1] - self.last[1])
            wall, cpu = bare.step()
            bare_wall.append(wall)
            bare_cpu.append(cpu)
            # The engine's next interval starts after the bare step.
            self.last = (time.perf_counter(), time.process_time())

    cfg = load_config(
        TrainConfig,
        None,
        [
            "method=supervised",
            f"data.store={store}",
            f"data.split={SPLIT}",
            f"data.batch_size={args.batch}",
            f"data.num_workers={args.workers}",
            f"model.arch={args.arch}",
            f"model.encoder={args.encoder}",
            "model.weights=none",
            f"out_dir={out}",
            f"run_name=engine-r{rnd}",
            "trainer.max_epochs=1",
            # The epoch ends right after the timed steps, so validation (1 batch) is never timed.
            f"trainer.limit_train_batches={n}",
            "trainer.limit_val_batches=1",
            f"trainer.progress_bar={str(not args.no_progress_bar).lower()}",
            f"trainer.seed={rnd}",
        ],
    )
    train(cfg, callbacks=[Interleave()])
    if threads != {args.threads}:
        raise RuntimeError(f"torch thread count changed during the engine run: {sorted(threads)}")
    if len(eng_wall) != n - 1 or len(bare_wall) != n:
        raise RuntimeError(f"{len(eng_wall) + 1} engine steps ran; expected {n}")
    # eng_* entry i is engine step i + 1 (step 0 has no start stamp; it is warm-up anyway).
    w = args.warmup
    return {
        "engine_wall": sum(eng_wall[w - 1 :]),
        "engine_cpu": sum(eng_cpu[w - 1 :]),
        "bare_wall": sum(bare_wall[w:]),
        "bare_cpu": sum(bare_cpu[w:]),
    }


def inference_rounds(args: argparse.Namespace, store: Path) -> tuple[dict[str, float], int]:
    """Alternate predict_probabilities and bare forwards over one tile: summed seconds, window count."""
    import torch

    from segweak.config import ModelConfig
    from segweak.data.store import Store, StoreTiles
    from segweak.data.tiling import windows
    from segweak.data.transforms import normalize
    from segweak.evaluate.predict import predict_probabilities, stride_for
    from segweak.models.factory import build_model

    st = Store(store)
    tiles = StoreTiles(st)
    image = tiles.image(tiles.ids()[0])
    x = torch.from_numpy(normalize(image, st.mean, st.std))
    k = st.num_classes
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=args.arch, encoder=args.encoder, weights="none"), k).eval()
    window = args.patch
    origins = windows(tuple(x.shape[1:]), window, stride_for(window, args.overlap))
    cut = torch.stack([x[:, r : r + window, c : c + window] for r, c in origins])  # (N, C, P, P)
    bs = args.infer_batch

    def engine() -> None:
        predict_probabilities(model, x, k, window, args.overlap, "gaussian", bs)

    @torch.no_grad()
    def bare() -> None:
        for i in range(0, len(cut), bs):
            model(cut[i : i + bs])

    engine()  # warm-up
    bare()
    totals = {"engine_wall": 0.0, "engine_cpu": 0.0, "bare_wall": 0.0, "bare_cpu": 0.0}
    for rnd in range(args.infer_rounds):
        for name, fn in (("engine", engine), ("bare", bare)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            totals[f"{name}_wall"] += time.perf_counter() - t0
            totals[f"{name}_cpu"] += time.process_time() - c0
        print(f"inference, rounds 1-{rnd + 1}: {_rates(totals, len(origins) * (rnd + 1), 'windows')}")
    return totals, len(origins)


def _rates(t: dict[str, float], n: float, unit: str) -> str:
    return (
        f"engine {n / t['engine_wall']:.2f} {unit}/s, bare {n / t['bare_wall']:.2f} {unit}/s "
        f"(wall ratio {t['bare_wall'] / t['engine_wall']:.3f}, CPU-time ratio "
        f"{t['bare_cpu'] / t['engine_cpu']:.3f})"
    )


def _verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio >= target else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="fpn")
    parser.add_argument("--encoder", default="tu-tf_efficientnet_lite0")
    parser.add_argument("--patch", type=int, default=128, help="patch (and inference window) side")
    parser.add_argument("--tile", type=int, default=512, help="side of the synthetic tiles")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per round (>= 1)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (both arms)")
    parser.add_argument("--no-progress-bar", action="store_true", help="engine: trainer.progress_bar=false")
    parser.add_argument("--overlap", type=float, default=0.5, help="inference window overlap")
    parser.add_argument("--infer-rounds", type=int, default=5, help="alternating inference rounds")
    parser.add_argument("--infer-batch", type=int, default=8, help="windows per inference forward")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-infer", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "segweak-bench")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be >= 1")

    import torch

    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    store = _ensure_store(args.cache, args.patch, args.tile, (args.warmup + args.steps) * args.batch)
    print(
        f"model {args.arch}/{args.encoder} (weights none), patch {args.patch}, batch {args.batch}, "
        f"threads {args.threads}, workers {args.workers}, store {store}"
    )
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs)")
    ok = True
    lines = []
    if not args.skip_train:
        tot = {"engine_wall": 0.0, "engine_cpu": 0.0, "bare_wall": 0.0, "bare_cpu": 0.0}
        with tempfile.TemporaryDirectory(prefix="segweak-throughput-") as tmp:
            for rnd in range(args.rounds):
                r = train_round(args, store, Path(tmp), rnd)
                tot = {k: tot[k] + r[k] for k in tot}
                print(f"train round {rnd + 1}: {_rates(r, args.steps * args.batch, 'img')}")
        ratio = tot["bare_wall"] / tot["engine_wall"]
        ok &= ratio >= TRAIN_TARGET
        lines.append(
            f"TRAIN  {_rates(tot, args.rounds * args.steps * args.batch, 'img')}  "
            f"target wall ratio >= {TRAIN_TARGET}: {_verdict(ratio, TRAIN_TARGET)}"
        )
    if not args.skip_infer:
        tot, n = inference_rounds(args, store)
        ratio = tot["bare_wall"] / tot["engine_wall"]
        ok &= ratio >= INFER_TARGET
        lines.append(
            f"INFER  {_rates(tot, args.infer_rounds * n, 'windows')}  [{n} windows of {args.patch}px, "
            f"overlap {args.overlap}, over a {args.tile}px tile]  "
            f"target wall ratio >= {INFER_TARGET}: {_verdict(ratio, INFER_TARGET)}"
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
