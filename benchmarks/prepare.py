"""Benchmark ``segweak prepare``: seconds, patches/s and peak memory on a Vaihingen-sized data set.

Generates (once, cached) a synthetic Vaihingen root with ``--tiles`` tiles of ``--height`` x ``--width``
pixels (default 33 tiles of 2000x2500, about the real data set), then prepares it with ``--patch`` in a
child process, so the reported peak RSS is the prepare step's alone (``ru_maxrss`` of the child, which
the parent also reads back as ``RUSAGE_CHILDREN``).

Targets (2 CPU cores): <= 60 s and peak RSS <= 2 GB for the default size.

Usage::

    python benchmarks/prepare.py [--tiles 33] [--height 2000] [--width 2500] [--patch 256] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb(ru_maxrss: int) -> float:
    # Linux reports kilobytes, macOS bytes.
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


def _child(args: argparse.Namespace) -> None:
    from segweak.data.sources import VaihingenSource
    from segweak.data.store import Store, prepare

    t0 = time.perf_counter()
    out = prepare(
        VaihingenSource(args.data),
        args.out,
        patch=args.patch,
        stride=args.stride,
        overwrite=True,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    n = len(Store(out))
    peak = _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(json.dumps({"seconds": seconds, "patches": n, "peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, default=33)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--width", type=int, default=2500)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="cache dir of the synthetic root")
    parser.add_argument("--out", type=Path, default=None, help="store path (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the prepared store")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    if args.data is None:
        args.data = (
            Path(tempfile.gettempdir())
            / "segweak-bench"
            / f"synthetic-{args.tiles}x{args.height}x{args.width}-seed{args.seed}"
        )
    if not (args.data / "synth.json").exists():
        from segweak.data.synthetic import synthesize

        print(f"generating {args.tiles} synthetic tiles of {args.height}x{args.width} in {args.data} ...")
        t0 = time.perf_counter()
        synthesize(
            args.data,
            n_tiles=args.tiles,
            height=args.height,
            width=args.width,
            seed=args.seed,
            overwrite=True,
        )
        print(f"  generated in {time.perf_counter() - t0:.1f} s (cached for later runs)")
    tmp = None
    if args.out is None:
        tmp = Path(tempfile.mkdtemp(prefix="segweak-bench-store-"))
        args.out = tmp / "store"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--data",
        str(args.data),
        "--out",
        str(args.out),
        "--patch",
        str(args.patch),
    ]
    if args.stride is not None:
        cmd += ["--stride", str(args.stride)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"prepare failed:\n{proc.stderr}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        children_peak = _rss_mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        size_mb = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 2**20
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"tiles:            {args.tiles} x {args.height}x{args.width} px")
    print(f"patch/stride:     {args.patch}/{args.stride or args.patch}")
    print(f"patches:          {res['patches']}")
    print(f"store size:       {size_mb:.0f} MB")
    print(f"seconds:          {res['seconds']:.1f}   (target <= 60 s on 2 cores)")
    print(f"patches/s:        {res['patches'] / res['seconds']:.0f}")
    print(
        f"peak RSS:         {res['peak_rss_mb']:.0f} MB (children: {children_peak:.0f} MB; target <= 2048 MB)"
    )


if __name__ == "__main__":
    main()
