"""CPU thread defaults (set before torch loads) and the environment record of runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segweak import runtime

SRC = str(Path(__file__).resolve().parents[1] / "src")
CLEAN = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", runtime.THREADS_ENV, runtime.MARKER_ENV)

# Imports segweak.cli first (as the console script does), then torch, and reports what torch got.
PROBE = """
import json, os, sys
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one CPU available
import segweak.cli
assert "torch" not in sys.modules, "segweak.cli imported torch before setting the thread defaults"
import torch
print(json.dumps({"threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                  "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}))
"""


def _run_python(code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_cli_import_sets_thread_defaults_before_torch_loads():
    res = _run_python(PROBE)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"threads": 1, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    # The user's own settings win; torch-default restores the behaviour before segweak set anything.
    res = _run_python(PROBE, OMP_WAIT_POLICY="ACTIVE", SEGWEAK_THREADS="2")
    threads = min(2, os.cpu_count() or 1)  # torch caps threads at the machine's CPU count
    assert json.loads(res.stdout) == {"threads": threads, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"}
    res = _run_python(PROBE, SEGWEAK_THREADS="torch-default")
    assert json.loads(res.stdout) == {"threads": 1, "OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None}


def test_invalid_segweak_threads_is_a_one_line_error():
    res = _run_python(
        "import sys; from segweak.cli import main; sys.exit(main(['--version']))", SEGWEAK_THREADS="x"
    )
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "error: SEGWEAK_THREADS='x' is not a thread count: set a positive integer, 'torch-default' "
        "(torch's own defaults), or unset it"
    ]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, (4, "available CPUs", "PASSIVE", "segweak default")),
        ({"OMP_NUM_THREADS": "1"}, (1, "OMP_NUM_THREADS", "PASSIVE", "segweak default")),
        ({"OMP_WAIT_POLICY": "active"}, (4, "available CPUs", "active", "yours")),
        (
            {"SEGWEAK_THREADS": "2", "OMP_NUM_THREADS": "8"},
            (2, "SEGWEAK_THREADS", "PASSIVE", "segweak default"),
        ),
        ({"SEGWEAK_THREADS": "torch-default"}, (None, "torch default", None, "not set")),
        (
            {"SEGWEAK_THREADS": "torch-default", "OMP_NUM_THREADS": "2"},
            (2, "OMP_NUM_THREADS", None, "not set"),
        ),
        # Values segweak itself set (inherited by a child process) are not the user's.
        (
            {
                "OMP_NUM_THREADS": "4",
                "OMP_WAIT_POLICY": "PASSIVE",
                "SEGWEAK_SET_ENV": "OMP_NUM_THREADS,OMP_WAIT_POLICY",
            },
            (4, "available CPUs", "PASSIVE", "segweak default"),
        ),
    ],
)
def test_decide_threads(env, expected):
    p = runtime.decide_threads(env, cpus=4)
    assert (p.threads, p.source, p.wait_policy, p.wait_source) == expected and p.error is None


def test_invalid_segweak_threads_falls_back_with_an_error():
    p = runtime.decide_threads({"SEGWEAK_THREADS": "0"}, cpus=2)
    assert p.threads == 2 and p.source == "available CPUs" and "SEGWEAK_THREADS='0'" in p.error


def test_configure_threads_sets_and_marks_the_environment():
    env: dict[str, str] = {}
    first = runtime.configure_threads(env)
    assert env["OMP_NUM_THREADS"] == str(runtime.available_cpus()) and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env[runtime.MARKER_ENV] == "OMP_NUM_THREADS,OMP_WAIT_POLICY"
    assert runtime.configure_threads(env) == first  # a child process re-deciding gets the same
    user = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"}
    runtime.configure_threads(user)
    assert user == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"}  # untouched, nothing marked


def test_available_cpus_respects_a_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job\n")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert runtime.available_cpus(tmp_path, proc) == 1
    (tmp_path / "job" / "cpu.max").write_text("max 100000\n")
    assert runtime.available_cpus(tmp_path, proc) == affinity
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert runtime.available_cpus(v1, tmp_path / "missing") == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert runtime.available_cpus(v1, tmp_path / "missing") == affinity


def test_thread_summary_names_the_source(monkeypatch):
    monkeypatch.setattr(
        runtime, "_POLICY", runtime.ThreadPolicy(2, "available CPUs", "PASSIVE", "segweak default", 2)
    )
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    line = runtime.thread_summary()
    assert "the 2 CPU(s) available" in line and "OMP_WAIT_POLICY PASSIVE (segweak's default)" in line
    assert "\n" not in line and "SEGWEAK_THREADS=N" in line
    monkeypatch.setattr(runtime, "_POLICY", None)
    assert "set by the program using segweak" in runtime.thread_summary()


def test_environment_keys():
    import torch  # noqa: F401  (the record reads torch's settings when torch is loaded)

    env = runtime.environment()
    assert set(env) == {"segweak", "python", "platform", "packages", "cpu", "gpus", "cuda", "blas", "threads"}
    assert set(env["packages"]) >= {"torch", "segmentation-models-pytorch", "timm", "lightning", "numpy"}
    assert env["packages"]["torch"] and env["packages"]["numpy"]
    assert env["cpu"]["model"] and env["cpu"]["available"] >= 1
    assert env["threads"]["torch"] >= 1 and "OMP_WAIT_POLICY" in env["threads"]
    assert isinstance(env["gpus"], list) and env["segweak"]["version"]
    json.dumps(env)  # JSON-ready


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_of_a_segweak_checkout(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    pkg = tmp_path / "src" / "segweak"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    other = tmp_path / "lib" / "segweak"  # segweak installed inside some other repository
    other.mkdir(parents=True)
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "x")
    sha = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert runtime.git_commit(pkg) == sha
    (pkg / "__init__.py").write_text("changed = 1\n")
    assert runtime.git_commit(pkg) == f"{sha}-dirty"
    assert runtime.git_commit(other) is None
    assert runtime.git_commit(tmp_path.parent) is None or runtime.git_commit(tmp_path.parent) != sha


def test_record_environment_keeps_earlier_ones_on_resume(tmp_path, monkeypatch):
    env = {"python": "3.11", "packages": {"torch": "2.15.0"}, "threads": {"torch": 2}}
    monkeypatch.setattr(runtime, "environment", lambda: json.loads(json.dumps(env)))
    runtime.record_environment(tmp_path)
    runtime.record_environment(tmp_path)  # same environment: nothing to keep
    assert "earlier" not in json.loads((tmp_path / "environment.json").read_text())
    env["packages"]["torch"] = "2.16.0"
    runtime.record_environment(tmp_path)
    saved = json.loads((tmp_path / "environment.json").read_text())
    assert saved["packages"]["torch"] == "2.16.0" and saved["earlier"][0]["packages"]["torch"] == "2.15.0"


def test_environment_differences_and_description():
    a = {"python": "3.11", "packages": {"torch": "2.15.0"}, "cpu": {"model": "X"}, "gpus": []}
    b = {"python": "3.11", "packages": {"torch": "2.16.0"}, "cpu": {"model": "X"}, "gpus": []}
    assert runtime.environment_differences({"r1": a, "r2": a}) == {}
    assert runtime.environment_differences({"r1": a, "r2": b, "r3": b}) == {
        "packages.torch": {"2.15.0": ["r1"], "2.16.0": ["r2", "r3"]}
    }
    lines = runtime.describe_environment(
        {**a, "segweak": {"version": "0.1.0", "commit": "a" * 40 + "-dirty"}, "threads": {"torch": 2}}
    )
    assert "git aaaaaaaaaaaa-dirty" in lines[0] and "torch 2.15.0" in lines[0]
    assert "CPU X" in lines[1] and "GPU none" in lines[1] and lines[2].startswith("Threads: 2 torch")


def test_gpu_names_without_initialising_cuda(tmp_path, monkeypatch):
    import torch

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3'\necho 'NVIDIA H100 80GB HBM3'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: pytest.fail("CUDA must not be touched"))
    assert runtime._gpus() == ["NVIDIA H100 80GB HBM3"] * 2
    # Once training has initialised CUDA, the devices this process sees (CUDA_VISIBLE_DEVICES) count.
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    assert runtime._gpus() == ["NVIDIA H200"]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert runtime._gpus() == []
