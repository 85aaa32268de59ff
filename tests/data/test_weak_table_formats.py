"""Weak-label tables beyond CSV: Parquet, and polygon regions from GeoJSON / GeoPackage on GeoTIFF tiles."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from segweak.cli import main
from segweak.data.sources import FolderSource
from segweak.data.store import Store, prepare
from segweak.data.synthetic import SCENE_CLASSES, synthesize_scenes
from segweak.data.weak_tables import import_table
from segweak.errors import SegweakError

CRS = "EPSG:32632"
ORIGIN = (500000.0, 5400000.0)
GSD = 0.5
SHARES = [0.3, 0.2, 0.2, 0.2, 0.1, 0.0]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Two 96x96 images (scene layout, P-mode masks); 9 patches of 32 each."""
    return synthesize_scenes(
        tmp_path_factory.mktemp("geo") / "data", n_scenes=2, per_scene=1, height=96, width=96
    )


@pytest.fixture(scope="module")
def plain_store(scenes: Path, tmp_path_factory) -> Path:
    """The JPEG images as they are: no georeferencing."""
    src = FolderSource(f"{scenes}/*/images/*.jpg", "{parent}/masks/{stem}.png", scenes / "palette.yaml")
    return prepare(src, tmp_path_factory.mktemp("plain") / "store", patch=32, progress=False)


@pytest.fixture(scope="module")
def geo_store(scenes: Path, tmp_path_factory) -> Path:
    """The same images as GeoTIFFs in UTM 32N at 0.5 m, the second one 48 m east of the first."""
    import rasterio
    from affine import Affine
    from PIL import Image

    root = tmp_path_factory.mktemp("geotiff") / "data"
    shutil.copytree(scenes, root)
    for k, jpg in enumerate(sorted(root.glob("*/images/*.jpg"))):
        rgb = np.asarray(Image.open(jpg).convert("RGB"))
        transform = Affine(GSD, 0, ORIGIN[0] + 48.0 * k, 0, -GSD, ORIGIN[1])
        profile = dict(
            driver="GTiff", width=96, height=96, count=3, dtype="uint8", crs=CRS, transform=transform
        )
        with rasterio.open(jpg.with_suffix(".tif"), "w", **profile) as dst:
            dst.write(np.moveaxis(rgb, -1, 0))
        jpg.unlink()
    src = FolderSource(f"{root}/*/images/*.tif", "{parent}/masks/{stem}.png", root / "palette.yaml")
    return prepare(src, tmp_path_factory.mktemp("geostore") / "store", patch=32, progress=False)


def _store_copy(store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "store"
    shutil.copytree(store, out)
    return out


def _first_tile(store: Path) -> str:
    return Store(store).meta["tiles"][0]["id"]


def _patches(store: Path, tile: str, cells: list[tuple[int, int]]) -> list[int]:
    st = Store(store)
    return sorted(
        i for i in range(len(st)) if st.tiles[i] == tile and (int(st.rows[i]), int(st.cols[i])) in cells
    )


def _world(col: float, row: float, k: int = 0) -> tuple[float, float]:
    return ORIGIN[0] + 48.0 * k + GSD * col, ORIGIN[1] - GSD * row


def _rect(x0: float, y0: float, x1: float, y1: float, to=lambda c, r: (c, r)) -> dict:
    ring = [to(x0, y0), to(x1, y0), to(x1, y1), to(x0, y1), to(x0, y0)]
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


def _geojson(path: Path, features: list[tuple[dict, dict]], crs: str | None) -> Path:
    fc: dict = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": p, "geometry": g} for p, g in features],
    }
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(fc))
    return path


def _props(tile: str, bag: str) -> dict:
    return {"image": tile, "bag": bag, **dict(zip(SCENE_CLASSES, SHARES, strict=True))}


# ---- Parquet -------------------------------------------------------------------------------------


def test_parquet_table_gives_the_same_bags_as_csv(plain_store: Path, tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    store = _store_copy(plain_store, tmp_path)
    a = _first_tile(store)
    columns = {
        "image": [a, a],
        "bag": ["top", None],
        "x0": [0, 0],
        "y0": [0, 64],
        "x1": [96, 96],
        "y1": [64, 96],
        **{c: [v, v] for c, v in zip(SCENE_CLASSES, SHARES, strict=True)},
    }
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    csv = tmp_path / "t.csv"
    csv.write_text(
        ",".join(columns)
        + "\n"
        + "\n".join(
            ",".join("" if col[i] is None else str(col[i]) for col in columns.values()) for i in range(2)
        )
    )
    from_parquet = import_table(tmp_path / "t.parquet", store, "pq")
    from_csv = import_table(csv, store, "csv")
    assert from_parquet["bags"] == from_csv["bags"]
    assert [b["id"] for b in from_parquet["bags"]] == ["top", "row2"]
    assert from_parquet["bags"][0]["patches"] == _patches(
        store, a, [(r, c) for r in (0, 32) for c in (0, 32, 64)]
    )
    # A bad row is refused with the same one line as in a CSV.
    columns["car"] = [0.5, 0.1]
    pq.write_table(pa.table(columns), tmp_path / "bad.parquet")
    with pytest.raises(SegweakError, match=r"bad.parquet row 1: proportions sum to 1.4"):
        import_table(tmp_path / "bad.parquet", store, "bad")


def test_parquet_without_pyarrow_names_the_extra(plain_store: Path, tmp_path: Path, monkeypatch, capsys):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if not installed
    assert (
        main(["weak", "import", str(tmp_path / "t.parquet"), "--store", str(plain_store), "--name", "x"]) == 2
    )
    err = capsys.readouterr().err
    assert "pip install 'segweak[tables]'" in err and len(err.strip().splitlines()) == 1


# ---- polygons ------------------------------------------------------------------------------------


def test_store_records_the_geotiff_georeferencing(geo_store: Path):
    rec = Store(geo_store).meta["tiles"][1]
    assert rec["georef"]["transform"] == [GSD, 0.0, ORIGIN[0] + 48.0, 0.0, -GSD, ORIGIN[1]]
    assert "32632" in rec["georef"]["crs"]


def test_polygons_in_the_image_crs_and_in_lon_lat(geo_store: Path, tmp_path: Path):
    from rasterio.warp import transform as warp

    store = _store_copy(geo_store, tmp_path)
    a, b = (t["id"] for t in Store(store).meta["tiles"])

    def lonlat(col: float, row: float) -> tuple[float, float]:
        xs, ys = warp(CRS, "EPSG:4326", [_world(col, row, 1)[0]], [_world(col, row, 1)[1]])
        return xs[0], ys[0]

    features = [
        # Tile a: pixels 0..64 x 0..64 in UTM -> the 2x2 top-left patches.
        (_props(a, "field_a"), _rect(0, 0, 64, 64, to=_world)),
        # Tile b: the same square, as lon/lat (RFC 7946, no crs member), reprojected to UTM on import.
    ]
    utm = _geojson(tmp_path / "fields.geojson", features, crs="urn:ogc:def:crs:EPSG::32632")
    data = import_table(utm, store, "utm")
    assert data["bags"][0]["patches"] == _patches(store, a, [(0, 0), (0, 32), (32, 0), (32, 32)])
    assert data["region"] == "polygon" and data["bags"][0]["window"] is None
    wgs = _geojson(
        tmp_path / "wgs.geojson", [(_props(b, "field_b"), _rect(0, 0, 64, 64, to=lonlat))], crs=None
    )
    assert import_table(wgs, store, "wgs")["bags"][0]["patches"] == _patches(
        store, b, [(0, 0), (0, 32), (32, 0), (32, 32)]
    )


def test_min_cover_decides_partly_covered_patches(geo_store: Path, tmp_path: Path, capsys):
    store = _store_copy(geo_store, tmp_path)
    a = _first_tile(store)
    path = _geojson(tmp_path / "f.geojson", [(_props(a, "f"), _rect(0, 0, 48, 48, to=_world))], crs=CRS)
    assert import_table(path, store, "whole")["bags"][0]["patches"] == _patches(store, a, [(0, 0)])
    # (0,32) and (32,0) are half inside, (32,32) a quarter.
    half = import_table(path, store, "half", min_cover=0.5)["bags"][0]["patches"]
    assert half == _patches(store, a, [(0, 0), (0, 32), (32, 0)])
    # Nothing whole inside: one line naming the feature and the rule.
    small = _geojson(tmp_path / "s.geojson", [(_props(a, "s"), _rect(0, 0, 20, 20, to=_world))], crs=CRS)
    assert main(["weak", "import", str(small), "--store", str(store), "--name", "s"]) == 2
    assert "feature 1 of image" in capsys.readouterr().err


def test_geopackage_polygons(geo_store: Path, tmp_path: Path):
    pyogrio = pytest.importorskip("pyogrio")
    shapely = pytest.importorskip("shapely")
    store = _store_copy(geo_store, tmp_path)
    a = _first_tile(store)
    geom = shapely.geometry.shape(_rect(32, 32, 96, 96, to=_world))
    names = ["image", "bag", *SCENE_CLASSES]
    fields = [np.array([a], dtype=object), np.array(["corner"], dtype=object)] + [
        np.array([v]) for v in SHARES
    ]
    path = tmp_path / "fields.gpkg"
    pyogrio.raw.write(
        path, np.array([shapely.to_wkb(geom)], dtype=object), fields, fields=names, crs=CRS,
        geometry_type="Polygon", driver="GPKG",
    )  # fmt: skip
    data = import_table(path, store, "gpkg")
    assert data["bags"][0]["id"] == "corner"
    assert data["bags"][0]["patches"] == _patches(store, a, [(32, 32), (32, 64), (64, 32), (64, 64)])
    assert data["bags"][0]["proportions"] == pytest.approx(SHARES)


def test_pixel_coordinates_only_when_asked(plain_store: Path, tmp_path: Path, capsys):
    store = _store_copy(plain_store, tmp_path)
    a = _first_tile(store)
    path = _geojson(tmp_path / "px.geojson", [(_props(a, "px"), _rect(32, 0, 96, 32))], crs=None)
    # The JPEG has no georeferencing: the (default) file CRS cannot be placed on it.
    assert main(["weak", "import", str(path), "--store", str(store), "--name", "px"]) == 2
    err = capsys.readouterr().err
    assert "is not georeferenced" in err and "--region-crs pixel" in err
    args = ["weak", "import", str(path), "--store", str(store), "--name", "px", "--region-crs", "pixel"]
    assert main(args) == 0
    bag = json.loads((store / "weak" / "px.json").read_text())["bags"][0]
    assert bag["patches"] == _patches(store, a, [(0, 32), (0, 64)])


def test_bad_features_are_refused(plain_store: Path, tmp_path: Path):
    store = _store_copy(plain_store, tmp_path)
    a = _first_tile(store)
    point = {"type": "Point", "coordinates": [1, 2]}
    path = _geojson(tmp_path / "p.geojson", [(_props(a, "p"), point)], crs=None)
    with pytest.raises(SegweakError, match="feature 1: Point is not a Polygon"):
        import_table(path, store, "p", region_crs="pixel")
    ok = _geojson(tmp_path / "ok.geojson", [(_props(a, "p"), _rect(0, 0, 32, 32))], crs=None)
    with pytest.raises(SegweakError, match="--region-crs 'nonsense' is not a CRS"):
        import_table(ok, store, "p", region_crs="nonsense")
    with pytest.raises(SegweakError, match="--min-cover must be in"):
        import_table(ok, store, "p", region_crs="pixel", min_cover=0)
