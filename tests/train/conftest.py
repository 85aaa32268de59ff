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
