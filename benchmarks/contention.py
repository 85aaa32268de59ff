"""`segweak demo` wall time on an idle CPU and next to busy processes, with and without segweak's defaults.

torch's OpenMP threads spin-wait between parallel regions; when another process takes a core, the
spinning threads fight it and the demo slows down many times over. segweak's CLI sets
``OMP_WAIT_POLICY=PASSIVE`` and one torch thread per available CPU (``segweak.runtime``). This script
measures the effect: each mode runs the demo in a fresh process and a fresh temporary directory,

* ``before``: ``SEGWEAK_THREADS=torch-default``, i.e. no thread variables set (torch's defaults, as
  segweak behaved before it set any);
* ``after``: segweak's defaults,

each idle and next to ``--busy`` competing processes (plain Python busy loops, not pinned, so the
scheduler places them like any other program). ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY`` and
``SEGWEAK_THREADS`` of the calling shell are removed from the demo's environment so both modes start
from the same defaults. The load average is printed before and after: other load on the machine
skews every number, so rerun when it is high.

Usage::

    python benchmarks/contention.py [--quick] [--seeds 0,1,2] [--busy 1] [--repeat 1]
        [--modes before,after] [--conditions idle,busy] [--timeout 3600]

``--quick`` runs ``segweak demo --quick`` (seconds; a smoke test of this script, its timings say little).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Environment of each mode on top of the cleaned environment.
MODES = {"before": {"SEGWEAK_THREADS": "torch-default"}, "after": {}}
CLEANED = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "SEGWEAK_THREADS", "SEGWEAK_SET_ENV", "MKL_NUM_THREADS")
BUSY_LOOP = "while True:\n    pass\n"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_demo(mode: str, busy: int, quick: bool, seeds: str | None, timeout: float) -> tuple[float, int]:
    """Run ``segweak demo`` once; return (wall seconds, exit code). Busy loops run only around it."""
    env = {k: v for k, v in os.environ.items() if k not in CLEANED}
    env.update(MODES[mode])
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory(prefix="segweak-contention-") as tmp:
            cmd = [sys.executable, "-m", "segweak.cli", "demo", "--out", str(Path(tmp) / "demo")]
            if quick:
                cmd.append("--quick")
            if seeds:
                cmd += ["--seeds", seeds]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    cmd,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    timeout=timeout,
                )
                code = proc.returncode
                if code != 0:
                    print(
                        f"  {mode}/{busy} busy: exit code {code}: {proc.stderr.strip()[-500:]}",
                        file=sys.stderr,
                    )
            except subprocess.TimeoutExpired:
                code = -1
            return time.perf_counter() - t0, code
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="segweak demo --quick (smoke test of the script)")
    ap.add_argument("--seeds", default=None, help="passed to segweak demo --seeds (default: demo.yaml's)")
    ap.add_argument("--busy", type=int, default=1, help="competing busy processes in the 'busy' condition")
    ap.add_argument("--repeat", type=int, default=1, help="runs per mode and condition")
    ap.add_argument("--modes", default="before,after", help="comma-separated: before, after")
    ap.add_argument("--conditions", default="idle,busy", help="comma-separated: idle, busy")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds before a demo run is abandoned")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    conditions = [c for c in args.conditions.split(",") if c]
    for m in modes:
        if m not in MODES:
            ap.error(f"--modes: unknown mode {m!r} (before, after)")
    for c in conditions:
        if c not in ("idle", "busy"):
            ap.error(f"--conditions: unknown condition {c!r} (idle, busy)")

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"segweak demo{' --quick' if args.quick else ''}; {cpus} CPU(s); load average {_load()}")
    results: dict[tuple[str, str], list[float]] = {}
    failed = False
    for _ in range(args.repeat):
        for cond in conditions:
            for mode in modes:
                busy = args.busy if cond == "busy" else 0
                seconds, code = run_demo(mode, busy, args.quick, args.seeds, args.timeout)
                failed |= code != 0
                shown = f"{seconds:.1f} s" if code == 0 else f"failed (exit {code}) after {seconds:.1f} s"
                print(f"  {mode:<6} {cond:<4} ({busy} busy process(es)): {shown}", flush=True)
                results.setdefault((mode, cond), []).append(seconds if code == 0 else float("nan"))
    print(f"load average after: {_load()}")
    print()
    header = ["mode"] + [f"{c} ({args.busy if c == 'busy' else 0} busy)" for c in conditions]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for mode in modes:
        cells = []
        for cond in conditions:
            times = results[(mode, cond)]
            cells.append(" / ".join(f"{t:.0f} s" if t == t else "failed" for t in times))
        label = "before (SEGWEAK_THREADS=torch-default)" if mode == "before" else "after (segweak defaults)"
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
