"""The prepared store: patches cut from a source's tiles, memory-mapped for training.

Format (``format_version`` 1, documented in ``docs/store.md``)::

    STORE/
      store.json    metadata (source, classes, palette, patch/stride, tiles, image statistics, ...)
      images.npy    uint8 (N, P, P, C)
      masks.npy     uint8 (N, P, P), class indices 0..K-1, 255 = ignore
      masks_eroded.npy  optional, uint8 (N, P, P): the same patches' eroded-boundary labels
                    (Vaihingen/Potsdam ``_noBoundary``), for the ISPRS-style metrics next to the full ones
      patches.csv   index, id, tile, group, row, col, size, valid, count_<class>...
      splits/       split manifests (see :mod:`segweak.data.splits`)

:func:`prepare` first computes the number of patches from the tiles' shapes (headers only), then
streams tile by tile into ``np.lib.format.open_memmap`` arrays, so peak memory is about one tile
regardless of the dataset size. Everything is written into a temporary sibling directory that is
renamed into place at the end: an interrupted prepare leaves nothing at the output path.

When every tile of the source has an eroded label besides the one it is read with, :func:`prepare`
also cuts the eroded labels into ``masks_eroded.npy`` (``store.json`` ``eroded_masks``), so evaluation
can report metrics on both (``eroded_metrics=False`` skips it).

``store.json`` records the size, SHA-256 and a *sampled* SHA-256 (of a fixed set of 4 KiB blocks) of
``images.npy``, ``masks.npy``, ``patches.csv`` and ``masks_eroded.npy`` when present. Opening a store
checks the ``.npy`` headers against the metadata, the file sizes and the sampled hashes (milliseconds
whatever the store size), so a truncated file or one swapped in from another store is refused;
:meth:`Store.verify` (``segweak info --verify``) rereads everything and compares the full hashes.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segweak import __version__
from segweak.data import tiling
from segweak.data.palette import IGNORE_INDEX, Palette
from segweak.data.tiles import Source, SourceTile, Tile, tile_from_record
from segweak.errors import SegweakError
from segweak.io import (
    Log,
    atomic_directory,
    atomic_write_json,
    check_disjoint,
    check_output_dir,
    describe_entries,
    input_path,
    is_temp_name,
    stderr_log,
)
from segweak.weak.labels import class_counts

FORMAT_VERSION = 1
STORE_FILES = ("store.json", "images.npy", "masks.npy", "patches.csv")
ERODED_MASKS = "masks_eroded.npy"
"""Optional store file: the eroded-boundary masks (``store.json`` ``eroded_masks`` names it)."""
CHECKED_FILES = ("images.npy", "masks.npy", "patches.csv")
"""Files whose size and hashes ``store.json`` records (key ``files``)."""
SAMPLE_BLOCKS = 64
SAMPLE_BLOCK_SIZE = 4096
"""The sampled SHA-256 covers this many blocks of this size, evenly spaced from the first to the last
byte (the whole file when it is smaller); part of the store format, do not change."""
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------------
# helpers turning the source's objects into JSON


def class_names(classes: Any) -> list[str]:
    """Class names, in index order, of a ClassSet-like object (or a plain sequence of names)."""
    if hasattr(classes, "names"):
        names = classes.names
        names = names() if callable(names) else names
        return [str(n) for n in names]
    if isinstance(classes, Sequence) and not isinstance(classes, str):
        return [str(getattr(c, "name", c)) for c in classes]
    raise SegweakError(f"cannot read class names from {type(classes).__name__}")


def _jsonable(obj: Any) -> Any:
    """Best-effort conversion of describe()/palette/georef values to JSON types."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    for method in ("to_dict", "as_dict", "describe"):
        fn = getattr(obj, method, None)
        if callable(fn):
            return _jsonable(fn())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    return repr(obj)


def _tile_record(tile: SourceTile) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": str(tile.id),
        "group": str(tile.group),
        "shape": [int(tile.shape[0]), int(tile.shape[1])],
        "image_path": str(tile.image_path),
        # None: an image stored without a pixel mask (all ignore; weak labels only).
        "label_path": None if tile.label_path is None else str(tile.label_path),
        "georef": _jsonable(getattr(tile, "georef", None)),
    }
    eroded = getattr(tile, "eroded_label_path", None)
    if eroded:
        rec["eroded_label_path"] = str(eroded)
    # Which of the labels was actually read (Vaihingen: full or eroded), for provenance.
    read = getattr(tile, "active_label_path", tile.label_path)
    rec["read_label_path"] = None if read is None else str(read)
    for channel in getattr(tile, "extra", ()):  # e.g. the DSM a channel was computed from
        rec.setdefault("extra_channel_paths", {})[str(channel.name)] = str(channel.path)
    return rec


def _check_tiles(tiles: list[SourceTile]) -> None:
    if not tiles:
        raise SegweakError("the source has no tiles; check the input paths")
    seen: set[str] = set()
    for t in tiles:
        if t.id in seen:
            raise SegweakError(f"duplicate tile id {t.id!r} in the source; tile ids must be unique")
        seen.add(t.id)


def _validate_tile(
    tile: SourceTile, image: np.ndarray, mask: np.ndarray, channels: int | None, k: int
) -> np.ndarray:
    """Check one read tile against the contract; return its mask value histogram (256,)."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise SegweakError(
            f"tile {tile.id!r}: image must be uint8 HxWxC, got {image.dtype} with shape {image.shape}"
        )
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise SegweakError(f"tile {tile.id!r}: mask must be uint8 HxW, got {mask.dtype} {mask.shape}")
    expected = (int(tile.shape[0]), int(tile.shape[1]))
    if image.shape[:2] != expected or mask.shape != expected:
        raise SegweakError(
            f"tile {tile.id!r}: header says {expected} but image is {image.shape[:2]} and mask is "
            f"{mask.shape} ({tile.image_path}, {tile.label_path})"
        )
    if channels is not None and image.shape[2] != channels:
        raise SegweakError(
            f"tile {tile.id!r} has {image.shape[2]} channels but earlier tiles have {channels}; "
            "all images of a store must have the same bands"
        )
    return _value_histogram(mask, k, f"tile {tile.id!r}: mask", tile.label_path)


def _value_histogram(mask: np.ndarray, k: int, what: str, path: str | None) -> np.ndarray:
    """Return the (256,) histogram of a class mask, refusing values outside ``0..k-1`` and ignore.

    Args:
        mask: H×W uint8 class mask.
        k: Number of classes.
        what: How the error names the mask, e.g. ``"tile 'area1': mask"``.
        path: The label file, for the error.
    """
    hist = np.bincount(mask.ravel(), minlength=256)
    bad = np.flatnonzero(hist[k:IGNORE_INDEX])
    if bad.size:
        raise SegweakError(
            f"{what} contains value(s) {(bad + k).tolist()} outside 0..{k - 1} and {IGNORE_INDEX} ({path})"
        )
    return hist


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]prepare[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def _snap_summary(per_tile: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Totals and per-tile colour-snapping statistics (None when the reader reports none)."""
    if not per_tile:
        return None
    total: dict[str, Any] = {}
    for rec in per_tile:
        for key, val in rec.items():
            if key == "tile" or not isinstance(val, (int, float)):
                continue
            total[key] = max(total.get(key, 0), val) if key.startswith("max") else total.get(key, 0) + val
    return {"total": total, "tiles": per_tile}


# ---------------------------------------------------------------------------------------------------
# file integrity


def _npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Parse a ``.npy`` header: ``(shape, fortran_order, dtype, data offset)``; reads a few bytes.

    Raises:
        SegweakError: When the file is not a ``.npy`` array.
    """
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            return tuple(int(d) for d in shape), bool(fortran), dtype, fh.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise SegweakError(
            f"{path} is not a readable .npy array ({exc}); the store is damaged: re-run `segweak prepare`"
        ) from None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a whole file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sampled_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) over the file size and :data:`SAMPLE_BLOCKS` evenly spaced blocks.

    Cheap enough to run on every :class:`Store` open (at most 256 KiB read), yet any file swapped in
    from another store differs in some sampled block. Small files are hashed whole.
    """
    size = os.path.getsize(path)
    h = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as fh:
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK_SIZE:
            h.update(fh.read())
        else:
            span = size - SAMPLE_BLOCK_SIZE
            for i in range(SAMPLE_BLOCKS):
                fh.seek(i * span // (SAMPLE_BLOCKS - 1))
                h.update(fh.read(SAMPLE_BLOCK_SIZE))
    return h.hexdigest()


def _file_record(path: Path, sha256: str) -> dict[str, Any]:
    return {"bytes": os.path.getsize(path), "sha256": sha256, "sampled_sha256": sampled_sha256(path)}


def _not_a_store(path: Path) -> str | None:
    """Inspector for ``--overwrite``: None when ``path`` is a store and holds nothing else."""
    meta_path = path / "store.json"
    if not meta_path.is_file():
        return "it is not a segweak store (no store.json)"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its store.json is not valid JSON, so it is not a segweak store"
    if not isinstance(meta, dict) or not {"format_version", "n_patches", "classes"} <= set(meta):
        return "its store.json was not written by segweak prepare"
    # Anything a store does not hold (besides segweak's own hidden temporary/lock files) belongs to
    # someone else and must not be deleted with the store.
    foreign = [
        p.name
        for p in path.iterdir()
        if p.name not in (*STORE_FILES, ERODED_MASKS, "splits") and not _own(p.name)
    ]
    splits = path / "splits"
    if splits.is_dir():
        foreign += [
            f"splits/{p.name}"
            for p in splits.iterdir()
            if not (p.suffix == ".json" and p.is_file()) and not _own(p.name)
        ]
    elif splits.exists():
        foreign.append("splits")
    if foreign:
        return f"it holds files that are not part of a store ({', '.join(sorted(foreign)[:6])})"
    return None


def _own(name: str) -> bool:
    """Whether ``name`` is a hidden temporary or lock file of segweak (``.NAME.<random>.tmp``, ``.lock``)."""
    return is_temp_name(name) or (name.startswith(".") and name.endswith(".lock"))


def _source_inputs(source: Source) -> list[Path]:
    """Folders and files a source reads that are known without listing tiles."""
    found = []
    for attr in ("root", "images", "masks"):
        value = getattr(source, attr, None)
        if isinstance(value, (str, os.PathLike)):
            found.append(Path(value))
    return found


def _tile_inputs(tiles: Iterable[SourceTile]) -> list[Path]:
    """Folders holding the tiles' image and label files (deduplicated; zip archives' folders)."""
    dirs: set[Path] = set()
    for t in tiles:
        for locator in (t.image_path, t.label_path, getattr(t, "eroded_label_path", None)):
            path = input_path(locator) if locator else None
            if path is not None:
                dirs.add(path.parent)
    return sorted(dirs)


# ---------------------------------------------------------------------------------------------------
# eroded-boundary masks


def _has_eroded_labels(tiles: Sequence[Any]) -> bool:
    """Whether every tile has an eroded label that it is not already read with.

    A store with eroded masks for only some tiles would report "eroded" metrics over part of the
    evaluated patches, so they are kept only when all tiles have them.
    """
    return all(
        getattr(t, "eroded_label_path", None)
        and not getattr(t, "use_eroded", False)
        and dataclasses.is_dataclass(t)
        and hasattr(t, "read_mask")
        for t in tiles
    )


def _write_eroded(
    tile: Any,
    shape: tuple[int, ...],
    k: int,
    tmp: Path,
    origins: list[tuple[int, int]],
    patch: int,
    start: int,
    hashers: dict[str, Any],
) -> np.ndarray:
    """Read ``tile``'s eroded label, write its patches into ``masks_eroded.npy`` from row ``start``.

    Returns:
        The label's value histogram (256,).

    Raises:
        SegweakError: When the eroded label's size or values break the contract of a mask.
    """
    eroded, _ = dataclasses.replace(tile, use_eroded=True).read_mask()
    eroded = np.asarray(eroded)
    if eroded.dtype != np.uint8 or eroded.shape != tuple(shape):
        raise SegweakError(
            f"tile {tile.id!r}: eroded label {tile.eroded_label_path} is {eroded.dtype} {eroded.shape}, "
            f"the full label is uint8 {tuple(shape)}; fix the labels or prepare with --no-eroded-metrics"
        )
    hist = _value_histogram(eroded, k, f"tile {tile.id!r}: eroded label", tile.eroded_label_path)
    patches = tiling.extract(eroded, origins, patch)
    mm = np.load(tmp / ERODED_MASKS, mmap_mode="r+")
    mm[start : start + len(origins)] = patches
    hashers[ERODED_MASKS].update(mm[start : start + len(origins)])
    del mm
    return hist


# ---------------------------------------------------------------------------------------------------
# prepare


def prepare(
    source: Source,
    out: str | os.PathLike[str],
    patch: int = 256,
    stride: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    inputs: Iterable[str | os.PathLike[str]] = (),
    log: Log | None = None,
    eroded_metrics: bool = True,
) -> Path:
    """Cut every tile of ``source`` into ``patch``-sized windows and write a prepared store.

    Args:
        source: A reader of labelled tiles (:class:`~segweak.data.tiles.Source`: ``VaihingenSource``,
            ``PotsdamSource``, ``FolderSource``).
        out: Output store directory (must not exist unless ``overwrite``).
        patch: Square patch side ``P`` in pixels.
        stride: Window step ``S`` in pixels (``1..P``); ``None`` means ``P`` (no overlap). The last
            window of each row/column is shifted to end at the tile edge (see :mod:`segweak.data.tiling`).
        overwrite: Replace an existing store at ``out`` (only once the new one is complete). Only
            a folder holding a segweak store and nothing else is ever replaced.
        progress: Show a progress bar (one step per tile).
        inputs: Further paths the source reads (e.g. the palette file); ``out`` must not be or
            contain them, nor the source's root/images/masks folders or any tile's folder.
        log: Receives one-line notes (what is replaced, leftovers cleaned); default standard error.
        eroded_metrics: When every tile has an eroded-boundary label besides the one it is read
            with (Vaihingen/Potsdam ``_noBoundary`` read as full labels), also store those as
            ``masks_eroded.npy``; evaluation then reports metrics on them too. False skips it.

    Returns:
        The store path.

    Raises:
        SegweakError: Existing output without ``overwrite``, an output that is not a store or holds
            an input, patch larger than a tile, bad stride, or a tile that breaks the reader contract.
    """
    out = Path(out)
    log = log or stderr_log
    replacing = check_output_dir(
        out,
        overwrite=overwrite,
        inspect=_not_a_store,
        inputs=[*_source_inputs(source), *inputs],
        what="store",
    )
    stride = patch if stride is None else stride
    tiling.check_patch_stride(patch, stride)
    names = class_names(source.classes)
    k = len(names)
    tiles = list(source.tiles())
    _check_tiles(tiles)
    check_disjoint(out, _tile_inputs(tiles))
    if replacing:
        log(f"--overwrite: {out} ({describe_entries(out)}) will be replaced once the new store is complete")
    with_eroded = eroded_metrics and _has_eroded_labels(tiles)
    arrays = ("images.npy", "masks.npy", *((ERODED_MASKS,) if with_eroded else ()))
    # Pass 1 (headers only): window origins of every tile -> N, so the arrays can be pre-allocated.
    origins = [tiling.windows(t.shape, patch, stride, t.id) for t in tiles]
    n_total = sum(len(o) for o in origins)

    with atomic_directory(out, overwrite=overwrite, inspect=_not_a_store, log=log) as tmp:
        channels: int | None = None
        # Full SHA-256 of each array, fed while streaming (header first, then patch after patch in
        # file order), so no second pass over a possibly larger-than-RAM store is needed.
        hashers: dict[str, Any] = {}
        hist_sum: np.ndarray | None = None  # (C, 256) exact per-channel value histogram
        tile_hist = np.zeros(256, dtype=np.int64)
        eroded_hist = np.zeros(256, dtype=np.int64)
        tile_stats: list[dict[str, Any]] = []
        idx = 0
        count_cols = [f"count_{n}" for n in names]
        with (
            open(tmp / "patches.csv", "w", newline="", encoding="utf-8") as fh,
            _progress(progress) as bar,
        ):
            writer = csv.writer(fh)
            writer.writerow(["index", "id", "tile", "group", "row", "col", "size", "valid", *count_cols])
            task = bar.add_task("tiles", total=len(tiles))
            for tile, tile_origins in zip(tiles, origins, strict=True):
                bar.update(task, description=str(tile.id))
                # Readers that can report colour-snapping statistics do so via read_with_stats().
                stats = None
                if hasattr(tile, "read_with_stats"):
                    image, mask, stats = tile.read_with_stats()
                else:
                    image, mask = tile.read()
                image = np.asarray(image)
                mask = np.asarray(mask)
                hist = _validate_tile(tile, image, mask, channels, k)
                tile_hist += hist
                if channels is None:
                    # Create the .npy files at full size (sparse until written); C is known now.
                    channels = int(image.shape[2])
                    shapes = {
                        "images.npy": (n_total, patch, patch, channels),
                        "masks.npy": (n_total, patch, patch),
                        ERODED_MASKS: (n_total, patch, patch),
                    }
                    for fname in arrays:
                        shape = shapes[fname]
                        mm = np.lib.format.open_memmap(tmp / fname, mode="w+", dtype=np.uint8, shape=shape)
                        del mm
                        offset = _npy_header(tmp / fname)[3]
                        with open(tmp / fname, "rb") as hfh:
                            hashers[fname] = hashlib.sha256(hfh.read(offset))
                    hist_sum = np.zeros((channels, 256), dtype=np.int64)
                for c in range(channels):
                    hist_sum[c] += np.bincount(image[..., c].ravel(), minlength=256)
                n = len(tile_origins)
                tile_masks = tiling.extract(mask, tile_origins, patch)
                # Map the files per tile: dirty file-backed pages count towards the process RSS while
                # mapped, so unmapping after each tile keeps peak memory at about one tile.
                images_mm = np.load(tmp / "images.npy", mmap_mode="r+")
                masks_mm = np.load(tmp / "masks.npy", mmap_mode="r+")
                for j, (r, c) in enumerate(tile_origins):
                    images_mm[idx + j] = image[r : r + patch, c : c + patch]
                masks_mm[idx : idx + n] = tile_masks
                hashers["images.npy"].update(images_mm[idx : idx + n])
                hashers["masks.npy"].update(masks_mm[idx : idx + n])
                del images_mm, masks_mm  # unmapping leaves write-back to the kernel (no per-tile msync)
                if with_eroded:
                    eroded_hist += _write_eroded(tile, mask.shape, k, tmp, tile_origins, patch, idx, hashers)
                counts = class_counts(tile_masks, k)
                valid = counts.sum(axis=1)
                for j, (r, c) in enumerate(tile_origins):
                    writer.writerow(
                        [idx + j, f"{tile.id}_r{r}_c{c}", tile.id, tile.group, r, c, patch, int(valid[j])]
                        + counts[j].tolist()
                    )
                if stats is not None:
                    tile_stats.append({"tile": str(tile.id), **_jsonable(stats)})
                idx += n
                del image, mask, tile_masks
                bar.advance(task)
        assert idx == n_total and hist_sum is not None
        files: dict[str, dict[str, Any]] = {}
        for fname in arrays:
            fd = os.open(tmp / fname, os.O_RDONLY)
            try:
                os.fsync(fd)  # on disk before the directory is renamed into place
            finally:
                os.close(fd)
            files[fname] = _file_record(tmp / fname, hashers[fname].hexdigest())
        files["patches.csv"] = _file_record(tmp / "patches.csv", file_sha256(tmp / "patches.csv"))

        values = np.arange(256, dtype=np.float64)
        npix = hist_sum.sum(axis=1).astype(np.float64)
        mean = (hist_sum * values).sum(axis=1) / npix
        var = (hist_sum * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / npix
        describe = _jsonable(source.describe())
        band_order = getattr(source, "band_order", None) or (
            describe.get("band_order") if isinstance(describe, dict) else None
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {
                "kind": (describe.get("kind") if isinstance(describe, dict) else None)
                or type(source).__name__,
                "describe": describe,
            },
            "classes": names,
            "palette": _jsonable(getattr(source, "palette", None)),
            "ignore_index": IGNORE_INDEX,
            "band_order": _jsonable(band_order),
            # Per channel: name, source file/band and how it was mapped to 0..255 (readers that know it).
            "bands": describe.get("bands") if isinstance(describe, dict) else None,
            "channels": channels,
            "patch": int(patch),
            "stride": int(stride),
            "edge_policy": tiling.EDGE_POLICY,
            "n_patches": int(n_total),
            "n_tiles": len(tiles),
            "tiles": [_tile_record(t) for t in tiles],
            # Tiles stored without a pixel mask (all ignore): their patches are used only through
            # imported weak labels (``segweak split --weak-labels``), never as strong or val patches.
            "unlabelled_tiles": [str(t.id) for t in tiles if t.label_path is None],
            "image_stats": {"mean": mean.tolist(), "std": np.sqrt(var).tolist(), "scale": "0..255"},
            "label_stats": {
                "pixels": {n: int(tile_hist[i]) for i, n in enumerate(names)},
                "ignore": int(tile_hist[IGNORE_INDEX]),
                "snapping": _snap_summary(tile_stats),
            },
            # The eroded-boundary masks of the same patches (None: the store has none).
            "eroded_masks": {
                "file": ERODED_MASKS,
                "pixels": {n: int(eroded_hist[i]) for i, n in enumerate(names)},
                "ignore": int(eroded_hist[IGNORE_INDEX]),
            }
            if with_eroded
            else None,
            "files": files,
        }
        atomic_write_json(tmp / "store.json", meta)
    return out


# ---------------------------------------------------------------------------------------------------
# reader


class Store:
    """Read access to a prepared store; cheap to construct and picklable.

    The image and mask arrays are opened lazily (``np.load(mmap_mode="r")``) on first access and are
    not pickled, so a ``Store`` can be sent to DataLoader worker processes, each of which maps the
    files itself.

    Attributes:
        path: Store directory.
        meta: Parsed ``store.json``.
        classes: Class names (``K``).
        ids: Patch ids (``N``), e.g. ``"area1_r0_c256"``.
        tiles: Source tile of each patch (``N``).
        groups: Group key of each patch (``N``).
        rows, cols: Patch origin in its tile, ``(N,)`` int64.
        counts: ``(N, K)`` int64 per-class valid pixel counts.
        valid: ``(N,)`` int64 valid (non-ignore) pixels per patch.
        has_eroded_masks: Whether the store holds eroded-boundary masks (:attr:`eroded_masks`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SegweakError(f"{self.path} is not a directory; expected a store made by `segweak prepare`")
        missing = [f for f in STORE_FILES if not (self.path / f).is_file()]
        if missing:
            raise SegweakError(
                f"{self.path} is not a segweak store (missing {', '.join(missing)}); "
                "create one with `segweak prepare`"
            )
        try:
            self.meta: dict[str, Any] = json.loads((self.path / "store.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SegweakError(f"cannot read {self.path / 'store.json'}: {exc}") from exc
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise SegweakError(
                f"{self.path / 'store.json'} has format_version {version!r}; this segweak "
                f"({__version__}) reads version {FORMAT_VERSION}; re-run `segweak prepare`"
            )
        self.classes: list[str] = list(self.meta["classes"])
        self.has_eroded_masks = bool(self.meta.get("eroded_masks"))
        self._check_files()
        self._read_manifest()
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._eroded_masks: np.ndarray | None = None
        self._tile_patches: dict[str, np.ndarray] | None = None

    def _damaged(self, fname: str, detail: str) -> SegweakError:
        return SegweakError(
            f"{self.path / fname} does not match {self.path / 'store.json'} ({detail}): the file is "
            "truncated, modified or from another store; re-run `segweak prepare` to rebuild the store"
        )

    def _check_files(self) -> None:
        """Cheap integrity check on open: array headers, file sizes and sampled hashes.

        Without it a truncated array fails deep inside training (``mmap length is greater than
        file size``) and an array swapped in from another store trains on the wrong images silently.
        """
        n, p = int(self.meta["n_patches"]), int(self.meta["patch"])
        expected_shapes = {"images.npy": (n, p, p, int(self.meta["channels"])), "masks.npy": (n, p, p)}
        if self.has_eroded_masks:
            if not (self.path / ERODED_MASKS).is_file():
                raise self._damaged(ERODED_MASKS, "store.json records eroded masks but the file is missing")
            expected_shapes[ERODED_MASKS] = (n, p, p)
        for fname, expected in expected_shapes.items():
            shape, fortran, dtype, offset = _npy_header(self.path / fname)
            if shape != expected or dtype != np.uint8 or fortran:
                raise self._damaged(
                    fname, f"it holds {dtype} {shape}, the store needs uint8 {expected} in C order"
                )
            size = os.path.getsize(self.path / fname)
            needed = offset + int(np.prod(shape)) * dtype.itemsize
            if size != needed:
                raise self._damaged(fname, f"{size} bytes on disk, its header needs {needed}")
        for fname, rec in (self.meta.get("files") or {}).items():
            size = os.path.getsize(self.path / fname)
            if size != rec["bytes"]:
                raise self._damaged(fname, f"{size} bytes on disk, recorded {rec['bytes']}")
            if sampled_sha256(self.path / fname) != rec["sampled_sha256"]:
                raise self._damaged(fname, "its content differs from the sampled hash recorded at prepare")

    def verify(self) -> dict[str, str]:
        """Reread the store's files and compare their SHA-256 with those recorded at prepare time.

        Returns:
            ``{file name: "ok"}`` for every checked file.

        Raises:
            SegweakError: Naming the files whose content differs, or when ``store.json`` records no
                hashes (stores prepared before segweak recorded them cannot be verified).
        """
        files = self.meta.get("files")
        if not files:
            raise SegweakError(
                f"{self.path / 'store.json'} records no content hashes (prepared by segweak "
                f"{self.meta.get('tool_version')}, before they were added), so --verify cannot check it; "
                "re-run `segweak prepare` to get a verifiable store"
            )
        bad = [f for f, rec in sorted(files.items()) if file_sha256(self.path / f) != rec["sha256"]]
        if bad:
            raise SegweakError(
                f"{', '.join(str(self.path / f) for f in bad)}: content differs from the SHA-256 "
                "recorded at prepare time (modified, corrupted or from another store); re-run "
                "`segweak prepare` to rebuild the store"
            )
        return {f: "ok" for f in sorted(files)}

    def _read_manifest(self) -> None:
        k = len(self.classes)
        with open(self.path / "patches.csv", newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            expected = ["index", "id", "tile", "group", "row", "col", "size", "valid"] + [
                f"count_{c}" for c in self.classes
            ]
            if header != expected:
                raise SegweakError(f"{self.path / 'patches.csv'} has an unexpected header; re-run prepare")
            rows = list(reader)
        n = int(self.meta["n_patches"])
        if len(rows) != n:
            raise SegweakError(
                f"{self.path / 'patches.csv'} has {len(rows)} rows but store.json says {n} patches"
            )
        self.ids = [r[1] for r in rows]
        self.tiles = [r[2] for r in rows]
        self.groups = [r[3] for r in rows]
        num = np.array([[int(v) for v in (r[0], *r[4:])] for r in rows], dtype=np.int64).reshape(n, 5 + k)
        if n and not np.array_equal(num[:, 0], np.arange(n)):
            raise SegweakError(f"{self.path / 'patches.csv'}: index column is not 0..N-1")
        self.rows = num[:, 1]
        self.cols = num[:, 2]
        self.valid = num[:, 4]
        self.counts = num[:, 5:]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None
        state["_masks"] = None
        state["_eroded_masks"] = None
        return state

    def __len__(self) -> int:
        return len(self.ids)

    def tile_patches(self) -> dict[str, np.ndarray]:
        """Return ``{tile id: (n,) int64 store indices of its patches, ascending}``, built once.

        For work done tile by tile (weak-label rows, polygons): comparing every patch's tile id for
        each query would cost O(patches) a query, O(rows × patches) for a table of one row per patch.
        """
        if self._tile_patches is None:
            groups: dict[str, list[int]] = {}
            for i, tile in enumerate(self.tiles):
                groups.setdefault(tile, []).append(i)
            self._tile_patches = {t: np.asarray(ix, dtype=np.int64) for t, ix in groups.items()}
        return self._tile_patches

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, n_patches={len(self)}, classes={self.classes})"

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.classes)

    @property
    def patch(self) -> int:
        """Patch side ``P``."""
        return int(self.meta["patch"])

    @property
    def images(self) -> np.ndarray:
        """``(N, P, P, C)`` uint8 memmap (read-only)."""
        if self._images is None:
            self._images = np.load(self.path / "images.npy", mmap_mode="r")
        return self._images

    @property
    def masks(self) -> np.ndarray:
        """``(N, P, P)`` uint8 memmap (read-only), 255 = ignore."""
        if self._masks is None:
            self._masks = np.load(self.path / "masks.npy", mmap_mode="r")
        return self._masks

    @property
    def eroded_masks(self) -> np.ndarray:
        """``(N, P, P)`` uint8 memmap (read-only) of the eroded-boundary masks, 255 = ignore.

        Raises:
            SegweakError: When the store has none (:attr:`has_eroded_masks` is false).
        """
        if not self.has_eroded_masks:
            raise SegweakError(
                f"store {self.path} has no eroded masks ({ERODED_MASKS}); prepare it from a source with "
                "eroded labels (segweak prepare vaihingen|potsdam) to get them"
            )
        if self._eroded_masks is None:
            self._eroded_masks = np.load(self.path / ERODED_MASKS, mmap_mode="r")
        return self._eroded_masks

    @property
    def mean(self) -> np.ndarray:
        """Per-channel image mean (0..255 scale), ``(C,)`` float32."""
        return np.asarray(self.meta["image_stats"]["mean"], dtype=np.float32)

    @property
    def std(self) -> np.ndarray:
        """Per-channel image standard deviation (0..255 scale), ``(C,)`` float32."""
        return np.asarray(self.meta["image_stats"]["std"], dtype=np.float32)

    @property
    def patches(self) -> list[dict[str, Any]]:
        """One dict per patch, as in ``patches.csv`` (counts as a ``{class: n}`` dict)."""
        return [
            {
                "index": i,
                "id": self.ids[i],
                "tile": self.tiles[i],
                "group": self.groups[i],
                "row": int(self.rows[i]),
                "col": int(self.cols[i]),
                "size": self.patch,
                "valid": int(self.valid[i]),
                "counts": {c: int(self.counts[i, j]) for j, c in enumerate(self.classes)},
            }
            for i in range(len(self))
        ]

    @property
    def unlabelled(self) -> np.ndarray:
        """``(N,)`` bool: the patch comes from a tile stored without a pixel mask (``unlabelled_tiles``)."""
        ids = set(self.meta.get("unlabelled_tiles") or [])
        return np.fromiter((t in ids for t in self.tiles), dtype=bool, count=len(self.tiles))

    def split_names(self) -> list[str]:
        """Names of the split manifests in ``STORE/splits``, sorted."""
        d = self.path / "splits"
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.json") if not p.name.startswith("."))


def open_store(store: Store | str | os.PathLike[str]) -> Store:
    """Return ``store`` if it is a :class:`Store`, else open the path."""
    return store if isinstance(store, Store) else Store(store)


class StoreTiles:
    """The tiles recorded in a store's ``store.json``, read from their source paths as ``prepare`` did.

    Images keep the store's bands (a constant alpha band is dropped, a DSM channel is recomputed with
    the recorded normalisation); labels are decoded with the store's palette (palette-mode files
    through their colour table), so predictions see exactly the input the network was trained on.

    Args:
        store: A :class:`~segweak.data.store.Store`.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.records = {rec["id"]: rec for rec in store.meta.get("tiles", [])}
        pal = store.meta.get("palette")
        self.palette = Palette.from_dict(pal, where=f"{store.path}/store.json palette") if pal else None

    def ids(self) -> list[str]:
        """Tile ids in store order."""
        return list(self.records)

    def _tile(self, tile_id: str, eroded: bool = False) -> Tile:
        tile = tile_from_record(self.records[tile_id], self.store.meta, self.palette)
        tile.use_eroded = eroded
        return tile

    def image(self, tile_id: str) -> np.ndarray:
        """H×W×C uint8 image of a tile (C = the store's channels)."""
        return self._reading(tile_id, lambda: self._tile(tile_id).read_image())

    def label(self, tile_id: str, eroded: bool = False) -> np.ndarray | None:
        """H×W uint8 class mask (255 = ignore) or ``None`` when the tile has no such label."""
        key = "eroded_label_path" if eroded else "label_path"
        if not self.records[tile_id].get(key) or self.palette is None:
            return None
        return self._reading(tile_id, lambda: self._tile(tile_id, eroded).read_mask()[0])

    @staticmethod
    def _reading(tile_id: str, read: Callable[[], np.ndarray]) -> np.ndarray:
        try:
            return read()
        except SegweakError as exc:
            raise SegweakError(
                f"tile {tile_id}: {exc} (the store records the source file paths of its tiles: are the "
                "source files still at that path?)"
            ) from None

    def georef(self, tile_id: str) -> dict[str, Any] | None:
        """``{"crs": wkt|None, "transform": [a,b,c,d,e,f]}`` or ``None``."""
        return self.records[tile_id].get("georef")
