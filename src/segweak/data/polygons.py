"""Polygon regions of imported weak labels: GeoJSON / GeoPackage features -> the store patches they cover.

A feature is one row of a weak-label table: its attributes are the table's columns (``image``,
optional ``bag``, one per class or ``proportions``) and its polygon is the region. Rule (also in
``docs/store.md``):

* The polygon is rasterised on its image's pixel grid (a pixel is inside when its centre is, GDAL's
  rule through :func:`rasterio.features.rasterize`); a patch joins the feature's bag when at least
  ``min_cover`` of its pixels are inside (default 1.0: the whole patch, as for pixel windows).
* A feature without an image (map coordinates only) is placed so on every georeferenced tile of the
  store, reprojected to each tile's CRS; its bag is the union of its patches on all of them.
* Coordinates (``region_crs``): ``file`` (default) takes the CRS the file declares (a GeoPackage
  layer's CRS; a GeoJSON's legacy ``crs`` member, else WGS 84 lon/lat as RFC 7946 says) and
  reprojects the polygon to the image's CRS; the image's CRS and affine transform come from its
  GeoTIFF tags, recorded per tile in ``store.json`` (``georef``) at prepare time. ``pixel`` reads the
  coordinates as the image's pixel columns (x) and rows (y), for images without georeferencing; a
  CRS such as ``EPSG:25832`` names the CRS of a file that declares none.

The same rows can come from a CSV / Parquet table's WKT column (:func:`read_wkt_column`). GeoJSON is
read with the standard library; GeoPackage needs pyogrio and shapely, WKT shapely (``pip install
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
    """The polygons of a feature file, one per data row, and how to place them on the store's tiles.

    Attributes:
        path: The file (for messages).
        geometries: GeoJSON-like geometry dicts; data row ``r`` (1-based) has ``geometries[r - 1]``
            (None for a blank table row, which the table reader skips).
        crs: CRS of the coordinates (any form ``rasterio.crs.CRS.from_user_input`` reads), or None for
            pixel coordinates.
        unit: What messages call a data row: ``feature`` (GeoJSON / GeoPackage) or ``row`` (a table's
            WKT column).
    """

    path: Path
    geometries: list[dict[str, Any] | None]
    crs: str | None
    unit: str = "feature"
    _tiles: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    # (F, 4) bounding box x0, y0, x1, y1 of every row's polygon in the file's CRS (see _file_boxes).
    _boxes: np.ndarray | None = field(default=None, repr=False)
    # Tiles by CRS (WKT): their ids in store order, (T, 4) footprints and the (F, 4) polygon boxes in
    # that CRS, so a polygon is only placed on the tiles its box meets (see :meth:`_candidates`).
    _by_crs: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

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
        rec = self._records(store)[image]
        if self.crs is not None and not is_georeferenced(rec):
            raise SegweakError(
                f"{self.path} {self.unit} {row}: image {image!r} is not georeferenced (no CRS in "
                f"{rec.get('image_path')}), so polygons in {self.crs} cannot be placed on it; give pixel "
                "coordinates with --region-crs pixel"
            )
        idx = self._place(row, rec, store, min_cover, {})[1]
        out = np.zeros(len(store), dtype=bool)
        out[idx] = True
        return out

    def cover_tiles(self, row: int, store: Any, min_cover: float) -> tuple[np.ndarray, list[str]]:
        """Patches that row ``row``'s polygon covers on every georeferenced tile it lies on.

        For a row that names no image: the polygon is reprojected to each georeferenced tile's CRS
        and placed as by :meth:`cover`; its patches on all tiles together form one bag. Tiles without
        georeferencing cannot be matched to map coordinates and are passed over. Only the tiles whose
        footprint meets the polygon's bounding box are rasterised (:meth:`_candidates`); the others
        cannot hold a pixel centre inside it, so the result is that of placing it on every tile.

        Args:
            row: 1-based data row (feature number).
            store: Open store.
            min_cover: Smallest share of a patch's pixels inside the polygon, in ``(0, 1]``.

        Returns:
            ``(patches, touched)``: the sorted ``(M,)`` int64 store indices of the bag's patches, and
            the ids of the tiles (store order) where the polygon contains at least one pixel centre,
            even if no patch reaches ``min_cover`` there.

        Raises:
            SegweakError: Pixel coordinates (they need an image), no georeferenced tile in the store,
                a row without a polygon, or a polygon that cannot be reprojected.
        """
        if self.crs is None:
            raise SegweakError(
                f"{self.path} {self.unit} {row}: no image; polygons in pixel coordinates (--region-crs "
                "pixel) need the tile id they lie on in the 'image' column"
            )
        recs = self._records(store)
        if not any(is_georeferenced(rec) for rec in recs.values()):
            raise SegweakError(
                f"{self.path} {self.unit} {row}: no image, and no tile of store {store.path} is "
                "georeferenced, so its polygon cannot be matched to a tile; give its image (tile id) and "
                "the coordinates in pixels (--region-crs pixel)"
            )
        if self.geometries[row - 1] is None:
            raise SegweakError(f"{self.path} {self.unit} {row}: has no polygon")
        # The polygon reprojected once per tile CRS, for this row only: keeping every row's copy
        # would grow with the file.
        projected: dict[str, dict[str, Any]] = {}
        parts: list[np.ndarray] = []
        touched: list[str] = []
        for tile in self._candidates(row, store):
            hit, idx = self._place(row, recs[tile], store, min_cover, projected)
            if hit:
                touched.append(tile)
                parts.append(idx)
        patches = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        return patches, touched

    def _records(self, store: Any) -> dict[str, dict[str, Any]]:
        if not self._tiles:
            self._tiles = {t["id"]: t for t in store.meta.get("tiles", [])}
        return self._tiles

    def _patches_on(self, store: Any, tile: str) -> np.ndarray:
        """Sorted ``(n,)`` int64 store indices of tile ``tile``'s patches."""
        return store.tile_patches().get(tile, np.zeros(0, dtype=np.int64))

    def _candidates(self, row: int, store: Any) -> list[str]:
        """Georeferenced tiles (ids, store order) whose footprint meets row ``row``'s bounding box.

        Each tile's footprint is the box of its pixel grid (one pixel of margin) in its own CRS; the
        polygon's box is taken to each tile CRS once for all rows (:func:`_boxes_in`: one vectorised
        transform per distinct tile CRS, none when it is the file's, the common case). The test runs
        in the tile's CRS, where the polygon is rasterised: the reprojected polygon lies in the box of
        its reprojected vertices, which lies in the reprojected box of its vertices, so a pixel centre
        inside it lies in both boxes and a tile that fails the test holds none (placing there gives
        nothing). Going the other way (tile footprints into the file's CRS) would compare a polygon
        whose edges are straight in the tile's CRS with a box in another, which holds only roughly.
        """
        if not self._by_crs:
            from affine import Affine

            boxes = self._file_boxes()
            groups: dict[str, list[dict[str, Any]]] = {}
            for rec in self._records(store).values():
                if is_georeferenced(rec):
                    groups.setdefault(str(rec["georef"]["crs"]), []).append(rec)
            for wkt, recs in groups.items():
                feet = np.empty((len(recs), 4), dtype=np.float64)
                for k, rec in enumerate(recs):
                    h, w = (int(v) for v in rec["shape"])
                    t = Affine(*rec["georef"]["transform"])
                    xs, ys = zip(*(t @ (c, r) for c in (-1, w + 1) for r in (-1, h + 1)), strict=True)
                    feet[k] = min(xs), min(ys), max(xs), max(ys)
                ids = [str(rec["id"]) for rec in recs]
                self._by_crs[wkt] = (ids, feet, _boxes_in(boxes, str(self.crs), wkt))
        order = {t: k for k, t in enumerate(self._records(store))}
        out: list[str] = []
        for ids, feet, boxes in self._by_crs.values():
            x0, y0, x1, y1 = boxes[row - 1]
            # Closed intervals: a polygon that only touches a footprint's edge is still placed.
            meet = (feet[:, 0] <= x1) & (feet[:, 2] >= x0) & (feet[:, 1] <= y1) & (feet[:, 3] >= y0)
            out += [ids[k] for k in np.flatnonzero(meet)]
        return sorted(out, key=order.__getitem__)

    def _file_boxes(self) -> np.ndarray:
        """``(F, 4)`` boxes x0, y0, x1, y1 of the rows' polygons in the file's CRS.

        A polygon without points or with a non-finite coordinate gets the infinite box: it is then
        tried on every tile, where it places (or fails, naming its row) exactly as before.
        """
        if self._boxes is None:
            self._boxes = np.tile(_EVERYWHERE, (len(self.geometries), 1))
            for k, geom in enumerate(self.geometries):
                pts = _points(geom) if geom is not None else np.zeros((0, 2))
                if pts.size and np.isfinite(pts).all():
                    self._boxes[k] = *pts.min(axis=0), *pts.max(axis=0)
        return self._boxes

    def _place(
        self,
        row: int,
        rec: dict[str, Any],
        store: Any,
        min_cover: float,
        projected: dict[str, dict[str, Any]],
    ) -> tuple[bool, np.ndarray]:
        """Rasterise row ``row``'s polygon on tile ``rec`` (georeferenced unless in pixel coordinates).

        Args:
            row: 1-based data row.
            rec: The tile's record of ``store.json``.
            store: Open store.
            min_cover: Smallest share of a patch's pixels inside the polygon.
            projected: The row's polygon by tile CRS (WKT), filled here: tiles mostly share one CRS.

        Returns:
            ``(hit, patches)``: whether the polygon contains a pixel centre of the tile, and the sorted
            ``(M,)`` int64 store indices of the tile's patches with at least ``min_cover`` of their
            pixels inside it.
        """
        from affine import Affine
        from rasterio.features import rasterize

        geom = self.geometries[row - 1]
        if geom is None:
            raise SegweakError(f"{self.path} {self.unit} {row}: has no polygon")
        if self.crs is None:
            transform = Affine.identity()
        else:
            georef = rec["georef"]
            key = str(georef["crs"])
            if key not in projected:
                projected[key] = _reproject(self.path, self.unit, row, geom, self.crs, georef["crs"])
            geom = projected[key]
            transform = Affine(*georef["transform"])
        h, w = (int(v) for v in rec["shape"])
        none = np.zeros(0, dtype=np.int64)
        window = _pixel_window(geom, transform, h, w)
        if window is None:  # the polygon's bounding box misses the tile: nothing to rasterise
            return False, none
        r0, c0, r1, c1 = window
        try:
            # Only the window around the polygon is rasterised (on the tile's own pixel grid, shifted):
            # a polygon on a 6000x6000 px tile is then as cheap as its size, not the tile's.
            inside = rasterize(
                [(geom, 1)],
                out_shape=(r1 - r0, c1 - c0),
                transform=transform @ Affine.translation(c0, r0),
                fill=0,
                dtype="uint8",
            )
        except (ValueError, TypeError) as exc:
            raise SegweakError(
                f"{self.path} {self.unit} {row}: cannot rasterise its polygon: {exc}"
            ) from None
        if not inside.any():
            return False, none
        # Inside pixels of each patch, clipped to the window (no pixel outside it is inside the
        # polygon): counted only for the few patches that overlap the window, which is cheaper than a
        # summed-area table of the whole window (two int64 cumsums over every pixel of it).
        on_tile = self._patches_on(store, str(rec["id"]))
        p = int(store.patch)
        top = np.clip(store.rows[on_tile] - r0, 0, r1 - r0)
        bottom = np.clip(store.rows[on_tile] + p - r0, 0, r1 - r0)
        left = np.clip(store.cols[on_tile] - c0, 0, c1 - c0)
        right = np.clip(store.cols[on_tile] + p - c0, 0, c1 - c0)
        count = np.zeros(len(on_tile), dtype=np.int64)
        for k in np.flatnonzero((bottom > top) & (right > left)):
            count[k] = np.count_nonzero(inside[top[k] : bottom[k], left[k] : right[k]])
        # A hair of slack so min_cover=1.0 is not lost to float rounding of count / p².
        return True, on_tile[count / float(p * p) >= min_cover - 1e-9]


def is_georeferenced(rec: dict[str, Any]) -> bool:
    """Whether a tile record carries the GeoTIFF CRS and transform that map coordinates need."""
    georef = rec.get("georef") or {}
    return bool(georef.get("crs") and georef.get("transform"))


def _pixel_window(geom: dict[str, Any], transform: Any, h: int, w: int) -> tuple[int, int, int, int] | None:
    """``(r0, c0, r1, c1)``: the tile's pixels around a polygon's bounding box, or None off the tile.

    The box's corners go through the inverse of the tile's affine transform (which may be rotated);
    one pixel of margin keeps every pixel whose centre can lie inside the polygon.
    """
    pts = _points(geom)
    if pts.size == 0 or not np.isfinite(pts).all():
        return None  # an empty polygon, or one its reprojection sent to infinity, lies on no tile
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    inverse = ~transform
    cols, rows = zip(*(inverse @ (x, y) for x in (x0, x1) for y in (y0, y1)), strict=True)
    r0, r1 = max(int(np.floor(min(rows))) - 1, 0), min(int(np.ceil(max(rows))) + 1, h)
    c0, c1 = max(int(np.floor(min(cols))) - 1, 0), min(int(np.ceil(max(cols))) + 1, w)
    return (r0, c0, r1, c1) if r1 > r0 and c1 > c0 else None


def _points(geom: dict[str, Any]) -> np.ndarray:
    """``(V, 2)`` x, y of every vertex of a Polygon or MultiPolygon (all rings)."""
    polys = geom["coordinates"] if geom["type"] == "MultiPolygon" else [geom["coordinates"]]
    return np.asarray([pt[:2] for poly in polys for ring in poly for pt in ring], dtype=np.float64).reshape(
        -1, 2
    )


# Points per edge of a box taken to another CRS, and the pad added to the result (share of its size).
_BOX_SAMPLES = 8
_BOX_PAD = 0.01
_EVERYWHERE = np.array([-np.inf, -np.inf, np.inf, np.inf])
"""The box of a polygon that must be tried on every tile (it meets every footprint)."""


def _boxes_in(boxes: np.ndarray, src: str, dst_wkt: str, chunk: int = 8192) -> np.ndarray:
    """Boxes of the polygons in CRS ``dst_wkt`` that hold the polygons reprojected there.

    In the same CRS (as :func:`_reproject` decides it) the boxes are exact. Otherwise the image of a
    box is a curved quadrilateral whose extent is that of its outline: :data:`_BOX_SAMPLES` points per
    edge go through the transform and the box of them is padded by :data:`_BOX_PAD` of its size, far
    more than the bulge of an outline between samples for any map projection over a region that
    fits in it (a corner-only transform would cut such bulges off and could lose a true hit). A box
    the transform cannot take (an unknown CRS, points off the projection's domain) becomes infinite
    (:data:`_EVERYWHERE`), so its polygon is tried on every tile and places or fails there as before.

    Args:
        boxes: ``(F, 4)`` x0, y0, x1, y1 in CRS ``src`` (infinite rows stay infinite).
        src: CRS of the boxes (``CRS.from_user_input``).
        dst_wkt: Target CRS as WKT (a tile's ``georef.crs``).
        chunk: Boxes per transform call, to bound the memory of the sampled outlines.

    Returns:
        ``(F, 4)`` boxes in ``dst_wkt``.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform

    out = np.tile(_EVERYWHERE, (len(boxes), 1))
    try:
        src_crs, dst_crs = CRS.from_user_input(src), CRS.from_wkt(dst_wkt)
    except (CRSError, ValueError):
        return out
    if src_crs == dst_crs:
        return boxes.copy()
    t = np.linspace(0.0, 1.0, _BOX_SAMPLES, endpoint=False)
    rows = np.flatnonzero(np.isfinite(boxes).all(axis=1))  # infinite boxes stay infinite
    for s in range(0, len(rows), chunk):
        take = rows[s : s + chunk]
        x0, y0, x1, y1 = (v[:, None] for v in boxes[take].T)
        dx, dy = x1 - x0, y1 - y0
        # The outline counter-clockwise from (x0, y0): bottom, right, top, left edge, (n, 4 * samples).
        xs = np.hstack([x0 + t * dx, x1 + 0 * t, x1 - t * dx, x0 + 0 * t])
        ys = np.hstack([y0 + 0 * t, y0 + t * dy, y1 + 0 * t, y1 - t * dy])
        try:
            tx, ty = (
                np.asarray(v).reshape(xs.shape) for v in transform(src_crs, dst_crs, xs.ravel(), ys.ravel())
            )
        except Exception:  # GDAL refuses these points (its errors vary by version): try them everywhere
            continue
        got = np.stack([tx.min(1), ty.min(1), tx.max(1), ty.max(1)], axis=1)
        pad = _BOX_PAD * ((got[:, 2] - got[:, 0]) + (got[:, 3] - got[:, 1]))[:, None]
        got += pad * np.array([-1.0, -1.0, 1.0, 1.0])
        # Points GDAL sends to inf / NaN (off the projection's domain) keep the infinite box.
        ok = np.isfinite(got).all(axis=1)
        out[take[ok]] = got[ok]
    return out


def _reproject(
    path: Path, unit: str, row: int, geom: dict[str, Any], src: str, dst_wkt: str
) -> dict[str, Any]:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_geom

    try:
        src_crs, dst_crs = CRS.from_user_input(src), CRS.from_wkt(dst_wkt)
        return geom if src_crs == dst_crs else dict(transform_geom(src_crs, dst_crs, geom))
    except (CRSError, ValueError) as exc:
        raise SegweakError(f"{path} {unit} {row}: cannot reproject its polygon from {src}: {exc}") from None


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


def _check_polygons(
    path: Path, unit: str, geoms: list[dict[str, Any] | None], blank_ok: bool = False
) -> None:
    """Refuse a geometry that is not a Polygon or MultiPolygon (None too, unless ``blank_ok``)."""
    for i, g in enumerate(geoms, start=1):
        if g is None and blank_ok:
            continue
        if not isinstance(g, dict) or g.get("type") not in _POLYGON_TYPES:
            kind = g.get("type") if isinstance(g, dict) else "no geometry"
            raise SegweakError(f"{path} {unit} {i}: {kind} is not a Polygon or MultiPolygon")


def _coordinates_crs(path: Path, region_crs: str, file_crs: str | None, no_crs: str) -> str | None:
    """Return the polygons' CRS (None: pixel coordinates) from ``--region-crs`` and the file's own."""
    if region_crs == PIXEL:
        return None
    if region_crs == FILE:
        if not file_crs:
            raise SegweakError(
                f"{path}: {no_crs}; name the polygons' CRS with --region-crs (e.g. EPSG:25832), or "
                "--region-crs pixel for image pixel coordinates"
            )
        return file_crs
    return _check_crs(path, region_crs)


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
    _check_polygons(path, "feature", geoms)
    crs = _coordinates_crs(path, region_crs, file_crs, "the file declares no CRS")
    rows = [[p.get(h) for h in header] for p in props]
    return header, rows, Polygons(path, [dict(g) for g in geoms if g is not None], crs)


def read_wkt_column(path: Path, column: str, cells: list[str], region_crs: str) -> Polygons:
    """Read the polygons of a CSV / Parquet table's WKT column (``geometry``), one per data row.

    The rows then place exactly as GeoJSON features do (:class:`Polygons`). A table carries no CRS,
    so ``region_crs`` must name one (``EPSG:32632``) or be ``pixel``.

    Args:
        path: The table (for messages).
        column: The WKT column's name as the header spells it.
        cells: That column's cell of every data row, as text (blank rows give '').
        region_crs: ``pixel`` or a CRS; ``file`` is refused (the table declares none).

    Returns:
        The polygons; a blank cell gives None (a blank row, skipped by the reader; a data row with a
        blank cell is refused when it is placed).

    Raises:
        SegweakError: shapely missing (``pip install 'segweak[geo]'``), a cell that is not WKT, a
            geometry that is not a (Multi)Polygon, or no CRS.
    """
    try:
        import shapely
        from shapely.errors import ShapelyError
    except ImportError:
        raise SegweakError(
            f"{path}: column {column!r} holds WKT polygons, which need shapely: pip install 'segweak[geo]' "
            "(or save the regions as GeoJSON)"
        ) from None
    crs = _coordinates_crs(
        path, region_crs, None, f"a CSV or Parquet table declares no CRS for its {column!r} column"
    )
    geoms: list[dict[str, Any] | None] = []
    for r, text in enumerate(cells, start=1):
        if not text.strip():
            geoms.append(None)
            continue
        try:
            geom = shapely.from_wkt(text.strip())
        except (ShapelyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SegweakError(
                f"{path} row {r}: column {column!r} is not WKT such as 'POLYGON ((x y, ...))': {first}"
            ) from None
        geoms.append(dict(shapely.geometry.mapping(geom)))
    _check_polygons(path, "row", geoms, blank_ok=True)
    return Polygons(path, geoms, crs, unit="row")


__all__ = ["FILE", "PIXEL", "Polygons", "is_georeferenced", "read_features", "read_wkt_column"]
