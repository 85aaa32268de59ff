"""A procedural stand-in for ISPRS Vaihingen, written in the official file layout (``segweak synth``).

Each tile is a small suburban scene drawn with vectorised numpy: a road network (impervious), houses
(rotated rectangles and L-shapes with gabled, shaded roofs; class building), tree clusters (noisy
round crowns; tree), lawns (low vegetation), cars parked along the roads (car) and a few odd objects
(clutter), with cast shadows, texture and sensor noise. Colours imitate the IRRG false-colour tops
(band 1 near-infrared, band 2 red, band 3 green): vegetation reflects strongly in the near-infrared and
so looks red, trees darker and more textured than lawns; roads and many roofs look grey.

Layout of ``synthesize(out)`` (``zips=False``)::

    OUT/top/top_mosaic_09cm_area{N}.tif                       images, 3-band uint8 IRRG GeoTIFF
    OUT/gts_for_participants/top_mosaic_09cm_area{N}.tif      labels of the official training areas only
    OUT/ground_truth_COMPLETE/top_mosaic_09cm_area{N}.tif     labels of every area (colour code)
    OUT/ground_truth_eroded_COMPLETE/top_mosaic_09cm_area{N}_noBoundary.tif   (eroded=True)
    OUT/synth.json                                            generator parameters

With ``zips=True`` the same files are packed instead into the three official archives
(``ISPRS_semantic_labeling_Vaihingen.zip`` with ``top/`` and ``gts_for_participants/``,
``..._ground_truth_COMPLETE.zip`` and ``..._ground_truth_eroded_COMPLETE.zip`` with the labels at their
root), exactly as the ISPRS download provides them. With ``dsm=True`` a float32 DSM in metres is also
written per area (``dsm/dsm_09cm_matching_area{N}.tif``, inside the first archive with ``zips=True``):
terrain with a gentle slope plus the heights of buildings, trees, cars and clutter.

Two more layouts exist for the readers' tests and for trying segweak out:

* :func:`synthesize_potsdam`: the ISPRS Potsdam release (``2_Ortho_RGB``, ``3_Ortho_IRRG``,
  ``4_Ortho_RGBIR``, ``5_Labels_all``, ``5_Labels_all_noBoundary``, ``1_DSM``; folders or zips);
* :func:`synthesize_scenes`: a generic folder dataset in the common scene layout
  ``Scene N/images/*.jpg`` + ``Scene N/masks/*.png`` with palette-mode ("P") PNG masks and a
  ``palette.yaml``.

Everything is deterministic for a given ``seed`` and written atomically (a temporary sibling directory
renamed into place). ``synth.json`` (with ``"generator": "segweak.data.synthetic"``) marks the folder as
segweak's own: ``overwrite`` replaces only such a folder, and only when it holds nothing else.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from segweak.data.palette import BOUNDARY_COLOR, VAIHINGEN_COLORS
from segweak.data.sources import VAIHINGEN_ERODED_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ZIP
from segweak.errors import SegweakError
from segweak.io import Log, atomic_directory, check_output_dir, describe_entries, is_temp_name, stderr_log

# The 33 official area numbers, and the 16 whose labels were given to participants.
VAIHINGEN_AREAS = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    20,
    21,
    22,
    23,
    24,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    33,
    34,
    35,
    37,
    38,
)
PARTICIPANT_AREAS = frozenset((1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37))

# Internal class codes: 0..4 the five Vaihingen classes, 5 clutter.
IMP, BLD, LOWV, TREE, CAR, CLUT = range(6)
_LABEL_COLORS = np.array(
    [VAIHINGEN_COLORS[n] for n in ("impervious", "building", "low_vegetation", "tree", "car", "clutter")],
    dtype=np.uint8,
)

# Approximate UTM 32N position of Vaihingen/Enz; each area gets its own offset so tiles do not overlap.
_ORIGIN_E, _ORIGIN_N, _GSD = 496_000.0, 5_421_000.0, 0.09
_CRS = "EPSG:32632"

# IRRG colour families (NIR, R, G) on a 0..255 scale.
_LAWN = np.array([178.0, 128.0, 122.0], dtype=np.float32)
_TREE = np.array([205.0, 82.0, 92.0], dtype=np.float32)
_ROAD = np.array([118.0, 116.0, 122.0], dtype=np.float32)
_ROOFS = np.array(
    [
        [150.0, 150.0, 158.0],  # grey concrete
        [112.0, 118.0, 140.0],  # dark blue-grey tiles
        [170.0, 158.0, 150.0],  # light beige
        [128.0, 165.0, 118.0],  # reddish tiles (high red, little green) look greenish-grey in IRRG
        [200.0, 200.0, 205.0],  # bright flat roof
    ],
    dtype=np.float32,
)
_CARS = np.array(
    [
        [220.0, 220.0, 225.0],
        [40.0, 38.0, 42.0],
        [160.0, 160.0, 168.0],
        [95.0, 190.0, 60.0],
        [70.0, 70.0, 150.0],
    ],
    dtype=np.float32,
)
_CLUTTER = np.array(
    [[60.0, 70.0, 95.0], [235.0, 120.0, 220.0], [90.0, 200.0, 200.0], [30.0, 40.0, 60.0]], dtype=np.float32
)


# ---- drawing helpers --------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Bilinearly interpolated value noise, roughly N(0, 1), with features of ``cell`` pixels. Returns H×W."""
    cell = max(float(cell), 1.0)
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    fy = np.arange(h, dtype=np.float32) / cell
    fx = np.arange(w, dtype=np.float32) / cell
    y0, x0 = fy.astype(np.int64), fx.astype(np.int64)
    ty, tx = (fy - y0)[:, None], (fx - x0)[None, :]
    # Separable: interpolate the few coarse rows along x first, then along y (two full-size gathers).
    rows = grid[:, x0] * (1 - tx) + grid[:, x0 + 1] * tx
    return rows[y0] * (1 - ty) + rows[y0 + 1] * ty


def _window(
    cx: float, cy: float, radius: float, h: int, w: int
) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Clipped square window around (cx, cy) and its pixel-centre coordinates relative to the centre."""
    r = int(math.ceil(radius)) + 1
    y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
    x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    return slice(y0, y1), slice(x0, x1), ys, xs


def _rotated_rect(
    ys: np.ndarray, xs: np.ndarray, angle: float, half_len: float, half_wid: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inside-mask of a rotated rectangle and the local (along, across) coordinates of each pixel."""
    c, s = math.cos(angle), math.sin(angle)
    u = xs * c + ys * s
    v = -xs * s + ys * c
    return (np.abs(u) <= half_len) & (np.abs(v) <= half_wid), u, v


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift a 2-D mask by (dy, dx) pixels (positive = towards larger indices), filling with False."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src = mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def _boundary(cls: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose (2r+1)² neighbourhood holds more than one class (the eroded band of ``_noBoundary``)."""
    hi = cls.copy()
    lo = cls.copy()
    for axis in (0, 1):
        a_hi, a_lo = hi.copy(), lo.copy()
        for k in range(1, radius + 1):
            idx_a = [slice(None), slice(None)]
            idx_b = [slice(None), slice(None)]
            idx_a[axis], idx_b[axis] = slice(k, None), slice(None, -k)
            ta, tb = tuple(idx_a), tuple(idx_b)
            np.maximum(a_hi[ta], hi[tb], out=a_hi[ta])
            np.maximum(a_hi[tb], hi[ta], out=a_hi[tb])
            np.minimum(a_lo[ta], lo[tb], out=a_lo[ta])
            np.minimum(a_lo[tb], lo[ta], out=a_lo[tb])
        hi, lo = a_hi, a_lo
    return hi != lo


# ---- one scene --------------------------------------------------------------------------------------


def render_tile(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic scene.

    Args:
        rng: Random generator (the only source of randomness).
        height: Tile height in pixels.
        width: Tile width in pixels.

    Returns:
        ``(image, classes)``: image H×W×3 uint8 in IRRG band order; classes H×W uint8 with 0 impervious,
        1 building, 2 low vegetation, 3 tree, 4 car, 5 clutter.
    """
    h, w = int(height), int(width)
    # Object sizes follow the real 9 cm resolution on big tiles and shrink (to 1/4) on small ones so
    # that small test/demo tiles still show every class.
    s = float(np.clip(min(h, w) / 1500.0, 0.25, 1.0))
    cls = np.full((h, w), LOWV, dtype=np.uint8)
    img = np.empty((h, w, 3), dtype=np.float32)
    tall = np.zeros((h, w), dtype=np.float32)  # object height class for shadows: 0 ground, 1 tree, 2 building

    # Lawns: colour varies slowly (dry/wet patches) plus fine grass texture.
    n1 = _smooth_noise(rng, h, w, 180 * s)
    n2 = _smooth_noise(rng, h, w, 12 * s)
    img[:] = _LAWN * (1 + 0.08 * n1[..., None]) + (6 * n2)[..., None]

    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5

    # Paved yards / parking areas (axis-aligned rectangles).
    for _ in range(int(rng.integers(0, 3))):
        ph, pw = rng.uniform(80, 260, size=2) * s
        py, px = rng.uniform(0, h), rng.uniform(0, w)
        sl = (
            slice(int(max(0, py - ph / 2)), int(min(h, py + ph / 2))),
            slice(int(max(0, px - pw / 2)), int(min(w, px + pw / 2))),
        )
        cls[sl] = IMP
        img[sl] = _ROAD * rng.uniform(0.95, 1.2)

    # Roads: 1-3 straight roads through the tile, mostly axis-parallel (a street grid).
    roads: list[tuple[float, float, float, float]] = []  # (cx, cy, angle, width)
    base_angle = rng.uniform(0, math.pi / 2) if rng.random() < 0.3 else 0.0
    for i in range(int(rng.integers(1, 4))):
        angle = base_angle + (math.pi / 2) * (i % 2) + rng.normal(0, 0.03)
        rw = max(rng.uniform(65, 110) * s, 8.0)
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        dist = np.abs((xx - cx) * math.sin(angle) - (yy - cy) * math.cos(angle))
        on = dist <= rw / 2
        cls[on] = IMP
        img[on] = _ROAD * (1 + 0.05 * n1[on, None])
        roads.append((cx, cy, angle, rw))
    road_angles = [r[2] for r in roads]

    # Buildings: rectangles and L-shapes aligned with the street grid, not on roads or other houses.
    n_bld = max(1, int(h * w / (260 * s) ** 2 * 0.8))
    placed = 0
    for attempt in range(n_bld * 6):
        if placed >= n_bld:
            break
        angle = float(rng.choice(road_angles)) + rng.normal(0, 0.02)
        hl, hw = rng.uniform(45, 120) * s, rng.uniform(35, 80) * s
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        lshape = rng.random() < 0.35
        radius = math.hypot(hl, hw) * (1.8 if lshape else 1.0) + 2
        sy, sx, ys, xs = _window(cx, cy, radius, h, w)
        if ys.size == 0 or xs.size == 0:
            continue
        inside, u, v = _rotated_rect(ys, xs, angle, hl, hw)
        roof_v = v  # gable ridge along the long axis
        if lshape:
            ox = hl * 0.6
            wing, u2, v2 = _rotated_rect(
                ys - ox * math.sin(angle) - hw * math.cos(angle),
                xs - ox * math.cos(angle) + hw * math.sin(angle),
                angle + math.pi / 2,
                hw * 1.4,
                hw * 0.6,
            )
            roof_v = np.where(inside, v, v2)
            inside = inside | wing
        if not inside.any():
            continue
        region = cls[sy, sx][inside]
        blocked = np.count_nonzero((region == IMP) | (region == BLD)) / region.size
        last_chance = attempt == n_bld * 6 - 1 and placed == 0
        if blocked > 0.02 and not last_chance:
            continue
        roof = _ROOFS[int(rng.integers(len(_ROOFS)))] * rng.uniform(0.9, 1.1)
        shade = np.where(roof_v >= 0, 1.08, 0.8).astype(np.float32)  # sun side / shadow side of the gable
        shade = shade * np.where(np.abs(roof_v) < max(1.5 * s, 0.5), 0.85, 1.0)  # darker ridge line
        win = img[sy, sx]
        win[inside] = roof[None, :] * shade[inside][:, None]
        cls[sy, sx][inside] = BLD
        tall[sy, sx][inside] = 2
        placed += 1

    # Cars: parked along both road sides, aligned with the road; at least one per road on the tile.
    for cx, cy, angle, rw in roads:
        ca, sa = math.cos(angle), math.sin(angle)
        extent = math.hypot(h, w)
        spacing = rng.uniform(70, 160) * s
        ts = np.arange(-extent, extent, spacing) + rng.uniform(0, spacing)
        keep = rng.random(ts.size) < 0.5
        keep[np.argmin(np.abs(ts))] = True
        for t in ts[keep]:
            side = rng.choice([-1.0, 1.0]) * rw * 0.28
            px, py = cx + t * ca - side * sa, cy + t * sa + side * ca
            if not (0 <= px < w and 0 <= py < h):
                continue
            cl, cw = max(23 * s, 4.0), max(10 * s, 2.0)
            sy, sx, ys, xs = _window(px, py, math.hypot(cl, cw), h, w)
            inside, u, _ = _rotated_rect(ys, xs, angle + rng.normal(0, 0.05), cl, cw)
            colour = _CARS[int(rng.integers(len(_CARS)))] * rng.uniform(0.9, 1.1)
            win = img[sy, sx]
            glass = inside & (np.abs(u - cl * 0.35) < cl * 0.12)
            win[inside] = colour
            win[glass] = colour * 0.35 + 10
            cls[sy, sx][inside] = CAR

    # Trees: clusters of round crowns with ragged edges; may overhang lawns, roads and cars' lanes.
    crown_noise = _smooth_noise(rng, h, w, 8 * s)
    n_clusters = max(1, int(h * w / (300 * s) ** 2 * 0.9))
    for _ in range(n_clusters):
        gx, gy = rng.uniform(0, w), rng.uniform(0, h)
        for _ in range(int(rng.integers(1, 7))):
            r = rng.uniform(22, 60) * s
            cx, cy = gx + rng.normal(0, 45 * s), gy + rng.normal(0, 45 * s)
            sy, sx, ys, xs = _window(cx, cy, r * 1.3, h, w)
            if ys.size == 0 or xs.size == 0:
                continue
            d = np.sqrt(ys**2 + xs**2) / r
            inside = d <= 1 + 0.18 * crown_noise[sy, sx]
            inside &= (cls[sy, sx] != BLD) & (cls[sy, sx] != CAR)
            # Crowns are lit from the north-west: brighter towards the upper left, darker at the rim.
            light = 1.1 - 0.25 * d - 0.12 * (ys + xs) / (2 * r)
            colour = _TREE * rng.uniform(0.9, 1.08)
            win = img[sy, sx]
            win[inside] = colour[None, :] * light[inside][:, None]
            cls[sy, sx][inside] = TREE
            tall[sy, sx][inside] = np.maximum(tall[sy, sx][inside], 1)

    # Clutter: a few odd objects on the ground (bins, a pool, building sites).
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(10):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            if cls[int(cy), int(cx)] in (LOWV, IMP):
                break
        r = rng.uniform(10, 35) * s
        sy, sx, ys, xs = _window(cx, cy, r * 1.5, h, w)
        inside, _, _ = _rotated_rect(ys, xs, rng.uniform(0, math.pi), r, r * rng.uniform(0.4, 1.0))
        inside &= (cls[sy, sx] == LOWV) | (cls[sy, sx] == IMP)
        img[sy, sx][inside] = _CLUTTER[int(rng.integers(len(_CLUTTER)))]
        cls[sy, sx][inside] = CLUT

    # Cast shadows towards the south-east; objects keep their class (as in the real labels).
    for level, length in ((2, 32 * s), (1, 16 * s)):
        src = tall >= level
        shadow = np.zeros_like(src)
        for k in range(1, max(2, int(length)), max(1, int(length) // 8)):
            shadow |= _shift(src, k, k)
        shadow &= tall < level
        img[shadow] *= 0.55

    # Texture and sensor noise.
    img += (crown_noise * 5)[..., None] * (cls == TREE)[..., None]
    img += 3.0 * rng.standard_normal(size=(h, w, 3), dtype=np.float32)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), cls


def label_colors(classes: np.ndarray, eroded_radius: int = 0) -> np.ndarray:
    """Colour-code a class map (codes of :func:`render_tile`) in the Vaihingen palette.

    Args:
        classes: H×W uint8 codes 0..5.
        eroded_radius: When > 0, pixels within this many pixels of a class boundary become black.

    Returns:
        H×W×3 uint8 colour label.
    """
    rgb = _LABEL_COLORS[classes]
    if eroded_radius > 0:
        rgb[_boundary(classes, eroded_radius)] = BOUNDARY_COLOR
    return rgb


# ---- dataset ----------------------------------------------------------------------------------------

GENERATOR = "segweak.data.synthetic"
_LABEL_DIRS = ("gts_for_participants", "ground_truth_COMPLETE", "ground_truth_eroded_COMPLETE")
_OUTPUT_DIRS = ("top", *_LABEL_DIRS)


def _write_marker(tmp: Path, meta: dict[str, Any]) -> None:
    """Write ``synth.json``: the generator's parameters plus every file it wrote (relative paths).

    The file list lets ``overwrite`` recognise a folder that holds exactly what synth wrote, whatever
    the layout, so a user's own file placed inside is never deleted.
    """
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    meta = {**meta, "generator": GENERATOR, "files": files}
    (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _not_synthetic(path: Path) -> str | None:
    """Inspector for ``overwrite``: None when ``path`` is a synth output and holds nothing else."""
    marker = path / "synth.json"
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "it is not a segweak synthetic data set (no synth.json)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its synth.json is not valid JSON, so it is not a segweak synthetic data set"
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        return "its synth.json was not written by segweak synth"
    if isinstance(meta.get("files"), list):
        written = {str(f) for f in meta["files"]} | {"synth.json"}
        present = [p for p in path.rglob("*") if not is_temp_name(p.name)]
        foreign = [
            p.relative_to(path).as_posix()
            for p in present
            if (p.is_file() or p.is_symlink()) and p.relative_to(path).as_posix() not in written
        ]
        foreign += [
            p.relative_to(path).as_posix()
            for p in present
            if p.is_dir()
            and not p.is_symlink()
            and not any(f.startswith(p.relative_to(path).as_posix() + "/") for f in written)
        ]
    else:  # written before synth.json listed its files: the Vaihingen layout's known names
        allowed = {"synth.json", VAIHINGEN_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ERODED_ZIP, *_OUTPUT_DIRS}
        foreign = [p.name for p in path.iterdir() if p.name not in allowed and not is_temp_name(p.name)]
        for d in _OUTPUT_DIRS:
            if (path / d).is_dir():
                foreign += [
                    f"{d}/{p.name}" for p in (path / d).iterdir() if not (p.is_file() and p.suffix == ".tif")
                ]
            elif (path / d).exists():
                foreign.append(d)
    if foreign:
        return f"it holds files that synth does not write ({', '.join(sorted(foreign)[:6])})"
    return None


def _area_numbers(n: int) -> list[int]:
    extra = [VAIHINGEN_AREAS[-1] + 1 + i for i in range(max(0, n - len(VAIHINGEN_AREAS)))]
    return list(VAIHINGEN_AREAS[:n]) + extra


def _write_tif(
    path: Path,
    arr: np.ndarray,
    area_index: int,
    compress: bool,
    gsd: float = _GSD,
    crs: str = _CRS,
    origin: tuple[float, float] = (_ORIGIN_E, _ORIGIN_N),
) -> None:
    """Write H×W×C ``arr`` as a georeferenced GeoTIFF (uint8 colour/labels or a float32 DSM)."""
    import rasterio
    from rasterio.transform import Affine

    h, w = arr.shape[:2]
    # Areas laid out on a grid of 3 km cells so that their footprints never overlap.
    east = origin[0] + (area_index % 6) * 3000.0
    north = origin[1] - (area_index // 6) * 3000.0
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": arr.shape[2],
        "dtype": str(arr.dtype),
        "crs": crs,
        "transform": Affine(gsd, 0.0, east, 0.0, -gsd, north),
    }
    if arr.shape[2] == 3 and arr.dtype == np.uint8:
        profile["photometric"] = "RGB"
    if compress:
        profile.update(compress="deflate", zlevel=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(arr, -1, 0))


def render_dsm(rng: np.random.Generator, classes: np.ndarray, gsd: float) -> np.ndarray:
    """Surface heights (metres) for a class map of :func:`render_tile`.

    Terrain: about 250 m with a random gentle slope (up to 5 %) and smooth undulation; on top,
    buildings 5-15 m (varying smoothly between houses), trees 4-14 m, cars 1.5 m, clutter 1 m.

    Args:
        rng: Random generator.
        classes: H×W class codes (0..5).
        gsd: Pixel size in metres.

    Returns:
        H×W float32 DSM.
    """
    h, w = classes.shape
    yy = np.arange(h, dtype=np.float32)[:, None] * gsd
    xx = np.arange(w, dtype=np.float32)[None, :] * gsd
    sy, sx = rng.uniform(-0.05, 0.05, size=2)
    ground = 250.0 + sy * yy + sx * xx + 1.5 * _smooth_noise(rng, h, w, max(h, w) / 2)
    building = 10.0 + 5.0 * np.clip(_smooth_noise(rng, h, w, 40), -1, 1)
    tree = 9.0 + 5.0 * np.clip(_smooth_noise(rng, h, w, 8), -1, 1)
    height = np.zeros((h, w), dtype=np.float32)
    height[classes == BLD] = building[classes == BLD]
    height[classes == TREE] = tree[classes == TREE]
    height[classes == CAR] = 1.5
    height[classes == CLUT] = 1.0
    return (ground + height).astype(np.float32)


def synthesize(
    out: str | os.PathLike[str],
    n_tiles: int = 6,
    height: int = 512,
    width: int = 512,
    seed: int = 0,
    zips: bool = False,
    eroded: bool = True,
    overwrite: bool = False,
    log: Log | None = None,
    dsm: bool = False,
) -> Path:
    """Write a synthetic data set in the official Vaihingen layout (see the module docstring).

    Args:
        out: Output directory; must not exist unless ``overwrite``.
        n_tiles: Number of areas (the official area numbers are used first, 1, 2, 3, 4, 5, 6, 7, 8, 10, ...).
        height: Tile height in pixels (at least 32).
        width: Tile width in pixels (at least 32).
        seed: Random seed; equal seeds give identical pixels.
        zips: Write the three official zip archives instead of extracted folders.
        eroded: Also write the eroded ``_noBoundary`` labels (black boundary bands of about 3 px).
        overwrite: Replace an existing ``out``; only a folder written by ``synthesize`` (it has a
            segweak ``synth.json``) that holds nothing else is ever replaced.
        log: Receives one-line notes (what is replaced, leftovers cleaned); default standard error.
        dsm: Also write a float32 DSM per area (``dsm/dsm_09cm_matching_area{N}.tif``).

    Returns:
        The output directory.

    Raises:
        SegweakError: Bad sizes, an existing ``out`` without ``overwrite``, or one that is not a
            synthetic data set (or is the current directory).
    """
    _check_sizes(n_tiles, height, width)
    out = Path(out)
    log = log or stderr_log
    if check_output_dir(out, overwrite=overwrite, inspect=_not_synthetic, what="synthetic data set"):
        log(
            f"--overwrite: {out} ({describe_entries(out)}) will be replaced once the new data set is complete"
        )
    areas = _area_numbers(n_tiles)
    radius = max(1, round(3 * float(np.clip(min(height, width) / 1500.0, 0.25, 1.0))))
    seeds = np.random.SeedSequence(seed).spawn(n_tiles)
    with atomic_directory(out, overwrite=overwrite, inspect=_not_synthetic, log=log) as tmp:
        for i, (area, ss) in enumerate(zip(areas, seeds, strict=True)):
            rng = np.random.default_rng(ss)
            image, classes = render_tile(rng, height, width)
            name = f"top_mosaic_09cm_area{area}.tif"
            # Zipped members are deflated by the archive; compressing twice only costs time.
            compress = not zips
            _write_tif(tmp / "top" / name, image, i, compress=False)
            labels = label_colors(classes)
            _write_tif(tmp / "ground_truth_COMPLETE" / name, labels, i, compress)
            if area in PARTICIPANT_AREAS:
                _write_tif(tmp / "gts_for_participants" / name, labels, i, compress)
            if eroded:
                _write_tif(
                    tmp / "ground_truth_eroded_COMPLETE" / f"top_mosaic_09cm_area{area}_noBoundary.tif",
                    label_colors(classes, eroded_radius=radius),
                    i,
                    compress,
                )
            if dsm:
                # Drawn after the scene, so the images do not depend on whether DSMs are written.
                surface = render_dsm(rng, classes, _GSD)
                _write_tif(tmp / "dsm" / f"dsm_09cm_matching_area{area}.tif", surface[..., None], i, compress)
        if zips:
            _pack(tmp, tmp / VAIHINGEN_ZIP, ["top", "gts_for_participants", "dsm"], keep_dirs=True)
            _pack(tmp, tmp / VAIHINGEN_GT_ZIP, ["ground_truth_COMPLETE"], keep_dirs=False)
            if eroded:
                _pack(tmp, tmp / VAIHINGEN_ERODED_ZIP, ["ground_truth_eroded_COMPLETE"], keep_dirs=False)
        meta = {
            "generator": GENERATOR,
            "seed": seed,
            "n_tiles": n_tiles,
            "height": height,
            "width": width,
            "areas": areas,
            "participant_areas": [a for a in areas if a in PARTICIPANT_AREAS],
            "zips": zips,
            "eroded": eroded,
            "eroded_radius": radius if eroded else None,
            "dsm": dsm,
            "band_order": "IRRG",
            "crs": _CRS,
        }
        _write_marker(tmp, meta)
    return out


def _pack(root: Path, archive: Path, folders: list[str], keep_dirs: bool) -> None:
    """Move ``root/folder/*`` into ``archive`` (member paths keep the folder only when ``keep_dirs``)."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for folder in folders:
            d = root / folder
            if not d.is_dir():
                continue
            for f in sorted(d.iterdir()):
                zf.write(f, f"{folder}/{f.name}" if keep_dirs else f.name)
            shutil.rmtree(d)


def _check_sizes(n_tiles: int, height: int, width: int) -> None:
    if n_tiles < 1:
        raise SegweakError(f"--tiles must be at least 1, got {n_tiles}")
    if height < 32 or width < 32:
        raise SegweakError(f"--size must be at least 32×32 pixels, got {height}×{width}")


def rgb_from_irrg(irrg: np.ndarray, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make an RGB image (R, G, B; H×W×3 uint8) from an IRRG scene by inventing a plausible blue band.

    Vegetation absorbs blue (0.7 × green); other surfaces are roughly grey (blue ≈ mean of R and G).

    Args:
        irrg: H×W×3 uint8 (IR, R, G) from :func:`render_tile`.
        classes: H×W class codes.
        rng: Random generator (sensor noise of the blue band).
    """
    red = irrg[..., 1].astype(np.float32)
    green = irrg[..., 2].astype(np.float32)
    vegetation = (classes == LOWV) | (classes == TREE)
    blue = np.where(vegetation, 0.7 * green, 0.5 * (red + green))
    blue += 3.0 * rng.standard_normal(blue.shape, dtype=np.float32)
    blue = np.clip(blue, 0, 255).astype(np.uint8)
    return np.stack([irrg[..., 1], irrg[..., 2], blue], axis=-1)


POTSDAM_TILES = (
    (2, 10), (2, 11), (2, 12), (2, 13), (2, 14), (3, 10), (3, 11), (3, 12), (3, 13), (3, 14),
    (4, 10), (4, 11), (4, 12), (4, 13), (4, 14), (4, 15), (5, 10), (5, 11), (5, 12), (5, 13),
    (5, 14), (5, 15), (6, 7), (6, 8), (6, 9), (6, 10), (6, 11), (6, 12), (6, 13), (6, 14),
    (6, 15), (7, 7), (7, 8), (7, 9), (7, 10), (7, 11), (7, 12), (7, 13),
)  # fmt: skip
"""Grid positions ``(row, col)`` of the 38 official Potsdam tiles."""

_POTSDAM_GSD = 0.05
_POTSDAM_CRS = "EPSG:32633"
_POTSDAM_ORIGIN = (366_000.0, 5_809_000.0)


def synthesize_potsdam(
    out: str | os.PathLike[str],
    n_tiles: int = 4,
    height: int = 512,
    width: int = 512,
    seed: int = 0,
    zips: bool = False,
    eroded: bool = True,
    dsm: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic data set in the official ISPRS Potsdam layout.

    Layout (``zips=False``; with ``zips=True`` each folder becomes ``<folder>.zip``, images with their
    folder inside the archive, labels and DSMs at the archive root)::

        OUT/2_Ortho_RGB/top_potsdam_{row}_{col}_RGB.tif          R, G, B
        OUT/3_Ortho_IRRG/top_potsdam_{row}_{col}_IRRG.tif        IR, R, G
        OUT/4_Ortho_RGBIR/top_potsdam_{row}_{col}_RGBIR.tif      R, G, B, IR (4 bands)
        OUT/5_Labels_all/top_potsdam_{row}_{col}_label.tif       colour labels (Vaihingen code)
        OUT/5_Labels_all_noBoundary/top_potsdam_{row}_{col}_label_noBoundary.tif   (eroded=True)
        OUT/1_DSM/dsm_potsdam_{rr}_{cc}.tif                      float32 metres, zero-padded (dsm=True)
        OUT/synth.json

    The scenes are those of :func:`render_tile` (drawn at Vaihingen's object scale), with a blue band
    from :func:`rgb_from_irrg`; tiles use the official grid positions in order (2_10, 2_11, ...).

    Args:
        out: Output directory; must not exist unless ``overwrite``.
        n_tiles: Number of tiles (at most 38).
        height: Tile height in pixels (at least 32).
        width: Tile width in pixels (at least 32).
        seed: Random seed; equal seeds give identical files.
        zips: Write the release's zip archives instead of folders.
        eroded: Also write the ``_label_noBoundary`` labels.
        dsm: Also write the DSMs.
        overwrite: Replace an existing ``out``.

    Returns:
        The output directory.
    """
    _check_sizes(n_tiles, height, width)
    if n_tiles > len(POTSDAM_TILES):
        raise SegweakError(f"--tiles: Potsdam has {len(POTSDAM_TILES)} tiles, got {n_tiles}")
    out = Path(out)
    radius = max(1, round(3 * float(np.clip(min(height, width) / 1500.0, 0.25, 1.0))))
    seeds = np.random.SeedSequence(seed).spawn(n_tiles)
    folders = {"RGB": "2_Ortho_RGB", "IRRG": "3_Ortho_IRRG", "RGBIR": "4_Ortho_RGBIR"}
    geo = {"gsd": _POTSDAM_GSD, "crs": _POTSDAM_CRS, "origin": _POTSDAM_ORIGIN}
    log = stderr_log
    if check_output_dir(out, overwrite=overwrite, inspect=_not_synthetic, what="synthetic data set"):
        log(
            f"--overwrite: {out} ({describe_entries(out)}) will be replaced once the new data set is complete"
        )
    with atomic_directory(out, overwrite=overwrite, inspect=_not_synthetic, log=log) as tmp:
        for i, ((row, col), ss) in enumerate(zip(POTSDAM_TILES[:n_tiles], seeds, strict=True)):
            rng = np.random.default_rng(ss)
            irrg, classes = render_tile(rng, height, width)
            rgb = rgb_from_irrg(irrg, classes, rng)
            products = {"RGB": rgb, "IRRG": irrg, "RGBIR": np.concatenate([rgb, irrg[..., :1]], axis=-1)}
            stem = f"top_potsdam_{row}_{col}"
            for name, arr in products.items():
                _write_tif(tmp / folders[name] / f"{stem}_{name}.tif", arr, i, False, **geo)
            _write_tif(tmp / "5_Labels_all" / f"{stem}_label.tif", label_colors(classes), i, not zips, **geo)
            if eroded:
                _write_tif(
                    tmp / "5_Labels_all_noBoundary" / f"{stem}_label_noBoundary.tif",
                    label_colors(classes, eroded_radius=radius),
                    i,
                    not zips,
                    **geo,
                )
            if dsm:
                surface = render_dsm(rng, classes, _POTSDAM_GSD)
                _write_tif(
                    tmp / "1_DSM" / f"dsm_potsdam_{row:02d}_{col:02d}.tif",
                    surface[..., None],
                    i,
                    not zips,
                    **geo,
                )
        if zips:
            for folder in folders.values():
                _pack(tmp, tmp / f"{folder}.zip", [folder], keep_dirs=True)
            for folder in ("5_Labels_all", "5_Labels_all_noBoundary", "1_DSM"):
                _pack(tmp, tmp / f"{folder}.zip", [folder], keep_dirs=False)
        meta = {
            "generator": "segweak.data.synthetic.synthesize_potsdam",
            "seed": seed,
            "n_tiles": n_tiles,
            "height": height,
            "width": width,
            "tiles": [f"{r}_{c}" for r, c in POTSDAM_TILES[:n_tiles]],
            "zips": zips,
            "eroded": eroded,
            "eroded_radius": radius if eroded else None,
            "dsm": dsm,
            "crs": _POTSDAM_CRS,
        }
        _write_marker(tmp, meta)
    return out


SCENE_CLASSES = ("impervious", "building", "low_vegetation", "tree", "car", "clutter")
"""Class names of :func:`synthesize_scenes` (class code order of :func:`render_tile`)."""


def synthesize_scenes(
    out: str | os.PathLike[str],
    n_scenes: int = 2,
    per_scene: int = 2,
    height: int = 256,
    width: int = 256,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a generic folder dataset in the scene layout, with palette-mode PNG masks.

    Layout (the common layout of aerial datasets shipped as scenes)::

        OUT/Scene 1/images/image_part_001.jpg     RGB JPEG
        OUT/Scene 1/masks/image_part_001.png      palette-mode ("P") PNG: class index + colour table
        ...
        OUT/palette.yaml                          rgb palette of the masks' colours (6 classes)
        OUT/synth.json

    Prepare it with ``segweak prepare folder --images 'OUT/*/images/*.jpg' --masks
    '{parent}/masks/{stem}.png' --palette OUT/palette.yaml --group-by top``.

    Args:
        out: Output directory; must not exist unless ``overwrite``.
        n_scenes: Number of scene folders.
        per_scene: Images per scene.
        height: Image height in pixels (at least 32).
        width: Image width in pixels (at least 32).
        seed: Random seed.
        overwrite: Replace an existing ``out``.

    Returns:
        The output directory.
    """
    from PIL import Image

    _check_sizes(n_scenes * per_scene, height, width)
    out = Path(out)
    seeds = np.random.SeedSequence(seed).spawn(n_scenes * per_scene)
    colour_table = [int(v) for colour in _LABEL_COLORS for v in colour]
    log = stderr_log
    if check_output_dir(out, overwrite=overwrite, inspect=_not_synthetic, what="synthetic data set"):
        log(
            f"--overwrite: {out} ({describe_entries(out)}) will be replaced once the new data set is complete"
        )
    with atomic_directory(out, overwrite=overwrite, inspect=_not_synthetic, log=log) as tmp:
        for k, ss in enumerate(seeds):
            rng = np.random.default_rng(ss)
            irrg, classes = render_tile(rng, height, width)
            scene = tmp / f"Scene {k // per_scene + 1}"
            name = f"image_part_{k % per_scene + 1:03d}"
            (scene / "images").mkdir(parents=True, exist_ok=True)
            (scene / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb_from_irrg(irrg, classes, rng)).save(
                scene / "images" / f"{name}.jpg", quality=90
            )
            mask = Image.frombytes("P", (width, height), np.ascontiguousarray(classes).tobytes())
            mask.putpalette(colour_table)
            mask.save(scene / "masks" / f"{name}.png")
        palette = {
            "mode": "rgb",
            "classes": [
                {"name": n, "color": [int(v) for v in _LABEL_COLORS[i]]} for i, n in enumerate(SCENE_CLASSES)
            ],
            "ignore": [],
        }
        import yaml

        (tmp / "palette.yaml").write_text(yaml.safe_dump(palette, sort_keys=False), encoding="utf-8")
        meta = {
            "generator": GENERATOR,
            "layout": "scenes",
            "seed": seed,
            "n_scenes": n_scenes,
            "per_scene": per_scene,
            "height": height,
            "width": width,
        }
        _write_marker(tmp, meta)
    return out
