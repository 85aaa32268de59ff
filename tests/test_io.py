from pathlib import Path

import pytest

from segweak.io import atomic_directory, atomic_write_json, atomic_write_text


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

    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "g").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["g"]
