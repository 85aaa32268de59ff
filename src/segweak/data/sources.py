"""Readers of labelled tiles: the official ISPRS Vaihingen data and generic image/mask folders.

A *source* lists its :class:`Tile` objects cheaply (raster headers only) and reads pixels tile by tile
in :meth:`Tile.read`, so memory stays bounded to one tile. Both sources expose ``classes``,
``palette``, ``band_order``, ``describe()`` (JSON-serialisable, stored in the prepared store's
metadata) and ``tiles()``.

Rasters are read with rasterio (GeoTIFF, PNG, JPEG). Members of zip archives are read in place
through GDAL's ``/vsizip/`` virtual file system (streamed, never extracted), addressed by locators of
the form ``zip:///abs/path/archive.zip!member/path.tif`` (see :func:`zip_locator`).
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segweak.data.palette import DEFAULT_TOLERANCE, ClassSet, Palette, SnapStats, vaihingen_palette
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
    """

    shape: tuple[int, int]
    count: int
    dtype: str
    georef: dict[str, Any] | None


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
        return RasterHeader((int(src.height), int(src.width)), int(src.count), str(src.dtypes[0]), georef)


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


def _three_bands(arr: np.ndarray, locator: str, what: str) -> np.ndarray:
    """Return H×W×3: keep 3 bands, drop a constant 4th (alpha) band, otherwise raise."""
    c = arr.shape[2]
    if c == 3:
        return arr
    if c == 4:
        alpha = arr[..., 3]
        if alpha.size == 0 or (alpha == alpha.flat[0]).all():
            return np.ascontiguousarray(arr[..., :3])
        raise SegweakError(
            f"{what} {locator} has 4 bands and the 4th (alpha) is not constant, so it is real data or a "
            "transparency mask; segweak expects 3-band images: convert the file to 3 bands"
        )
    raise SegweakError(f"{what} {locator} has {c} band(s); expected 3 (or 4 with a constant alpha band)")


def _check_band_count(count: int, locator: str, what: str, allowed: tuple[int, ...] = (3, 4)) -> None:
    if count not in allowed:
        raise SegweakError(
            f"{what} {locator} has {count} band(s); expected {' or '.join(map(str, allowed))}"
            + (" (4 only with a constant alpha band)" if 4 in allowed else "")
        )


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
        label_path: Path or zip locator of the full label.
        georef: ``{"crs": wkt or None, "transform": [a, b, c, d, e, f]}`` or None.
        eroded_label_path: Path or locator of the label with eroded boundaries (``_noBoundary``), if any.
        palette: Palette that encodes the label (not part of equality or repr).
        use_eroded: :meth:`read` uses ``eroded_label_path`` instead of ``label_path``.
    """

    id: str
    group: str
    shape: tuple[int, int]
    image_path: str
    label_path: str
    georef: dict[str, Any] | None = None
    eroded_label_path: str | None = None
    palette: Palette | None = field(default=None, repr=False, compare=False)
    use_eroded: bool = False

    @property
    def active_label_path(self) -> str:
        """The label file :meth:`read` decodes."""
        if self.use_eroded:
            if self.eroded_label_path is None:
                raise SegweakError(f"tile {self.id} has no eroded (_noBoundary) label")
            return self.eroded_label_path
        return self.label_path

    def read_image(self) -> np.ndarray:
        """Read the image: H×W×3 uint8, band order as stored (IRRG for Vaihingen)."""
        img = read_raster(self.image_path)
        img = _as_uint8(_three_bands(img, self.image_path, "image"), self.image_path, "image")
        if img.shape[:2] != tuple(self.shape):
            raise SegweakError(f"image {self.image_path} is {img.shape[:2]} but its header said {self.shape}")
        return img

    def read_mask(self) -> tuple[np.ndarray, SnapStats]:
        """Read and encode the label: (mask H×W uint8 with 0..K-1 and 255, snapping stats)."""
        if self.palette is None:
            raise SegweakError(f"tile {self.id} has no palette to encode its label")
        path = self.active_label_path
        lab = read_raster(path)
        if self.palette.mode == "rgb":
            lab = _three_bands(lab, path, "label")
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


# ---- Vaihingen --------------------------------------------------------------------------------------


@dataclass
class _Entry:
    locator: str
    origin: str  # "folder" or the zip name
    kind: str  # "image", "gts_for_participants", "complete", "eroded"


def _classify(parts: tuple[str, ...]) -> tuple[int, str] | None:
    """Area number and role of a path (tuple of components), or None when not a Vaihingen tile file."""
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
    ``top/top_mosaic_09cm_area{N}.tif``; ``..._ground_truth_COMPLETE.zip`` with the labels at its root;
    optionally ``..._ground_truth_eroded_COMPLETE.zip`` with ``top_mosaic_09cm_area{N}_noBoundary.tif``)
    and/or their extracted contents in any folder structure, or one such zip itself. Files are found
    recursively by name: ``top_mosaic_09cm_area{N}.tif`` inside a folder called ``top`` is an image,
    elsewhere it is a label (``gts_for_participants/`` = the 16 training areas, anywhere else = the
    COMPLETE set, preferred when both exist); ``*_noBoundary.tif`` is an eroded label. When the same
    file exists both extracted and in a zip, the extracted copy is used.

    Args:
        root: Directory (or a single zip) as described above.
        keep_clutter: Keep clutter as a 6th class (otherwise ignore).
        eroded: Read the eroded (``_noBoundary``) labels, whose black boundary bands are ignored.
        tolerance: Colour snapping tolerance (see :mod:`segweak.data.palette`).
    """

    kind = "vaihingen"
    band_order = "IRRG"

    def __init__(
        self,
        root: str | os.PathLike[str],
        keep_clutter: bool = False,
        eroded: bool = False,
        tolerance: float | None = None,
    ) -> None:
        self.root = Path(root)
        self.keep_clutter = keep_clutter
        self.eroded = eroded
        self.palette: Palette = vaihingen_palette(
            keep_clutter, DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
        )
        self.classes: ClassSet = self.palette.classes
        self._tiles: list[Tile] | None = None
        self._unlabelled: list[str] = []
        self._no_eroded: list[str] = []
        self._containers: list[str] = []
        self._label_sets: dict[str, int] = {}

    def _scan(self) -> dict[int, dict[str, _Entry]]:
        root = self.root
        if not root.exists():
            raise SegweakError(
                f"Vaihingen root {root} does not exist; pass the folder holding the official zips "
                "or their extracted contents"
            )
        found: dict[int, dict[str, list[_Entry]]] = {}
        self._containers = []

        def add(area_role: tuple[int, str] | None, entry_factory: Callable[[str], _Entry]) -> None:
            if area_role is None:
                return
            area, role = area_role
            found.setdefault(area, {}).setdefault(role, []).append(entry_factory(role))

        zips: list[Path] = []
        if root.is_file():
            if root.suffix.lower() != ".zip":
                raise SegweakError(
                    f"Vaihingen root {root} is a file but not a zip; pass a folder or an official zip"
                )
            zips = [root]
        else:
            for path in sorted(root.rglob("*")):
                if path.is_file() and path.suffix.lower() == ".zip":
                    zips.append(path)
                elif path.is_file():
                    rel = path.relative_to(root).parts
                    add(_classify(rel), lambda role, p=path: _Entry(str(p), "folder", role))
            if found:
                self._containers.append(str(root))
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
                    _classify(PurePosixPath(name).parts),
                    lambda role, n=name, zz=z: _Entry(zip_locator(zz, n), zz.name, role),
                )
            if sum(len(v) for r in found.values() for v in r.values()) > n_before:
                self._containers.append(str(z))

        chosen: dict[int, dict[str, _Entry]] = {}
        for area, roles in found.items():
            sel: dict[str, _Entry] = {}
            for role, entries in roles.items():
                # Extracted copies first (faster to read), then zips in name order.
                entries.sort(key=lambda e: (e.origin != "folder", e.origin, e.locator))
                sel[role] = entries[0]
            chosen[area] = sel
        return chosen

    def tiles(self) -> list[Tile]:
        """All areas that have both an image and a label, sorted by area number (headers only)."""
        if self._tiles is not None:
            return list(self._tiles)
        chosen = self._scan()
        if not chosen:
            raise SegweakError(
                f"no Vaihingen files found under {self.root}: expected {VAIHINGEN_ZIP} and "
                f"{VAIHINGEN_GT_ZIP} "
                "(or their extracted top/top_mosaic_09cm_area*.tif images and labels); download them with "
                "'segweak download' or generate a fake set with 'segweak synth'"
            )
        tiles: list[Tile] = []
        unlabelled: list[str] = []
        no_eroded: list[str] = []
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
            ih = read_header(image)
            _check_band_count(ih.count, image, "image")
            if ih.dtype != "uint8":
                raise SegweakError(f"image {image} has data type {ih.dtype}; Vaihingen tops are 8-bit")
            for lab in [label] + ([eroded] if eroded else []):
                lh = read_header(lab)
                _check_band_count(lh.count, lab, "label")
                if lh.shape != ih.shape:
                    raise SegweakError(
                        f"label {lab} is {lh.shape[1]}×{lh.shape[0]} px but image {image} is "
                        f"{ih.shape[1]}×{ih.shape[0]} px; each label must match its image "
                        "(wrong or corrupt file?)"
                    )
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
                )
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
            "classes": list(self.classes.names),
            "palette": self.palette.to_dict(),
            "n_tiles": len(tiles),
            "tiles": [t.id for t in tiles],
            "label_sets": dict(sorted(self._label_sets.items())),
            "unlabelled": list(self._unlabelled),
            "without_eroded_label": list(self._no_eroded),
        }


# ---- folders ----------------------------------------------------------------------------------------


def _index_files(root: Path, what: str) -> dict[str, Path]:
    """Map relative path without extension (posix) -> file, for image-like files under ``root``."""
    if not root.is_dir():
        raise SegweakError(f"{what} folder {root} does not exist or is not a folder")
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("."):
            continue
        key = path.relative_to(root).with_suffix("").as_posix()
        if key in out:
            raise SegweakError(
                f"{what} folder has two files for {key!r}: {out[key].name} and {path.name}; keep one of them"
            )
        out[key] = path
    return out


class FolderSource:
    """Images and masks in two folder trees, paired by relative path without extension.

    ``images/a/b.jpg`` pairs with ``masks/a/b.png`` (extensions jpg, jpeg, png, tif, tiff). An image
    without a mask is an error (all such images are counted, the first few named). A mask without an
    image is ignored with a :class:`UserWarning` and listed in ``describe()["orphan_masks"]``: extra
    masks do no harm, while a missing mask would silently shrink the data set.

    Args:
        images: Folder of images (3 bands, or 4 with a constant alpha band; 8-bit).
        masks: Folder of label masks, colour or index per ``palette``.
        palette: A :class:`Palette` or the path of a palette YAML.
        group_by: ``"image"``: each image is its own group (key = tile id); ``"parent"``: the image's
            parent folder (relative to ``images``; ``"."`` at the top level).
        tolerance: Overrides the palette's snapping tolerance.
        band_order: Name of the image band order, recorded in metadata (e.g. ``RGB``, ``IRRG``).
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
    ) -> None:
        if group_by not in ("image", "parent"):
            raise SegweakError(f"group_by must be 'image' or 'parent', got {group_by!r}")
        self.images = Path(images)
        self.masks = Path(masks)
        pal = palette if isinstance(palette, Palette) else Palette.from_yaml(palette)
        self.palette: Palette = pal.with_tolerance(tolerance)
        self.classes: ClassSet = self.palette.classes
        self.group_by = group_by
        self.band_order = band_order
        self._tiles: list[Tile] | None = None
        self._orphans: list[str] = []

    def tiles(self) -> list[Tile]:
        """All image/mask pairs sorted by relative path (headers only)."""
        if self._tiles is not None:
            return list(self._tiles)
        imgs = _index_files(self.images, "images")
        masks = _index_files(self.masks, "masks")
        if not imgs:
            raise SegweakError(f"images folder {self.images} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        missing = [k for k in imgs if k not in masks]
        if missing:
            raise SegweakError(
                f"{len(missing)} of {len(imgs)} image(s) have no mask in {self.masks} "
                "(paired by relative path "
                f"without extension), e.g. {imgs[missing[0]]}"
                + (f", {', '.join(str(imgs[k]) for k in missing[1:3])}" if len(missing) > 1 else "")
                + "; add the masks or remove those images"
            )
        orphans = sorted(k for k in masks if k not in imgs)
        if orphans:
            warnings.warn(
                f"{len(orphans)} mask(s) in {self.masks} have no image and are ignored, "
                f"e.g. {masks[orphans[0]]}",
                UserWarning,
                stacklevel=2,
            )
        tiles: list[Tile] = []
        ids: dict[str, str] = {}
        for key in sorted(imgs):
            img, msk = imgs[key], masks[key]
            tid = key.replace("/", "__")
            if tid in ids:
                raise SegweakError(f"images {ids[tid]} and {key} map to the same tile id {tid!r}; rename one")
            ids[tid] = key
            ih = read_header(str(img))
            _check_band_count(ih.count, str(img), "image")
            if ih.dtype != "uint8":
                raise SegweakError(f"image {img} has data type {ih.dtype}; segweak reads 8-bit images only")
            mh = read_header(str(msk))
            if self.palette.mode == "rgb":
                _check_band_count(mh.count, str(msk), "mask")
            if mh.shape != ih.shape:
                raise SegweakError(
                    f"mask {msk} is {mh.shape[1]}×{mh.shape[0]} px but image {img} is "
                    f"{ih.shape[1]}×{ih.shape[0]} "
                    "px; each mask must match its image"
                )
            parent = PurePosixPath(key).parent.as_posix()
            tiles.append(
                Tile(
                    id=tid,
                    group=tid if self.group_by == "image" else parent,
                    shape=ih.shape,
                    image_path=str(img),
                    label_path=str(msk),
                    georef=ih.georef,
                    palette=self.palette,
                )
            )
        self._tiles, self._orphans = tiles, orphans
        return list(tiles)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for store metadata."""
        tiles = self.tiles()
        return {
            "kind": self.kind,
            "images": str(self.images.resolve()),
            "masks": str(self.masks.resolve()),
            "group_by": self.group_by,
            "tolerance": self.palette.tolerance,
            "band_order": self.band_order,
            "classes": list(self.classes.names),
            "palette": self.palette.to_dict(),
            "n_tiles": len(tiles),
            "tiles": [t.id for t in tiles],
            "orphan_masks": list(self._orphans),
        }


Source = VaihingenSource | FolderSource


def open_source(kind: str, **kwargs: Any) -> VaihingenSource | FolderSource:
    """Create a source by kind: ``"vaihingen"`` or ``"folder"``.

    Args:
        kind: Source kind.
        **kwargs: Passed to the source's constructor.
    """
    if kind == "vaihingen":
        return VaihingenSource(**kwargs)
    if kind == "folder":
        return FolderSource(**kwargs)
    raise SegweakError(f"unknown source kind {kind!r}; use 'vaihingen' or 'folder'")
