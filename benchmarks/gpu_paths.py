"""GPU paths check: mixed precision, DDP on one device and a real-size training step, through the CLI.

What a user runs on a GPU is ``segweak train`` with ``trainer.accelerator=gpu`` and, for several GPUs,
``trainer.strategy=ddp`` and ``trainer.precision=16-mixed`` / ``bf16-mixed``. The unit tests cover
these paths on the CPU only (gloo DDP, bf16 on the CPU); this script runs them on a real GPU:

1. ``supervised`` (strong patches), FPN + EfficientNet-Lite0 (offline ImageNet weights), 256² patches,
   ``16-mixed``: throughput (images/s over the timed steps) and ``metrics.json`` equal to
   ``segweak evaluate`` of the same checkpoint (n_pixels included);
2. the same with ``strategy=ddp, devices=1`` (the DDP code path on one device): completes, and
   ``metrics.json`` equals ``evaluate``;
3. ``proportion`` (weak pre-training) and ``joint`` (strong + weak sub-batches) with ``bf16-mixed``:
   finite metrics;
4. each run's ``environment.json`` names the GPU.

Each run is a separate ``python -m segweak.cli train`` process, as a user would start it. The store
must be prepared beforehand (``segweak prepare`` + ``segweak split``); a split with at least
``--batch`` strong patches is needed.

Usage::

    python benchmarks/gpu_paths.py --store stores/gpu256 --out /tmp/gpu-paths [--batch 16] [--steps 60]

It prints one line per check and a JSON summary (also written to ``OUT/summary.json``); the exit
code is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _train(out: Path, name: str, store: Path, sets: list[str]) -> tuple[dict[str, Any], float]:
    """Run ``segweak train`` in a subprocess; return its metrics.json and wall seconds."""
    cmd = [
        sys.executable,
        "-m",
        "segweak.cli",
        "train",
        "--set",
        f"data.store={store}",
        "--set",
        f"out_dir={out}",
        "--set",
        f"run_name={name}",
        "--set",
        "trainer.progress_bar=false",
        "--set",
        "trainer.accelerator=gpu",
    ]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = out / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"{name}: segweak train exited {proc.returncode}\n{tail}")
    return json.loads((out / name / "metrics.json").read_text()), wall


def _evaluate(out: Path, name: str, store: Path) -> dict[str, Any]:
    """``segweak evaluate`` of a run's best checkpoint on the val subset (JSON written to a file)."""
    result = out / f"{name}-evaluate.json"
    cmd = [
        sys.executable,
        "-m",
        "segweak.cli",
        "evaluate",
        str(out / name / "checkpoints" / "best.ckpt"),
        "--store",
        str(store),
        "--subset",
        "val",
        "--device",
        "cuda",
        "--out",
        str(result),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluate {name} exited {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(result.read_text())


def _same_metrics(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, str]:
    """Pixel counts must match exactly; scores to float rounding (AMP kernels are not bit-stable)."""
    if a.get("n_pixels") != b.get("n_pixels"):
        return False, f"n_pixels {a.get('n_pixels')} vs {b.get('n_pixels')}"
    for key in ("miou", "oa"):
        x, y = a.get(key), b.get(key)
        if x is None or y is None or not math.isclose(x, y, rel_tol=0, abs_tol=2e-3):
            return False, f"{key} {x} vs {y}"
    return True, f"n_pixels {a['n_pixels']}, mIoU {a['miou']:.4f} vs {b['miou']:.4f}"


def main() -> int:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps of the throughput run")
    args = parser.parse_args()
    store, out = args.store.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = [f"data.batch_size={args.batch}", "trainer.log_every_n_steps=5"]
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str, **extra: Any) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail, **extra})
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)

    runs = {
        "amp16": ["method=supervised", "trainer.precision=16-mixed", f"trainer.max_steps={args.steps}"],
        "ddp1": [
            "method=supervised",
            "trainer.precision=16-mixed",
            "trainer.strategy=ddp",
            "trainer.devices=1",
            "trainer.max_steps=20",
        ],
        "weak_bf16": ["method=proportion", "trainer.precision=bf16-mixed", "trainer.max_steps=20"],
        "joint_bf16": ["method=joint", "trainer.precision=bf16-mixed", "trainer.max_steps=20"],
    }
    for name, sets in runs.items():
        try:
            metrics, wall = _train(out, name, store, common + sets)
        except RuntimeError as exc:
            check(name, False, str(exc).splitlines()[0])
            print(str(exc), file=sys.stderr)
            continue
        finite = all(isinstance(metrics.get(k), float) and math.isfinite(metrics[k]) for k in ("miou", "oa"))
        steps = metrics.get("optimizer_steps") or metrics.get("steps")
        seconds = metrics.get("train_seconds")
        ips = args.batch * steps / seconds if steps and seconds else None
        check(
            f"{name} trains",
            finite,
            f"mIoU {metrics.get('miou')}, {steps} steps, {seconds} s in training"
            + (f", {ips:.1f} img/s (validation included)" if ips else "")
            + f", {wall:.0f} s wall",
            images_per_second=ips,
        )
        env = json.loads((out / name / "environment.json").read_text())
        gpus = env.get("gpus") or []
        check(f"{name} environment.json names the GPU", bool(gpus), ", ".join(map(str, gpus)) or "none")
        if name in ("amp16", "ddp1"):
            try:
                ev = _evaluate(out, name, store)
                ok, detail = _same_metrics(metrics, ev)
            except RuntimeError as exc:
                ok, detail = False, str(exc).splitlines()[0]
            check(f"{name} metrics.json equals evaluate", ok, detail)
    summary = {"checks": checks, "ok": all(c["ok"] for c in checks)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
