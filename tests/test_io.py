import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from segweak.errors import SegweakError
from segweak.io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    clean_stale_temps,
)


def _own_marker(path: Path) -> str | None:
    """Test inspector: a folder is 'ours' when it holds a file named MARK."""
    return None if (path / "MARK").is_file() else "it has no MARK"


def test_atomic_write_text_and_json(tmp_path: Path) -> None:
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    assert p.read_text() == "hello"
    atomic_write_json(tmp_path / "b.json", {"z": 1, "a": [1, 2]})
    assert (tmp_path / "b.json").read_text().startswith('{\n  "a"')
    assert sorted(x.name for x in tmp_path.iterdir()) == ["b.json", "sub"]


def test_atomic_directory_success_and_failure(tmp_path: Path) -> None:
    out = tmp_path / "store"
    with atomic_directory(out) as tmp:
        (tmp / "f").write_text("x")
        (tmp / "MARK").write_text("")
        assert not out.exists()
    assert (out / "f").read_text() == "x"

    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_directory(out):
            pass

    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "broken") as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "broken").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]

    with pytest.raises(ValueError, match="inspect"):
        with atomic_directory(out, overwrite=True):
            pass
    with atomic_directory(out, overwrite=True, inspect=_own_marker) as tmp:
        (tmp / "g").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["g"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no .old or .partial left


def test_atomic_directory_refuses_a_foreign_folder_at_the_final_rename(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SegweakError, match="refusing to replace.*no MARK"):
        with atomic_directory(out, overwrite=True, inspect=_own_marker) as tmp:
            (tmp / "new").write_text("x")
            out.mkdir()  # someone else's folder appears while the output is being built
            (out / "theirs.txt").write_text("keep me")
    assert (out / "theirs.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_dot_is_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(SegweakError, match="no MARK"):
        with atomic_directory(".", overwrite=True, inspect=_own_marker):
            pass
    assert (tmp_path / "keep.txt").read_text() == "x"
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")]


# ---- check_output_dir ------------------------------------------------------------------------------


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    (victim / "images").mkdir(parents=True)
    (victim / "images" / "a.png").write_bytes(b"img")
    (victim / "notes.txt").write_text("unrelated")
    return victim


def test_output_equal_to_or_containing_an_input_is_refused(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    images = victim / "images"
    for out, verb in ((victim, "contains"), (images, "is")):
        for overwrite in (False, True):
            with pytest.raises(SegweakError, match=f"--out {out} {verb} the input {images}"):
                check_output_dir(out, overwrite=overwrite, inspect=_own_marker, inputs=[images])
    # an alias through a symlink is the same folder
    link = tmp_path / "alias"
    link.symlink_to(victim)
    with pytest.raises(SegweakError, match="contains the input"):
        check_output_dir(link, overwrite=True, inspect=_own_marker, inputs=[images])
    # an output inside an input folder destroys nothing
    assert check_output_dir(victim / "store", overwrite=True, inspect=_own_marker, inputs=[images]) is False


def test_overwrite_refuses_what_it_does_not_recognise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = _victim(tmp_path)
    with pytest.raises(SegweakError, match=r"already exists \(it holds images/, notes.txt\).*--overwrite"):
        check_output_dir(victim, overwrite=False, inspect=_own_marker)
    with pytest.raises(
        SegweakError, match=r"refusing to --overwrite .*victim: it has no MARK.*images/, notes.txt"
    ):
        check_output_dir(victim, overwrite=True, inspect=_own_marker)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SegweakError, match="is a file"):
        check_output_dir(tmp_path / "file", overwrite=True, inspect=_own_marker)
    (victim / "MARK").write_text("")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(SegweakError, match="symbolic link"):
        check_output_dir(tmp_path / "link", overwrite=True, inspect=_own_marker)
    monkeypatch.chdir(victim / "images")
    for out in (".", "..", str(victim)):
        with pytest.raises(SegweakError, match="current directory"):
            check_output_dir(out, overwrite=True, inspect=_own_marker)
    monkeypatch.chdir(tmp_path)
    assert check_output_dir(victim, overwrite=True, inspect=_own_marker) is True
    assert (victim / "notes.txt").is_file()


# ---- leftovers of killed processes ---------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has this pid now (reuse within the test is very unlikely)


def test_stale_partials_are_removed_live_ones_kept(tmp_path: Path) -> None:
    from segweak.io import _host

    out = tmp_path / "store"
    dead, host = _dead_pid(), _host()
    stale = tmp_path / f".store.{dead}@{host}.abcd1234.partial"
    stale_old = tmp_path / f".store.{dead}@{host}.efgh5678.old"
    live = tmp_path / f".store.{os.getppid()}@{host}.live0000.partial"
    remote = tmp_path / f".store.{dead}@some-other-host.abcd1234.partial"
    legacy = tmp_path / ".store.k2j3h4g5.partial"
    unrelated = tmp_path / f".storex.{dead}@{host}.abcd1234.partial"
    for d in (stale, stale_old, live, remote, legacy, unrelated):
        d.mkdir()
        (d / "images.npy").write_bytes(b"x" * 100)
    notes: list[str] = []
    removed = clean_stale_temps(out, notes.append)
    assert sorted(removed) == sorted([stale, stale_old])
    assert not stale.exists() and not stale_old.exists()
    assert live.exists() and remote.exists() and legacy.exists() and unrelated.exists()
    text = "\n".join(notes)
    assert f"removed {stale}" in text and f"process {dead} is gone" in text
    assert f"{live} belongs to running process" in text
    assert "on host some-other-host" in text and "older segweak" in text
    assert str(unrelated) not in text


def test_killed_writer_leftover_is_cleaned_by_the_next_run(tmp_path: Path) -> None:
    """A process killed (SIGKILL) inside atomic_directory leaves a partial the next run removes."""
    out = tmp_path / "out"
    script = (
        "import os, signal, sys\n"
        "from segweak.io import atomic_directory\n"
        f"with atomic_directory({str(out)!r}) as tmp:\n"
        "    (tmp / 'big').write_bytes(b'x' * 10000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, capture_output=True)
    assert proc.returncode == -9
    (partial,) = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert partial.name.startswith(".out.") and "@" in partial.name
    notes: list[str] = []
    with atomic_directory(out, log=notes.append) as tmp:
        (tmp / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert len(notes) == 1 and notes[0].startswith(f"removed {partial}")


# ---- permissions follow the umask ------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_and_folders_follow_the_umask(tmp_path: Path, umask, file_mode, dir_mode) -> None:
    old = os.umask(umask)
    try:
        f = atomic_write_text(tmp_path / "metrics.json", "{}")
        with atomic_directory(tmp_path / "store") as tmp:
            atomic_write_json(tmp / "store.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "store" / "store.json").stat().st_mode) == file_mode


def test_replacing_a_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_checkpoints_follow_the_umask(tmp_path: Path) -> None:
    import torch

    from segweak.train.checkpoint import AtomicCheckpointIO

    old = os.umask(0o022)
    try:
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "last.ckpt").stat().st_mode) == 0o644


def test_replacing_never_deletes_a_user_folder_named_like_the_old_copy(tmp_path: Path) -> None:
    out = tmp_path / "store"
    mine = tmp_path / ".store.old"  # the fixed name segweak used to rmtree before replacing
    mine.mkdir()
    (mine / "keep").write_text("x")
    for _ in range(2):
        with atomic_directory(out, overwrite=True, inspect=_own_marker) as tmp:
            (tmp / "MARK").write_text("")
    assert (mine / "keep").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.old", "store"]
