"""Raster access: the one place segweak opens image, label and DSM files.

Rasters are read with rasterio (GeoTIFF, PNG, JPEG). Members of zip archives are read in place
through GDAL's ``/vsizip/`` virtual file system (streamed, never extracted), addressed by locators of
the form ``zip:///abs/path/archive.zip!member/path.tif`` (see :func:`zip_locator`). Palette-mode
("P") label files are read through their own colour table or by index (:func:`read_label`).

Headers are read without pixels (:func:`read_header`) so sources can list and check their tiles
cheaply; the ``check_*`` functions say in one line what is wrong with a file and what to do.
Every failure is a :class:`~segweak.errors.SegweakError` naming the file.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segweak.data.palette import expand_colormap
from segweak.errors import SegweakError


def zip_locator(archive: str | os.PathLike[str], member: str) -> str:
    """Locator of a zip member, readable by rasterio: ``zip:///abs/archive.zip!member``."""
    return f"zip://{Path(archive).resolve().as_posix()}!{member}"


def open_raster(locator: str) -> Any:
    """Open a raster with rasterio, turning failures into a SegweakError naming the file."""
    # rasterio (GDAL) is imported where a file is opened, for startup speed only: listing commands
    # and config checks import this module without reading any raster.
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
    with open_raster(locator) as src:
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
    with open_raster(locator) as src:
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

    with open_raster(locator) as src:
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
    with open_raster(locator) as src:
        value = src.nodata
    return None if value is None else float(value)


def check_band_count(count: int, locator: str, what: str, bands: int = 3) -> None:
    """Refuse a band count other than ``bands`` (for 3 bands, 4 is let through: a constant alpha band)."""
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
        check_band_count(header.count, locator, "label")


def check_image_header(header: RasterHeader, locator: str, bands: int, what: str) -> None:
    """Check a release image header: ``bands`` bands (3 also allows a constant alpha 4th), 8-bit."""
    check_band_count(header.count, locator, "image", bands)
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
