"""Fixtures of the training tests.

* ``odd_store``: a copy of ``tiny_store`` with the split ``odd`` (fractions 0.125/0.6/0.275, by patch,
  seed 0): 6 strong, 29 weak and 13 validation patches. With 2 processes each rank gets 3 strong
  patches (fewer than a batch of 4) and 7 or 6 validation patches (an odd subset).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ODD_SUBSETS = {"strong": 6, "weak": 29, "val": 13}


@pytest.fixture(scope="session")
def odd_store(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segweak.data.splits import make_split

    out = tmp_path_factory.mktemp("odd") / "store"
    shutil.copytree(tiny_store, out)
    manifest = make_split(out, name="odd", fractions=(0.125, 0.6, 0.275), by="patch", seed=0)
    assert {k: len(v) for k, v in manifest["subsets"].items()} == ODD_SUBSETS
    return out


def add_test_subset(store: Path, split: str, name: str, n_test: int) -> dict:
    """Write split ``name``: ``split`` with its last ``n_test`` weak patches held out as ``test``.

    The four-subset manifest layout (``subsets.test``, ``achieved.test``) that ``segweak split`` writes
    for a held-out test subset; strong and val stay those of ``split``.
    """
    import json

    from segweak.data.splits import load_split
    from segweak.data.store import Store

    manifest = load_split(store, split)
    weak = manifest["subsets"]["weak"]
    manifest["subsets"]["weak"], manifest["subsets"]["test"] = weak[:-n_test], weak[-n_test:]
    valid = Store(store).valid
    total = sum(len(v) for v in manifest["subsets"].values())
    pixels = int(sum(valid[i] for v in manifest["subsets"].values() for i in v))
    for sub in ("weak", "test"):
        idx = manifest["subsets"][sub]
        manifest["achieved"][sub] = {
            "patches": len(idx),
            "patch_fraction": round(len(idx) / total, 6),
            "pixels": int(valid[idx].sum()),
            "pixel_fraction": round(int(valid[idx].sum()) / pixels, 6),
        }
    manifest["name"] = name
    (store / "splits" / f"{name}.json").write_text(json.dumps(manifest, sort_keys=True))
    return manifest


@pytest.fixture(scope="session")
def heldout_store(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``tiny_store`` (which has eroded-label masks) with split ``heldout``: 5 strong, 25 weak,
    10 val and 8 test patches."""
    out = tmp_path_factory.mktemp("heldout") / "store"
    shutil.copytree(tiny_store, out)
    add_test_subset(out, "default", "heldout", 8)
    return out


@pytest.fixture
def odd_store_with_test(odd_store: Path, tmp_path: Path) -> Path:
    """A copy of ``odd_store`` whose split ``odd`` holds out 7 of its weak patches as ``test`` (4 + 3
    per rank with 2 processes)."""
    out = tmp_path / "odd-with-test"
    shutil.copytree(odd_store, out)
    add_test_subset(out, "odd", "odd", 7)
    return out
