"""Benchmark proportion-quota pseudo-labels: ms per 256x256 patch for ``assign_topk`` / ``assign_sinkhorn``.

The teacher is a random softmax (logits ~ N(0, 2²)) with K = 5 classes and proportions
[0.4, 0.3, 0.2, 0.1, 0]; each call is checked to give exactly the largest-remainder quotas. On a GPU
the timings synchronise after each call. ``--check`` also compares every ``segweak.weak`` function on
``--device`` with the CPU result (labels must be equal; losses and the plan close).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/pseudo_labels.py [--device cpu] [--batch 1] [--size 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check(device: torch.device) -> None:
    from segweak.weak import consistency, constraints, pseudo, teacher
    from segweak.weak.augment import strong_photometric

    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4, 5, 64, 64, generator=g)
    p = torch.softmax(torch.randn(4, 5, generator=g), 1)
    p[:, 4] = 0
    p = p / p.sum(1, keepdim=True)
    area = torch.rand(4, 64, 64, generator=g) > 0.1
    q = torch.softmax(logits, 1)
    on = {"logits": logits.to(device), "p": p.to(device), "area": area.to(device), "q": q.to(device)}
    for name, fn in (("topk", pseudo.assign_topk), ("sinkhorn", pseudo.assign_sinkhorn)):
        for keep in (1.0, 0.5):
            cpu = fn(q, p, area, keep=keep)
            dev = fn(on["q"], on["p"], on["area"], keep=keep).cpu()
            print(
                f"{name} keep={keep}: labels equal on {device}: {torch.equal(cpu, dev)}, "
                f"differing pixels {int((cpu != dev).sum())}"
            )
    pairs = {
        "interval_loss": lambda d: constraints.interval_loss(d["logits"], d["p"], 0.1, d["area"]),
        "presence_loss": lambda d: constraints.presence_loss(d["logits"], (d["p"] > 0).float(), d["area"]),
        "fixmatch_targets": lambda d: consistency.fixmatch_targets(d["logits"], 0.9, d["area"])[0],
        "softmax_mse": lambda d: consistency.softmax_mse(d["logits"], d["logits"].flip(0), d["area"]),
    }
    cpu_in = {"logits": logits, "p": p, "area": area, "q": q}
    for name, fn in pairs.items():
        a, b = fn(cpu_in), fn(on).cpu()
        print(f"{name}: max |cpu - {device.type}| = {float((a.float() - b.float()).abs().max()):.3g}")
    x = torch.randn(2, 3, 32, 32, device=device)
    same = torch.equal(strong_photometric(x, 5), strong_photometric(x, 5))
    print(f"strong_photometric deterministic on {device}: {same}")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).to(device)
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).to(device)
    w0 = twin[0].weight.detach().clone()
    teacher.ema_update(twin, net, 0.99)
    print(f"ema_update exact on {device}: {torch.equal(twin[0].weight, 0.99 * w0 + 0.01 * net[0].weight)}")


def main() -> None:
    from segweak.weak.pseudo import assign_sinkhorn, assign_topk, proportion_quotas

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    if args.check:
        _check(device)
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(2 * torch.randn(args.batch, 5, args.size, args.size, generator=g), 1).to(device)
    p = torch.tensor([[0.4, 0.3, 0.2, 0.1, 0.0]]).repeat(args.batch, 1).to(device)
    quota = proportion_quotas(p, torch.full((args.batch,), args.size**2, device=device))
    for fn in (assign_topk, assign_sinkhorn):
        labels = fn(q, p)  # warm-up (and lazy CUDA initialisation)
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.repeat):
            labels = fn(q, p)
        _sync(device)
        ms = (time.perf_counter() - start) / args.repeat / args.batch * 1000
        counts = torch.stack([(labels.flatten(1) == c).sum(1) for c in range(5)], 1)
        assert torch.equal(counts, quota), "counts differ from the quotas"
        print(f"{fn.__name__}: {ms:.1f} ms per {args.size}x{args.size} patch (batch {args.batch})")


if __name__ == "__main__":
    main()
