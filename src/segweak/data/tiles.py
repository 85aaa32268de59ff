"""Tiles: one labelled image of a source, read lazily, and the :class:`Source` protocol.

A *source* (:class:`Source`: :class:`~segweak.data.sources.VaihingenSource`,
:class:`~segweak.data.potsdam.PotsdamSource`, :class:`~segweak.data.sources.FolderSource`) lists its
:class:`Tile` objects cheaply (raster headers only) and pixels are read tile by tile in
:meth:`Tile.read`, so memory stays bounded to one tile. :func:`tile_from_record` rebuilds a tile
from ``store.json`` (:class:`~segweak.data.store.StoreTiles`), so ``segweak predict`` reads whole
tiles exactly as ``prepare`` did. All pixels are read through :mod:`segweak.data.raster`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from segweak.data.dsm import DsmChannel, DsmNormalisation
from segweak.data.palette import IGNORE_INDEX, ClassSet, Palette, SnapStats
from segweak.data.raster import read_label, read_raster
from segweak.errors import SegweakError

# ---- sources ----------------------------------------------------------------------------------------


class SourceTile(Protocol):
    """What :func:`~segweak.data.store.prepare` needs of a tile (:class:`Tile` is the full one)."""

    id: str
    group: str
    shape: tuple[int, int]
    image_path: str
    label_path: str | None

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Image H×W×C uint8 and mask H×W uint8 (class indices, 255 = ignore)."""
        ...


@runtime_checkable
class Source(Protocol):
    """A reader of labelled tiles, what :func:`~segweak.data.store.prepare` cuts into a store.

    Satisfied by :class:`~segweak.data.sources.VaihingenSource` (also the reader of synthetic data,
    which ``segweak synth`` writes in the official layouts), :class:`~segweak.data.potsdam.PotsdamSource`
    and :class:`~segweak.data.sources.FolderSource`. ``describe()`` is JSON-serialisable and goes into
    ``store.json`` (with a ``bands`` entry per channel: name, source, normalisation, and ``kind``).
    """

    @property
    def classes(self) -> ClassSet | Sequence[str]:
        """The class set (or class names in index order)."""
        ...

    @property
    def palette(self) -> Palette | None:
        """The palette that encodes the labels (None: recorded as such in ``store.json``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for the store's metadata."""
        ...

    def tiles(self) -> Sequence[SourceTile]:
        """All tiles, cheaply (headers only)."""
        ...


# ---- band records ---------------------------------------------------------------------------------


def image_band_records(names: list[str], where: str) -> list[dict[str, Any]]:
    """``store.json`` ``bands`` entries of image bands kept as stored (8-bit, no rescaling)."""
    return [
        {"name": n, "source": f"{where} band {i + 1}", "normalisation": "none: 8-bit values as stored"}
        for i, n in enumerate(names)
    ]


def dsm_band_record(dsm: DsmNormalisation, pattern: str, gsd: float) -> dict[str, Any]:
    """``store.json`` ``bands`` entry of a DSM channel."""
    return {
        "name": dsm.channel_name,
        "source": f"{pattern} (float32 elevation, metres)",
        "normalisation": dsm.describe(gsd),
    }


# ---- Tile -------------------------------------------------------------------------------------------


def _select_bands(arr: np.ndarray, bands: int, locator: str, what: str) -> np.ndarray:
    """Return H×W×``bands``.

    For 3 expected bands, a constant 4th (alpha) band is dropped; a non-constant one is real data or a
    transparency mask, so it is an error. Any other count must match exactly.
    """
    c = arr.shape[2]
    if c == bands:
        return arr
    if bands == 3 and c == 4:
        alpha = arr[..., 3]
        if alpha.size == 0 or (alpha == alpha.flat[0]).all():
            return np.ascontiguousarray(arr[..., :3])
        raise SegweakError(
            f"{what} {locator} has 4 bands and the 4th (alpha) is not constant, so it is real data or a "
            "transparency mask; for 4-band imagery name the 4 bands (e.g. --band-order RGBIR), otherwise "
            "convert the file to 3 bands"
        )
    expected = "3 (or 4 with a constant alpha band)" if bands == 3 else str(bands)
    raise SegweakError(f"{what} {locator} has {c} band(s); expected {expected}")


def _as_uint8(arr: np.ndarray, locator: str, what: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    raise SegweakError(f"{what} {locator} has data type {arr.dtype}; segweak reads 8-bit images only")


@dataclass
class Tile:
    """One labelled image of a source (see docs/architecture.md).

    Attributes:
        id: Unique id, e.g. ``"area1"``.
        group: Group key for group-wise splits.
        shape: (H, W), known from the headers.
        image_path: Path or zip locator of the image.
        label_path: Path or zip locator of the full label, or None for an image without a pixel mask
            (``prepare folder --allow-missing-masks``): its mask is all ignore (255).
        georef: ``{"crs": wkt or None, "transform": [a, b, c, d, e, f]}`` or None.
        eroded_label_path: Path or locator of the label with eroded boundaries (``_noBoundary``), if any.
        palette: Palette that encodes the label (not part of equality or repr).
        use_eroded: :meth:`read` uses ``eroded_label_path`` instead of ``label_path``.
        bands: Image bands to keep: 3 (a constant 4th alpha band is dropped) or exactly this many.
        extra: Extra channels appended after the image bands (e.g. a :class:`~segweak.data.dsm.DsmChannel`),
            each with ``name``, ``path`` and ``read(shape) -> H×W uint8``.
    """

    id: str
    group: str
    shape: tuple[int, int]
    image_path: str
    label_path: str | None
    georef: dict[str, Any] | None = None
    eroded_label_path: str | None = None
    palette: Palette | None = field(default=None, repr=False, compare=False)
    use_eroded: bool = False
    bands: int = 3
    extra: tuple[Any, ...] = ()

    @property
    def active_label_path(self) -> str | None:
        """The label file :meth:`read` decodes (None: the tile has no pixel mask)."""
        if self.use_eroded:
            if self.eroded_label_path is None:
                raise SegweakError(f"tile {self.id} has no eroded (_noBoundary) label")
            return self.eroded_label_path
        return self.label_path

    @property
    def channels(self) -> int:
        """Channels of :meth:`read_image`: image bands plus extra channels."""
        return self.bands + len(self.extra)

    def read_image(self) -> np.ndarray:
        """Read the image: H×W×C uint8, image bands as stored (IRRG for Vaihingen), then extra channels."""
        img = read_raster(self.image_path)
        img = _as_uint8(_select_bands(img, self.bands, self.image_path, "image"), self.image_path, "image")
        if img.shape[:2] != tuple(self.shape):
            raise SegweakError(f"image {self.image_path} is {img.shape[:2]} but its header said {self.shape}")
        if self.extra:
            layers = [img] + [ch.read(self.shape)[..., None] for ch in self.extra]
            img = np.concatenate(layers, axis=2)
        return img

    def read_mask(self) -> tuple[np.ndarray, SnapStats]:
        """Read and encode the label: (mask H×W uint8 with 0..K-1 and 255, snapping stats)."""
        path = self.active_label_path
        if path is None:
            # An image brought without a mask (weak labels only): every pixel is unlabelled.
            return np.full(tuple(self.shape), IGNORE_INDEX, dtype=np.uint8), SnapStats()
        if self.palette is None:
            raise SegweakError(f"tile {self.id} has no palette to encode its label")
        lab = read_label(path, self.palette.mode)
        if self.palette.mode == "rgb":
            lab = _select_bands(lab, 3, path, "label")
        if lab.shape[:2] != tuple(self.shape):
            raise SegweakError(
                f"label {path} is {lab.shape[1]}×{lab.shape[0]} px but image {self.image_path} is "
                f"{self.shape[1]}×{self.shape[0]} px; each label must match its image"
            )
        return self.palette.encode(lab, source=path)

    def read_with_stats(self) -> tuple[np.ndarray, np.ndarray, SnapStats]:
        """Like :meth:`read`, plus the label's snapping statistics."""
        img = self.read_image()
        mask, stats = self.read_mask()
        return img, mask, stats

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Read pixels: image H×W×C uint8 and mask H×W uint8 (class indices, 255 = ignore)."""
        img, mask, _ = self.read_with_stats()
        return img, mask


def tile_from_record(record: dict[str, Any], meta: dict[str, Any], palette: Palette | None) -> Tile:
    """Rebuild a :class:`Tile` from a ``store.json`` tile record, to read it as ``prepare`` did.

    The image keeps the store's image bands (``channels`` minus the extra channels) and the extra
    channels (a DSM) are recomputed with the normalisation the store recorded in ``bands``.

    Args:
        record: One entry of ``meta["tiles"]``.
        meta: The whole ``store.json``.
        palette: The store's palette (None: labels cannot be read).
    """
    paths = record.get("extra_channel_paths") or {}
    extra = []
    for entry in meta.get("bands") or []:
        if entry.get("name") in paths:
            norm = entry["normalisation"]
            rule = DsmNormalisation.from_record(norm)
            extra.append(DsmChannel(str(paths[entry["name"]]), rule, float(norm["gsd_m"])))
    channels = int(meta.get("channels") or 3)
    return Tile(
        id=str(record["id"]),
        group=str(record.get("group", record["id"])),
        shape=(int(record["shape"][0]), int(record["shape"][1])),
        image_path=str(record["image_path"]),
        label_path=record.get("label_path"),  # None: an image stored without a pixel mask
        georef=record.get("georef"),
        eroded_label_path=record.get("eroded_label_path"),
        palette=palette,
        bands=channels - len(extra),
        extra=tuple(extra),
    )
