"""Safe file and directory writes: nothing half-written at a final path, nothing foreign replaced.

Every artefact segweak writes (stores, split manifests, metrics, reports, checkpoints) goes to a
temporary sibling first and is renamed into place once complete; a rename within one filesystem is
atomic on POSIX. Temporary files and folders are created with the usual ``0o666`` / ``0o777`` modes
filtered by the process umask, exactly like a plain ``open()`` / ``mkdir``, so shared stores and
reports stay readable by colleagues when the umask allows it.

Whole output folders (``segweak prepare``, ``segweak synth``) are built as
``.NAME.<pid>@<host>.<random>.partial`` beside ``NAME``. The pid and host in the name let a later run
recognise the leftovers of a killed process and remove them, while a folder that a live process is
still filling is left alone. ``--overwrite`` only ever replaces a folder that the caller recognises as
its own kind of artefact, never one that is (or contains) an input or the current directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from segweak.errors import SegweakError

Log = Callable[[str], None]
"""Receiver of one-line progress notes (e.g. ``print``); see :func:`stderr_log`."""

Inspector = Callable[[Path], "str | None"]
"""``inspect(folder) -> None`` when ``folder`` is an artefact the caller may replace, else the reason
it may not (one clause, e.g. ``"it is not a segweak store (no store.json)"``)."""

_TEMP_KINDS = ("partial", "old")


_FILE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_file_stem(name: str, what: str, kind: str, reserved: tuple[str, ...] = ()) -> None:
    """Refuse a name that becomes a file stem (split manifests, weak-label sets) but is not a plain one.

    Letters, digits, ``_``, ``-`` and ``.``, not starting with ``.`` (no hidden files, no paths).

    Args:
        name: The name.
        what: Key or option it came from, for the message (e.g. ``--name``, ``weak.labels``).
        kind: What it names (e.g. ``split``, ``weak-label set``).
        reserved: Names with a meaning of their own that cannot be used.

    Raises:
        SegweakError: Naming ``what`` and the allowed characters.
    """
    if not _FILE_STEM.match(name or "") or name in reserved:
        avoid = "".join(f", not {r!r}" for r in reserved)
        raise SegweakError(
            f"{what}: {name!r} is not a valid {kind} name; use letters, digits, '_', '-', '.' "
            f"(not starting with '.'{avoid})"
        )


def stderr_log(message: str) -> None:
    """Default :data:`Log`: print ``message`` on standard error."""
    print(message, file=sys.stderr, flush=True)


def _host() -> str:
    """Return the host name reduced to ``[A-Za-z0-9-]``, so that it can sit between dots in a name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "unknown"


def _owner_tag() -> str:
    """``<pid>@<host>``: identifies the process that owns a temporary folder."""
    return f"{os.getpid()}@{_host()}"


# ---------------------------------------------------------------------------------------------------
# files


def _exclusive_temp_file(parent: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """Create a new, empty file ``parent/<prefix><random><suffix>`` and return ``(fd, path)``.

    ``tempfile.mkstemp`` would create it with mode 0600 whatever the umask; ``os.open`` with
    ``0o666`` lets the kernel apply the umask (and default ACLs) like any ordinary write.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory, then rename.

    A new file gets the umask's permissions; replacing an existing file keeps that file's permission
    bits, as an in-place write would.

    Args:
        path: Final file path; its parent directory is created when missing.
        data: Bytes to write.

    Returns:
        The final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _exclusive_temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            with contextlib.suppress(FileNotFoundError):
                old = os.stat(path)
                if stat.S_ISREG(old.st_mode):
                    os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode))
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically, so equal objects give equal bytes."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------
# output folders: what may be replaced


def describe_entries(folder: Path, limit: int = 6) -> str:
    """Short listing of a folder's top-level entries for messages, e.g. ``"images/, notes.txt"``."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        return f"unreadable entries ({exc.strerror})"
    if not entries:
        return "nothing"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of segweak's own hidden temporary files (``.NAME.<random>.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def _resolved(path: str | os.PathLike[str]) -> Path:
    # resolve() follows every symlink of the existing prefix, so an alias of an input is caught too.
    return Path(os.path.abspath(path)).resolve()


def input_path(locator: str | os.PathLike[str]) -> Path | None:
    """Filesystem path behind a reader locator: the archive of ``zip://...!member``, None for URLs."""
    text = os.fspath(locator)
    if text.startswith("zip://"):
        return Path(text[len("zip://") :].split("!", 1)[0])
    if "://" in text:
        return None
    return Path(text)


def check_disjoint(
    out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], option: str = "--out"
) -> None:
    """Refuse an output folder that equals or contains one of ``inputs`` (symlinks resolved).

    Raises:
        SegweakError: Naming the output and the input it would swallow.
    """
    real_out = _resolved(out)
    for inp in inputs:
        real_in = _resolved(inp)
        if real_out == real_in or real_out in real_in.parents:
            verb = "is" if real_out == real_in else "contains"
            raise SegweakError(
                f"{option} {out} {verb} the input {inp}; writing there would destroy the input, "
                f"choose an {option} outside the inputs"
            )


def check_output_dir(
    out: str | os.PathLike[str],
    *,
    overwrite: bool,
    inspect: Inspector,
    inputs: Iterable[str | os.PathLike[str]] = (),
    what: str = "output",
    option: str = "--out",
) -> bool:
    """Refuse an output folder that could destroy data; call before any work starts.

    Refused: an output that equals or contains one of ``inputs`` (after resolving symlinks); an
    existing output without ``overwrite``; with ``overwrite``, an existing output that is a file, a
    symbolic link, the current directory or one of its ancestors, or a folder ``inspect`` does not
    recognise as a replaceable ``what``.

    Args:
        out: The output folder.
        overwrite: Whether the user asked to replace an existing output.
        inspect: Recognises replaceable artefacts (see :data:`Inspector`).
        inputs: Paths the job reads (files or folders).
        what: Name of the artefact kind for messages, e.g. ``"store"``.
        option: The option that named ``out``, for messages.

    Returns:
        True when ``out`` exists and will be replaced once the new output is complete.

    Raises:
        SegweakError: One line naming the folder, what it holds and what to do.
    """
    out_path = Path(out)
    check_disjoint(out_path, inputs, option)
    real_out = _resolved(out_path)
    if not os.path.lexists(out_path):
        return False
    if not overwrite:
        held = f"it holds {describe_entries(out_path)}" if out_path.is_dir() else "it is a file"
        raise SegweakError(
            f"{option} {out_path} already exists ({held}); choose another {option} or pass "
            "--overwrite to replace it"
        )
    if out_path.is_symlink():
        raise SegweakError(
            f"{option} {out_path} is a symbolic link; --overwrite does not replace links, give the "
            f"folder it points to ({real_out}) or another {option}"
        )
    if not out_path.is_dir():
        raise SegweakError(
            f"{option} {out_path} is a file, not a segweak {what}; --overwrite only replaces a {what} "
            f"folder, so delete or move it yourself or choose another {option}"
        )
    cwd = Path.cwd().resolve()
    if real_out == cwd or real_out in cwd.parents:
        raise SegweakError(
            f"{option} {out_path} is (or contains) the current directory; --overwrite refuses to "
            f"replace it, give a sub-folder or another {option}"
        )
    reason = inspect(out_path)
    if reason is not None:
        raise SegweakError(
            f"refusing to --overwrite {out_path}: {reason}; it holds {describe_entries(out_path)}; "
            f"delete or move it yourself, or choose another {option}"
        )
    return True


# ---------------------------------------------------------------------------------------------------
# output folders: temporary siblings and their leftovers


def _temp_pattern(name: str) -> re.Pattern[str]:
    """Match ``.NAME.<pid>@<host>.<random>.(partial|old)`` temporary siblings of ``NAME``.

    The pid/host groups are absent in names written by segweak before they were added
    (``.NAME.<random>.partial``).
    """
    return re.compile(
        rf"^\.{re.escape(name)}\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.)?[A-Za-z0-9_]+\."
        rf"(?P<kind>{'|'.join(_TEMP_KINDS)})$"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: the process exists but belongs to another user
        return True
    return True


def clean_stale_temps(path: str | os.PathLike[str], log: Log | None = None) -> list[Path]:
    """Remove temporary siblings of ``path`` left by killed segweak processes; note the others.

    A ``.NAME.<pid>@<host>.*.partial`` (or ``.old``) folder whose host is this machine and whose
    process no longer exists is removed. Folders of a live process, of another host (e.g. on a shared
    filesystem) or without an owner tag (written by an older segweak) are left in place with a note.

    Args:
        path: The final output path whose siblings to look at.
        log: Receives one line per folder found (default: standard error).

    Returns:
        The folders removed.
    """
    log = log or stderr_log
    path = Path(os.path.abspath(path))
    pattern = _temp_pattern(path.name)
    try:
        siblings = sorted(path.parent.iterdir())
    except FileNotFoundError:
        return []
    removed: list[Path] = []
    host = _host()
    for entry in siblings:
        match = pattern.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid, owner_host = match["pid"], match["host"]
        if pid is None:
            log(
                f"note: {entry} is a temporary folder left by an older segweak writing {path.name}; "
                "delete it if no segweak process is writing there"
            )
        elif owner_host != host:
            log(f"note: {entry} belongs to process {pid} on host {owner_host}; left in place")
        elif int(pid) == os.getpid() or _pid_alive(int(pid)):
            log(f"note: {entry} belongs to running process {pid}; left in place")
        else:
            shutil.rmtree(entry)
            removed.append(entry)
            log(f"removed {entry}: left by an interrupted segweak (process {pid} is gone)")
    return removed


def _temp_dir(path: Path, kind: str) -> Path:
    """Create an empty ``.NAME.<pid>@<host>.<random>.<kind>`` sibling of ``path`` (umask applies)."""
    while True:
        tmp = path.with_name(f".{path.name}.{_owner_tag()}.{secrets.token_hex(4)}.{kind}")
        try:
            tmp.mkdir(0o777)
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    *,
    inspect: Inspector | None = None,
    log: Log | None = None,
) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it to ``path`` only on success.

    Usage::

        with atomic_directory(out) as tmp:
            write_everything_into(tmp)
        # out now exists, complete; on an exception nothing is left at out or at tmp.

    Leftover temporary siblings of ``path`` from killed runs are cleaned first
    (:func:`clean_stale_temps`). User-facing checks belong in :func:`check_output_dir`, called before
    the work; the checks here guard the final rename, which may happen long after them.

    Args:
        path: Final directory path.
        overwrite: Replace an existing directory at ``path`` (after the new one is complete).
        inspect: Required with ``overwrite``: an existing ``path`` is replaced only when it returns
            None for it (checked again just before the rename).
        log: Receives notes about cleaned leftovers (default: standard error).

    Yields:
        The temporary directory to fill.

    Raises:
        FileExistsError: When ``path`` exists and ``overwrite`` is false.
        SegweakError: When ``path`` exists but is not (or no longer) a replaceable artefact.
        ValueError: ``overwrite`` without ``inspect``.
    """
    if overwrite and inspect is None:
        raise ValueError("atomic_directory(overwrite=True) needs an inspect callable")
    # abspath: "." or "a/.." have no usable name for a sibling (and "." cannot be renamed).
    path = Path(os.path.abspath(path))

    def refuse_existing() -> None:
        if not overwrite:
            raise FileExistsError(f"{path} already exists; choose another output path or pass --overwrite")
        reason = inspect(path) if path.is_dir() and not path.is_symlink() else "it is not a folder"
        if reason is not None:
            raise SegweakError(f"refusing to replace {path}: {reason}; delete or move it yourself")

    if os.path.lexists(path):
        refuse_existing()
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path, log)
    tmp = _temp_dir(path, "partial")
    try:
        yield tmp
        if os.path.lexists(path):
            refuse_existing()
            # Rename the old folder onto an empty, uniquely named one (allowed by rename(2)), so no
            # folder of the user's is ever removed to make room.
            old = _temp_dir(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def yaml_error_summary(exc: Exception) -> str:
    """One line describing a YAML parse error: the problem and where (PyYAML's own text spans lines).

    Args:
        exc: The error raised by ``yaml.safe_load``.

    Returns:
        E.g. ``"mapping values are not allowed here (line 3, column 8)"``.
    """
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"
