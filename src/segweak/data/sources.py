"""Readers of labelled tiles: the official ISPRS Vaihingen data and generic image/mask folders.

A *source* (:class:`~segweak.data.tiles.Source`) lists its :class:`~segweak.data.tiles.Tile` objects
cheaply (raster headers only) and reads pixels tile by tile in ``Tile.read``, so memory stays bounded
to one tile. Sources expose ``classes``, ``palette``, ``band_order``, ``describe()`` (JSON-serialisable,
stored in the prepared store's metadata, with a ``bands`` entry per channel: name, source,
normalisation) and ``tiles()``. The Potsdam reader lives in :mod:`segweak.data.potsdam`; both official
releases are scanned by :mod:`segweak.data.release`, and every file is read through
:mod:`segweak.data.raster` (zip members in place, palette-mode labels through their colour table).
"""

from __future__ import annotations

import glob
import os
import re
import string
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from segweak.data.dsm import DsmNormalisation
from segweak.data.palette import (
    DEFAULT_TOLERANCE,
    ClassSet,
    Palette,
    vaihingen_palette,
)
from segweak.data.potsdam import PotsdamSource
from segweak.data.raster import check_band_count, check_label_header, read_header
from segweak.data.release import nested_zip_hint, release_tile, scan_release
from segweak.data.tiles import Source, Tile, dsm_band_record, image_band_records
from segweak.errors import SegweakError, short_list

VAIHINGEN_ZIP = "ISPRS_semantic_labeling_Vaihingen.zip"
VAIHINGEN_GT_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip"
VAIHINGEN_ERODED_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip"
VAIHINGEN_ZIPS = (VAIHINGEN_ZIP, VAIHINGEN_GT_ZIP, VAIHINGEN_ERODED_ZIP)
"""Official archive names (the eroded one is optional)."""

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

_AREA_RE = re.compile(r"^top_mosaic_09cm_area(\d+)(_noBoundary)?\.tif$", re.IGNORECASE)


def band_names(band_order: str) -> list[str]:
    """Band names of a band-order string: ``"IRRG"`` -> ``["IR", "R", "G"]``, ``"R,G,B,NIR"`` -> 4 names.

    A string without commas is read as a sequence of ``NIR``, ``IR``, ``R``, ``G``, ``B`` (e.g. ``RGB``,
    ``IRRG``, ``RGBIR``); with commas, any names are allowed.

    Raises:
        SegweakError: When the string is neither.
    """
    text = band_order.strip()
    if "," in text:
        names = [t.strip() for t in text.split(",")]
        if all(names):
            return names
    elif re.fullmatch(r"(?:NIR|IR|R|G|B)+", text.upper()):
        return re.findall(r"NIR|IR|R|G|B", text.upper())
    raise SegweakError(
        f"band order {band_order!r}: give a string of IR, NIR, R, G, B (e.g. RGB, IRRG, RGBIR) or "
        "band names separated by commas (e.g. R,G,B,NIR)"
    )


# ---- Vaihingen --------------------------------------------------------------------------------------


VAIHINGEN_GSD = 0.09
"""Ground sampling distance of the Vaihingen tops and DSMs in metres."""

_DSM_RE = re.compile(r"^dsm_09cm_matching_area(\d+)\.tif$", re.IGNORECASE)


def _classify(parts: tuple[str, ...]) -> tuple[int, str] | None:
    """Area number and role of a path (tuple of components), or None when not a Vaihingen tile file."""
    m = _DSM_RE.match(parts[-1])
    if m:
        return int(m.group(1)), "dsm"
    m = _AREA_RE.match(parts[-1])
    if not m:
        return None
    area = int(m.group(1))
    lowered = [p.lower() for p in parts[:-1]]
    if m.group(2):
        return area, "eroded"
    if "top" in lowered:
        return area, "image"
    if any(p.startswith("gts_for_participants") for p in lowered):
        return area, "gts_for_participants"
    return area, "complete"


# Label priority: the COMPLETE set (33 areas) over the participants' subset (16, same content).
_LABEL_PRIORITY = {"complete": 0, "gts_for_participants": 1}


class VaihingenSource:
    """The ISPRS 2D semantic labelling data set Vaihingen (IRRG orthophotos with colour labels).

    ``root`` is a directory holding the official zips (``ISPRS_semantic_labeling_Vaihingen.zip``, with
    ``top/top_mosaic_09cm_area{N}.tif`` and ``dsm/dsm_09cm_matching_area{N}.tif``;
    ``..._ground_truth_COMPLETE.zip`` with the labels at its root; optionally
    ``..._ground_truth_eroded_COMPLETE.zip`` with ``top_mosaic_09cm_area{N}_noBoundary.tif``)
    and/or their extracted contents in any folder structure, or one such zip itself. Files are found
    recursively by name: ``top_mosaic_09cm_area{N}.tif`` inside a folder called ``top`` is an image,
    elsewhere it is a label (``gts_for_participants/`` = the 16 training areas, anywhere else = the
    COMPLETE set, preferred when both exist); ``*_noBoundary.tif`` is an eroded label;
    ``dsm_09cm_matching_area{N}.tif`` is the area's DSM. When the same file exists both extracted and
    in a zip, the extracted copy is used.

    Args:
        root: Directory (or a single zip) as described above.
        keep_clutter: Keep clutter as a 6th class (otherwise ignore).
        eroded: Read the eroded (``_noBoundary``) labels, whose black boundary bands are ignored.
        tolerance: Colour snapping tolerance (see :mod:`segweak.data.palette`).
        dsm: Append the DSM as a 4th channel, mapped to 0..255 by this rule (:mod:`segweak.data.dsm`);
            every area must then have its DSM.
    """

    kind = "vaihingen"

    def __init__(
        self,
        root: str | os.PathLike[str],
        keep_clutter: bool = False,
        eroded: bool = False,
        tolerance: float | None = None,
        dsm: DsmNormalisation | None = None,
    ) -> None:
        self.root = Path(root)
        self.keep_clutter = keep_clutter
        self.eroded = eroded
        self.dsm = dsm
        self.palette: Palette = vaihingen_palette(
            keep_clutter, DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
        )
        self.classes: ClassSet = self.palette.classes
        self._tiles: list[Tile] | None = None
        self._unlabelled: list[str] = []
        self._no_eroded: list[str] = []
        self._containers: list[str] = []
        self._label_sets: dict[str, int] = {}

    @property
    def band_order(self) -> str:
        """``IRRG``, plus ``+nDSM`` / ``+DSM`` with a DSM channel."""
        return "IRRG" + (f"+{self.dsm.channel_name}" if self.dsm else "")

    def bands(self) -> list[dict[str, Any]]:
        """One ``store.json`` ``bands`` entry per channel: name, source and normalisation."""
        out = image_band_records(["IR", "R", "G"], "top/top_mosaic_09cm_area{N}.tif")
        if self.dsm is not None:
            out.append(dsm_band_record(self.dsm, "dsm/dsm_09cm_matching_area{N}.tif", VAIHINGEN_GSD))
        return out

    def tiles(self) -> list[Tile]:
        """All areas that have both an image and a label, sorted by area number (headers only)."""
        if self._tiles is not None:
            return list(self._tiles)
        scan = scan_release(self.root, _classify, "Vaihingen")
        chosen = scan.files
        if not chosen:
            raise SegweakError(
                f"no Vaihingen files found under {self.root}: expected {VAIHINGEN_ZIP} and "
                f"{VAIHINGEN_GT_ZIP} "
                "(or their extracted top/top_mosaic_09cm_area*.tif images and labels); download them with "
                f"'segweak download' or generate a fake set with 'segweak synth'{nested_zip_hint(scan)}"
            )
        tiles: list[Tile] = []
        unlabelled: list[str] = []
        no_eroded: list[str] = []
        no_dsm: list[str] = []
        label_sets: dict[str, int] = {}
        for area in sorted(chosen):
            roles = chosen[area]
            tid = f"area{area}"
            if "image" not in roles:
                continue  # labels without an image (e.g. only the label zip present) cannot be used
            labels = [r for r in ("complete", "gts_for_participants") if r in roles]
            if not labels:
                unlabelled.append(tid)
                continue
            label_role = min(labels, key=_LABEL_PRIORITY.__getitem__)
            eroded = roles["eroded"].locator if "eroded" in roles else None
            if self.eroded and eroded is None:
                no_eroded.append(tid)
                continue
            if self.dsm is not None and "dsm" not in roles:
                no_dsm.append(tid)
                continue
            tiles.append(
                release_tile(
                    tid,
                    roles["image"].locator,
                    roles[label_role].locator,
                    eroded=eroded,
                    use_eroded=self.eroded,
                    bands=3,
                    palette=self.palette,
                    what="Vaihingen",
                    dsm=self.dsm,
                    dsm_locator=roles["dsm"].locator if self.dsm is not None else None,
                    gsd=VAIHINGEN_GSD,
                )
            )
            label_sets[label_role] = label_sets.get(label_role, 0) + 1
        if no_dsm:
            raise SegweakError(
                f"a DSM channel was requested but {len(no_dsm)} area(s) under {self.root} have no "
                f"dsm_09cm_matching_area{{N}}.tif ({short_list(no_dsm, 5)}); "
                f"add the dsm/ folder of {VAIHINGEN_ZIP} or drop the DSM option"
            )
        if self.eroded and no_eroded and not tiles:
            raise SegweakError(
                f"eroded labels were requested but no top_mosaic_09cm_area*_noBoundary.tif was found under "
                f"{self.root}; add {VAIHINGEN_ERODED_ZIP} or drop --eroded"
            )
        if not tiles:
            raise SegweakError(
                f"no Vaihingen area under {self.root} has a label ({len(unlabelled)} image(s) without one); "
                "add "
                f"{VAIHINGEN_GT_ZIP} or the extracted label files next to the images"
            )
        self._tiles, self._unlabelled, self._no_eroded, self._label_sets = (
            tiles,
            unlabelled,
            no_eroded,
            label_sets,
        )
        self._containers = scan.containers
        return list(tiles)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for store metadata (lists tiles and unlabelled areas)."""
        tiles = self.tiles()
        return {
            "kind": self.kind,
            "root": str(self.root.resolve()),
            "containers": list(self._containers),
            "keep_clutter": self.keep_clutter,
            "eroded": self.eroded,
            "tolerance": self.palette.tolerance,
            "band_order": self.band_order,
            "bands": self.bands(),
            "dsm": self.dsm.describe(VAIHINGEN_GSD) if self.dsm else None,
            "classes": list(self.classes.names),
            "palette": self.palette.to_dict(),
            "n_tiles": len(tiles),
            "tiles": [t.id for t in tiles],
            "label_sets": dict(sorted(self._label_sets.items())),
            "unlabelled": list(self._unlabelled),
            "without_eroded_label": list(self._no_eroded),
        }


# ---- folders ----------------------------------------------------------------------------------------


MASK_PLACEHOLDERS = ("dir", "parent", "stem", "ext", "root", "reldir")
"""Placeholders of a ``masks`` template (see :class:`FolderSource`)."""

_GLOB_CHARS = frozenset("*?[")


def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _glob_root(pattern: str) -> Path:
    """Return the root of a glob pattern's matches: its leading components without wildcards."""
    parts = PurePosixPath(Path(pattern).as_posix()).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if _is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _index_files(files: list[Path], root: Path, what: str) -> dict[str, Path]:
    """Map relative path without extension (posix) -> file."""
    out: dict[str, Path] = {}
    for path in files:
        key = path.relative_to(root).with_suffix("").as_posix()
        if key in out:
            raise SegweakError(
                f"{what} has two files for {key!r}: {out[key].name} and {path.name}; keep one of them"
            )
        out[key] = path
    return out


def _list_folder(root: Path, option: str) -> list[Path]:
    if not root.is_dir():
        raise SegweakError(f"{option} folder {root} does not exist or is not a folder")
    return [p for p in sorted(root.rglob("*")) if _is_image_file(p)]


def _check_mask_template(template: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise SegweakError(
            f"--masks template {template!r} is malformed ({exc}); e.g. '{{parent}}/masks/{{stem}}.png'"
        ) from None
    unknown = sorted({f for f in fields if f not in MASK_PLACEHOLDERS})
    if unknown or not fields:
        raise SegweakError(
            f"--masks template {template!r} "
            + (f"uses unknown placeholder(s) {', '.join(unknown)}" if unknown else "has no placeholder")
            + f"; available: {', '.join('{' + p + '}' for p in MASK_PLACEHOLDERS)}, "
            "e.g. '{parent}/masks/{stem}.png'"
        )


def mask_from_template(template: str, image: Path, root: Path) -> Path:
    """Return the mask path a ``masks`` template gives for ``image``.

    Args:
        template: E.g. ``"{parent}/masks/{stem}.png"``.
        image: Image path as found (``root/.../name.ext``).
        root: The images root (the folder, or a glob pattern's leading folders).

    Returns:
        The mask path (not checked for existence).
    """
    rel = image.relative_to(root)
    values = {
        "dir": image.parent.as_posix(),
        "parent": image.parent.parent.as_posix(),
        "stem": image.stem,
        "ext": image.suffix[1:],
        "root": root.as_posix(),
        "reldir": rel.parent.as_posix(),
    }
    return Path(template.format_map(values))


def _group_key(key: str, group_by: str) -> str:
    """Split group of an image with relative key ``a/b/c`` (no extension)."""
    rel = PurePosixPath(key)
    if group_by == "image":
        return key.replace("/", "__")
    if group_by == "parent":
        return rel.parent.as_posix()
    return rel.parts[0] if len(rel.parts) > 1 else "."  # "top"


class FolderSource:
    """Images and masks from folders, paired by relative path or by a path template.

    ``images`` selects the images: a folder (every jpg, jpeg, png, tif or tiff file below it) or a glob
    pattern (``data/*/images/*.jpg``; ``**`` matches any depth). Their *root* is the folder, or the
    pattern's leading folders without wildcards; tile ids are the paths relative to it without
    extension (``/`` replaced by ``__``).

    ``masks`` gives each image's mask:

    * a folder: the mask with the same relative path without extension (``images/a/b.jpg`` <->
      ``masks/a/b.png``). A mask without an image is ignored with a :class:`UserWarning` and listed in
      ``describe()["orphan_masks"]``: extra masks do no harm, while a missing one would silently shrink
      the data set;
    * a template with placeholders filled from the image path, for layouts where masks sit next to the
      images, e.g. ``Scene 1/images/x.jpg`` + ``Scene 1/masks/x.png``: ``{parent}/masks/{stem}.png``.
      Placeholders: ``{dir}`` the image's folder, ``{parent}`` the folder above it, ``{stem}`` its name
      without extension, ``{ext}`` its extension, ``{root}`` the images root, ``{reldir}`` the image's
      folder relative to the root.

    An existing folder is always read as a folder, even when its name contains ``*?[`` or ``{``.

    An image without a mask is an error that gives the numbers of images and masks found, the first
    unpaired images and the option that changes the rule. With ``allow_missing_masks`` such images
    are kept *unlabelled* instead: stored with all-ignore masks and listed in ``describe()
    ["unlabelled_tiles"]`` (``store.json`` ``unlabelled_tiles``), for images whose only labels are
    weak labels imported from a table (``segweak weak import``; ``segweak split --weak-labels``). At
    least one image must still have a mask (validation needs pixel labels), so a wrong ``--masks``
    cannot silently give a store without any. A file selected both as an image and as a mask is
    refused (a photo must never be read as its own label).

    Masks are colour images (``rgb`` palette; a palette-mode PNG is read through its own colour
    table) or single-band values (``index`` palette; a palette-mode PNG gives its indices).

    Args:
        images: Folder or glob pattern of images (8-bit; bands as ``band_order`` names them).
        masks: Folder of masks, or a template as described above.
        palette: A :class:`Palette` or the path of a palette YAML.
        group_by: Split groups: ``"image"`` (each image), ``"parent"`` (the image's folder relative to
            the root, ``"."`` at the top level) or ``"top"`` (the first folder under the root: the
            scene in a ``Scene N/images/x.jpg`` layout).
        tolerance: Overrides the palette's snapping tolerance.
        band_order: Names of the image bands, recorded in metadata (e.g. ``RGB``, ``IRRG``, ``RGBIR`` or
            ``R,G,B,NIR``). Three names accept 3-band images (or 4 with a constant alpha band); more
            names require exactly that many bands.
        allow_missing_masks: Keep images without a mask as unlabelled tiles instead of refusing them.
    """

    kind = "folder"

    def __init__(
        self,
        images: str | os.PathLike[str],
        masks: str | os.PathLike[str],
        palette: Palette | str | os.PathLike[str],
        group_by: str = "image",
        tolerance: float | None = None,
        band_order: str = "RGB",
        allow_missing_masks: bool = False,
    ) -> None:
        if group_by not in ("image", "parent", "top"):
            raise SegweakError(f"group_by (--group-by) must be 'image', 'parent' or 'top', got {group_by!r}")
        self.images = str(images)
        self.masks = str(masks)
        # An existing folder wins over the pattern/template reading of its name (e.g. "[2020] masks").
        self.pattern = _is_glob(self.images) and not Path(self.images).is_dir()
        self.template = "{" in self.masks and not Path(self.masks).is_dir()
        if self.template:
            _check_mask_template(self.masks)
        pal = palette if isinstance(palette, Palette) else Palette.from_yaml(palette)
        self.palette: Palette = pal.with_tolerance(tolerance)
        self.classes: ClassSet = self.palette.classes
        self.group_by = group_by
        self.band_order = band_order
        self.band_names = band_names(band_order)
        self.allow_missing_masks = bool(allow_missing_masks)
        self._tiles: list[Tile] | None = None
        self._orphans: list[str] = []
        self._unlabelled: list[str] = []

    def bands(self) -> list[dict[str, Any]]:
        """One ``store.json`` ``bands`` entry per image band."""
        return image_band_records(self.band_names, "image")

    def _images(self) -> tuple[Path, dict[str, Path]]:
        """Return the images root and ``{relative key: image path}``."""
        if self.pattern:
            root = _glob_root(self.images)
            files = sorted(
                {Path(p) for p in glob.glob(self.images, recursive=True) if _is_image_file(Path(p))}
            )
            if not files:
                raise SegweakError(
                    f"--images pattern {self.images!r} matches no {'/'.join(IMAGE_EXTENSIONS)} file; "
                    "check the pattern (quote it so the shell does not expand it)"
                )
        else:
            root = Path(self.images)
            files = _list_folder(root, "--images")
            if not files:
                raise SegweakError(f"--images folder {root} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        return root, _index_files(files, root, f"--images {self.images}")

    def _pair(self, root: Path, imgs: dict[str, Path]) -> dict[str, Path]:
        """``{key: mask path}`` for every image; raises on overlap or unpaired images."""
        if self.template:
            expected = {k: mask_from_template(self.masks, p, root) for k, p in imgs.items()}
            masks = {k: m for k, m in expected.items() if m.is_file()}
            mask_files = list(masks.values())
            n_masks = len(masks)
        else:
            mroot = Path(self.masks)
            mask_files = _list_folder(mroot, "--masks")
            index = _index_files(mask_files, mroot, f"--masks {self.masks}")
            masks = {k: index[k] for k in imgs if k in index}
            n_masks = len(index)
        image_real = {os.path.realpath(p): p for p in imgs.values()}
        both = sorted(
            str(image_real[r]) for r in {os.path.realpath(m) for m in mask_files} if r in image_real
        )
        if both:
            raise SegweakError(
                f"--images {self.images} and --masks {self.masks} select the same {len(both)} file(s) "
                f"({short_list(both)}); a file cannot be its own mask: point --masks at the labels, or give "
                "--images a glob pattern that matches only the images (e.g. 'data/*/images/*.jpg')"
            )
        missing = [k for k in imgs if k not in masks]
        if missing and self.allow_missing_masks:
            if len(missing) == len(imgs):
                raise SegweakError(
                    f"none of the {len(imgs)} image(s) found by --images {self.images} has a mask "
                    f"(--masks {self.masks}); --allow-missing-masks keeps images without a mask, but "
                    "validation needs some with pixel masks: check --masks"
                )
            self._unlabelled = sorted(missing)
            missing = []
        if missing:
            unpaired = [imgs[k].relative_to(root).as_posix() for k in missing]
            if self.template:
                k0 = missing[0]
                rule = (
                    f"the --masks template {self.masks!r} gives a path that does not exist (e.g. "
                    f"{imgs[k0]} -> {expected[k0]}); fix the template (placeholders "
                    f"{', '.join('{' + p + '}' for p in MASK_PLACEHOLDERS)}) or remove those images"
                )
            else:
                rule = (
                    "they are paired by relative path without extension; add the masks, remove those "
                    "images, or give --masks a template for masks stored elsewhere, e.g. "
                    "'{parent}/masks/{stem}.png' (docs/palette.md)"
                )
            raise SegweakError(
                f"{len(missing)} of {len(imgs)} image(s) found by --images {self.images} have no mask "
                f"({n_masks} mask file(s) found by --masks {self.masks}): unpaired "
                f"{short_list(unpaired)}; {rule}"
            )
        if not self.template:
            self._orphans = sorted(k for k in index if k not in imgs)
            if self._orphans:
                warnings.warn(
                    f"{len(self._orphans)} mask(s) in {self.masks} have no image and are ignored, "
                    f"e.g. {index[self._orphans[0]]}",
                    UserWarning,
                    stacklevel=3,
                )
        return masks

    def tiles(self) -> list[Tile]:
        """All image/mask pairs sorted by relative path (headers only)."""
        if self._tiles is not None:
            return list(self._tiles)
        root, imgs = self._images()
        masks = self._pair(root, imgs)
        n_bands = len(self.band_names)
        tiles: list[Tile] = []
        ids: dict[str, str] = {}
        for key in sorted(imgs):
            img, msk = imgs[key], masks.get(key)
            tid = key.replace("/", "__")
            if tid in ids:
                raise SegweakError(f"images {ids[tid]} and {key} map to the same tile id {tid!r}; rename one")
            ids[tid] = key
            ih = read_header(str(img))
            check_band_count(ih.count, str(img), "image", n_bands)
            if ih.dtype != "uint8":
                raise SegweakError(f"image {img} has data type {ih.dtype}; segweak reads 8-bit images only")
            if msk is not None:
                mh = read_header(str(msk))
                check_label_header(mh, str(msk), self.palette.mode)
                if mh.shape != ih.shape:
                    raise SegweakError(
                        f"mask {msk} is {mh.shape[1]}×{mh.shape[0]} px but image {img} is "
                        f"{ih.shape[1]}×{ih.shape[0]} "
                        "px; each mask must match its image"
                    )
            tiles.append(
                Tile(
                    id=tid,
                    group=_group_key(key, self.group_by),
                    shape=ih.shape,
                    image_path=str(img),
                    label_path=None if msk is None else str(msk),
                    georef=ih.georef,
                    palette=self.palette,
                    bands=n_bands,
                )
            )
        self._tiles = tiles
        return list(tiles)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for store metadata."""
        tiles = self.tiles()
        return {
            "kind": self.kind,
            "images": self.images if self.pattern else str(Path(self.images).resolve()),
            "masks": self.masks if self.template else str(Path(self.masks).resolve()),
            "pairing": "template" if self.template else "relative path",
            "group_by": self.group_by,
            "tolerance": self.palette.tolerance,
            "band_order": self.band_order,
            "bands": self.bands(),
            "classes": list(self.classes.names),
            "palette": self.palette.to_dict(),
            "n_tiles": len(tiles),
            "tiles": [t.id for t in tiles],
            "orphan_masks": list(self._orphans),
            "allow_missing_masks": self.allow_missing_masks,
            "unlabelled_tiles": [t.id for t in tiles if t.label_path is None],
        }


SOURCES: dict[str, type[Any]] = {
    "vaihingen": VaihingenSource,
    "potsdam": PotsdamSource,
    "folder": FolderSource,
}
"""Source kind -> reader class (the ``kind`` each writes into ``store.json``)."""


def open_source(kind: str, **kwargs: Any) -> Source:
    """Create a source by kind: ``"vaihingen"``, ``"potsdam"`` or ``"folder"``.

    Args:
        kind: Source kind.
        **kwargs: Passed to the source's constructor.
    """
    if kind not in SOURCES:
        raise SegweakError(f"unknown source kind {kind!r}; use {', '.join(repr(k) for k in SOURCES)}")
    return SOURCES[kind](**kwargs)
