"""The data-safety cases of issue 8, reproduced through the real CLI.

``--overwrite`` never deletes inputs or folders segweak did not write; damaged or swapped store
arrays are refused with one line before any work; stale partial outputs of killed runs are cleaned.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segweak.cli import main

PALETTE = "mode: index\nclasses:\n  - {name: a, value: 0}\n  - {name: b, value: 1}\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A user's folder: a small folder dataset (images, masks, palette) and an unrelated file."""
    root = tmp_path / "victim"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"t{i}.png")
        Image.fromarray(rng.integers(0, 2, (32, 32)).astype(np.uint8)).save(root / "masks" / f"t{i}.png")
    (root / "palette.yaml").write_text(PALETTE)
    (root / "notes.txt").write_text("unrelated")
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _prepare_folder(root: Path, out: str, *extra: str) -> int:
    return main(
        [
            "prepare",
            "folder",
            "--images",
            str(root / "images"),
            "--masks",
            str(root / "masks"),
            "--palette",
            str(root / "palette.yaml"),
            "--out",
            out,
            "--patch",
            "16",
            *extra,
        ]
    )


@pytest.mark.parametrize("target", ["victim", "victim/images", "victim/masks", "."])
def test_prepare_overwrite_never_destroys_inputs(victim, tmp_path, monkeypatch, capsys, target):
    before = _snapshot(victim)
    monkeypatch.chdir(tmp_path if target != "." else victim)
    assert _prepare_folder(victim, target, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "the input" in err
    assert _snapshot(victim) == before
    assert not [p for p in tmp_path.rglob(".*") if p.name.endswith((".partial", ".old"))]


def test_prepare_overwrite_refuses_palette_folder_and_replaces_a_store(victim, tmp_path, capsys):
    (tmp_path / "pal").mkdir()
    shutil.copy(victim / "palette.yaml", tmp_path / "pal" / "palette.yaml")
    args = ["prepare", "folder", "--images", str(victim / "images"), "--masks", str(victim / "masks")]
    args += ["--palette", str(tmp_path / "pal" / "palette.yaml"), "--patch", "16", "--overwrite"]
    assert main([*args, "--out", str(tmp_path / "pal")]) == 2
    assert "contains the input" in capsys.readouterr().err
    store = tmp_path / "store"
    assert _prepare_folder(victim, str(store)) == 0
    capsys.readouterr()
    assert _prepare_folder(victim, str(store), "--overwrite") == 0
    captured = capsys.readouterr()
    assert f"--overwrite: {store} (" in captured.err and "will be replaced" in captured.err
    assert "wrote" in captured.out


def test_synth_overwrite_refuses_user_folders(tmp_path, monkeypatch, capsys):
    user = tmp_path / "dir"
    user.mkdir()
    (user / "mine.txt").write_text("keep")
    args = ["synth", "--tiles", "1", "--size", "32", "32", "--overwrite"]
    assert main([*args, "--out", str(user)]) == 2
    err = capsys.readouterr().err
    assert "no synth.json" in err and "mine.txt" in err and err.count("\n") == 1
    assert (user / "mine.txt").read_text() == "keep"
    monkeypatch.chdir(user)
    assert main([*args, "--out", "."]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert sorted(p.name for p in user.iterdir()) == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    # its own output is replaced
    assert main(["synth", "--tiles", "1", "--size", "32", "32", "--out", str(tmp_path / "s")]) == 0
    assert main([*args, "--out", str(tmp_path / "s")]) == 0


@pytest.fixture
def store_copy(tiny_store, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(tiny_store, dst)
    return dst


def _train_args(store: Path, tmp_path: Path) -> list[str]:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "method": "supervised",
                "out_dir": str(tmp_path / "runs"),
                "data": {"store": str(store), "batch_size": 4},
                "model": {"encoder": "tu-test_efficientnet", "weights": "none"},
                "trainer": {"max_epochs": 1, "progress_bar": False},
            }
        )
    )
    return ["train", "--config", str(cfg)]


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_truncated_array_is_refused_by_every_command(store_copy, tmp_path, capsys):
    os.truncate(store_copy / "images.npy", 40000)
    for args in (
        ["info", str(store_copy)],
        ["split", str(store_copy), "--name", "x"],
        _train_args(store_copy, tmp_path),
    ):
        assert main(args) == 2
        _one_line_error(capsys, str(store_copy / "images.npy"), "re-run `segweak prepare`")
    assert not (tmp_path / "runs").exists()


def test_swapped_array_is_refused(store_copy, fake_source, tmp_path, capsys):
    from segweak.data.store import prepare

    # another store with the same array shape (48 patches of 32 px) but other pixels
    other = prepare(fake_source([(128, 384)]), tmp_path / "other", patch=32, progress=False)
    shutil.copyfile(other / "images.npy", store_copy / "images.npy")
    for args in (["info", str(store_copy)], _train_args(store_copy, tmp_path)):
        assert main(args) == 2
        _one_line_error(capsys, str(store_copy / "images.npy"), "from another store")


def test_info_verify(store_copy, capsys):
    assert main(["info", str(store_copy), "--verify"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "images.npy ok, masks.npy ok, masks_eroded.npy ok, patches.csv ok" in out
    assert main(["info", str(store_copy), "--verify", "--json"]) == 0
    assert '"verified"' in capsys.readouterr().out
    # a patch edited in place *and* the sampled hash rewritten: only the full hash catches it
    import json

    meta = json.loads((store_copy / "store.json").read_text())
    masks = np.load(store_copy / "masks.npy", mmap_mode="r+")
    masks[0, 0, 0] = 255 if masks[0, 0, 0] != 255 else 0
    masks.flush()
    del masks
    from segweak.data.store import sampled_sha256

    meta["files"]["masks.npy"]["sampled_sha256"] = sampled_sha256(store_copy / "masks.npy")
    (store_copy / "store.json").write_text(json.dumps(meta))
    assert main(["info", str(store_copy)]) == 0
    capsys.readouterr()
    assert main(["info", str(store_copy), "--verify"]) == 2
    _one_line_error(capsys, str(store_copy / "masks.npy"), "content differs")


def test_killed_prepare_leftover_is_cleaned_by_the_next_prepare(synthetic_root, tmp_path, capsys):
    out = tmp_path / "store"
    script = (
        "import os, signal\n"
        "import segweak.data.store as s\n"
        "real = s.tiling.extract\n"
        "def killed(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "s.tiling.extract = killed\n"
        "from segweak.data.sources import VaihingenSource\n"
        f"s.prepare(VaihingenSource({str(synthetic_root)!r}), {str(out)!r}, patch=32, progress=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    (partial,) = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert (partial / "images.npy").is_file()  # the size of the store, left behind
    args = ["prepare", "vaihingen", "--root", str(synthetic_root), "--out", str(out), "--patch", "32"]
    assert main(args) == 0
    assert f"removed {partial}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
