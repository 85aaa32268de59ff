"""Polygons without an image (placed on every georeferenced tile they lie on) and WKT table columns."""

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
from segweak.data.weak_tables import import_table, polygon_regions
from segweak.errors import SegweakError

UTM32 = "EPSG:32632"
UTM33 = "EPSG:32633"
ORIGIN = (500000.0, 5400000.0)
GSD = 0.5  # m per pixel: a 96 px tile is 48 m wide
FAR = (500300.0, 5400000.0)  # UTM 32 point whose UTM 33 position is the third tile's top-left corner
SHARES = [0.3, 0.2, 0.2, 0.2, 0.1, 0.0]


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory) -> Path:
    """Four 96x96 images, 9 patches of 32 each, sorted as tiles t0..t3.

    t0, t1: GeoTIFFs in UTM 32N, t1 48 m (one tile) east of t0, so they touch; t2: a GeoTIFF in UTM
    33N, 300 m east of t0; t3: the JPEG as it is (no georeferencing).
    """
    import rasterio
    from affine import Affine
    from PIL import Image
    from rasterio.warp import transform as warp

    root = synthesize_scenes(
        tmp_path_factory.mktemp("tiles") / "data", n_scenes=2, per_scene=2, height=96, width=96
    )
    far_x, far_y = warp(UTM32, UTM33, [FAR[0]], [FAR[1]])
    places = [
        (UTM32, ORIGIN[0], ORIGIN[1]),
        (UTM32, ORIGIN[0] + 48.0, ORIGIN[1]),
        (UTM33, far_x[0], far_y[0]),
    ]
    for jpg, (crs, x, y) in zip(sorted(root.glob("*/images/*.jpg")), places, strict=False):
        rgb = np.asarray(Image.open(jpg).convert("RGB"))
        profile = dict(
            driver="GTiff", width=96, height=96, count=3, dtype="uint8", crs=crs,
            transform=Affine(GSD, 0, x, 0, -GSD, y),
        )  # fmt: skip
        with rasterio.open(jpg.with_suffix(".tif"), "w", **profile) as dst:
            dst.write(np.moveaxis(rgb, -1, 0))
        jpg.unlink()
    src = FolderSource(f"{root}/*/images/*.*", "{parent}/masks/{stem}.png", root / "palette.yaml")
    return prepare(src, tmp_path_factory.mktemp("store") / "store", patch=32, progress=False)


@pytest.fixture()
def store(mixed_store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "store"
    shutil.copytree(mixed_store, out)
    return out


def _tiles(store: Path) -> list[str]:
    recs = Store(store).meta["tiles"]

    # Tile order by kind, whatever ids the synthetic scenes got: t0, t1 (UTM 32), t2 (UTM 33), t3 (none).
    def key(rec: dict) -> tuple:
        georef = rec.get("georef") or {}
        crs = georef.get("crs") or ""
        return (not crs, "32633" in crs, (georef.get("transform") or [0, 0, 0])[2])

    return [r["id"] for r in sorted(recs, key=key)]


def _patches(store: Path, tile: str, cells: list[tuple[int, int]] | None = None) -> list[int]:
    st = Store(store)
    return sorted(
        i
        for i in range(len(st))
        if st.tiles[i] == tile and (cells is None or (int(st.rows[i]), int(st.cols[i])) in cells)
    )


def _world(col: float, row: float) -> tuple[float, float]:
    """UTM 32 coordinates of pixel (col, row) of t0's grid (t1's grid continues it at col 96)."""
    return ORIGIN[0] + GSD * col, ORIGIN[1] - GSD * row


def _rect(x0: float, y0: float, x1: float, y1: float, to=_world) -> dict:
    ring = [to(x0, y0), to(x1, y0), to(x1, y1), to(x0, y1), to(x0, y0)]
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


def _around_far(margin: float = 60.0) -> dict:
    """A UTM 32 square that holds all of t2 (48 m wide, turned a few degrees in UTM 33)."""
    x, y = FAR[0] + 24.0, FAR[1] - 24.0
    return _rect(x - margin, y + margin, x + margin, y - margin, to=lambda a, b: (a, b))


def _props(bag: str, image: str | None = None, *, with_image: bool = True) -> dict:
    head = {"image": image} if with_image else {}
    return {**head, "bag": bag, **dict(zip(SCENE_CLASSES, SHARES, strict=True))}


def _geojson(path: Path, features: list[tuple[dict, dict]], crs: str | None = UTM32) -> Path:
    fc: dict = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": p, "geometry": g} for p, g in features],
    }
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(fc))
    return path


def _wkt(geom: dict) -> str:
    import shapely

    return shapely.geometry.shape(geom).wkt


def _csv(path: Path, rows: list[dict]) -> Path:
    header = list(rows[0])
    lines = [",".join(header)] + [
        ",".join(
            '"' + str(r[h]) + '"' if h == "geometry" else ("" if r[h] is None else str(r[h])) for h in header
        )
        for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- polygons without an image -------------------------------------------------------------------


def test_polygon_without_image_spans_touching_tiles(store: Path, tmp_path: Path):
    t0, t1, _, _ = _tiles(store)
    features = [
        # Columns 64..128 of the joined t0|t1 grid, rows 0..64: two patches on each tile.
        (_props("across", None), _rect(64, 0, 128, 64)),
        # A feature that names its image keeps the per-image placement, next to the image-less one.
        (_props("named", t0), _rect(0, 64, 96, 96)),
    ]
    data = import_table(_geojson(tmp_path / "f.geojson", features), store, "f")
    across, named = data["bags"]
    want = _patches(store, t0, [(0, 64), (32, 64)]) + _patches(store, t1, [(0, 0), (32, 0)])
    assert across["patches"] == sorted(want)
    assert across["image"] is None and across["images"] == [t0, t1] and across["window"] is None
    assert named["patches"] == _patches(store, t0, [(64, 0), (64, 32), (64, 64)])
    assert named["image"] == t0 and named["images"] == [t0]
    assert data["skipped_rows"] == [] and data["skip_unplaced"] is False


def test_polygon_without_image_is_reprojected_to_each_tiles_crs(store: Path, tmp_path: Path):
    _, _, t2, _ = _tiles(store)
    # No image attribute at all; the polygon (UTM 32) holds the whole of t2 (UTM 33).
    path = _geojson(tmp_path / "far.geojson", [(_props("far", with_image=False), _around_far())])
    bag = import_table(path, store, "far")["bags"][0]
    assert bag["patches"] == _patches(store, t2) and bag["images"] == [t2]
    # A polygon that crosses t2's edge: min_cover decides per patch there as on any tile.
    corner = _around_far(margin=12.0)  # 24 m square around t2's centre: fewer than its 9 patches
    path = _geojson(tmp_path / "centre.geojson", [(_props("centre", with_image=False), corner)])
    centre = import_table(path, store, "centre", min_cover=0.5)["bags"][0]["patches"]
    assert 0 < len(centre) < 9 and set(centre) <= set(_patches(store, t2))


def test_geopackage_polygon_with_a_null_image(store: Path, tmp_path: Path):
    pyogrio = pytest.importorskip("pyogrio")
    shapely = pytest.importorskip("shapely")
    t0, t1, _, _ = _tiles(store)
    geoms = [shapely.geometry.shape(_rect(64, 0, 128, 32)), shapely.geometry.shape(_rect(0, 64, 32, 96))]
    fields = [np.array([None, t0], dtype=object), np.array(["x", "y"], dtype=object)] + [
        np.array([v, v]) for v in SHARES
    ]
    path = tmp_path / "parcels.gpkg"
    pyogrio.raw.write(
        path, np.array([shapely.to_wkb(g) for g in geoms], dtype=object), fields,
        fields=["image", "bag", *SCENE_CLASSES], crs=UTM32, geometry_type="Polygon", driver="GPKG",
    )  # fmt: skip
    x, y = import_table(path, store, "gpkg")["bags"]
    assert x["patches"] == sorted(_patches(store, t0, [(0, 64)]) + _patches(store, t1, [(0, 0)]))
    assert y["patches"] == _patches(store, t0, [(64, 0)]) and y["image"] == t0


def test_polygon_on_no_tile_is_refused_unless_skipped(store: Path, tmp_path: Path, capsys):
    t0, _, _, _ = _tiles(store)
    away = _rect(0, 0, 64, 64, to=lambda c, r: (ORIGIN[0] - 5000 + c, ORIGIN[1] + r))  # 5 km west
    features = [(_props("here", None), _rect(0, 0, 64, 64)), (_props("away", None), away)]
    path = _geojson(tmp_path / "f.geojson", features)
    args = ["weak", "import", str(path), "--store", str(store), "--name", "f"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{path} feature 2: its polygon (no image) lies on none of the store's 3 georeferenced" in err
    assert "1 tile(s) without georeferencing" in err and "--skip-unplaced" in err and UTM32 in err
    assert not (store / "weak" / "f.json").exists()
    assert main([*args, "--skip-unplaced"]) == 0
    out = capsys.readouterr()
    assert "1 polygon(s) without an image gave no patch" in out.err and "data row(s) 2" in out.err
    saved = json.loads((store / "weak" / "f.json").read_text())
    assert [b["id"] for b in saved["bags"]] == ["here"] and saved["skipped_rows"] == [2]
    assert saved["skip_unplaced"] is True
    assert saved["bags"][0]["patches"] == _patches(store, t0, [(0, 0), (0, 32), (32, 0), (32, 32)])
    # Nothing left at all: refused even with the flag.
    only = _geojson(tmp_path / "only.geojson", [(_props("away", None), away)])
    with pytest.raises(SegweakError, match=r"none of its 1 polygon\(s\) without an image gives a patch"):
        import_table(only, store, "only", skip_unplaced=True)


def test_polygon_touching_tiles_without_a_whole_patch(store: Path, tmp_path: Path):
    t0, t1, _, _ = _tiles(store)
    sliver = _rect(80, 0, 112, 20)  # 16 px on each side of the t0|t1 edge, 20 px high
    path = _geojson(tmp_path / "s.geojson", [(_props("s", None), sliver)])
    with pytest.raises(SegweakError) as err:
        import_table(path, store, "s")
    assert f"feature 1: its polygon (no image) lies on {t0!r}, {t1!r} but contains no 32x32" in str(err.value)
    assert import_table(path, store, "s2", skip_unplaced=True, min_cover=0.3)["bags"][0]["images"] == [t0, t1]


def test_image_less_polygons_need_map_coordinates_and_georeferenced_tiles(store: Path, tmp_path: Path):
    t3 = _tiles(store)[3]
    px = _rect(0, 0, 64, 64, to=lambda c, r: (c, r))
    mixed = _geojson(tmp_path / "px.geojson", [(_props("a", t3), px), (_props("b", ""), px)], crs=None)
    with pytest.raises(SegweakError, match=r"px.geojson feature 2: no image; .*need the tile id .* 'image'"):
        import_table(mixed, store, "px", region_crs="pixel")
    bare = _geojson(tmp_path / "bare.geojson", [(_props("b", with_image=False), px)], crs=None)
    with pytest.raises(SegweakError, match=r"bare.geojson: polygons in pixel coordinates .* 'image' column"):
        import_table(bare, store, "bare", region_crs="pixel")
    # A store without any georeferenced tile cannot place an image-less polygon.
    meta = json.loads((store / "store.json").read_text())
    for rec in meta["tiles"]:
        rec["georef"] = None
    (store / "store.json").write_text(json.dumps(meta))
    utm = _geojson(tmp_path / "utm.geojson", [(_props("u", None), _rect(0, 0, 64, 64))])
    with pytest.raises(
        SegweakError, match=r"utm.geojson feature 1: no image, and no tile of store .* is georef"
    ):
        import_table(utm, store, "utm")


def test_windowed_rasterising_matches_the_whole_tile(store: Path):
    """Only a window around each polygon is rasterised; the patches must be those of the whole tile."""
    from rasterio.features import rasterize

    from segweak.data.polygons import Polygons

    st = Store(store)
    t0 = _tiles(store)[0]
    rng = np.random.default_rng(0)
    geoms = []
    for _ in range(40):
        pts = rng.uniform(-20, 116, size=(int(rng.integers(3, 7)), 2))
        geoms.append({"type": "Polygon", "coordinates": [[*map(list, pts), list(pts[0])]]})
    polys = Polygons(Path("random.geojson"), geoms, None)
    on = np.flatnonzero(np.asarray(st.tiles) == t0)
    for r, geom in enumerate(geoms, start=1):
        full = rasterize([(geom, 1)], out_shape=(96, 96), fill=0, dtype="uint8")
        share = np.array(
            [full[y : y + 32, x : x + 32].mean() for y, x in zip(st.rows[on], st.cols[on], strict=True)]
        )
        for cover in (1.0, 0.5, 0.01):
            got = polys.cover(r, t0, st, cover)
            assert got[on].tolist() == (share >= cover - 1e-9).tolist()
            assert not np.delete(got, on).any()


# ---- WKT geometry columns in CSV / Parquet -------------------------------------------------------


def test_wkt_column_places_rows_as_polygon_features(store: Path, tmp_path: Path):
    t0, _, _, _ = _tiles(store)
    shapes = [(_props("across", None), _rect(64, 0, 128, 64)), (_props("named", t0), _rect(0, 64, 96, 96))]
    from_geojson = import_table(_geojson(tmp_path / "f.geojson", shapes), store, "gj")
    rows = [{**p, "image": p["image"] or "", "geometry": _wkt(g)} for p, g in shapes]
    table = _csv(tmp_path / "f.csv", rows)
    assert polygon_regions(table) and not polygon_regions(_csv(tmp_path / "plain.csv", [{"image": t0}]))
    from_csv = import_table(table, store, "csv", region_crs=UTM32)
    assert from_csv["bags"] == from_geojson["bags"]
    assert from_csv["region"] == "polygon" and from_csv["region_crs"] == UTM32
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "f.parquet")
    assert import_table(tmp_path / "f.parquet", store, "pq", region_crs=UTM32)["bags"] == from_geojson["bags"]


def test_wkt_column_needs_a_crs_or_pixels(store: Path, tmp_path: Path, capsys):
    t3 = _tiles(store)[3]
    px = _wkt(_rect(32, 0, 96, 32, to=lambda c, r: (c, r)))
    table = _csv(
        tmp_path / "px.csv", [{"image": t3, "geometry": px, **dict(zip(SCENE_CLASSES, SHARES, strict=True))}]
    )
    assert main(["weak", "import", str(table), "--store", str(store), "--name", "px"]) == 2
    err = capsys.readouterr().err.strip()
    assert "declares no CRS for its 'geometry' column" in err and "--region-crs" in err
    assert len(err.splitlines()) == 1
    bag = import_table(table, store, "px", region_crs="pixel")["bags"][0]
    assert bag["patches"] == _patches(store, t3, [(0, 32), (0, 64)])


@pytest.mark.parametrize(
    ("wkt", "needle"),
    [
        ("POLYGON ((0 0, 1 0", "row 1: column 'geometry' is not WKT"),
        ("POINT (1 2)", "row 1: Point is not a Polygon or MultiPolygon"),
        ("", "row 1: has no polygon"),
    ],
)
def test_bad_wkt_cells_are_one_line_errors(store: Path, tmp_path: Path, wkt: str, needle: str):
    t3 = _tiles(store)[3]
    table = _csv(tmp_path / "bad.csv", [{"image": t3, "geometry": wkt, SCENE_CLASSES[0]: 1}])
    with pytest.raises(SegweakError) as err:
        import_table(table, store, "bad", region_crs="pixel")
    assert needle in str(err.value) and str(table) in str(err.value) and "\n" not in str(err.value)


def test_wkt_column_without_shapely_names_the_extra(store: Path, tmp_path: Path, monkeypatch, capsys):
    t3 = _tiles(store)[3]
    table = _csv(
        tmp_path / "w.csv",
        [{"image": t3, "geometry": "POLYGON ((0 0, 32 0, 32 32, 0 0))", SCENE_CLASSES[0]: 1}],
    )
    monkeypatch.setitem(sys.modules, "shapely", None)  # import fails as if not installed
    args = ["weak", "import", str(table), "--store", str(store), "--name", "w", "--region-crs", "pixel"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(table) in err and "column 'geometry'" in err and "pip install 'segweak[geo]'" in err


def test_experiment_reuses_a_wkt_import_and_checks_skip_unplaced(store: Path, tmp_path: Path):
    from types import SimpleNamespace

    from segweak.config import WeakLabelsImport
    from segweak.experiment.data import import_weak_labels

    rows = [{**_props("across", ""), "geometry": _wkt(_rect(64, 0, 128, 64))}]
    table = _csv(tmp_path / "f.csv", rows)
    imp = WeakLabelsImport(name="f", table=str(table), region_crs=UTM32)
    log: list[str] = []
    import_weak_labels(SimpleNamespace(weak_labels=[imp]), store, log.append)
    assert "imported" in log[-1] and "1 bag(s), 4 patch(es)" in log[-1]
    import_weak_labels(SimpleNamespace(weak_labels=[imp]), store, log.append)
    assert "reusing it" in log[-1]
    # A set written before skip_unplaced was recorded counts as imported without it.
    saved = store / "weak" / "f.json"
    old = json.loads(saved.read_text())
    old.pop("skip_unplaced")
    saved.write_text(json.dumps(old))
    import_weak_labels(SimpleNamespace(weak_labels=[imp]), store, log.append)
    assert "reusing it" in log[-1]
    skip = WeakLabelsImport(name="f", table=str(table), region_crs=UTM32, skip_unplaced=True)
    with pytest.raises(SegweakError, match=r"^weak_labels\[0\]: .*options .*skip_unplaced"):
        import_weak_labels(SimpleNamespace(weak_labels=[skip]), store, log.append)


def test_wkt_table_with_a_blank_line_and_a_short_row(store: Path, tmp_path: Path, capsys):
    # The WKT column used to be read before the row checks: a blank line or a short row was an IndexError.
    rows = [{**_props("a", ""), "geometry": _wkt(_rect(64, 0, 128, 64))}]
    table = _csv(tmp_path / "f.csv", rows)
    text = table.read_text().splitlines()
    blank = tmp_path / "blank.csv"
    blank.write_text("\n".join([text[0], "", text[1], ""]) + "\n")
    assert len(import_table(blank, store, "blank", region_crs=UTM32)["bags"]) == 1
    short = tmp_path / "short.csv"
    short.write_text("\n".join([text[0], text[1], "x,b"]) + "\n")
    args = ["weak", "import", str(short), "--store", str(store), "--name", "s", "--region-crs", UTM32]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{short} row 2: 2 cells for" in err


def test_experiment_import_says_which_polygons_skip_unplaced_left_out(store: Path, tmp_path: Path):
    from types import SimpleNamespace

    from segweak.config import WeakLabelsImport
    from segweak.experiment.data import import_weak_labels

    away = _rect(0, 0, 64, 64, to=lambda c, r: (ORIGIN[0] - 5000 + c, ORIGIN[1] + r))  # 5 km west
    features = [(_props("here", None), _rect(0, 0, 64, 64)), (_props("away", None), away)]
    path = _geojson(tmp_path / "f.geojson", features)
    imp = WeakLabelsImport(name="f", table=str(path), skip_unplaced=True)
    log: list[str] = []
    import_weak_labels(SimpleNamespace(weak_labels=[imp]), store, log.append)
    assert "1 polygon(s) without an image gave no patch on any tile" in log[-1]
    assert "(weak_labels[0].skip_unplaced): data row(s) 2" in log[-1]


# ---- many polygons: only the tiles a polygon's box meets are rasterised ----------------------------


def _brute_force(polys, row: int, st: Store, min_cover: float) -> tuple[list[int], list[str]]:
    """The placement without any prefilter: the polygon reprojected to and rasterised on every tile."""
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    patches: list[int] = []
    touched: list[str] = []
    for rec in st.meta["tiles"]:
        georef = rec.get("georef") or {}
        if not georef.get("crs"):
            continue
        geom = polys.geometries[row - 1]
        if CRS.from_user_input(polys.crs) != CRS.from_wkt(georef["crs"]):
            geom = transform_geom(CRS.from_user_input(polys.crs), CRS.from_wkt(georef["crs"]), geom)
        h, w = rec["shape"]
        full = rasterize([(geom, 1)], out_shape=(h, w), transform=Affine(*georef["transform"]), dtype="uint8")
        if not full.any():
            continue
        touched.append(rec["id"])
        p = st.patch
        patches += [
            i
            for i in range(len(st))
            if st.tiles[i] == rec["id"]
            and full[st.rows[i] : st.rows[i] + p, st.cols[i] : st.cols[i] + p].mean() >= min_cover - 1e-9
        ]
    return sorted(patches), touched


def _random_polygons(rng: np.random.Generator, centres: list[tuple[float, float]], n: int) -> list[dict]:
    """Star-shaped polygons (and some two-part MultiPolygons) of 2..80 m around the given points."""
    geoms = []
    for _ in range(n):
        parts = []
        for _ in range(1 if rng.random() < 0.8 else 2):
            cx, cy = centres[int(rng.integers(len(centres)))] + rng.normal(0, 30, size=2)
            k = int(rng.integers(3, 9))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = rng.uniform(1, 40, k)
            ring = [[cx + r * np.cos(a), cy + r * np.sin(a)] for a, r in zip(angles, radii, strict=True)]
            parts.append([[*ring, ring[0]]])
        geoms.append(
            {"type": "Polygon", "coordinates": parts[0]}
            if len(parts) == 1
            else {"type": "MultiPolygon", "coordinates": parts}
        )
    return geoms


@pytest.mark.parametrize("crs", [UTM32, UTM33])
def test_prefiltered_placement_equals_placing_on_every_tile(store: Path, crs: str):
    """Random polygons around the t0|t1 border and on t2, in UTM 32 and in UTM 33 (so either the
    two touching tiles or the far one need reprojection): same patches and tiles as brute force."""
    from rasterio.warp import transform as warp

    from segweak.data.polygons import Polygons

    st = Store(store)
    # Hot spots in UTM 32: t0's middle, the t0|t1 edge, t1's far corner, t2's middle and corner, nowhere.
    spots = [
        _world(48, 48),
        _world(96, 10),
        _world(190, 95),
        (FAR[0] + 24, FAR[1] - 24),
        FAR,
        (499000.0, 5.4e6),
    ]
    if crs == UTM33:
        xs, ys = warp(UTM32, UTM33, [x for x, _ in spots], [y for _, y in spots])
        spots = list(zip(xs, ys, strict=True))
    geoms = _random_polygons(np.random.default_rng(1), spots, 60)
    polys = Polygons(Path("random.geojson"), geoms, crs)
    placed = 0
    for row in range(1, len(geoms) + 1):
        for cover in (1.0, 0.3):
            want = _brute_force(polys, row, st, cover)
            patches, touched = polys.cover_tiles(row, st, cover)
            assert (patches.tolist(), touched) == want, (row, cover)
            placed += bool(touched)
    assert placed > 40  # the random polygons do land on tiles, several on two at once
    assert sum(len(polys.cover_tiles(r, st, 0.3)[1]) > 1 for r in range(1, len(geoms) + 1)) >= 3


def test_polygon_is_only_rasterised_on_tiles_its_box_meets(store: Path, monkeypatch):
    from segweak.data.polygons import Polygons

    st = Store(store)
    t0, t1, t2, _ = _tiles(store)
    geoms = [_rect(10, 10, 40, 40), _rect(80, 10, 120, 40), _around_far(), _rect(-400, 0, -300, 50)]
    polys = Polygons(Path("few.geojson"), geoms, UTM32)
    seen: list[str] = []
    place = Polygons._place

    def spy(self, row, rec, *args):
        seen.append(rec["id"])
        return place(self, row, rec, *args)

    monkeypatch.setattr(Polygons, "_place", spy)
    got = []
    for row in range(1, 5):
        seen.clear()
        touched = polys.cover_tiles(row, st, 1.0)[1]
        got.append((list(seen), touched))
    assert got == [([t0], [t0]), ([t0, t1], [t0, t1]), ([t2], [t2]), ([], [])]


def test_reprojected_boxes_hold_the_reprojected_outline():
    """A box taken to another CRS (8 points an edge, padded) holds its outline sampled densely."""
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp

    from segweak.data.polygons import _boxes_in

    rng = np.random.default_rng(2)
    lo = rng.uniform([490000, 5300000], [510000, 5500000], size=(200, 2))
    size = rng.uniform(0, 1, size=(200, 1)) * rng.choice([10.0, 1e3, 5e4], size=(200, 1))
    boxes = np.hstack([lo, lo + size * rng.uniform(0.1, 1, size=(200, 2))])
    boxes[0] = [-np.inf, -np.inf, np.inf, np.inf]
    dst = CRS.from_user_input(UTM33).to_wkt()
    got = _boxes_in(boxes, UTM32, dst)
    assert np.isinf(got[0]).all() and np.isfinite(got[1:]).all()
    t = np.linspace(0, 1, 401)
    for (x0, y0, x1, y1), (a0, b0, a1, b1) in zip(boxes[1:], got[1:], strict=True):
        xs = np.concatenate(
            [x0 + t * (x1 - x0), np.full_like(t, x1), x0 + t * (x1 - x0), np.full_like(t, x0)]
        )
        ys = np.concatenate(
            [np.full_like(t, y0), y0 + t * (y1 - y0), np.full_like(t, y1), y0 + t * (y1 - y0)]
        )
        tx, ty = warp(UTM32, UTM33, xs, ys)
        assert a0 <= min(tx) and max(tx) <= a1 and b0 <= min(ty) and max(ty) <= b1
    assert (_boxes_in(boxes, UTM32, CRS.from_user_input(UTM32).to_wkt()) == boxes).all()
    assert np.isinf(_boxes_in(boxes[1:], "EPSG:999999", dst)).all()
