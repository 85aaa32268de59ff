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
root), exactly as the ISPRS download provides them. The DSMs are not generated.

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


def _not_synthetic(path: Path) -> str | None:
    """Inspector for ``overwrite``: None when ``path`` is a ``synthesize`` output and holds nothing else."""
    marker = path / "synth.json"
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "it is not a segweak synthetic data set (no synth.json)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its synth.json is not valid JSON, so it is not a segweak synthetic data set"
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        return "its synth.json was not written by segweak synth"
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


def _write_tif(path: Path, arr: np.ndarray, area_index: int, compress: bool) -> None:
    import rasterio
    from rasterio.transform import Affine

    h, w = arr.shape[:2]
    # Areas laid out on a grid of 3 km cells so that their footprints never overlap.
    east = _ORIGIN_E + (area_index % 6) * 3000.0
    north = _ORIGIN_N - (area_index // 6) * 3000.0
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": arr.shape[2],
        "dtype": "uint8",
        "crs": _CRS,
        "transform": Affine(_GSD, 0.0, east, 0.0, -_GSD, north),
        "photometric": "RGB",
    }
    if compress:
        profile.update(compress="deflate", zlevel=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(arr, -1, 0))


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

    Returns:
        The output directory.

    Raises:
        SegweakError: Bad sizes, an existing ``out`` without ``overwrite``, or one that is not a
            synthetic data set (or is the current directory).
    """
    if n_tiles < 1:
        raise SegweakError(f"--tiles must be at least 1, got {n_tiles}")
    if height < 32 or width < 32:
        raise SegweakError(f"--size must be at least 32×32 pixels, got {height}×{width}")
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
        if zips:
            _pack(tmp, tmp / VAIHINGEN_ZIP, ["top", "gts_for_participants"], keep_dirs=True)
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
            "band_order": "IRRG",
            "crs": _CRS,
        }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
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
