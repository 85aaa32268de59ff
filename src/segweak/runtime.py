"""Process runtime: CPU thread defaults set before torch starts, and the environment record of runs.

**Threads.** torch's OpenMP threads spin-wait for work between parallel regions. When another process
takes one of the cores, the spinning threads compete with it and a run slows down many times over
(a CPU demo run took minutes instead of seconds next to one busy process). ``segweak.cli`` therefore
calls :func:`configure_threads` when it is imported, before anything imports torch:

* ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep instead of spinning), unless you set
  ``OMP_WAIT_POLICY`` yourself;
* ``OMP_NUM_THREADS`` = the number of CPUs this process may use (its CPU affinity, lowered by a cgroup
  CPU quota), unless you set ``OMP_NUM_THREADS``; ``SEGWEAK_THREADS=N`` sets it to ``N`` and wins over
  both;
* ``SEGWEAK_THREADS=torch-default`` leaves both variables alone: torch's (and OpenMP's) own defaults,
  i.e. segweak's behaviour before these defaults existed.

The settings are environment variables, so processes segweak starts (data loader workers, DDP ranks)
inherit them. segweak used as a library (``import segweak...`` from your own program) changes nothing:
your program owns its threads. :func:`thread_summary` is the line the CLI prints for every run.

**Environment record.** :func:`environment` collects what decides a run's exact digits: versions of
torch, segmentation-models-pytorch, timm, lightning, numpy and friends, Python, the CPU and GPU
models, the BLAS torch was built with, thread settings and the git commit of segweak itself. Every run
directory gets it as ``environment.json`` (:func:`record_environment`), the experiment's
``results.json`` as ``environment``, and the report's setup section shows it. Same machine + same
library versions + same thread count give identical digits; another CPU or BLAS build gives slightly
different digits (floating-point sums in another order), which must not change the conclusions.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segweak import __version__

THREADS_ENV = "SEGWEAK_THREADS"
"""``N`` (torch threads) or ``torch-default`` (segweak sets no thread variables)."""

TORCH_DEFAULT = "torch-default"

MARKER_ENV = "SEGWEAK_SET_ENV"
"""Names of the variables segweak set (not you), so child processes can tell the two apart."""

WAIT_POLICY = "PASSIVE"

#: Distributions whose versions are recorded (their versions change kernels and thus digits).
PACKAGES = (
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "timm",
    "lightning",
    "numpy",
    "albumentations",
)

#: Keys of :func:`environment`'s result compared by :func:`environment_differences`.
COMPARED_KEYS = ("segweak", "python", "packages", "cpu", "gpus", "blas", "threads")


@dataclass(frozen=True)
class ThreadPolicy:
    """Which thread settings segweak chose, and why.

    Attributes:
        threads: ``OMP_NUM_THREADS`` in effect (``None``: not set, torch chooses).
        source: Where ``threads`` comes from: ``"SEGWEAK_THREADS"``, ``"OMP_NUM_THREADS"`` (yours),
            ``"available CPUs"`` or ``"torch default"``.
        wait_policy: ``OMP_WAIT_POLICY`` in effect (``None``: not set, the OpenMP runtime's default).
        wait_source: ``"yours"``, ``"segweak default"`` or ``"not set"``.
        cpus: CPUs available to the process (:func:`available_cpus`).
        error: Why ``SEGWEAK_THREADS`` was rejected (the CLI reports it as an error), else ``None``.
    """

    threads: int | None
    source: str
    wait_policy: str | None
    wait_source: str
    cpus: int
    error: str | None = None


def _cgroup_cpu_limit(cgroup_root: Path, proc_cgroup: Path) -> int | None:
    """Whole CPUs allowed by a cgroup CPU quota (v2 ``cpu.max``, v1 ``cfs_quota_us``), else ``None``."""
    candidates: list[Path] = []
    try:
        for line in proc_cgroup.read_text(encoding="utf-8").splitlines():
            if line.startswith("0::"):  # cgroup v2: "0::/path/of/this/process"
                candidates.append(cgroup_root / line[3:].lstrip("/") / "cpu.max")
    except OSError:
        pass
    candidates.append(cgroup_root / "cpu.max")
    for path in candidates:
        try:
            quota, period = path.read_text(encoding="utf-8").split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None
        return max(1, math.floor(int(quota) / int(period)))
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return max(1, math.floor(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


def available_cpus(
    cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup"
) -> int:
    """CPUs this process may run on: its CPU affinity, lowered to a cgroup CPU quota (containers).

    Args:
        cgroup_root: Mount point of the cgroup filesystem (a parameter for tests).
        proc_cgroup: This process's cgroup membership file (a parameter for tests).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(Path(cgroup_root), Path(proc_cgroup))
    return max(1, min(n, limit) if limit else n)


def decide_threads(environ: Mapping[str, str], cpus: int) -> ThreadPolicy:
    """Choose thread settings from the environment (pure; :func:`configure_threads` applies them).

    Args:
        environ: The process environment.
        cpus: CPUs available to the process.

    Returns:
        The policy. An invalid ``SEGWEAK_THREADS`` gives the defaults plus ``error``.
    """
    ours = {name for name in environ.get(MARKER_ENV, "").split(",") if name}
    user = {k: environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in environ and k not in ours}
    raw = environ.get(THREADS_ENV, "").strip()
    user_wait = user.get("OMP_WAIT_POLICY")
    if raw == TORCH_DEFAULT:
        omp = user.get("OMP_NUM_THREADS")
        return ThreadPolicy(
            threads=int(omp) if omp and omp.strip().isdigit() else None,
            source="OMP_NUM_THREADS" if omp else "torch default",
            wait_policy=user_wait,
            wait_source="yours" if user_wait else "not set",
            cpus=cpus,
        )
    wait = (user_wait, "yours") if user_wait else (WAIT_POLICY, "segweak default")
    error = None
    if raw:
        if raw.isdigit() and int(raw) >= 1:
            return ThreadPolicy(int(raw), THREADS_ENV, *wait, cpus=cpus)
        error = (
            f"{THREADS_ENV}={raw!r} is not a thread count: set a positive integer, "
            f"'{TORCH_DEFAULT}' (torch's own defaults), or unset it"
        )
    if "OMP_NUM_THREADS" in user:
        omp = user["OMP_NUM_THREADS"].strip()
        threads = int(omp) if omp.isdigit() else None
        return ThreadPolicy(threads, "OMP_NUM_THREADS", *wait, cpus=cpus, error=error)
    return ThreadPolicy(cpus, "available CPUs", *wait, cpus=cpus, error=error)


_POLICY: ThreadPolicy | None = None


def configure_threads(environ: MutableMapping[str, str] | None = None) -> ThreadPolicy:
    """Set ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` as :func:`decide_threads` chose (see module doc).

    Call it before torch is imported: OpenMP reads these variables once, when torch loads it. Calling it
    again recomputes the same policy (segweak's own settings are marked in ``SEGWEAK_SET_ENV``).

    Args:
        environ: Environment to modify; default ``os.environ``.

    Returns:
        The policy now in effect.
    """
    global _POLICY
    env = os.environ if environ is None else environ
    policy = decide_threads(env, available_cpus())
    ours = {name for name in env.get(MARKER_ENV, "").split(",") if name}
    if policy.source in (THREADS_ENV, "available CPUs"):
        env["OMP_NUM_THREADS"] = str(policy.threads)
        ours.add("OMP_NUM_THREADS")
    if policy.wait_source == "segweak default":
        env["OMP_WAIT_POLICY"] = WAIT_POLICY
        ours.add("OMP_WAIT_POLICY")
    if ours:
        env[MARKER_ENV] = ",".join(sorted(ours))
    if environ is None:
        _POLICY = policy
    return policy


def configured_policy() -> ThreadPolicy | None:
    """Return the policy :func:`configure_threads` set in this process (``None``: used as a library)."""
    return _POLICY


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def thread_summary() -> str:
    """One line: the torch threads and OpenMP wait policy in effect, and where they come from."""
    policy = _POLICY
    actual = _torch_threads()
    n = "?" if actual is None else str(actual)
    wait = os.environ.get("OMP_WAIT_POLICY") or "not set"
    if policy is None:
        return f"CPU threads: {n} torch thread(s), OMP_WAIT_POLICY {wait} (set by the program using segweak)"
    why = {
        THREADS_ENV: f"{THREADS_ENV}={os.environ.get(THREADS_ENV, '').strip()}",
        "OMP_NUM_THREADS": "your OMP_NUM_THREADS",
        "available CPUs": f"the {policy.cpus} CPU(s) available to this process",
        "torch default": f"torch's default ({THREADS_ENV}={TORCH_DEFAULT})",
    }[policy.source]
    wait_why = {"yours": "yours", "segweak default": "segweak's default", "not set": "OpenMP's default"}
    line = f"CPU threads: {n} torch thread(s) from {why}; OMP_WAIT_POLICY {wait}"
    line += f" ({wait_why[policy.wait_source]})"
    if policy.threads is not None and actual is not None and actual != policy.threads:
        line += f"; torch uses {actual}, not {policy.threads}: it was configured before segweak started"
    return line + f"; change with {THREADS_ENV}=N or OMP_NUM_THREADS / OMP_WAIT_POLICY"


# ---- environment record ---------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpus() -> list[str]:
    """GPU names: CUDA's view when CUDA is already initialised in this process, else ``nvidia-smi``'s.

    ``torch.cuda`` is not initialised here on purpose: doing so before a fork-based DDP launch breaks
    the forked ranks.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _blas() -> str | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    match = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return match.group(1) if match else None


def git_commit(package_dir: str | Path | None = None) -> str | None:
    """Commit of the segweak checkout (``<sha>`` or ``<sha>-dirty``), ``None`` when not a git checkout.

    The git repository must be segweak's own (its ``src/segweak`` is this package), not some other
    repository the installed package happens to live in.

    Args:
        package_dir: Directory of the ``segweak`` package; default: this module's.
    """
    pkg = Path(package_dir or Path(__file__).parent).resolve()
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never take the index lock of a busy checkout

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(pkg), *args], capture_output=True, text=True, timeout=20, check=True, env=env
        ).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if (top / "src" / "segweak").resolve() != pkg:
            return None
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def environment() -> dict[str, Any]:
    """Collect what decides a run's digits, as a JSON-ready dict.

    Returns:
        ``segweak {version, commit}`` (commit ``None`` outside a git checkout), ``python``,
        ``platform``, ``packages {distribution: version|None}`` (:data:`PACKAGES`),
        ``cpu {model, available, count}``, ``gpus [names]``, ``cuda`` (torch's CUDA build or ``None``),
        ``blas`` (torch's BLAS) and ``threads {torch, source, wait_policy_source, OMP_NUM_THREADS,
        OMP_WAIT_POLICY, MKL_NUM_THREADS, SEGWEAK_THREADS}`` (env values ``None`` when unset).
    """
    torch = sys.modules.get("torch")
    policy = _POLICY
    return {
        "segweak": {"version": __version__, "commit": git_commit()},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cpu": {"model": _cpu_model(), "available": available_cpus(), "count": os.cpu_count()},
        "gpus": _gpus(),
        "cuda": getattr(getattr(torch, "version", None), "cuda", None),
        "blas": _blas(),
        "threads": {
            "torch": _torch_threads(),
            "source": policy.source if policy else "program using segweak",
            "wait_policy_source": policy.wait_source if policy else "program using segweak",
            **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
            THREADS_ENV: os.environ.get(THREADS_ENV),
        },
    }


def record_environment(run_dir: str | Path) -> dict[str, Any]:
    """Write :func:`environment` to ``RUN/environment.json`` (atomically) and return it.

    When the run was resumed in a different environment, the earlier ones are kept under ``earlier``
    (oldest first): such a run's digits need not match an uninterrupted run's.
    """
    import json

    from segweak.io import atomic_write_json

    path = Path(run_dir) / "environment.json"
    env = environment()
    earlier: list[dict[str, Any]] = []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict):
        earlier = list(old.pop("earlier", []) or [])
        if environment_differences({"old": old, "new": env}):
            earlier.append(old)
    if earlier:
        env["earlier"] = earlier
    atomic_write_json(path, env)
    return env


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def environment_differences(envs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Fields (:data:`COMPARED_KEYS`) whose values differ between environments.

    Args:
        envs: ``{name: environment dict}``, e.g. one per run directory.

    Returns:
        ``{dotted field: {value as text: [names having it]}}``, only for fields with several values.
    """
    values: dict[str, dict[str, list[str]]] = {}
    for name, env in envs.items():
        flat = _flatten({k: env.get(k) for k in COMPARED_KEYS})
        for key, value in flat.items():
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            values.setdefault(key, {}).setdefault(text, []).append(name)
    # A field missing from one environment (older segweak) also counts as a difference.
    return {k: v for k, v in values.items() if len(v) > 1 or sum(map(len, v.values())) < len(envs)}


def describe_environment(env: Mapping[str, Any]) -> list[str]:
    """Human-readable lines (Markdown) for the report's setup section."""
    seg = env.get("segweak") or {}
    packages = env.get("packages") or {}
    cpu = env.get("cpu") or {}
    threads = env.get("threads") or {}
    commit = seg.get("commit")
    lines = [
        f"Software: segweak {seg.get('version')} "
        + (
            f"(git {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''})"
            if commit
            else "(installed package, not a git checkout)"
        )
        + f", Python {env.get('python')}, "
        + ", ".join(f"{k} {v or 'not installed'}" for k, v in packages.items()),
        f"Machine: {env.get('platform')}; CPU {cpu.get('model')} ({cpu.get('available')} of "
        f"{cpu.get('count')} CPUs available); GPU {', '.join(env.get('gpus') or []) or 'none'}"
        + (f" (torch built for CUDA {env['cuda']})" if env.get("cuda") else "")
        + f"; BLAS {env.get('blas') or 'unknown'}",
        f"Threads: {threads.get('torch')} torch thread(s) ({threads.get('source')}), "
        f"OMP_NUM_THREADS={threads.get('OMP_NUM_THREADS') or 'unset'}, "
        f"OMP_WAIT_POLICY={threads.get('OMP_WAIT_POLICY') or 'unset'}",
    ]
    return lines
