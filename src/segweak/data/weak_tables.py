"""Imported weak labels: class proportions from a table, per image or per region, as *bags* of patches.

``segweak weak import TABLE --store S --name NAME`` reads a table whose rows give the class
proportions of a whole image (tile), a pixel window of it or a polygon on it, maps each row to the
store patches it covers (a *bag*), validates every row and writes the bags as
``STORE/weak/NAME.json`` (atomically; ``docs/store.md`` describes the format). Training reads it with
``weak.labels: NAME``.

Formats: CSV (header row, UTF-8; optionally a WKT ``geometry`` column); Parquet (``.parquet``, same
columns; needs pyarrow, ``pip install 'segweak[tables]'``); GeoJSON (``.geojson``/``.json``) or
GeoPackage (``.gpkg``, needs ``segweak[geo]``) whose features' attributes are the columns below and
whose polygons are the regions (:mod:`segweak.data.polygons` gives the polygon -> patches rule and
the CRS handling).

Table columns (CSV, header row, UTF-8):

* ``image`` (alias ``tile`` or ``scene``): the tile id in the store (``segweak info`` lists them via
  ``patches.csv``'s ``tile`` column); optional for polygons in map coordinates;
* optional ``x0, y0, x1, y1``: a pixel window in the tile's pixel coordinates (x = column, y = row,
  end-exclusive); all four or none; empty cells = the whole image;
* optional ``bag``: a name for the row's bag (default ``row<N>``);
* the proportions: one column per class name of the store (missing class columns count as 0), or
  one ``proportions`` column with K numbers in palette (class index) order, separated by spaces or
  ``;``.

Rules (documented in ``docs/store.md``):

* A patch belongs to a row's bag when its whole window lies inside the row's region (partly covered
  patches are left out: a proportion measured over the region says nothing exact about a patch that
  also shows pixels outside it). A row whose region contains no whole patch is refused.
* A patch may belong to one bag only (overlapping rows are refused, naming both rows).
* Proportions must be finite, non-negative and sum to 1 within ``tolerance``; with ``normalise``
  rows whose sum is off (but positive) are divided by their sum and the count is reported as a
  warning.
* A polygon's bag holds the patches with at least ``min_cover`` (default 1.0) of their pixels inside
  it. A polygon in map coordinates needs no ``image``: it is placed on every georeferenced tile it
  lies on (:meth:`segweak.data.polygons.Polygons.cover_tiles`); one that gives no patch is refused
  unless ``skip_unplaced``.
* A CSV or Parquet table may hold WKT polygons in a ``geometry`` (``wkt``, ``polygon``, ``geom``)
  column (needs shapely); its rows are then polygon features (:func:`segweak.data.polygons.read_wkt_column`),
  with the CRS given by ``region_crs`` (a table declares none).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segweak import __version__
from segweak.data.store import Store, file_sha256, open_store
from segweak.errors import SegweakError
from segweak.io import atomic_write_json, check_file_stem

if TYPE_CHECKING:
    from segweak.data.polygons import Polygons

WEAK_DIR = "weak"
FORMAT_VERSION = 1
IMAGE_KEYS = ("image", "tile", "scene")
WINDOW_KEYS = ("x0", "y0", "x1", "y1")
POLYGON_KEYS = ("geometry", "wkt", "polygon", "geom")
PARQUET_SUFFIXES = (".parquet", ".pq")
GEO_SUFFIXES = (".geojson", ".json", ".gpkg")
COMPUTED = "computed"
"""``weak.labels`` value of the labels computed from the store's masks (the default)."""


@dataclass(frozen=True)
class Bag:
    """One labelled region: the patches it covers and their common class proportions.

    Attributes:
        id: Bag name (the table's ``bag`` cell or ``row<N>``).
        row: 1-based data row of the table (header = row 0) it came from.
        image: Tile id the row names, or None for a polygon without one (placed on every tile).
        window: ``[x0, y0, x1, y1]`` pixel window, or None for the whole image or a polygon.
        patches: Store patch indices in the bag, sorted.
        proportions: ``K`` class proportions summing to 1.
        images: Tile ids holding the bag's patches, in store order (one unless ``image`` is None).
    """

    id: str
    row: int
    image: str | None
    window: list[int] | None
    patches: list[int]
    proportions: list[float]
    images: list[str]


def check_set_name(name: str, what: str = "--name") -> None:
    """Refuse a weak-label set name that is not a plain file stem (or is the reserved ``computed``)."""
    check_file_stem(name, what, "weak-label set", reserved=(COMPUTED,))


def set_path(store_path: str | os.PathLike[str], name: str) -> Path:
    """``STORE/weak/NAME.json``."""
    return Path(store_path) / WEAK_DIR / f"{name}.json"


def set_names(store_path: str | os.PathLike[str]) -> list[str]:
    """Names of the imported weak-label sets of a store, sorted."""
    d = Path(store_path) / WEAK_DIR
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.json") if not p.name.startswith("."))


def patches_in_window(
    rows: np.ndarray, cols: np.ndarray, size: int, window: tuple[int, int, int, int]
) -> np.ndarray:
    """Boolean mask of the patches whose whole window lies inside ``window``.

    Args:
        rows: ``(N,)`` patch origin rows (y) in the tile.
        cols: ``(N,)`` patch origin columns (x) in the tile.
        size: Patch side ``P``.
        window: ``(x0, y0, x1, y1)``, end-exclusive.

    Returns:
        ``(N,)`` bool.
    """
    x0, y0, x1, y1 = window
    return (cols >= x0) & (rows >= y0) & (cols + size <= x1) & (rows + size <= y1)


def _cell_float(table: Path, row: int, column: str, text: str) -> float:
    text = text.strip()
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise SegweakError(f"{table} row {row}: {column} {text!r} is not a number") from None


def _cell_int(table: Path, row: int, column: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise SegweakError(f"{table} row {row}: {column} {text!r} is not an integer pixel position") from None


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data rows (cells as text) of a UTF-8 CSV table."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            return header, list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SegweakError(f"{path}: cannot read the table as UTF-8 CSV: {exc}") from exc


def cell_text(value: Any) -> str:
    """Return a typed cell (Parquet, GeoPackage attribute) as the text a CSV cell would hold (None -> '')."""
    if isinstance(value, np.generic):  # GeoPackage attributes come as numpy scalars
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _read_parquet(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data rows (cells as text) of a Parquet table, read with pyarrow (extra ``tables``)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SegweakError(
            f"{path}: reading Parquet needs pyarrow: pip install 'segweak[tables]' (or export the table "
            "as CSV)"
        ) from None
    try:
        columns = pq.read_table(path).to_pydict()
    except Exception as exc:  # pyarrow raises several types (ArrowInvalid, OSError) for a bad file
        raise SegweakError(f"{path}: cannot read the Parquet table: {exc}") from None
    header = [str(h).strip() for h in columns]
    n = len(next(iter(columns.values()), []))
    return header, [[cell_text(columns[h][i]) for h in columns] for i in range(n)]


def polygon_regions(table: str | os.PathLike[str]) -> bool:
    """Whether a table's regions are polygons: a GeoJSON / GeoPackage file, or a table with a WKT column.

    Reads only the header, so an experiment can tell which import options matter before importing.
    """
    path = Path(table)
    suffix = path.suffix.lower()
    if suffix in GEO_SUFFIXES:
        return True
    try:
        if suffix in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            header = list(pq.read_schema(path).names)
        else:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                header = next(csv.reader(fh), [])
    except Exception:  # unreadable or no pyarrow: the import itself reports it, with the file's name
        return False
    return any(h.strip().lower() in POLYGON_KEYS for h in header)


def read_table(
    table: str | os.PathLike[str],
    store: Store,
    *,
    tolerance: float = 0.01,
    normalise: bool = False,
    region_crs: str = "file",
    min_cover: float = 1.0,
    skip_unplaced: bool = False,
) -> tuple[list[Bag], int, list[int]]:
    """Read and validate a weak-label table against a store.

    Args:
        table: CSV or Parquet table, or GeoJSON / GeoPackage polygons (module docstring).
        store: Open :class:`~segweak.data.store.Store`.
        tolerance: Largest accepted ``|sum - 1|`` of a row's proportions.
        normalise: Divide rows whose sum is off by their sum instead of refusing them.
        region_crs: Coordinates of polygons: ``file`` (the file's CRS), ``pixel`` (image pixel
            coordinates) or a CRS (``EPSG:25832``) for a file that declares none.
        min_cover: Smallest share of a patch's pixels inside a polygon for the patch to join its bag.
        skip_unplaced: Leave out polygons without an image that give no patch on any tile (instead
            of refusing the file).

    Returns:
        The bags in table order, the number of rows that were normalised and the data rows left out
        by ``skip_unplaced``.

    Raises:
        SegweakError: One line naming the table and the row (or column) at fault.
    """
    path = Path(table)
    if not path.is_file():
        raise SegweakError(f"{path}: weak-label table not found")
    if not 0.0 <= tolerance < 1.0:
        raise SegweakError(f"--tolerance must be in [0, 1), got {tolerance}")
    if not 0.0 < min_cover <= 1.0:
        raise SegweakError(f"--min-cover must be in (0, 1], got {min_cover}")
    classes = list(store.classes)
    k = len(classes)
    suffix = path.suffix.lower()
    polygons: Polygons | None = None
    if suffix in PARQUET_SUFFIXES:
        header, data = _read_parquet(path)
    elif suffix in GEO_SUFFIXES:
        from segweak.data.polygons import read_features

        header, values, polygons = read_features(path, region_crs)
        data = [[cell_text(v) for v in row] for row in values]
    elif suffix == ".shp":
        raise SegweakError(
            f"{path}: Shapefiles are not read; save the layer as GeoPackage (.gpkg) or GeoJSON"
        )
    else:
        header, data = _read_csv(path)
    if not header:
        raise SegweakError(f"{path}: the table is empty (it needs a header row)")
    lower = [h.lower() for h in header]
    wkt_cols = [i for i, lo in enumerate(lower) if lo in POLYGON_KEYS]
    if wkt_cols and polygons is not None:
        raise SegweakError(
            f"{path}: attribute {header[wkt_cols[0]]!r}: a feature's region is its own geometry; drop the "
            "attribute"
        )
    if len(wkt_cols) > 1:
        raise SegweakError(
            f"{path}: columns {header[wkt_cols[0]]!r} and {header[wkt_cols[1]]!r} both look like polygons; "
            "keep one WKT column"
        )
    wkt_col = wkt_cols[0] if wkt_cols else None
    if wkt_col is not None:
        from segweak.data.polygons import read_wkt_column

        # A WKT row is a polygon feature: the same placement, CRS handling and rules as GeoJSON.
        # A blank or short row gives '' here; the row loop below skips the blank one and refuses the short.
        cells = [row[wkt_col] if wkt_col < len(row) else "" for row in data]
        polygons = read_wkt_column(path, header[wkt_col], cells, region_crs)
    image_cols = [i for i, lo in enumerate(lower) if lo in IMAGE_KEYS]
    # A polygon in map coordinates can be placed on every tile it lies on, so it needs no image.
    if len(image_cols) > 1 or (not image_cols and polygons is None):
        raise SegweakError(f"{path}: the header needs exactly one image column (image, tile or scene)")
    image_col = image_cols[0] if image_cols else None
    if image_col is None and polygons is not None and polygons.crs is None:
        raise SegweakError(
            f"{path}: polygons in pixel coordinates (--region-crs pixel) need an 'image' column naming "
            "the tile each one lies on"
        )
    win = [lower.index(key) if key in lower else None for key in WINDOW_KEYS]
    if any(i is None for i in win) and any(i is not None for i in win):
        raise SegweakError(f"{path}: a region needs all four columns x0, y0, x1, y1 (or none)")
    if polygons is not None and any(i is not None for i in win):
        raise SegweakError(f"{path}: a feature's region is its polygon; drop the x0, y0, x1, y1 attributes")
    bag_col = lower.index("bag") if "bag" in lower else None
    list_col = lower.index("proportions") if "proportions" in lower else None
    known = {image_col, wkt_col, bag_col, list_col, *(i for i in win if i is not None)}
    class_cols: dict[int, int] = {}
    for i, h in enumerate(header):
        if i in known:
            continue
        if h not in classes:
            raise SegweakError(
                f"{path}: column {h!r} is not a class of the store ({', '.join(classes)}) nor a known "
                "column (image, bag, x0, y0, x1, y1, proportions, geometry)"
            )
        class_cols[i] = classes.index(h)
    if list_col is not None and class_cols:
        raise SegweakError(f"{path}: give either a 'proportions' column or one column per class, not both")
    if list_col is None and not class_cols:
        raise SegweakError(f"{path}: no proportion columns; add one column per class ({', '.join(classes)})")

    tiles = np.asarray(store.tiles)
    # Rows look up their tile's patches: comparing every patch's tile id for each row was O(rows ×
    # patches) (19 s for a table of one row per patch on 32,768 patches).
    on_tiles = store.tile_patches()
    size = int(store.patch)
    tile_shapes = {t["id"]: t["shape"] for t in store.meta.get("tiles", []) if "id" in t}
    owner = np.zeros(len(store), dtype=np.int64)  # data row that claimed each patch (0 = none)
    bags: list[Bag] = []
    seen_ids: dict[str, int] = {}
    normalised = 0
    skipped: list[int] = []
    for r, cells in enumerate(data, start=1):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise SegweakError(f"{path} row {r}: {len(cells)} cells for {len(header)} columns")
        image = cells[image_col].strip() if image_col is not None else ""
        window: list[int] | None = None
        bag_image: str | None = image
        if polygons is not None and not image:
            # No image: the polygon's bag is its patches on every georeferenced tile it lies on.
            bag_image = None
            idx, touched = polygons.cover_tiles(r, store, min_cover)
            if idx.size == 0:
                if skip_unplaced:
                    skipped.append(r)
                    continue
                raise SegweakError(_unplaced(path, polygons, r, touched, store, min_cover))
        else:
            on_tile = on_tiles.get(image)
            if on_tile is None:
                raise SegweakError(f"{path} row {r}: unknown image {image!r}; it is not a tile of the store")
            if polygons is not None:
                idx = on_tile[polygons.cover(r, image, store, min_cover)[on_tile]]
            elif win[0] is not None and any(cells[i].strip() for i in win if i is not None):
                x0, y0, x1, y1 = (_cell_int(path, r, header[i], cells[i]) for i in win if i is not None)
                window = [x0, y0, x1, y1]
                shape = tile_shapes.get(image)
                if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
                    raise SegweakError(
                        f"{path} row {r}: window {window} must have 0 <= x0 < x1 and 0 <= y0 < y1"
                    )
                if shape is not None and (y1 > shape[0] or x1 > shape[1]):
                    raise SegweakError(
                        f"{path} row {r}: window {window} reaches outside image {image!r} "
                        f"({shape[1]}x{shape[0]} px)"
                    )
                rows, cols = store.rows[on_tile], store.cols[on_tile]
                idx = on_tile[patches_in_window(rows, cols, size, (x0, y0, x1, y1))]
            else:
                idx = on_tile
        if idx.size == 0:
            what = f"polygon of {polygons.unit} {r}" if polygons is not None else f"window {window}"
            rule = (
                f"at least {min_cover:.0%} inside (--min-cover)"
                if polygons is not None
                else "whole: patches partly inside a region are not in its bag"
            )
            raise SegweakError(
                f"{path} row {r}: {what} of image {image!r} contains no {size}x{size} patch ({rule})"
            )
        clash = owner[idx][owner[idx] > 0]
        if clash.size:
            raise SegweakError(
                f"{path} row {r}: its patches are already in row {int(clash[0])}'s bag; a patch may be in "
                "one bag only"
            )
        owner[idx] = r
        props = np.zeros(k, dtype=np.float64)
        if list_col is not None:
            parts = [p for p in re.split(r"[;\s]+", cells[list_col].strip()) if p]
            if len(parts) != k:
                raise SegweakError(
                    f"{path} row {r}: proportions has {len(parts)} values; the store has {k} classes "
                    f"({', '.join(classes)})"
                )
            props[:] = [_cell_float(path, r, "proportions", p) for p in parts]
        else:
            for i, c in class_cols.items():
                props[c] = _cell_float(path, r, header[i], cells[i])
        if not np.isfinite(props).all() or (props < 0).any():
            raise SegweakError(
                f"{path} row {r}: proportions must be finite and non-negative, got {props.tolist()}"
            )
        total = float(props.sum())
        if abs(total - 1.0) > tolerance:
            if not normalise or total <= 0:
                raise SegweakError(
                    f"{path} row {r}: proportions sum to {total:.4g}, not 1 within {tolerance}; fix the row "
                    "or pass --normalise"
                )
            normalised += 1
        # Within tolerance rows are also rescaled, so every stored bag sums to 1 exactly (up to rounding).
        props = props / total
        bag_id = cells[bag_col].strip() if bag_col is not None and cells[bag_col].strip() else f"row{r}"
        if bag_id in seen_ids:
            raise SegweakError(f"{path} row {r}: bag {bag_id!r} is already row {seen_ids[bag_id]}")
        seen_ids[bag_id] = r
        on = list(dict.fromkeys(tiles[idx].tolist()))  # the bag's tiles, in store order
        bags.append(Bag(bag_id, r, bag_image, window, idx.tolist(), props.tolist(), on))
    if not bags and skipped:
        raise SegweakError(
            f"{path}: none of its {len(skipped)} polygon(s) without an image gives a patch on a tile of the "
            "store (all left out by --skip-unplaced); check their CRS (--region-crs)"
        )
    if not bags:
        raise SegweakError(f"{path}: the table has no data rows")
    return bags, normalised, skipped


def _unplaced(
    path: Path, polygons: Polygons, row: int, touched: list[str], store: Store, min_cover: float
) -> str:
    """Return the one-line error for a polygon without an image that gives no patch on any tile."""
    unit = polygons.unit
    size = int(store.patch)
    if touched:
        return (
            f"{path} {unit} {row}: its polygon (no image) lies on {', '.join(map(repr, touched))} but "
            f"contains no {size}x{size} patch with at least {min_cover:.0%} inside (--min-cover); "
            "--skip-unplaced leaves such polygons out"
        )
    from segweak.data.polygons import is_georeferenced

    recs = store.meta.get("tiles", [])
    plain = sum(1 for t in recs if not is_georeferenced(t))
    note = f"; {plain} tile(s) without georeferencing cannot be matched" if plain else ""
    # Most often the coordinates are not in the CRS they are read in: say which one was used.
    return (
        f"{path} {unit} {row}: its polygon (no image) lies on none of the store's {len(recs) - plain} "
        f"georeferenced tile(s) (coordinates read in {polygons.crs}{note}); check the CRS (--region-crs), "
        "or pass --skip-unplaced to leave such polygons out"
    )


def import_table(
    table: str | os.PathLike[str],
    store_path: str | os.PathLike[str],
    name: str,
    *,
    tolerance: float = 0.01,
    normalise: bool = False,
    overwrite: bool = False,
    region_crs: str = "file",
    min_cover: float = 1.0,
    skip_unplaced: bool = False,
) -> dict[str, Any]:
    """Validate a weak-label table and write it as ``STORE/weak/NAME.json`` (atomically).

    Args:
        table: CSV table (module docstring).
        store_path: Prepared store.
        name: Name of the weak-label set (``weak.labels: NAME`` in a training config).
        tolerance: Largest accepted ``|sum - 1|`` of a row.
        normalise: Rescale rows whose sum is off instead of refusing them.
        overwrite: Replace an existing set of that name.
        region_crs: Coordinates of polygons (:func:`read_table`).
        min_cover: Smallest share of a patch inside a polygon for it to join the bag (:func:`read_table`).
        skip_unplaced: Leave out polygons without an image that give no patch (:func:`read_table`).

    Returns:
        The written artefact (dict), with ``normalised_rows`` counting rescaled rows and
        ``skipped_rows`` the data rows ``skip_unplaced`` left out.

    Raises:
        SegweakError: Bad name, existing set without ``overwrite``, or a bad row (one line).
    """
    check_set_name(name)
    store = open_store(store_path)
    out = set_path(store.path, name)
    if out.exists() and not overwrite:
        raise SegweakError(f"{out} exists; pass --overwrite to replace weak-label set {name!r}")
    bags, normalised, skipped = read_table(
        table,
        store,
        tolerance=tolerance,
        normalise=normalise,
        region_crs=region_crs,
        min_cover=min_cover,
        skip_unplaced=skip_unplaced,
    )
    polygons = polygon_regions(table)
    table = Path(table)
    artefact = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": "imported",
        "source": {"file": str(table.resolve()), "sha256": file_sha256(table)},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "classes": list(store.classes),
        "tolerance": tolerance,
        "normalise": normalise,
        "normalised_rows": normalised,
        "region_crs": region_crs if polygons else None,
        "min_cover": min_cover if polygons else None,
        "skip_unplaced": skip_unplaced if polygons else None,
        "skipped_rows": skipped,
        "rule": (
            f"patch in bag when at least {min_cover:g} of its pixels (pixel centres) lie inside the polygon"
            if polygons
            else "patch in bag when its whole window lies inside the region"
        ),
        "region": ("polygon" if polygons else "window or image"),
        "n_patches": int(sum(len(b.patches) for b in bags)),
        "bags": [
            {
                "id": b.id,
                "row": b.row,
                "image": b.image,
                "images": b.images,
                "window": b.window,
                "patches": b.patches,
                "proportions": b.proportions,
            }
            for b in bags
        ],
    }
    out.parent.mkdir(exist_ok=True)
    atomic_write_json(out, artefact)
    return artefact


def load_set(store: Store, name: str) -> dict[str, Any]:
    """Read ``STORE/weak/NAME.json`` and check it against the store.

    Args:
        store: Open store.
        name: Weak-label set name (``weak.labels``).

    Raises:
        SegweakError: Missing or unreadable set, or classes that differ from the store's.
    """
    path = set_path(store.path, name)
    if not path.is_file():
        have = set_names(store.path)
        raise SegweakError(
            f"weak.labels: no weak-label set {name!r} in store {store.path} "
            f"(have: {', '.join(have) or 'none'}); "
            "import one with `segweak weak import TABLE --store STORE --name NAME`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SegweakError(f"cannot read {path}: {exc}") from exc
    if data.get("format_version") != FORMAT_VERSION or data.get("classes") != list(store.classes):
        raise SegweakError(f"{path} does not match this store or segweak version; re-import the table")
    return data


def provenance(store: Store, labels: str) -> dict[str, Any]:
    """Where the weak labels of ``weak.labels: labels`` come from (for metrics.json and reports)."""
    if labels == COMPUTED:
        return {"kind": COMPUTED, "from": "masks (per-class pixel counts of patches.csv)"}
    data = load_set(store, labels)
    return {
        "kind": "imported",
        "name": labels,
        "file": data["source"]["file"],
        "sha256": data["source"]["sha256"],
        "bags": len(data["bags"]),
        "patches": data["n_patches"],
    }


def summary(store: Store) -> list[dict[str, Any]]:
    """One record per imported set, for ``segweak info``: name, file, sha256, bags, patches."""
    out = []
    for name in set_names(store.path):
        try:
            rec = provenance(store, name)
        except SegweakError as exc:
            rec = {"name": name, "error": str(exc)}
        out.append(rec)
    return out


__all__ = [
    "COMPUTED",
    "Bag",
    "check_set_name",
    "import_table",
    "load_set",
    "patches_in_window",
    "polygon_regions",
    "provenance",
    "read_table",
    "set_names",
    "summary",
]


def unplaced_warning(rows: list[int], option: str) -> str:
    """Return the warning for features left out by ``skip_unplaced`` (CLI and experiment say the same).

    Args:
        rows: Their 1-based data rows (``skipped_rows`` of the set).
        option: How the user asked for it (``--skip-unplaced``, ``weak_labels[0].skip_unplaced``).
    """
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return (
        f"{len(rows)} polygon(s) without an image gave no patch on any tile and were left out ({option}): "
        f"data row(s) {', '.join(map(str, rows[:10]))}{more}"
    )
