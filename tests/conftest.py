"""Shared, session-scoped fixtures: a tiny synthetic Vaihingen root and a prepared, split store.

* ``synthetic_root``: ``segweak.data.synthetic.synthesize`` with 3 tiles of 128×128 px (seed 0), in the
  official Vaihingen folder layout.
* ``tiny_store``: that root prepared with ``VaihingenSource`` (5 classes, clutter ignored), patch 32,
  stride 32 (48 patches), plus the split ``default`` (fractions 0.1/0.7/0.2, by patch, seed 0).

Both are built once per test session and must be treated as read-only; tests that modify a store
should copy it (``shutil.copytree``) or prepare their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_TILES = 3
TINY_SIZE = 128
TINY_PATCH = 32


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """Run the suite with one torch thread.

    Every test uses tiny models and tensors, where intra-op threads only add synchronisation; on a
    2-core machine that is busy with anything else, torch's default threading made tiny runs 10-30x
    slower (measured: a 2-epoch tiny weak run took 2.2 s with 1 thread, 21-38 s with 2 under load).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segweak.data.synthetic import synthesize

    out = tmp_path_factory.mktemp("synthetic") / "vaihingen"
    return Path(synthesize(out, n_tiles=TINY_TILES, height=TINY_SIZE, width=TINY_SIZE, seed=0))


@pytest.fixture(scope="session")
def tiny_store(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segweak.data.sources import VaihingenSource
    from segweak.data.splits import make_split
    from segweak.data.store import prepare

    out = tmp_path_factory.mktemp("stores") / "tiny"
    prepare(VaihingenSource(synthetic_root), out, patch=TINY_PATCH, stride=TINY_PATCH, progress=False)
    make_split(out, name="default", fractions=(0.1, 0.7, 0.2), by="patch", seed=0)
    return out


class FakeTile:
    """In-memory tile for store/split tests (random image, random 3-class mask, optional ignore)."""

    def __init__(
        self, tile_id: str, group: str, shape: tuple[int, int], seed: int, ignore_all: bool, fail: bool
    ):
        self.id, self.group, self.shape = tile_id, group, shape
        self.image_path = f"mem://{tile_id}/image"
        self.label_path = f"mem://{tile_id}/label"
        self.georef = None
        self._seed, self._ignore_all, self._fail = seed, ignore_all, fail

    def read(self):
        import numpy as np

        if self._fail:
            raise RuntimeError(f"simulated read failure of {self.id}")
        rng = np.random.default_rng(self._seed)
        image = rng.integers(0, 256, (*self.shape, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, self.shape).astype(np.uint8)
        mask[:3, :5] = 255
        if self._ignore_all:
            mask[:] = 255
        return image, mask


class FakeSource:
    """Minimal source object (``classes``, ``palette``, ``describe()``, ``tiles()``) over FakeTiles."""

    classes = ("a", "b", "c")
    palette = None

    def __init__(self, tiles: list[FakeTile]):
        self._tiles = tiles

    def tiles(self) -> list[FakeTile]:
        return list(self._tiles)

    def describe(self) -> dict:
        return {"kind": "fake", "n_tiles": len(self._tiles)}


@pytest.fixture
def fake_source():
    """Factory: ``fake_source(shapes, groups=None, fail_at=None, ignore_all=())`` -> FakeSource."""

    def make(
        shapes: list[tuple[int, int]],
        groups: list[str] | None = None,
        fail_at: int | None = None,
        ignore_all: tuple[int, ...] = (),
    ) -> FakeSource:
        tiles = [
            FakeTile(f"t{i}", groups[i] if groups else f"t{i}", shape, i, i in ignore_all, i == fail_at)
            for i, shape in enumerate(shapes)
        ]
        return FakeSource(tiles)

    return make


def _old_layout(cfg: dict) -> dict:
    """A resolved training config (dict) rewritten in the layout before training methods existed."""
    import copy

    old = copy.deepcopy(cfg)
    method = old.pop("method")
    options = (old.pop("methods", {}) or {}).get(method, {})
    init = old.pop("init", {}) or {}
    area = old["weak"].pop("area")
    old["weak"].update(
        method="proportion", loss="ce", eps=1e-6, use_valid_area=area == "valid", lse_r=5.0,
        presence_weight=0.5, presence_pooling="lse", entropy_weight=0.1,
    )  # fmt: skip
    old["finetune"] = {"init_from": init.get("checkpoint"), "reset_head": init.get("reset_head", False)}
    if method == "supervised":
        old["stage"] = "finetune" if init.get("checkpoint") else options.get("subset", "strong")
    else:
        old["stage"] = "weak"
        old["weak"].update(method=method, **options)
    for key in ("batch_sizes", "epoch"):
        old["data"].pop(key, None)
    return old


@pytest.fixture(scope="session")
def old_layout():
    """``old_layout(cfg_dict) -> dict``: a config in the layout written before training methods."""
    return _old_layout
