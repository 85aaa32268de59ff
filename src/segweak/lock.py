"""Directory locks: one segweak process at a time per run or experiment directory.

Two processes training into the same directory would each overwrite the other's checkpoints and
metrics, and both would report numbers that no file on disk matches. ``segweak train`` therefore locks
its run directory and ``segweak run`` / ``segweak demo`` their experiment directory with a lock file
``DIR/.segweak.lock``::

    {"pid": 1234, "host": "node7", "started": "2026-11-24T10:00:00+00:00",
     "command": "segweak run --config exp.yaml", "token": "<random hex>", "pid_start": "123456"}

* The file is created with ``O_CREAT | O_EXCL``, which is atomic (also on NFS v3+): of two processes,
  exactly one creates it. The other refuses with one line naming the directory and the owner, or, with
  ``wait=True`` (``--wait``), polls until the owner releases it.
* A lock whose owner is on this host and no longer running (its pid is gone, or was reused by a process
  that started later: ``pid_start``) is stale: it is taken over with a message. The takeover holds
  ``flock`` on the stale file and checks that the path still names that file, so two processes that
  both find the same stale lock cannot remove each other's fresh one.
* A lock from another host is never taken over: from here segweak cannot tell whether that process
  still runs (the same directory on a shared filesystem). The message says which file to delete.
* Locks are re-entrant within a process: a nested lock of a directory the process already holds just
  counts up (an experiment holds its directory while its runs lock theirs).
* Processes that are ranks > 0 of a multi-process launch (``RANK``, ``LOCAL_RANK``, ``NODE_RANK`` or
  ``SLURM_PROCID`` not 0) leave locking to rank 0. Lightning's DDP launcher reruns the command once
  per extra GPU with ``LOCAL_RANK`` set; torchrun and SLURM set ``RANK`` / ``SLURM_PROCID``.

The holder removes the lock file when done (also after an error); a process killed hard leaves a stale
lock behind, which the next run takes over.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segweak.errors import SegweakError

LOCK_FILE = ".segweak.lock"
"""Name of the lock file inside a locked directory."""

_RANK_ENVS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
# A lock file that exists but does not parse is normally one being written this very moment (create
# and write are two steps); it is only reported as broken after this many seconds.
_UNREADABLE_GRACE_S = 2.0

_WAIT: contextvars.ContextVar[bool] = contextvars.ContextVar("segweak_lock_wait", default=False)


@dataclass(frozen=True)
class LockOwner:
    """What a lock file says about the process that holds it.

    Attributes:
        pid: Process id of the holder.
        host: Host name of the holder.
        started: ISO 8601 time the lock was taken.
        command: Command line of the holder (for the message).
        token: Random id of this lock (tells one holder's lock from the next one's).
        pid_start: Start time of the holder process (Linux clock ticks since boot), to recognise a pid
            that was reused by another process; ``None`` where unknown.
    """

    pid: int
    host: str
    started: str
    command: str
    token: str
    pid_start: str | None = None

    def describe(self) -> str:
        """``pid N on host H since T (command)`` for messages."""
        return f"pid {self.pid} on host {self.host} since {self.started} ({self.command})"


def _process_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # Field 2 (the command name) may contain spaces and parentheses; fields after the last ')' are
    # plain numbers, and the start time is field 22, i.e. the 20th after the command name.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def owner_alive(owner: LockOwner) -> bool | None:
    """Whether the lock's owner still runs: ``True``/``False`` on this host, ``None`` for another host."""
    if owner.host != socket.gethostname():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    if owner.pid_start is not None:
        now = _process_start(owner.pid)
        if now is not None and now != owner.pid_start:
            return False  # the pid now belongs to a process that started after the lock was taken
    return True


def read_owner(path: str | os.PathLike[str]) -> LockOwner | None:
    """Parse a lock file; ``None`` when it is not (or not yet completely) a segweak lock.

    Raises:
        FileNotFoundError: When there is no lock file (any more).
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
        return LockOwner(
            pid=int(data["pid"]),
            host=str(data["host"]),
            started=str(data["started"]),
            command=str(data.get("command", "")),
            token=str(data["token"]),
            pid_start=None if data.get("pid_start") is None else str(data["pid_start"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _is_nonzero_rank() -> bool:
    """Whether an external launcher (torchrun, SLURM) started this process as a rank other than 0."""
    return any(os.environ.get(name, "0").strip() not in ("", "0") for name in _RANK_ENVS)


def _stderr(message: str) -> None:
    print(f"segweak: {message}", file=sys.stderr, flush=True)


# In-process registry for re-entrancy: lock file path -> [pid that took it, depth]. The pid guards
# against a forked child believing it holds its parent's locks.
_HELD: dict[Path, list[int]] = {}
_HELD_GUARD = threading.Lock()


class DirectoryLock:
    """Exclusive lock of a directory for one segweak process (see the module docstring).

    Usage::

        with DirectoryLock(run_dir, "run directory"):
            train_into(run_dir)

    Args:
        directory: Directory to lock; it is created (with missing parents) when absent, and those
            directories are removed again on release when they are still empty.
        what: Name of the directory in messages, e.g. ``"run directory"``.
        wait: Wait until the lock is free instead of refusing; ``None`` uses :func:`waiting`'s default.
        poll: Seconds between checks while waiting.
        log: Receives the one-line messages (waiting, stale lock taken over); default: stderr.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        what: str,
        *,
        wait: bool | None = None,
        poll: float = 0.5,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.what = what
        self.wait = _WAIT.get() if wait is None else wait
        self.poll = poll
        self.log = log or _stderr
        self.path = self.directory / LOCK_FILE
        self._key: Path | None = None
        self._token: str | None = None
        self._created: list[Path] = []
        self._mode = ""  # "own", "nested" or "rank" once acquired

    # ---- acquire -------------------------------------------------------------------------------

    def acquire(self) -> DirectoryLock:
        """Take the lock (or wait for it with ``wait``).

        Raises:
            SegweakError: Another live process holds it (and ``wait`` is false), it is held from
                another host, or the lock file is not a segweak lock.
        """
        self._make_directory()
        self._key = self.path.resolve()
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is not None and held[0] == os.getpid():
                held[1] += 1
                self._mode = "nested"
                return self
        if _is_nonzero_rank():
            self._mode = "rank"
            return self
        announced = False
        unreadable_since: float | None = None
        while True:
            if self._try_create():
                break
            try:
                owner = read_owner(self.path)
            except FileNotFoundError:
                continue  # released between our attempt and the read: try again at once
            if owner is None:
                unreadable_since = unreadable_since or time.monotonic()
                if time.monotonic() - unreadable_since > _UNREADABLE_GRACE_S:
                    raise SegweakError(
                        f"{self.what} {self.directory}: lock file {self.path} is not a segweak lock "
                        "(unreadable); if no segweak process uses this directory, delete that file"
                    )
                time.sleep(0.05)
                continue
            unreadable_since = None
            alive = owner_alive(owner)
            if alive is False:
                self._take_over(owner)
                continue
            if not self.wait:
                raise SegweakError(self._refusal(owner, alive))
            if not announced:
                self.log(f"waiting for {self.what} {self.directory}: in use by {owner.describe()}")
                announced = True
            time.sleep(self.poll)
        with _HELD_GUARD:
            _HELD[self._key] = [os.getpid(), 1]
        self._mode = "own"
        return self

    def _make_directory(self) -> None:
        for parent in (self.directory, *self.directory.parents):
            if parent.exists():
                break
            if parent not in self._created:
                self._created.append(parent)  # deepest first: the order in which to remove them
        self.directory.mkdir(parents=True, exist_ok=True)

    def _try_create(self) -> bool:
        token = secrets.token_hex(8)
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python",
            "token": token,
            "pid_start": _process_start(os.getpid()),
        }
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except FileNotFoundError:
            # The previous holder created the directory and removed it again, empty, on release.
            self._make_directory()
            return self._try_create()
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(info, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._token = token
        return True

    def _take_over(self, stale: LockOwner) -> None:
        """Remove the stale lock file ``stale`` unless someone else got to it first."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except (ImportError, OSError):  # no flock here (e.g. Windows): best effort
                pass
            try:
                same_file = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                return
            with os.fdopen(os.dup(fd), "r", encoding="utf-8", errors="replace") as fh:
                try:
                    current = json.loads(fh.read())
                except ValueError:
                    return
            if not same_file or current.get("token") != stale.token:
                return  # another process took it over already; the loop reads the new owner
            os.unlink(self.path)
        finally:
            os.close(fd)
        self.log(
            f"taking over the stale lock of {self.what} {self.directory}: "
            f"{stale.describe()} is no longer running"
        )

    def _refusal(self, owner: LockOwner, alive: bool | None) -> str:
        if alive is None:
            return (
                f"{self.what} {self.directory} is locked by {owner.describe()}; segweak cannot check a "
                f"process on another host, so it does not take the lock over: if that process has ended, "
                f"delete {self.path}, or rerun with --wait"
            )
        return (
            f"{self.what} {self.directory} is in use by another segweak process ({owner.describe()}); "
            "wait for it to finish, or rerun with --wait to start when it does"
        )

    # ---- release -------------------------------------------------------------------------------

    def release(self) -> None:
        """Give the lock back (remove the lock file when this process created it)."""
        mode, self._mode = self._mode, ""
        if mode == "nested":
            with _HELD_GUARD:
                assert self._key is not None
                _HELD[self._key][1] -= 1
            return
        if mode != "own":
            return
        with _HELD_GUARD:
            _HELD.pop(self._key, None)  # type: ignore[arg-type]
        try:
            owner = read_owner(self.path)
        except FileNotFoundError:
            owner = None
        if owner is not None and owner.token == self._token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            self.log(f"the lock of {self.what} {self.directory} was taken over by another process")
        for d in sorted(self._created, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()  # only succeeds when empty: nothing was written there
            except OSError:
                break

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def waiting(wait: bool) -> Iterator[None]:
    """Make :class:`DirectoryLock` with ``wait=None`` wait (or not) inside the ``with`` block.

    The experiment uses it so that the locks of its runs follow the experiment's ``--wait``.
    """
    token = _WAIT.set(wait)
    try:
        yield
    finally:
        _WAIT.reset(token)
