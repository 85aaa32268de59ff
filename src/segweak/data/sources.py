"""Readers of labelled tiles: the official ISPRS Vaihingen data and generic image/mask folders.

A *source* lists its :class:`Tile` objects cheaply (raster headers only) and reads pixels tile by tile
in :meth:`Tile.read`, so memory stays bounded to one tile. Sources expose ``classes``, ``palette``,
``band_order``, ``describe()`` (JSON-serialisable, stored in the prepared store's metadata, with a
``bands`` entry per channel: name, source, normalisation) and ``tiles()``. The Potsdam reader lives in
:mod:`segweak.data.potsdam` and shares this module's release scanning (:func:`scan_release`).

Rasters are read with rasterio (GeoTIFF, PNG, JPEG). Members of zip archives are read in place
through GDAL's ``/vsizip/`` virtual file system (streamed, never extracted), addressed by locators of
the form ``zip:///abs/path/archive.zip!member/path.tif`` (see :func:`zip_locator`). Palette-mode
("P") label files are read through their own colour table or by index (:func:`read_label`).
"""

from __future__ import annotations

import glob
import os
import re
import string
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segweak.data.dsm import DsmChannel, DsmNormalisation
from segweak.data.palette import (
    DEFAULT_TOLERANCE,
    IGNORE_INDEX,
    ClassSet,
    Palette,
    SnapStats,
    expand_colormap,
    vaihingen_palette,
)
from segweak.errors import SegweakError

VAIHINGEN_ZIP = "ISPRS_semantic_labeling_Vaihingen.zip"
VAIHINGEN_GT_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip"
VAIHINGEN_ERODED_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip"
VAIHINGEN_ZIPS = (VAIHINGEN_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ERODED_ZIP)
"""Official archive names (the eroded one is optional)."""

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

_AREA_RE = re.compile(r"^top_mosaic_09cm_area(\d+)(_noBoundary)?\.tif$", re.IGNORECASE)


# ---- raster access ----------------------------------------------------------------------------------


def zip_locator(archive: str | os.PathLike[str], member: str) -> str:
    """Locator of a zip member, readable by rasterio: ``zip:///abs/archive.zip!member``."""
    return f"zip://{Path(archive).resolve().as_posix()}!{member}"


def _open(locator: str) -> Any:
    """Open a raster with rasterio, turning failures into a SegweakError naming the file."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(locator)
    except RasterioIOError as exc:
        raise SegweakError(
            f"cannot read raster {locator}: {exc}. The file is missing, truncated or not an image; "
            "re-extract or re-download it"
        ) from None


@dataclass(frozen=True)
class RasterHeader:
    """What a raster header says, without reading pixels.

    Attributes:
        shape: (H, W).
        count: Number of bands.
        dtype: Data type of the first band.
        georef: ``{"crs": wkt or None, "transform": [a, b, c, d, e, f]}`` or None when not georeferenced.
        indexed: One band whose values index the file's own colour table (a palette-mode "P" PNG or a
            GeoTIFF with a colour map).
    """

    shape: tuple[int, int]
    count: int
    dtype: str
    georef: dict[str, Any] | None
    indexed: bool = False


def read_header(locator: str) -> RasterHeader:
    """Read a raster's header (size, bands, georeferencing) cheaply."""
    with _open(locator) as src:
        t = src.transform
        georef = None
        if src.crs is not None or not t.is_identity:
            georef = {
                "crs": src.crs.to_wkt() if src.crs is not None else None,
                "transform": [float(t.a), float(t.b), float(t.c), float(t.d), float(t.e), float(t.f)],
            }
        return RasterHeader(
            (int(src.height), int(src.width)), int(src.count), str(src.dtypes[0]), georef, _is_indexed(src)
        )


def _is_indexed(src: Any) -> bool:
    """Whether an open raster is one band of indices into its own colour table."""
    from rasterio.enums import ColorInterp

    return int(src.count) == 1 and src.colorinterp[0] == ColorInterp.palette


def read_label(locator: str, mode: str) -> np.ndarray:
    """Read a label raster for a palette of ``mode``.

    A palette-mode ("P") file holds indices into its own colour table: in ``rgb`` mode the indices are
    turned into the table's colours (H×W×3), in ``index`` mode the indices are the values (H×W×1).
    Other files are returned as stored (H×W×C).

    Args:
        locator: Path or zip locator.
        mode: The palette mode, ``"rgb"`` or ``"index"``.
    """
    with _open(locator) as src:
        colormap = src.colormap(1) if mode == "rgb" and _is_indexed(src) else None
    data = read_raster(locator)
    if colormap is not None:
        return expand_colormap(data[..., 0], colormap, source=locator)
    return data


def read_raster(locator: str) -> np.ndarray:
    """Read all bands of a raster as H×W×C (C = band count).

    Raises:
        SegweakError: When the file cannot be decoded (e.g. truncated), naming it.
    """
    from rasterio.errors import RasterioError

    with _open(locator) as src:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = src.read()
        except RasterioError as exc:
            raise SegweakError(
                f"cannot decode the pixels of {locator} ({exc}); the file is probably truncated or corrupt: "
                "re-extract or re-download it"
            ) from None
    return np.ascontiguousarray(np.moveaxis(data, 0, -1))


def read_raster_nodata(locator: str) -> float | None:
    """Return the nodata value a raster declares for its first band, or None."""
    with _open(locator) as src:
        value = src.nodata
    return None if value is None else float(value)


def band_names(band_order: str) -> list[str]:
    """Band names of a band-order string: ``"IRRG"`` -> ``["IR", "R", "G"]``, ``"R,G,B,NIR"`` -> 4 names.

    A string without commas is read as a sequence of ``NIR``, ``IR``, ``R``, ``G``, ``B`` (e.g. ``RGB``,
    ``IRRG``, ``RGBIR``); with commas, any names are allowed.

    Raises:
        SegweakError: When the string is neither.
    """
    text = band_order.strip()
    if "," in text:
        names = [t.strip() for t in text.split(",")]
        if all(names):
            return names
    elif re.fullmatch(r"(?:NIR|IR|R|G|B)+", text.upper()):
        return re.findall(r"NIR|IR|R|G|B", text.upper())
    raise SegweakError(
        f"band order {band_order!r}: give a string of IR, NIR, R, G, B (e.g. RGB, IRRG, RGBIR) or "
        "band names separated by commas (e.g. R,G,B,NIR)"
    )


def image_band_records(names: list[str], where: str) -> list[dict[str, Any]]:
    """``store.json`` ``bands`` entries of image bands kept as stored (8-bit, no rescaling)."""
    return [
        {"name": n, "source": f"{where} band {i + 1}", "normalisation": "none: 8-bit values as stored"}
        for i, n in enumerate(names)
    ]


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


def _check_band_count(count: int, locator: str, what: str, bands: int = 3) -> None:
    allowed = (3, 4) if bands == 3 else (bands,)
    if count not in allowed:
        raise SegweakError(
            f"{what} {locator} has {count} band(s); expected {' or '.join(map(str, allowed))}"
            + (" (4 only with a constant alpha band)" if bands == 3 else "")
        )


def check_label_header(header: RasterHeader, locator: str, mode: str) -> None:
    """Check a label header: in ``rgb`` mode 3 bands, 4 with a constant alpha, or 1 with a colour table."""
    if mode == "rgb" and not header.indexed:
        if header.count == 1:
            raise SegweakError(
                f"label {locator} has 1 band and no colour table, so it holds class values, not colours: "
                "use an index palette (mode: index) for it"
            )
        _check_band_count(header.count, locator, "label")


def short_list(items: list[str], n: int = 3) -> str:
    """Return the first ``n`` items joined by commas, with ``(+k more)`` when there are more."""
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _as_uint8(arr: np.ndarray, locator: str, what: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    raise SegweakError(f"{what} {locator} has data type {arr.dtype}; segweak reads 8-bit images only")


# ---- Tile -------------------------------------------------------------------------------------------


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


# ---- official releases: scanning folders and zips ----------------------------------------------------


@dataclass
class _Entry:
    locator: str
    origin: str  # "folder" or the zip name
    kind: str  # the role the classifier gave the file, e.g. "image", "complete", "eroded", "dsm"


Classifier = Callable[[tuple[str, ...]], "tuple[Any, str] | None"]
"""Maps a file's path components to ``(tile key, role)``, or None when the file is not of the release."""


@dataclass
class ReleaseScan:
    """Files of an official release found under a root, one per (tile key, role).

    Attributes:
        files: ``{key: {role: entry}}``; when several copies exist, extracted ones win over zipped ones,
            then zips in name order.
        containers: The root folder (when it held release files) and every zip that did.
        nested_zips: Zips that hold further zips (e.g. an unextracted ``Potsdam.zip``).
    """

    files: dict[Any, dict[str, _Entry]]
    containers: list[str]
    nested_zips: list[str]


def scan_release(root: Path, classify: Classifier, what: str) -> ReleaseScan:
    """Find an official release's files under ``root`` (a folder, or one zip), reading zips in place.

    Folders are searched recursively; zips (in the folder or given as ``root``) are listed, never
    extracted, and their members are addressed by :func:`zip_locator`.

    Args:
        root: Folder or zip.
        classify: Gives each file's ``(key, role)`` from its path components (relative to the folder or
            inside the zip), or None to skip it.
        what: Data set name for messages (e.g. ``"Vaihingen"``).

    Raises:
        SegweakError: When ``root`` does not exist, is a file but not a zip, or a zip is unreadable.
    """
    if not root.exists():
        raise SegweakError(
            f"{what} root {root} does not exist; pass the folder holding the official zips "
            "or their extracted contents"
        )
    found: dict[Any, dict[str, list[_Entry]]] = {}
    containers: list[str] = []
    nested: list[str] = []

    def add(key_role: tuple[Any, str] | None, make: Callable[[str], _Entry]) -> None:
        if key_role is not None:
            key, role = key_role
            found.setdefault(key, {}).setdefault(role, []).append(make(role))

    zips: list[Path] = []
    if root.is_file():
        if root.suffix.lower() != ".zip":
            raise SegweakError(
                f"{what} root {root} is a file but not a zip; pass a folder or an official zip"
            )
        zips = [root]
    else:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() == ".zip":
                zips.append(path)
            elif path.is_file():
                add(
                    classify(path.relative_to(root).parts),
                    lambda role, p=path: _Entry(str(p), "folder", role),
                )
        if found:
            containers.append(str(root))
    for z in zips:
        try:
            with zipfile.ZipFile(z) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise SegweakError(
                f"{z} is not a readable zip archive ({exc}); re-download it "
                "(segweak download resumes partial files)"
            ) from None
        n_before = sum(len(v) for r in found.values() for v in r.values())
        for name in names:
            add(
                classify(PurePosixPath(name).parts),
                lambda role, n=name, zz=z: _Entry(zip_locator(zz, n), zz.name, role),
            )
        if sum(len(v) for r in found.values() for v in r.values()) > n_before:
            containers.append(str(z))
        if any(n.lower().endswith(".zip") for n in names):
            nested.append(str(z))

    chosen: dict[Any, dict[str, _Entry]] = {}
    for key, roles in found.items():
        sel: dict[str, _Entry] = {}
        for role, entries in roles.items():
            # Extracted copies first (faster to read), then zips in name order.
            entries.sort(key=lambda e: (e.origin != "folder", e.origin, e.locator))
            sel[role] = entries[0]
        chosen[key] = sel
    return ReleaseScan(chosen, containers, nested)


def nested_zip_hint(scan: ReleaseScan) -> str:
    """Advice for a root whose release files sit in zips inside zips ('' when there are none)."""
    if not scan.nested_zips:
        return ""
    return (
        f" ({', '.join(Path(z).name for z in scan.nested_zips[:3])} hold(s) further zips: extract that outer "
        "archive once; segweak reads the inner zips in place)"
    )


def check_image_header(header: RasterHeader, locator: str, bands: int, what: str) -> None:
    """Check a release image header: ``bands`` bands (3 also allows a constant alpha 4th), 8-bit."""
    _check_band_count(header.count, locator, "image", bands)
    if header.dtype != "uint8":
        raise SegweakError(f"image {locator} has data type {header.dtype}; {what} images are 8-bit")


def check_same_size(
    header: RasterHeader, locator: str, image: RasterHeader, image_locator: str, what: str
) -> None:
    """Raise when a label or DSM does not have its image's size."""
    if header.shape != image.shape:
        raise SegweakError(
            f"{what} {locator} is {header.shape[1]}×{header.shape[0]} px but image {image_locator} is "
            f"{image.shape[1]}×{image.shape[0]} px; each {what} must match its image (wrong or corrupt file?)"
        )


def dsm_channel(
    locator: str, image: RasterHeader, image_locator: str, dsm: DsmNormalisation, gsd: float
) -> DsmChannel:
    """Check a tile's DSM header against its image and return the channel that reads it."""
    header = read_header(locator)
    if header.count != 1:
        raise SegweakError(f"DSM {locator} has {header.count} bands; a DSM has one band of elevations")
    check_same_size(header, locator, image, image_locator, "DSM")
    return DsmChannel(locator, dsm, gsd)


def dsm_band_record(dsm: DsmNormalisation, pattern: str, gsd: float) -> dict[str, Any]:
    """``store.json`` ``bands`` entry of a DSM channel."""
    return {
        "name": dsm.channel_name,
        "source": f"{pattern} (float32 elevation, metres)",
        "normalisation": dsm.describe(gsd),
    }


# ---- Vaihingen --------------------------------------------------------------------------------------


VAIHINGEN_GSD = 0.09
"""Ground sampling distance of the Vaihingen tops and DSMs in metres."""

_DSM_RE = re.compile(r"^dsm_09cm_matching_area(\d+)\.tif$", re.IGNORECASE)


def _classify(parts: tuple[str, ...]) -> tuple[int, str] | None:
    """Area number and role of a path (tuple of components), or None when not a Vaihingen tile file."""
    m = _DSM_RE.match(parts[-1])
    if m:
        return int(m.group(1)), "dsm"
    m = _AREA_RE.match(parts[-1])
    if not m:
        return None
    area = int(m.group(1))
    lowered = [p.lower() for p in parts[:-1]]
    if m.group(2):
        return area, "eroded"
    if "top" in lowered:
        return area, "image"
    if any(p.startswith("gts_for_participants") for p in lowered):
        return area, "gts_for_participants"
    return area, "complete"


# Label priority: the COMPLETE set (33 areas) over the participants' subset (16, same content).
_LABEL_PRIORITY = {"complete": 0, "gts_for_participants": 1}


class VaihingenSource:
    """The ISPRS 2D semantic labelling data set Vaihingen (IRRG orthophotos with colour labels).

    ``root`` is a directory holding the official zips (``ISPRS_semantic_labeling_Vaihingen.zip``, with
    ``top/top_mosaic_09cm_area{N}.tif`` and ``dsm/dsm_09cm_matching_area{N}.tif``;
    ``..._ground_truth_COMPLETE.zip`` with the labels at its root; optionally
    ``..._ground_truth_eroded_COMPLETE.zip`` with ``top_mosaic_09cm_area{N}_noBoundary.tif``)
    and/or their extracted contents in any folder structure, or one such zip itself. Files are found
    recursively by name: ``top_mosaic_09cm_area{N}.tif`` inside a folder called ``top`` is an image,
    elsewhere it is a label (``gts_for_participants/`` = the 16 training areas, anywhere else = the
    COMPLETE set, preferred when both exist); ``*_noBoundary.tif`` is an eroded label;
    ``dsm_09cm_matching_area{N}.tif`` is the area's DSM. When the same file exists both extracted and
    in a zip, the extracted copy is used.

    Args:
        root: Directory (or a single zip) as described above.
        keep_clutter: Keep clutter as a 6th class (otherwise ignore).
        eroded: Read the eroded (``_noBoundary``) labels, whose black boundary bands are ignored.
        tolerance: Colour snapping tolerance (see :mod:`segweak.data.palette`).
        dsm: Append the DSM as a 4th channel, mapped to 0..255 by this rule (:mod:`segweak.data.dsm`);
            every area must then have its DSM.
    """

    kind = "vaihingen"

    def __init__(
        self,
        root: str | os.PathLike[str],
        keep_clutter: bool = False,
        eroded: bool = False,
        tolerance: float | None = None,
        dsm: DsmNormalisation | None = None,
    ) -> None:
        self.root = Path(root)
        self.keep_clutter = keep_clutter
        self.eroded = eroded
        self.dsm = dsm
        self.palette: Palette = vaihingen_palette(
            keep_clutter, DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
        )
        self.classes: ClassSet = self.palette.classes
        self._tiles: list[Tile] | None = None
        self._unlabelled: list[str] = []
        self._no_eroded: list[str] = []
        self._containers: list[str] = []
        self._label_sets: dict[str, int] = {}

    @property
    def band_order(self) -> str:
        """``IRRG``, plus ``+nDSM`` / ``+DSM`` with a DSM channel."""
        return "IRRG" + (f"+{self.dsm.channel_name}" if self.dsm else "")

    def bands(self) -> list[dict[str, Any]]:
        """One ``store.json`` ``bands`` entry per channel: name, source and normalisation."""
        out = image_band_records(["IR", "R", "G"], "top/top_mosaic_09cm_area{N}.tif")
        if self.dsm is not None:
            out.append(dsm_band_record(self.dsm, "dsm/dsm_09cm_matching_area{N}.tif", VAIHINGEN_GSD))
        return out

    def tiles(self) -> list[Tile]:
        """All areas that have both an image and a label, sorted by area number (headers only)."""
        if self._tiles is not None:
            return list(self._tiles)
        scan = scan_release(self.root, _classify, "Vaihingen")
        chosen = scan.files
        if not chosen:
            raise SegweakError(
                f"no Vaihingen files found under {self.root}: expected {VAIHINGEN_ZIP} and "
                f"{VAIHINGEN_GT_ZIP} "
                "(or their extracted top/top_mosaic_09cm_area*.tif images and labels); download them with "
                f"'segweak download' or generate a fake set with 'segweak synth'{nested_zip_hint(scan)}"
            )
        tiles: list[Tile] = []
        unlabelled: list[str] = []
        no_eroded: list[str] = []
        no_dsm: list[str] = []
        label_sets: dict[str, int] = {}
        for area in sorted(chosen):
            roles = chosen[area]
            tid = f"area{area}"
            if "image" not in roles:
                continue  # labels without an image (e.g. only the label zip present) cannot be used
            labels = [r for r in ("complete", "gts_for_participants") if r in roles]
            if not labels:
                unlabelled.append(tid)
                continue
            image = roles["image"].locator
            label_role = min(labels, key=_LABEL_PRIORITY.__getitem__)
            label = roles[label_role].locator
            eroded = roles["eroded"].locator if "eroded" in roles else None
            if self.eroded and eroded is None:
                no_eroded.append(tid)
                continue
            if self.dsm is not None and "dsm" not in roles:
                no_dsm.append(tid)
                continue
            ih = read_header(image)
            check_image_header(ih, image, 3, "Vaihingen")
            for lab in [label] + ([eroded] if eroded else []):
                lh = read_header(lab)
                check_label_header(lh, lab, "rgb")
                check_same_size(lh, lab, ih, image, "label")
            extra: tuple[Any, ...] = ()
            if self.dsm is not None:
                extra = (dsm_channel(roles["dsm"].locator, ih, image, self.dsm, VAIHINGEN_GSD),)
            label_sets[label_role] = label_sets.get(label_role, 0) + 1
            tiles.append(
                Tile(
                    id=tid,
                    group=tid,
                    shape=ih.shape,
                    image_path=image,
                    label_path=label,
                    georef=ih.georef,
                    eroded_label_path=eroded,
                    palette=self.palette,
                    use_eroded=self.eroded,
                    extra=extra,
                )
            )
        if no_dsm:
            raise SegweakError(
                f"a DSM channel was requested but {len(no_dsm)} area(s) under {self.root} have no "
                f"dsm_09cm_matching_area{{N}}.tif ({short_list(no_dsm, 5)}); "
                f"add the dsm/ folder of {VAIHINGEN_ZIP} or drop the DSM option"
            )
        if self.eroded and no_eroded and not tiles:
            raise SegweakError(
                f"eroded labels were requested but no top_mosaic_09cm_area*_noBoundary.tif was found under "
                f"{self.root}; add {VAIHINGEN_ERODED_ZIP} or drop --eroded"
            )
        if not tiles:
            raise SegweakError(
                f"no Vaihingen area under {self.root} has a label ({len(unlabelled)} image(s) without one); "
                "add "
                f"{VAIHINGEN_GT_ZIP} or the extracted label files next to the images"
            )
        self._tiles, self._unlabelled, self._no_eroded, self._label_sets = (
            tiles,
            unlabelled,
            no_eroded,
            label_sets,
        )
        self._containers = scan.containers
        return list(tiles)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for store metadata (lists tiles and unlabelled areas)."""
        tiles = self.tiles()
        return {
            "kind": self.kind,
            "root": str(self.root.resolve()),
            "containers": list(self._containers),
            "keep_clutter": self.keep_clutter,
            "eroded": self.eroded,
            "tolerance": self.palette.tolerance,
            "band_order": self.band_order,
            "bands": self.bands(),
            "dsm": self.dsm.describe(VAIHINGEN_GSD) if self.dsm else None,
            "classes": list(self.classes.names),
            "palette": self.palette.to_dict(),
            "n_tiles": len(tiles),
            "tiles": [t.id for t in tiles],
            "label_sets": dict(sorted(self._label_sets.items())),
            "unlabelled": list(self._unlabelled),
            "without_eroded_label": list(self._no_eroded),
        }


# ---- folders ----------------------------------------------------------------------------------------


MASK_PLACEHOLDERS = ("dir", "parent", "stem", "ext", "root", "reldir")
"""Placeholders of a ``masks`` template (see :class:`FolderSource`)."""

_GLOB_CHARS = frozenset("*?[")


def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _glob_root(pattern: str) -> Path:
    """Return the root of a glob pattern's matches: its leading components without wildcards."""
    parts = PurePosixPath(Path(pattern).as_posix()).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if _is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _index_files(files: list[Path], root: Path, what: str) -> dict[str, Path]:
    """Map relative path without extension (posix) -> file."""
    out: dict[str, Path] = {}
    for path in files:
        key = path.relative_to(root).with_suffix("").as_posix()
        if key in out:
            raise SegweakError(
                f"{what} has two files for {key!r}: {out[key].name} and {path.name}; keep one of them"
            )
        out[key] = path
    return out


def _list_folder(root: Path, option: str) -> list[Path]:
    if not root.is_dir():
        raise SegweakError(f"{option} folder {root} does not exist or is not a folder")
    return [p for p in sorted(root.rglob("*")) if _is_image_file(p)]


def _check_mask_template(template: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise SegweakError(
            f"--masks template {template!r} is malformed ({exc}); e.g. '{{parent}}/masks/{{stem}}.png'"
        ) from None
    unknown = sorted({f for f in fields if f not in MASK_PLACEHOLDERS})
    if unknown or not fields:
        raise SegweakError(
            f"--masks template {template!r} "
            + (f"uses unknown placeholder(s) {', '.join(unknown)}" if unknown else "has no placeholder")
            + f"; available: {', '.join('{' + p + '}' for p in MASK_PLACEHOLDERS)}, "
            "e.g. '{parent}/masks/{stem}.png'"
        )


def mask_from_template(template: str, image: Path, root: Path) -> Path:
    """Return the mask path a ``masks`` template gives for ``image``.

    Args:
        template: E.g. ``"{parent}/masks/{stem}.png"``.
        image: Image path as found (``root/.../name.ext``).
        root: The images root (the folder, or a glob pattern's leading folders).

    Returns:
        The mask path (not checked for existence).
    """
    rel = image.relative_to(root)
    values = {
        "dir": image.parent.as_posix(),
        "parent": image.parent.parent.as_posix(),
        "stem": image.stem,
        "ext": image.suffix[1:],
        "root": root.as_posix(),
        "reldir": rel.parent.as_posix(),
    }
    return Path(template.format_map(values))


def _group_key(key: str, group_by: str) -> str:
    """Split group of an image with relative key ``a/b/c`` (no extension)."""
    rel = PurePosixPath(key)
    if group_by == "image":
        return key.replace("/", "__")
    if group_by == "parent":
        return rel.parent.as_posix()
    return rel.parts[0] if len(rel.parts) > 1 else "."  # "top"


class FolderSource:
    """Images and masks from folders, paired by relative path or by a path template.

    ``images`` selects the images: a folder (every jpg, jpeg, png, tif or tiff file below it) or a glob
    pattern (``data/*/images/*.jpg``; ``**`` matches any depth). Their *root* is the folder, or the
    pattern's leading folders without wildcards; tile ids are the paths relative to it without
    extension (``/`` replaced by ``__``).

    ``masks`` gives each image's mask:

    * a folder: the mask with the same relative path without extension (``images/a/b.jpg`` <->
      ``masks/a/b.png``). A mask without an image is ignored with a :class:`UserWarning` and listed in
      ``describe()["orphan_masks"]``: extra masks do no harm, while a missing one would silently shrink
      the data set;
    * a template with placeholders filled from the image path, for layouts where masks sit next to the
      images, e.g. ``Scene 1/images/x.jpg`` + ``Scene 1/masks/x.png``: ``{parent}/masks/{stem}.png``.
      Placeholders: ``{dir}`` the image's folder, ``{parent}`` the folder above it, ``{stem}`` its name
      without extension, ``{ext}`` its extension, ``{root}`` the images root, ``{reldir}`` the image's
      folder relative to the root.

    An existing folder is always read as a folder, even when its name contains ``*?[`` or ``{``.

    An image without a mask is an error that gives the numbers of images and masks found, the first
    unpaired images and the option that changes the rule. With ``allow_missing_masks`` such images
    are kept *unlabelled* instead: stored with all-ignore masks and listed in ``describe()
    ["unlabelled_tiles"]`` (``store.json`` ``unlabelled_tiles``), for images whose only labels are
    weak labels imported from a table (``segweak weak import``; ``segweak split --weak-labels``). At
    least one image must still have a mask (validation needs pixel labels), so a wrong ``--masks``
    cannot silently give a store without any. A file selected both as an image and as a mask is
    refused (a photo must never be read as its own label).

    Masks are colour images (``rgb`` palette; a palette-mode PNG is read through its own colour
    table) or single-band values (``index`` palette; a palette-mode PNG gives its indices).

    Args:
        images: Folder or glob pattern of images (8-bit; bands as ``band_order`` names them).
        masks: Folder of masks, or a template as described above.
        palette: A :class:`Palette` or the path of a palette YAML.
        group_by: Split groups: ``"image"`` (each image), ``"parent"`` (the image's folder relative to
            the root, ``"."`` at the top level) or ``"top"`` (the first folder under the root: the
            scene in a ``Scene N/images/x.jpg`` layout).
        tolerance: Overrides the palette's snapping tolerance.
        band_order: Names of the image bands, recorded in metadata (e.g. ``RGB``, ``IRRG``, ``RGBIR`` or
            ``R,G,B,NIR``). Three names accept 3-band images (or 4 with a constant alpha band); more
            names require exactly that many bands.
        allow_missing_masks: Keep images without a mask as unlabelled tiles instead of refusing them.
    """

    kind = "folder"

    def __init__(
        self,
        images: str | os.PathLike[str],
        masks: str | os.PathLike[str],
        palette: Palette | str | os.PathLike[str],
        group_by: str = "image",
        tolerance: float | None = None,
        band_order: str = "RGB",
        allow_missing_masks: bool = False,
    ) -> None:
        if group_by not in ("image", "parent", "top"):
            raise SegweakError(f"group_by (--group-by) must be 'image', 'parent' or 'top', got {group_by!r}")
        self.images = str(images)
        self.masks = str(masks)
        # An existing folder wins over the pattern/template reading of its name (e.g. "[2020] masks").
        self.pattern = _is_glob(self.images) and not Path(self.images).is_dir()
        self.template = "{" in self.masks and not Path(self.masks).is_dir()
        if self.template:
            _check_mask_template(self.masks)
        pal = palette if isinstance(palette, Palette) else Palette.from_yaml(palette)
        self.palette: Palette = pal.with_tolerance(tolerance)
        self.classes: ClassSet = self.palette.classes
        self.group_by = group_by
        self.band_order = band_order
        self.band_names = band_names(band_order)
        self.allow_missing_masks = bool(allow_missing_masks)
        self._tiles: list[Tile] | None = None
        self._orphans: list[str] = []
        self._unlabelled: list[str] = []

    def bands(self) -> list[dict[str, Any]]:
        """One ``store.json`` ``bands`` entry per image band."""
        return image_band_records(self.band_names, "image")

    def _images(self) -> tuple[Path, dict[str, Path]]:
        """Return the images root and ``{relative key: image path}``."""
        if self.pattern:
            root = _glob_root(self.images)
            files = sorted(
                {Path(p) for p in glob.glob(self.images, recursive=True) if _is_image_file(Path(p))}
            )
            if not files:
                raise SegweakError(
                    f"--images pattern {self.images!r} matches no {'/'.join(IMAGE_EXTENSIONS)} file; "
                    "check the pattern (quote it so the shell does not expand it)"
                )
        else:
            root = Path(self.images)
            files = _list_folder(root, "--images")
            if not files:
                raise SegweakError(f"--images folder {root} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        return root, _index_files(files, root, f"--images {self.images}")

    def _pair(self, root: Path, imgs: dict[str, Path]) -> dict[str, Path]:
        """``{key: mask path}`` for every image; raises on overlap or unpaired images."""
        if self.template:
            expected = {k: mask_from_template(self.masks, p, root) for k, p in imgs.items()}
            masks = {k: m for k, m in expected.items() if m.is_file()}
            mask_files = list(masks.values())
            n_masks = len(masks)
        else:
            mroot = Path(self.masks)
            mask_files = _list_folder(mroot, "--masks")
            index = _index_files(mask_files, mroot, f"--masks {self.masks}")
            masks = {k: index[k] for k in imgs if k in index}
            n_masks = len(index)
        image_real = {os.path.realpath(p): p for p in imgs.values()}
        both = sorted(
            str(image_real[r]) for r in {os.path.realpath(m) for m in mask_files} if r in image_real
        )
        if both:
            raise SegweakError(
                f"--images {self.images} and --masks {self.masks} select the same {len(both)} file(s) "
                f"({short_list(both)}); a file cannot be its own mask: point --masks at the labels, or give "
                "--images a glob pattern that matches only the images (e.g. 'data/*/images/*.jpg')"
            )
        missing = [k for k in imgs if k not in masks]
        if missing and self.allow_missing_masks:
            if len(missing) == len(imgs):
                raise SegweakError(
                    f"none of the {len(imgs)} image(s) found by --images {self.images} has a mask "
                    f"(--masks {self.masks}); --allow-missing-masks keeps images without a mask, but "
                    "validation needs some with pixel masks: check --masks"
                )
            self._unlabelled = sorted(missing)
            missing = []
        if missing:
            unpaired = [imgs[k].relative_to(root).as_posix() for k in missing]
            if self.template:
                k0 = missing[0]
                rule = (
                    f"the --masks template {self.masks!r} gives a path that does not exist (e.g. "
                    f"{imgs[k0]} -> {expected[k0]}); fix the template (placeholders "
                    f"{', '.join('{' + p + '}' for p in MASK_PLACEHOLDERS)}) or remove those images"
                )
            else:
                rule = (
                    "they are paired by relative path without extension; add the masks, remove those "
                    "images, or give --masks a template for masks stored elsewhere, e.g. "
                    "'{parent}/masks/{stem}.png' (docs/palette.md)"
                )
            raise SegweakError(
                f"{len(missing)} of {len(imgs)} image(s) found by --images {self.images} have no mask "
                f"({n_masks} mask file(s) found by --masks {self.masks}): unpaired "
                f"{short_list(unpaired)}; {rule}"
            )
        if not self.template:
            self._orphans = sorted(k for k in index if k not in imgs)
            if self._orphans:
                warnings.warn(
                    f"{len(self._orphans)} mask(s) in {self.masks} have no image and are ignored, "
                    f"e.g. {index[self._orphans[0]]}",
                    UserWarning,
                    stacklevel=3,
                )
        return masks

    def tiles(self) -> list[Tile]:
        """All image/mask pairs sorted by relative path (headers only)."""
        if self._tiles is not None:
            return list(self._tiles)
        root, imgs = self._images()
        masks = self._pair(root, imgs)
        n_bands = len(self.band_names)
        tiles: list[Tile] = []
        ids: dict[str, str] = {}
        for key in sorted(imgs):
            img, msk = imgs[key], masks.get(key)
            tid = key.replace("/", "__")
            if tid in ids:
                raise SegweakError(f"images {ids[tid]} and {key} map to the same tile id {tid!r}; rename one")
            ids[tid] = key
            ih = read_header(str(img))
            _check_band_count(ih.count, str(img), "image", n_bands)
            if ih.dtype != "uint8":
                raise SegweakError(f"image {img} has data type {ih.dtype}; segweak reads 8-bit images only")
            if msk is not None:
                mh = read_header(str(msk))
                check_label_header(mh, str(msk), self.palette.mode)
                if mh.shape != ih.shape:
                    raise SegweakError(
                        f"mask {msk} is {mh.shape[1]}×{mh.shape[0]} px but image {img} is "
                        f"{ih.shape[1]}×{ih.shape[0]} "
                        "px; each mask must match its image"
                    )
            tiles.append(
                Tile(
                    id=tid,
                    group=_group_key(key, self.group_by),
                    shape=ih.shape,
                    image_path=str(img),
                    label_path=None if msk is None else str(msk),
                    georef=ih.georef,
                    palette=self.palette,
                    bands=n_bands,
                )
            )
        self._tiles = tiles
        return list(tiles)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for store metadata."""
        tiles = self.tiles()
        return {
            "kind": self.kind,
            "images": self.images if self.pattern else str(Path(self.images).resolve()),
            "masks": self.masks if self.template else str(Path(self.masks).resolve()),
            "pairing": "template" if self.template else "relative path",
            "group_by": self.group_by,
            "tolerance": self.palette.tolerance,
            "band_order": self.band_order,
            "bands": self.bands(),
            "classes": list(self.classes.names),
            "palette": self.palette.to_dict(),
            "n_tiles": len(tiles),
            "tiles": [t.id for t in tiles],
            "orphan_masks": list(self._orphans),
            "allow_missing_masks": self.allow_missing_masks,
            "unlabelled_tiles": [t.id for t in tiles if t.label_path is None],
        }


def open_source(kind: str, **kwargs: Any) -> Any:
    """Create a source by kind: ``"vaihingen"``, ``"potsdam"`` or ``"folder"``.

    Args:
        kind: Source kind.
        **kwargs: Passed to the source's constructor.
    """
    if kind == "vaihingen":
        return VaihingenSource(**kwargs)
    if kind == "potsdam":
        from segweak.data.potsdam import PotsdamSource

        return PotsdamSource(**kwargs)
    if kind == "folder":
        return FolderSource(**kwargs)
    raise SegweakError(f"unknown source kind {kind!r}; use 'vaihingen', 'potsdam' or 'folder'")
