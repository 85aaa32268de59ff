"""Directory locks: a second process refuses (or waits), stale locks are taken over, nesting works."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from segweak import lock as lk
from segweak.cli import main
from segweak.errors import SegweakError
from segweak.lock import LOCK_FILE, DirectoryLock

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Holds a lock in a separate process until its stdin is closed; prints "locked" once it holds it.
HOLDER = """
import sys
from segweak.lock import DirectoryLock
with DirectoryLock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    }
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Holder:
    """A real second process holding the lock of ``directory``."""

    def __init__(self, directory: Path, what: str = "run directory"):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(directory), what],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        line = self.proc.stdout.readline()
        assert line.strip() == "locked", self.proc.stderr.read()

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0, self.proc.stderr.read()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(directory: Path, **fields) -> Path:
    info = {
        "pid": 1,
        "host": socket.gethostname(),
        "started": "2026-01-01T00:00:00+00:00",
        "command": "segweak train",
        "token": "feedbeef",
        "pid_start": None,
        **fields,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    path.write_text(json.dumps(info))
    return path


def _train_args(store: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--store",
        str(store),
        "--out-dir",
        str(out),
        "--set",
        "run_name=r",
        "--set",
        "model.encoder=tu-test_efficientnet",
        "--set",
        "model.weights=none",
        "--set",
        "trainer.progress_bar=false",
        *extra,
    ]


def test_second_train_process_refuses_and_leaves_the_run_intact(tmp_path, tiny_store, capsys):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"miou": 0.5}')
    (run / "history.csv").write_text("epoch\n1\n")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    holder = Holder(run)
    try:
        assert main(_train_args(tiny_store, tmp_path / "runs", "--resume")) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"run directory {run}" in err and f"pid {holder.proc.pid}" in err
        assert socket.gethostname() in err and "--wait" in err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK_FILE} == before
    finally:
        holder.release()
    assert not (run / LOCK_FILE).exists()  # the holder removed its lock


def test_second_experiment_process_refuses(tmp_path, capsys):
    from segweak.config import dump_yaml
    from segweak.experiment.demo import demo_config

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "results.json").write_text('{"rows": []}')
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(dump_yaml(demo_config(exp, seeds=[0], quick=True)))
    holder = Holder(exp, "experiment directory")
    try:
        assert main(["run", "--config", str(cfg_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"experiment directory {exp} is in use" in err
        assert f"pid {holder.proc.pid}" in err
        assert sorted(p.name for p in exp.iterdir()) == [LOCK_FILE, "results.json"]  # nothing started
        assert (exp / "results.json").read_text() == '{"rows": []}'
    finally:
        holder.release()


def test_wait_starts_when_the_other_process_finishes(tmp_path, tiny_store, capsys):
    run = tmp_path / "runs" / "r"
    holder = Holder(run)
    (run / "metrics.json").write_text('{"miou": 0.5}')
    threading.Timer(0.6, holder.proc.stdin.close).start()
    t0 = time.monotonic()
    # After the wait, training starts and stops at once on the finished run (no --resume): the lock
    # let it through. (A missing store would be refused before the lock is even asked for.)
    rc = main(_train_args(tiny_store, tmp_path / "runs", "--wait"))
    waited = time.monotonic() - t0
    holder.proc.wait(timeout=30)
    err = capsys.readouterr().err
    assert rc == 2 and waited >= 0.5
    assert f"waiting for run directory {run}: in use by pid {holder.proc.pid}" in err
    assert "in use by another segweak process" not in err and "already holds a run" in err
    assert not (run / LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    pid = _dead_pid()
    path = _write_lock(tmp_path / "run", pid=pid)
    messages: list[str] = []
    with DirectoryLock(tmp_path / "run", "run directory", log=messages.append):
        owner = lk.read_owner(path)
        assert owner.pid == os.getpid() and owner.token != "feedbeef"
    assert len(messages) == 1 and f"pid {pid}" in messages[0] and "no longer running" in messages[0]
    assert not path.exists()


def test_reused_pid_is_recognised_as_stale(tmp_path):
    # The recorded pid is alive (it is ours) but belongs to a process that started at another time.
    path = _write_lock(tmp_path / "run", pid=os.getpid(), pid_start="1")
    if lk._process_start(os.getpid()) is None:
        pytest.skip("no /proc: process start times unknown")
    messages: list[str] = []
    with DirectoryLock(tmp_path / "run", "run directory", log=messages.append):
        assert lk.read_owner(path).pid_start == lk._process_start(os.getpid())
    assert messages and "no longer running" in messages[0]


def test_stale_lock_is_taken_over_by_the_cli_with_a_message(tmp_path, tiny_store, capsys):
    _write_lock(tmp_path / "runs" / "r", pid=_dead_pid())
    (tmp_path / "runs" / "r" / "metrics.json").write_text('{"miou": 0.5}')
    assert main(_train_args(tiny_store, tmp_path / "runs")) == 2
    err = capsys.readouterr().err
    assert "taking over the stale lock of run directory" in err and "already holds a run" in err


def test_missing_store_is_refused_before_the_run_directory_exists(tmp_path, capsys):
    assert main(_train_args(tmp_path / "no-store", tmp_path / "runs")) == 2
    assert "no-store is not a prepared store" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_lock_from_another_host_is_not_taken_over(tmp_path):
    path = _write_lock(tmp_path / "run", host="elsewhere.example", pid=_dead_pid())
    with pytest.raises(SegweakError) as info:
        DirectoryLock(tmp_path / "run", "run directory").acquire()
    msg = str(info.value)
    assert "\n" not in msg and "host elsewhere.example" in msg and "another host" in msg
    assert f"delete {path}" in msg and "--wait" in msg
    assert path.exists()


def test_wait_for_a_lock_from_another_host(tmp_path):
    path = _write_lock(tmp_path / "run", host="elsewhere.example")
    threading.Timer(0.3, path.unlink).start()
    messages: list[str] = []
    with DirectoryLock(tmp_path / "run", "run directory", wait=True, poll=0.05, log=messages.append):
        assert lk.read_owner(path).pid == os.getpid()
    assert len(messages) == 1 and messages[0].startswith("waiting for run directory")


def test_unreadable_lock_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(lk, "_UNREADABLE_GRACE_S", 0.1)
    (tmp_path / LOCK_FILE).write_text("not json")
    with pytest.raises(SegweakError, match=r"is not a segweak lock .*delete that file"):
        DirectoryLock(tmp_path, "run directory").acquire()


def test_nested_locks_in_one_process(tmp_path):
    with DirectoryLock(tmp_path / "exp", "experiment directory"):
        with DirectoryLock(tmp_path / "exp", "experiment directory"):
            with DirectoryLock(tmp_path / "exp" / "runs" / "a", "run directory"):
                assert (tmp_path / "exp" / "runs" / "a" / LOCK_FILE).is_file()
        assert (tmp_path / "exp" / LOCK_FILE).is_file()  # the inner release kept the outer lock
    assert not (tmp_path / "exp" / LOCK_FILE).exists()


def test_ddp_child_processes_leave_locking_to_rank_zero(tmp_path):
    """Lightning's DDP launcher reruns the command in child processes with LOCAL_RANK=1, 2, ..."""
    probe = "import sys; from segweak.lock import DirectoryLock\nwith DirectoryLock(sys.argv[1], 'run'): pass"
    with DirectoryLock(tmp_path / "run", "run directory"):
        rank1 = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path / "run")],
            env=_env(LOCAL_RANK="1"),
            capture_output=True,
            text=True,
        )
        assert rank1.returncode == 0, rank1.stderr
        assert (tmp_path / "run" / LOCK_FILE).is_file()  # the child did not remove the parent's lock
        stranger = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path / "run")], env=_env(), capture_output=True, text=True
        )
        assert stranger.returncode != 0 and "is in use by another segweak process" in stranger.stderr


def test_release_removes_only_directories_it_created(tmp_path):
    (tmp_path / "exists").mkdir()
    with DirectoryLock(tmp_path / "exists" / "new" / "run", "run directory"):
        pass
    assert (tmp_path / "exists").is_dir() and not (tmp_path / "exists" / "new").exists()
    with DirectoryLock(tmp_path / "exists" / "kept", "run directory"):
        (tmp_path / "exists" / "kept" / "config.yaml").write_text("x")
    assert sorted(p.name for p in (tmp_path / "exists" / "kept").iterdir()) == ["config.yaml"]


def test_nonzero_rank_leaves_locking_to_rank_zero(tmp_path, monkeypatch):
    _write_lock(tmp_path / "run", pid=os.getppid())  # held by a live process
    monkeypatch.setenv("LOCAL_RANK", "1")
    with DirectoryLock(tmp_path / "run", "run directory"):
        pass
    assert (tmp_path / "run" / LOCK_FILE).is_file()
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SegweakError, match="in use by another segweak process"):
        DirectoryLock(tmp_path / "run", "run directory").acquire()


def test_waiting_sets_the_default_of_nested_locks(tmp_path):
    """run_experiment(wait=True) makes the locks of its runs (taken with wait=None) wait too."""
    assert DirectoryLock(tmp_path, "run directory").wait is False
    with lk.waiting(True):
        assert DirectoryLock(tmp_path, "run directory").wait is True
        assert DirectoryLock(tmp_path, "run directory", wait=False).wait is False
    assert DirectoryLock(tmp_path, "run directory").wait is False
