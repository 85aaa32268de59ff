"""Polygon regions of imported weak labels: GeoJSON / GeoPackage features -> the store patches they cover.

A feature is one row of a weak-label table: its attributes are the table's columns (``image``,
optional ``bag``, one per class or ``proportions``) and its polygon is the region. Rule (also in
``docs/store.md``):

* The polygon is rasterised on its image's pixel grid (a pixel is inside when its centre is, GDAL's
  rule through :func:`rasterio.features.rasterize`); a patch joins the feature's bag when at least
  ``min_cover`` of its pixels are inside (default 1.0: the whole patch, as for pixel windows).
* Coordinates (``region_crs``): ``file`` (default) takes the CRS the file declares (a GeoPackage
  layer's CRS; a GeoJSON's legacy ``crs`` member, else WGS 84 lon/lat as RFC 7946 says) and
  reprojects the polygon to the image's CRS; the image's CRS and affine transform come from its
  GeoTIFF tags, recorded per tile in ``store.json`` (``georef``) at prepare time. ``pixel`` reads the
  coordinates as the image's pixel columns (x) and rows (y), for images without georeferencing; a
  CRS such as ``EPSG:25832`` names the CRS of a file that declares none.

GeoJSON is read with the standard library; GeoPackage needs pyogrio and shapely (``pip install
'segweak[geo]'``). Rasterising and reprojecting use rasterio (GDAL), a core dependency.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segweak.errors import SegweakError

PIXEL = "pixel"
FILE = "file"
_POLYGON_TYPES = ("Polygon", "MultiPolygon")


@dataclass
class Polygons:
    """The polygons of a feature file, one per data row, and how to place them on an image.

    Attributes:
        path: The file (for messages).
        geometries: GeoJSON-like geometry dicts; data row ``r`` (1-based) has ``geometries[r - 1]``.
        crs: CRS of the coordinates (any form ``rasterio.crs.CRS.from_user_input`` reads), or None for
            pixel coordinates.
    """

    path: Path
    geometries: list[dict[str, Any]]
    crs: str | None
    _tiles: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def cover(self, row: int, image: str, store: Any, min_cover: float) -> np.ndarray:
        """Patches of the store that row ``row``'s polygon covers on tile ``image``.

        Args:
            row: 1-based data row (feature number).
            image: Tile id (already checked to be in the store).
            store: Open store.
            min_cover: Smallest share of a patch's pixels inside the polygon, in ``(0, 1]``.

        Returns:
            ``(N,)`` bool over all store patches (False off the tile).

        Raises:
            SegweakError: Not a polygon, an image without georeferencing for CRS coordinates, or a
                polygon that cannot be reprojected.
        """
        from affine import Affine
        from rasterio.features import rasterize

        if not self._tiles:
            self._tiles = {t["id"]: t for t in store.meta.get("tiles", [])}
        rec = self._tiles[image]
        geom = self.geometries[row - 1]
        if self.crs is None:
            transform = Affine.identity()
        else:
            georef = rec.get("georef") or {}
            if not georef.get("crs") or not georef.get("transform"):
                raise SegweakError(
                    f"{self.path} feature {row}: image {image!r} is not georeferenced (no CRS in "
                    f"{rec.get('image_path')}), so polygons in {self.crs} cannot be placed on it; give pixel "
                    "coordinates with --region-crs pixel"
                )
            geom = _reproject(self.path, row, geom, self.crs, georef["crs"])
            transform = Affine(*georef["transform"])
        h, w = (int(v) for v in rec["shape"])
        try:
            inside = rasterize([(geom, 1)], out_shape=(h, w), transform=transform, fill=0, dtype="uint8")
        except (ValueError, TypeError) as exc:
            raise SegweakError(f"{self.path} feature {row}: cannot rasterise its polygon: {exc}") from None
        # Summed-area table: the inside pixel count of every patch window in O(1).
        sat = np.zeros((h + 1, w + 1), dtype=np.int64)
        sat[1:, 1:] = inside.astype(np.int64).cumsum(0).cumsum(1)
        on_tile = np.flatnonzero(np.asarray(store.tiles) == image)
        p = int(store.patch)
        r0, c0 = store.rows[on_tile], store.cols[on_tile]
        count = sat[r0 + p, c0 + p] - sat[r0, c0 + p] - sat[r0 + p, c0] + sat[r0, c0]
        out = np.zeros(len(store), dtype=bool)
        # A hair of slack so min_cover=1.0 is not lost to float rounding of count / p².
        out[on_tile] = count / float(p * p) >= min_cover - 1e-9
        return out


def _reproject(path: Path, row: int, geom: dict[str, Any], src: str, dst_wkt: str) -> dict[str, Any]:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_geom

    try:
        src_crs, dst_crs = CRS.from_user_input(src), CRS.from_wkt(dst_wkt)
        return geom if src_crs == dst_crs else dict(transform_geom(src_crs, dst_crs, geom))
    except (CRSError, ValueError) as exc:
        raise SegweakError(f"{path} feature {row}: cannot reproject its polygon from {src}: {exc}") from None


def _check_crs(path: Path, crs: str) -> str:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        CRS.from_user_input(crs)
    except CRSError:
        raise SegweakError(
            f"{path}: --region-crs {crs!r} is not a CRS; give e.g. EPSG:25832, or 'pixel' for pixel "
            "coordinates"
        ) from None
    return crs


def _read_geojson(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None], str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegweakError(f"{path}: cannot read it as GeoJSON: {exc}") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise SegweakError(f"{path}: expected a GeoJSON FeatureCollection (one feature per labelled region)")
    crs = ((data.get("crs") or {}).get("properties") or {}).get("name")
    features = data.get("features") or []
    props = [dict(f.get("properties") or {}) for f in features]
    return props, [f.get("geometry") for f in features], crs or "OGC:CRS84"  # RFC 7946: lon/lat WGS 84


def _read_gpkg(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None], str | None]:
    try:
        import pyogrio
        import shapely
    except ImportError:
        raise SegweakError(
            f"{path}: reading GeoPackage needs pyogrio and shapely: pip install 'segweak[geo]' (or save the "
            "layer as GeoJSON)"
        ) from None
    try:
        layers = pyogrio.list_layers(path)
        if len(layers) != 1:
            raise SegweakError(
                f"{path}: has {len(layers)} layers ({', '.join(str(x[0]) for x in layers)}); keep the one "
                "with the labelled regions"
            )
        meta, _, wkb, fields = pyogrio.raw.read(path)
    except SegweakError:
        raise
    except Exception as exc:  # pyogrio's DataSourceError / DataLayerError
        raise SegweakError(f"{path}: cannot read the GeoPackage: {exc}") from None
    names = [str(n) for n in meta["fields"]]
    props = [{n: fields[j][i] for j, n in enumerate(names)} for i in range(len(wkb))]
    geoms = [None if g is None else shapely.geometry.mapping(shapely.from_wkb(g)) for g in wkb]
    return props, geoms, meta.get("crs")


def read_features(path: Path, region_crs: str) -> tuple[list[str], list[list[str]], Polygons]:
    """Read a GeoJSON or GeoPackage file of labelled polygons as a table.

    Args:
        path: ``.geojson`` / ``.json`` or ``.gpkg`` file.
        region_crs: ``file``, ``pixel`` or a CRS (module docstring).

    Returns:
        ``(header, rows, polygons)``: the attribute names, one row of attribute values per feature
        (typed as the file stores them; None where a feature lacks the attribute) and the features'
        polygons.

    Raises:
        SegweakError: Unreadable file, a feature without a polygon, or no usable CRS.
    """
    props, geoms, file_crs = _read_gpkg(path) if path.suffix.lower() == ".gpkg" else _read_geojson(path)
    header: list[str] = []
    for p in props:
        header += [str(k) for k in p if str(k) not in header]
    for i, g in enumerate(geoms, start=1):
        if not isinstance(g, dict) or g.get("type") not in _POLYGON_TYPES:
            kind = g.get("type") if isinstance(g, dict) else "no geometry"
            raise SegweakError(f"{path} feature {i}: {kind} is not a Polygon or MultiPolygon")
    if region_crs == PIXEL:
        crs = None
    elif region_crs == FILE:
        if not file_crs:
            raise SegweakError(
                f"{path}: the file declares no CRS; name the polygons' CRS with --region-crs (e.g. "
                "EPSG:25832), or --region-crs pixel for image pixel coordinates"
            )
        crs = file_crs
    else:
        crs = _check_crs(path, region_crs)
    rows = [[p.get(h) for h in header] for p in props]
    return header, rows, Polygons(path, [dict(g) for g in geoms if g is not None], crs)


__all__ = ["FILE", "PIXEL", "Polygons", "read_features"]
