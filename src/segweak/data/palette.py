"""Class sets and palettes: turn label rasters (colour or index masks) into class-index masks.

A :class:`Palette` maps the values found in label files to class indices ``0..K-1`` and to
:data:`IGNORE_INDEX` (255). Two modes exist:

* ``rgb``: labels are colour images (H×W×3); each class has one or more RGB colours.
* ``index``: labels are single-band integer images; each class has one or more integer values.

Palette-mode ("P") files, one band of indices plus the file's own colour table, are read through that
table in ``rgb`` mode (:func:`expand_colormap`) and by index in ``index`` mode.

Label files from real data are rarely clean: resampled or JPEG-compressed colour masks carry blended
colours at object edges. In ``rgb`` mode every colour that is not an exact palette colour is
*snapped* to the nearest palette colour (class or ignore colour) when it lies within ``tolerance``;
a colour further than that from every palette colour is an error (:class:`~segweak.errors.SegweakError`
naming the file, the number of such pixels and one example pixel), never silently some class. A file
whose pixels are mostly far from every palette colour (:data:`MASK_LIKE_SHARE`) is not read as a mask
at all, whatever the tolerance: it is an image given as a mask, or the palette is wrong.

Tolerance semantics (``rgb`` only): the distance used for the tolerance test is the **Chebyshev**
distance, i.e. the largest absolute per-channel difference, so ``tolerance: 10`` means "each of R, G, B
may be off by at most 10". Among the palette colours within tolerance the one with the smallest
Euclidean distance wins (ties: the earlier entry — classes in order, then ignore colours).
In ``index`` mode values must match exactly; unknown values are an error.

YAML format (``Palette.from_yaml``; also documented in ``docs/palette.md``)::

    mode: rgb                 # rgb | index
    classes:                  # order = class index 0..K-1
      - {name: impervious, color: [255, 255, 255]}
      - {name: building, color: [0, 0, 255]}
      - {name: tree, colors: [[0, 255, 0], [0, 200, 0]]}   # several colours -> one class
    ignore: [[0, 0, 0], [255, 0, 0]]   # colours that become 255 (ignore)
    tolerance: 10             # optional, rgb only; Chebyshev distance (default 10)

    mode: index
    classes:
      - {name: impervious, value: 1, display: [255, 255, 255]}   # display: colour for plots (optional)
      - {name: building, values: [2, 7]}
    ignore: [0]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from segweak.errors import SegweakError

IGNORE_INDEX = 255
"""Mask value of pixels that do not count in losses or metrics."""

DEFAULT_TOLERANCE = 10
"""Default snapping tolerance (Chebyshev distance, per-channel absolute difference).

Why 10: official Vaihingen labels are exact palette colours, so any tolerance accepts them; 10 absorbs
the small colour shifts of lossy re-encoding (JPEG/PNG quantisation away from edges) while the nearest
palette colours are 255 apart per channel, so nothing near a *different* colour is accepted.
Interpolation blends (a label resampled with bilinear filtering, e.g. 50 % white + 50 % blue) sit up to
127 away from both neighbours: they are *ambiguous*, and accepting them is a decision the user must make
explicitly (``--tolerance 127`` snaps every blend to its nearest colour), not a silent default. On the
real resized area-1 sample about 7.7 % of the pixels are beyond 10 and all are within 127.
"""

MASK_NEAR_DISTANCE = 10
"""Chebyshev distance within which a pixel counts as a palette colour for :data:`MASK_LIKE_SHARE`."""

MASK_LIKE_SHARE = 0.5
"""Share of an ``rgb`` label's pixels that must be within :data:`MASK_NEAR_DISTANCE` of a palette colour,
whatever the tolerance, for the file to be read as a label mask at all; otherwise it is an error that
suggests no tolerance. Real masks, even resampled ones, are mostly exact colours (the resized real area-1
label: 92.3 % within 10), photos almost never are (the real area-1 images read as masks: 0.02 % and
0.23 %), while a tolerance of 127 would snap nearly every photo pixel to some Vaihingen colour."""

MAX_BLEND_DISTANCE = 127
"""Largest Chebyshev distance from a blend of two colours (any mix of them) to the nearer of the two:
half of at most 255, rounded down. A colour further from every palette colour is not a blend."""

VAIHINGEN_CLASSES = ("impervious", "building", "low_vegetation", "tree", "car")
VAIHINGEN_COLORS: dict[str, tuple[int, int, int]] = {
    "impervious": (255, 255, 255),
    "building": (0, 0, 255),
    "low_vegetation": (0, 255, 255),
    "tree": (0, 255, 0),
    "car": (255, 255, 0),
    "clutter": (255, 0, 0),
}
BOUNDARY_COLOR = (0, 0, 0)
"""Black: the eroded class boundaries of the ``_noBoundary`` labels (always ignore)."""

# Display colours for index palettes that give none (tab10-like, readable on white and black).
_DEFAULT_DISPLAY = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


@dataclass(frozen=True)
class ClassSet:
    """Ordered class names; position = class index in masks.

    Attributes:
        names: Class names, index ``i`` is ``names[i]``.
        ignore_index: Mask value of ignored pixels.
    """

    names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if not self.names:
            raise SegweakError("a class set needs at least one class")
        if len(set(self.names)) != len(self.names):
            raise SegweakError(f"duplicate class names in {list(self.names)}; class names must be unique")
        if len(self.names) >= IGNORE_INDEX:
            raise SegweakError(f"at most {IGNORE_INDEX - 1} classes are supported, got {len(self.names)}")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Class index of ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise SegweakError(f"unknown class {name!r}; classes are {list(self.names)}") from None


@dataclass
class SnapStats:
    """What encoding a label did, for prepare reports.

    Attributes:
        n_pixels: Pixels encoded.
        n_exact: Pixels whose value was an exact palette entry.
        n_snapped: Pixels whose colour was snapped to a palette colour within tolerance.
        max_distance: Largest Chebyshev distance of a snapped colour (0 when nothing snapped).
        n_ignore: Pixels that became :data:`IGNORE_INDEX`.
    """

    n_pixels: int = 0
    n_exact: int = 0
    n_snapped: int = 0
    max_distance: int = 0
    n_ignore: int = 0

    def add(self, other: SnapStats) -> SnapStats:
        """Accumulate ``other`` into this object (returns self)."""
        self.n_pixels += other.n_pixels
        self.n_exact += other.n_exact
        self.n_snapped += other.n_snapped
        self.max_distance = max(self.max_distance, other.max_distance)
        self.n_ignore += other.n_ignore
        return self

    def to_dict(self) -> dict[str, int]:
        """JSON-serialisable form."""
        return {
            "n_pixels": self.n_pixels,
            "n_exact": self.n_exact,
            "n_snapped": self.n_snapped,
            "max_distance": self.max_distance,
            "n_ignore": self.n_ignore,
        }


def _pack_rgb(arr: np.ndarray) -> np.ndarray:
    """Pack an (..., 3) uint8-valued array into uint32 ``r << 16 | g << 8 | b``."""
    a = arr.astype(np.uint32, copy=False)
    return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]


def _unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_pack_rgb`: (N,) uint32 -> (N, 3) int32."""
    p = packed.astype(np.int64)
    return np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=-1).astype(np.int32)


@dataclass(frozen=True)
class Palette:
    """Mapping from label-file values to class indices.

    Attributes:
        mode: ``"rgb"`` (colour masks) or ``"index"`` (integer masks).
        classes: The class set.
        entries: Per class, the tuple of label values that mean this class: RGB triples in ``rgb`` mode,
            integers in ``index`` mode.
        ignore: Label values mapped to :data:`IGNORE_INDEX`.
        tolerance: Snapping tolerance (Chebyshev distance) in ``rgb`` mode; ignored in ``index`` mode.
        display: One RGB colour per class for :func:`colorize` (defaults: the first class colour in
            ``rgb`` mode, a fixed qualitative palette in ``index`` mode).
    """

    mode: str
    classes: ClassSet
    entries: tuple[tuple[Any, ...], ...]
    ignore: tuple[Any, ...] = ()
    tolerance: float = DEFAULT_TOLERANCE
    display: tuple[tuple[int, int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.mode not in ("rgb", "index"):
            raise SegweakError(f"palette mode must be 'rgb' or 'index', got {self.mode!r}")
        if len(self.entries) != len(self.classes):
            raise SegweakError(
                f"palette has {len(self.entries)} class entries for {len(self.classes)} classes"
            )
        if not (0 <= float(self.tolerance) <= 255):
            raise SegweakError(f"palette tolerance must be within 0..255, got {self.tolerance}")
        seen: dict[Any, str] = {}
        for name, values in zip(self.classes.names, self.entries, strict=True):
            if not values:
                raise SegweakError(f"class {name!r} has no {'colour' if self.mode == 'rgb' else 'value'}")
            for v in values:
                self._check_value(v, f"class {name!r}")
                if v in seen:
                    raise SegweakError(
                        f"palette value {list(v) if self.mode == 'rgb' else v} is used by both "
                        f"{seen[v]!r} and {name!r}; each value may mean one class only"
                    )
                seen[v] = name
        for v in self.ignore:
            self._check_value(v, "ignore")
            if v in seen:
                raise SegweakError(
                    f"palette value {v} is both class {seen[v]!r} and ignore; remove one of them"
                )
        if not self.display:
            if self.mode == "rgb":
                disp = tuple(tuple(int(c) for c in e[0]) for e in self.entries)
            else:
                disp = tuple(_DEFAULT_DISPLAY[i % len(_DEFAULT_DISPLAY)] for i in range(len(self.classes)))
            object.__setattr__(self, "display", disp)
        elif len(self.display) != len(self.classes):
            raise SegweakError(
                f"palette display has {len(self.display)} colours for {len(self.classes)} classes"
            )

    def _check_value(self, v: Any, where: str) -> None:
        if self.mode == "rgb":
            ok = isinstance(v, tuple) and len(v) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in v)
            if not ok:
                raise SegweakError(f"palette {where}: colour {v!r} must be three integers 0..255")
        elif not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise SegweakError(f"palette {where}: value {v!r} must be a non-negative integer")

    # ---- construction -----------------------------------------------------------------------------

    def with_tolerance(self, tolerance: float | None) -> Palette:
        """Return a copy with another snapping tolerance (``None`` keeps the current one)."""
        return self if tolerance is None else replace(self, tolerance=float(tolerance))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "palette") -> Palette:
        """Build a palette from its dict form (the YAML format of the module docstring).

        Args:
            data: Parsed YAML/JSON mapping.
            where: Name of the file or key for error messages.
        """
        if not isinstance(data, dict):
            raise SegweakError(f"{where}: a palette must be a mapping with 'mode' and 'classes'")
        unknown = set(data) - {"mode", "classes", "ignore", "tolerance", "ignore_index"}
        if unknown:
            raise SegweakError(
                f"{where}: unknown palette key(s) {sorted(unknown)}; allowed: mode, classes, "
                "ignore, tolerance"
            )
        mode = data.get("mode", "rgb")
        if mode not in ("rgb", "index"):
            raise SegweakError(f"{where}: mode must be 'rgb' or 'index', got {mode!r}")
        raw_classes = data.get("classes")
        if not isinstance(raw_classes, list) or not raw_classes:
            raise SegweakError(
                f"{where}: 'classes' must be a non-empty list of {{name: ..., "
                f"{'color' if mode == 'rgb' else 'value'}: ...}}"
            )
        single, plural = ("color", "colors") if mode == "rgb" else ("value", "values")
        names: list[str] = []
        entries: list[tuple[Any, ...]] = []
        display: list[tuple[int, int, int]] = []
        for i, item in enumerate(raw_classes):
            if not isinstance(item, dict) or "name" not in item:
                raise SegweakError(f"{where}: classes[{i}] must be a mapping with a 'name'")
            bad = set(item) - {"name", single, plural, "display"}
            if bad:
                raise SegweakError(
                    f"{where}: classes[{i}] has unknown key(s) {sorted(bad)}; in {mode} mode use "
                    f"'{single}' or '{plural}' (and optionally 'display')"
                )
            if (single in item) == (plural in item):
                raise SegweakError(
                    f"{where}: classes[{i}] ({item['name']}) needs exactly one of '{single}' or '{plural}'"
                )
            values = [item[single]] if single in item else list(item[plural])
            entries.append(tuple(cls._parse_value(v, mode, f"{where}: classes[{i}]") for v in values))
            names.append(str(item["name"]))
            if "display" in item:
                display.append(cls._parse_value(item["display"], "rgb", f"{where}: classes[{i}].display"))
        if display and len(display) != len(names):
            raise SegweakError(f"{where}: give 'display' for every class or for none")
        ignore = tuple(cls._parse_value(v, mode, f"{where}: ignore") for v in (data.get("ignore") or []))
        tolerance = data.get("tolerance", DEFAULT_TOLERANCE)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
            raise SegweakError(f"{where}: tolerance must be a number 0..255, got {tolerance!r}")
        try:
            return cls(
                mode=mode,
                classes=ClassSet(tuple(names)),
                entries=tuple(entries),
                ignore=ignore,
                tolerance=float(tolerance),
                display=tuple(display),
            )
        except SegweakError as exc:
            # Cross-class checks (duplicate names, a colour used twice) happen in the constructors,
            # which do not know the file: name it here.
            raise SegweakError(f"{where}: {exc}") from None

    @staticmethod
    def _parse_value(v: Any, mode: str, where: str) -> Any:
        if mode == "rgb":
            if not (isinstance(v, list | tuple) and len(v) == 3):
                raise SegweakError(f"{where}: colour {v!r} must be a list of three integers 0..255")
            if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in v):
                raise SegweakError(f"{where}: colour {list(v)} must be three integers 0..255")
            return tuple(int(c) for c in v)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise SegweakError(f"{where}: value {v!r} must be a non-negative integer")
        return int(v)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Palette:
        """Load a palette YAML file (format in the module docstring and ``docs/palette.md``)."""
        import yaml

        from segweak.io import yaml_error_summary

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SegweakError(
                f"palette file {path} does not exist; pass an existing --palette YAML"
            ) from None
        except IsADirectoryError:
            raise SegweakError(f"palette file {path} is a directory; pass a palette YAML file") from None
        except UnicodeDecodeError:
            raise SegweakError(
                f"palette file {path} is not a text file (not UTF-8); pass a palette YAML (docs/palette.md)"
            ) from None
        except OSError as exc:
            raise SegweakError(f"palette file {path} cannot be read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise SegweakError(f"palette file {path} is not valid YAML: {yaml_error_summary(exc)}") from None
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-serialisable form, loadable with :meth:`from_dict`."""
        key = "colors" if self.mode == "rgb" else "values"
        classes = []
        for name, values, disp in zip(self.classes.names, self.entries, self.display, strict=True):
            item: dict[str, Any] = {"name": name, key: [list(v) if self.mode == "rgb" else v for v in values]}
            if self.mode == "index":
                item["display"] = list(disp)
            classes.append(item)
        out: dict[str, Any] = {
            "mode": self.mode,
            "classes": classes,
            "ignore": [list(v) if self.mode == "rgb" else v for v in self.ignore],
        }
        if self.mode == "rgb":
            out["tolerance"] = self.tolerance
        return out

    # ---- encoding ---------------------------------------------------------------------------------

    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted lookup keys and their target indices (class index or 255)."""
        keys: list[int] = []
        targets: list[int] = []
        for ci, values in enumerate(self.entries):
            for v in values:
                keys.append(int(_pack_rgb(np.array(v))) if self.mode == "rgb" else int(v))
                targets.append(ci)
        for v in self.ignore:
            keys.append(int(_pack_rgb(np.array(v))) if self.mode == "rgb" else int(v))
            targets.append(IGNORE_INDEX)
        k = np.array(keys, dtype=np.int64)
        t = np.array(targets, dtype=np.uint8)
        order = np.argsort(k, kind="stable")
        return k[order], t[order]

    def encode(self, label: np.ndarray, source: str = "label") -> tuple[np.ndarray, SnapStats]:
        """Encode a label raster into a class-index mask.

        Args:
            label: ``rgb`` mode: H×W×3 (a 4th constant alpha band must be dropped by the reader);
                ``index`` mode: H×W integers (or H×W×C with identical channels).
            source: File name for error messages.

        Returns:
            ``(mask, stats)``: mask H×W uint8 with class indices ``0..K-1`` and 255 = ignore.

        Raises:
            SegweakError: Wrong shape, a colour beyond the tolerance or an unknown index value; the message
                gives the number of such pixels, one example pixel (row, col, value) and the file.
        """
        if self.mode == "rgb":
            if label.ndim != 3 or label.shape[2] != 3:
                raise SegweakError(
                    f"{source}: an rgb palette needs H×W×3 colour labels, got shape {label.shape}; "
                    "use an index palette (mode: index) for single-band masks"
                )
            keys = _pack_rgb(label).astype(np.int64, copy=False)
        else:
            if label.ndim == 3:
                if label.shape[2] > 1 and not all(
                    np.array_equal(label[..., 0], label[..., c]) for c in range(1, label.shape[2])
                ):
                    raise SegweakError(
                        f"{source}: an index palette needs single-band masks, got {label.shape[2]} "
                        "different bands; use an rgb palette (mode: rgb) for colour labels"
                    )
                label = label[..., 0]
            if label.ndim != 2:
                raise SegweakError(f"{source}: expected an H×W mask, got shape {label.shape}")
            if not np.issubdtype(label.dtype, np.integer):
                raise SegweakError(f"{source}: index masks must hold integers, got {label.dtype}")
            keys = label.astype(np.int64, copy=False)
        h, w = keys.shape
        flat = keys.reshape(-1)
        table_keys, table_targets = self._table()
        # Exact matches via binary search over the few palette keys: O(N log K), no sort of the pixels.
        pos = np.searchsorted(table_keys, flat)
        np.clip(pos, 0, len(table_keys) - 1, out=pos)
        exact = table_keys[pos] == flat
        out = table_targets[pos]
        stats = SnapStats(n_pixels=int(flat.size), n_exact=int(exact.sum()))
        if stats.n_exact < flat.size:
            miss = np.flatnonzero(~exact)
            uniq, inverse = np.unique(flat[miss], return_inverse=True)
            if self.mode == "index":
                first = miss[0]
                raise SegweakError(
                    f"{source}: {miss.size} pixel(s) have values that are not in the palette "
                    f"({uniq[:10].tolist()}{' ...' if uniq.size > 10 else ''}); "
                    f"e.g. pixel (row {first // w}, col {first % w}) = {int(flat[first])}. "
                    "Add these values to the palette's classes or ignore."
                )
            snapped_target, dist, nearest = self._snap(uniq)
            # Whatever the tolerance, a file whose pixels are mostly far from every palette colour is not
            # a label mask (e.g. a photo given as a mask): with a large tolerance it would "snap" anyway.
            near = stats.n_exact + int(np.count_nonzero(nearest[inverse] <= MASK_NEAR_DISTANCE))
            if near < MASK_LIKE_SHARE * flat.size:
                raise SegweakError(
                    f"{source}: only {100 * near / flat.size:.1f}% of its pixels are within "
                    f"{MASK_NEAR_DISTANCE} of a palette colour, so it does not look like a label mask for "
                    "this palette (label masks are mostly exact palette colours): check that the masks are "
                    "label files, not the images, and that the palette lists their colours"
                )
            bad_u = snapped_target < 0
            if bad_u.any():
                raise SegweakError(
                    self._beyond_tolerance_message(flat, w, miss, inverse, bad_u, nearest, source)
                )
            out[miss] = snapped_target[inverse].astype(np.uint8)
            stats.n_snapped = int(miss.size)
            stats.max_distance = int(dist.max())
        mask = out.reshape(h, w)
        stats.n_ignore = int(np.count_nonzero(mask == IGNORE_INDEX))
        return mask, stats

    def _beyond_tolerance_message(
        self,
        flat: np.ndarray,
        width: int,
        miss: np.ndarray,
        inverse: np.ndarray,
        bad_u: np.ndarray,
        nearest: np.ndarray,
        source: str,
    ) -> str:
        """Build the one-line error for colours beyond the tolerance, with advice that fits the file.

        The file is known to look like a label mask (see :data:`MASK_LIKE_SHARE`). A tolerance hint is
        given only when every offending colour could be a blend of palette colours (at most
        :data:`MAX_BLEND_DISTANCE` from one); otherwise the palette lacks a colour.

        Args:
            flat: (N,) packed label values of the whole file.
            width: Label width W (for row/col of the example pixel).
            miss: (M,) flat indices of the pixels that are not exact palette values.
            inverse: (M,) index of each missing pixel's colour in the unique colours.
            bad_u: (U,) unique colours beyond tolerance.
            nearest: (U,) Chebyshev distance of each unique colour to its nearest palette colour.
            source: File name.
        """
        bad_px = bad_u[inverse]
        n_bad = int(bad_px.sum())
        first = int(miss[np.flatnonzero(bad_px)[0]])
        colour = _unpack_rgb(np.array([flat[first]]))[0].tolist()
        head = (
            f"{source}: {n_bad} pixel(s) ({100 * n_bad / flat.size:.2f}%) have colours further than the "
            f"tolerance {self.tolerance:g} (largest per-channel difference) from every palette colour; "
            f"e.g. pixel (row {first // width}, col {first % width}) = {colour}."
        )
        needed = int(nearest[bad_u].max())
        if needed > MAX_BLEND_DISTANCE:
            return (
                f"{head} Some colours are up to {needed} away from the nearest palette colour, too far to be "
                "blends of palette colours: add them to the palette (as a class or ignore colour)."
            )
        return (
            f"{head} These are usually blends from a resampled or compressed label: --tolerance {needed} "
            "snaps every one of them to its nearest palette colour, or fix the palette."
        )

    def _snap(self, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Snap unique packed colours to palette entries.

        Args:
            packed: (U,) packed colours.

        Returns:
            ``(target, dist, nearest)``, each (U,): target index (-1 when beyond tolerance), Chebyshev
            distance of the snapped colour (0 when not snapped), and Chebyshev distance to the nearest
            palette colour whatever the tolerance.
        """
        cols = _unpack_rgb(packed)  # (U, 3)
        pal: list[tuple[int, int, int]] = []
        tgt: list[int] = []
        for ci, values in enumerate(self.entries):
            pal.extend(values)
            tgt.extend([ci] * len(values))
        pal.extend(self.ignore)
        tgt.extend([IGNORE_INDEX] * len(self.ignore))
        p = np.array(pal, dtype=np.int32)  # (P, 3)
        diff = cols[:, None, :] - p[None, :, :]  # (U, P, 3)
        cheb = np.abs(diff).max(axis=2)
        eucl = (diff.astype(np.int64) ** 2).sum(axis=2)
        within = cheb <= self.tolerance
        eucl = np.where(within, eucl, np.iinfo(np.int64).max)
        best = eucl.argmin(axis=1)  # argmin takes the first of ties: classes before ignore colours
        ok = within[np.arange(len(cols)), best]
        target = np.where(ok, np.array(tgt, dtype=np.int32)[best], -1)
        dist = np.where(ok, cheb[np.arange(len(cols)), best], 0)
        return target, dist, cheb.min(axis=1)


def vaihingen_palette(keep_clutter: bool = False, tolerance: float = DEFAULT_TOLERANCE) -> Palette:
    """Build the ISPRS Vaihingen colour code.

    Args:
        keep_clutter: Keep clutter/background (red) as a 6th class (last); by default it is ignored.
        tolerance: Snapping tolerance (Chebyshev distance), see :data:`DEFAULT_TOLERANCE`.

    Returns:
        An ``rgb`` palette; black (eroded boundaries) is always ignore.
    """
    names = VAIHINGEN_CLASSES + (("clutter",) if keep_clutter else ())
    ignore = (BOUNDARY_COLOR,) if keep_clutter else (BOUNDARY_COLOR, VAIHINGEN_COLORS["clutter"])
    return Palette(
        mode="rgb",
        classes=ClassSet(names),
        entries=tuple((VAIHINGEN_COLORS[n],) for n in names),
        ignore=ignore,
        tolerance=float(tolerance),
    )


def colorize(mask: np.ndarray, palette: Palette) -> np.ndarray:
    """Render a class-index mask in the palette's display colours.

    Args:
        mask: H×W integer mask, ``0..K-1`` or :data:`IGNORE_INDEX`.
        palette: Gives one display colour per class.

    Returns:
        H×W×3 uint8; ignored pixels are black.
    """
    k = len(palette.classes)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:k] = np.array(palette.display, dtype=np.uint8)
    m = np.asarray(mask)
    if m.size and (int(m.min()) < 0 or int(m.max()) > 255 or np.any((m >= k) & (m != IGNORE_INDEX))):
        bad = np.unique(m[(m < 0) | ((m >= k) & (m != IGNORE_INDEX))])
        raise SegweakError(
            f"cannot colorize: mask values {bad[:10].tolist()} are neither a class (0..{k - 1}) "
            f"nor ignore ({IGNORE_INDEX})"
        )
    return lut[m.astype(np.uint8)]


def expand_colormap(
    indices: np.ndarray, colormap: dict[int, tuple[int, ...]], source: str = "label"
) -> np.ndarray:
    """Turn a palette-mode ("P") label into colours through the file's own colour table.

    Args:
        indices: H×W integer pixel values (indices into the colour table).
        colormap: The file's colour table, ``{index: (r, g, b[, a])}`` (rasterio's ``colormap(1)``).
        source: File name for error messages.

    Returns:
        H×W×3 uint8 colours.

    Raises:
        SegweakError: When a pixel uses an index the colour table does not define.
    """
    lut = np.zeros((256, 3), dtype=np.uint8)
    defined = np.zeros(256, dtype=bool)
    for idx, colour in colormap.items():
        if 0 <= int(idx) < 256:
            lut[int(idx)] = colour[:3]
            defined[int(idx)] = True
    values = np.asarray(indices)
    if values.size and (int(values.min()) < 0 or int(values.max()) > 255):
        raise SegweakError(
            f"{source}: palette-mode pixel values must be 0..255, got {values.min()}..{values.max()}"
        )
    values = values.astype(np.uint8, copy=False)
    used = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    undefined = used[~defined[used]]
    if undefined.size:
        raise SegweakError(
            f"{source}: pixel value(s) {undefined[:10].tolist()} have no colour in the file's own colour "
            "table (palette-mode image); use an index palette (mode: index) to read the values directly"
        )
    return lut[values]
