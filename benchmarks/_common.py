"""What several benchmark scripts share: a cached synthetic store to measure on.

Imported by the scripts as ``_common``: ``python benchmarks/<script>.py`` puts this directory first on
``sys.path``, so it resolves without installing anything (tests that load a script by file path put
the directory on ``sys.path`` themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def synthetic_store(
    cache: Path,
    name: str,
    *,
    patch: int,
    tile: int,
    tiles: int,
    split: str = "default",
    fractions: Sequence[float] | None = None,
) -> Path:
    """Build (once per cache directory) a synthetic Vaihingen-layout store with one split.

    ``tiles`` generated tiles of ``tile``² px (seed 0) are cut into ``patch``² patches (stride = patch)
    and split by patch with seed 0. The store is ``cache/<name>-store-p<patch>-t<tile>-n<tiles>``, its
    tiles ``cache/<name>-root-t<tile>-n<tiles>``; a later call finds the split manifest and reuses
    both, so repeated runs time the same data without rebuilding it.

    Args:
        cache: Directory of the cached data (created when missing).
        name: Prefix of the benchmark's folders, so benchmarks sharing a cache do not collide.
        patch: Patch side in pixels.
        tile: Side of the square synthetic tiles in pixels.
        tiles: Number of tiles.
        split: Name of the split manifest.
        fractions: strong / weak / val shares of the split (``None``: segweak's default).

    Returns:
        The store directory.
    """
    from segweak.data.sources import VaihingenSource
    from segweak.data.splits import make_split
    from segweak.data.store import prepare
    from segweak.data.synthetic import synthesize

    store = cache / f"{name}-store-p{patch}-t{tile}-n{tiles}"
    # The manifest is written last: when it is there, the store was completed by an earlier call.
    if (store / "splits" / f"{split}.json").is_file():
        return store
    root = cache / f"{name}-root-t{tile}-n{tiles}"
    if not (root / "synth.json").exists():
        synthesize(root, n_tiles=tiles, height=tile, width=tile, seed=0, overwrite=True)
    prepare(VaihingenSource(root), store, patch=patch, stride=patch, overwrite=True, progress=False)
    shares = {} if fractions is None else {"fractions": tuple(fractions)}
    make_split(store, name=split, seed=0, overwrite=True, **shares)
    return store
