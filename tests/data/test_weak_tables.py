"""Imported weak labels: table validation, window -> patches mapping, the artefact and `info`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from segweak.cli import main
from segweak.data.info import info
from segweak.data.store import Store, file_sha256
from segweak.data.weak_tables import import_table, patches_in_window, provenance
from segweak.errors import SegweakError


@pytest.fixture
def store(tiny_store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "store"
    shutil.copytree(tiny_store, out)
    return out


def _tiles(store: Path) -> list[str]:
    return sorted(set(Store(store).tiles))


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.write_text("\n".join(",".join(str(c) for c in r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def _one_hot_row(classes: list[str], c: int) -> list[float]:
    return [1.0 if i == c else 0.0 for i in range(len(classes))]


def test_window_maps_to_whole_patches_only():
    rows = np.array([0, 0, 32, 32])
    cols = np.array([0, 32, 0, 32])
    # 0..48 covers the first patch fully and the others only partly: only the first is in.
    assert patches_in_window(rows, cols, 32, (0, 0, 48, 48)).tolist() == [True, False, False, False]
    assert patches_in_window(rows, cols, 32, (0, 0, 64, 64)).all()
    assert patches_in_window(rows, cols, 32, (32, 0, 64, 64)).tolist() == [False, True, False, True]


def test_import_per_image_and_region_rows(store: Path, tmp_path: Path):
    st = Store(store)
    a, b = _tiles(store)[:2]
    table = _write(
        tmp_path / "fields.csv",
        ["image", "bag", "x0", "y0", "x1", "y1", *st.classes],
        [
            [a, "whole_a", "", "", "", "", *[0.2] * 5],
            [b, "field_1", 0, 0, 64, 64, 0.5, 0.5, 0, 0, 0],
            [b, "field_2", 64, 64, 128, 100, 0, 0, 0, 0.25, 0.75],
        ],
    )
    data = import_table(table, store, "fields")
    bags = {x["id"]: x for x in data["bags"]}
    assert sorted(bags["whole_a"]["patches"]) == [i for i, t in enumerate(st.tiles) if t == a]
    expect = [i for i, t in enumerate(st.tiles) if t == b and st.rows[i] < 64 and st.cols[i] < 64]
    assert bags["field_1"]["patches"] == expect and len(expect) == 4
    # y1 = 100 covers rows 64..96 fully, 96..128 partly: two patches.
    assert len(bags["field_2"]["patches"]) == 2
    assert data["source"]["sha256"] == file_sha256(table)
    saved = json.loads((store / "weak" / "fields.json").read_text())
    assert saved["bags"] == data["bags"]
    assert provenance(st, "fields")["sha256"] == file_sha256(table)
    assert info(store)["weak_labels"][0]["name"] == "fields"


def test_palette_ordered_list_column(store: Path, tmp_path: Path):
    a = _tiles(store)[0]
    table = _write(tmp_path / "t.csv", ["tile", "proportions"], [[a, "0.1 0.2 0.3 0.4 0"]])
    data = import_table(table, store, "listed")
    assert data["bags"][0]["proportions"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.0])


@pytest.mark.parametrize(
    ("header", "row", "needle"),
    [
        (["image", "A", "B"], ["{a}", -0.1, 1.1], "row 1: proportions must be finite and non-negative"),
        (["image", "A", "B"], ["{a}", 0.5, 0.4], "row 1: proportions sum to 0.9"),
        (["image", "A", "nope"], ["{a}", 0.5, 0.5], "column 'nope' is not a class"),
        (["image", "A", "B"], ["area_x", 0.5, 0.5], "row 1: unknown image 'area_x'"),
        (["image", "x0", "y0", "x1", "y1", "A"], ["{a}", 0, 0, 16, 16, 1], "row 1: window [0, 0, 16, 16]"),
        # A WKT column is read (tests/data/test_polygon_tiles.py), but a CSV has no CRS to read it in.
        (["image", "geometry", "A"], ["{a}", "POLYGON", 1], "declares no CRS for its 'geometry' column"),
    ],
)
def test_bad_rows_are_one_line_errors(store: Path, tmp_path: Path, header, row, needle):
    st = Store(store)
    a = _tiles(store)[0]
    names = {"A": st.classes[0], "B": st.classes[1]}
    header = [names.get(h, h) for h in header]
    table = _write(tmp_path / "bad.csv", header, [[str(c).format(a=a) for c in row]])
    with pytest.raises(SegweakError) as err:
        import_table(table, store, "bad")
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and str(table) in msg
    assert not (store / "weak" / "bad.json").exists()


def test_overlapping_rows_are_refused(store: Path, tmp_path: Path):
    st = Store(store)
    a = _tiles(store)[0]
    table = _write(
        tmp_path / "t.csv",
        ["image", "x0", "y0", "x1", "y1", st.classes[0]],
        [[a, 0, 0, 64, 64, 1], [a, 32, 32, 96, 96, 1]],
    )
    with pytest.raises(SegweakError, match="row 2: its patches are already in row 1's bag"):
        import_table(table, store, "t")


def test_normalise_rescales_and_cli_warns(store: Path, tmp_path: Path, capsys):
    st = Store(store)
    a = _tiles(store)[0]
    table = _write(tmp_path / "t.csv", ["image", st.classes[0], st.classes[1]], [[a, 1, 3]])
    assert main(["weak", "import", str(table), "--store", str(store), "--name", "t"]) == 2
    assert "row 1: proportions sum to 4" in capsys.readouterr().err
    assert main(["weak", "import", str(table), "--store", str(store), "--name", "t", "--normalise"]) == 0
    out = capsys.readouterr()
    assert "1 row(s) did not sum to 1" in out.err and "1 bag(s)" in out.out
    saved = json.loads((store / "weak" / "t.json").read_text())
    assert saved["bags"][0]["proportions"][:2] == pytest.approx([0.25, 0.75])
    # A second import of the same name needs --overwrite.
    assert main(["weak", "import", str(table), "--store", str(store), "--name", "t", "--normalise"]) == 2
    assert main(["info", str(store)]) == 0
    assert "weak labels 't': imported from" in capsys.readouterr().out


def test_store_tile_patches_index_every_patch_once_in_order(tiny_store):
    store = Store(tiny_store)
    groups = store.tile_patches()
    assert store.tile_patches() is groups  # built once
    assert sorted(groups) == sorted(set(store.tiles))
    for tile, idx in groups.items():
        assert idx.dtype == np.int64 and (np.diff(idx) > 0).all()
        assert idx.tolist() == [i for i, t in enumerate(store.tiles) if t == tile]
    assert sum(len(idx) for idx in groups.values()) == len(store)
