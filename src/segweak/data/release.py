"""Official releases (ISPRS Vaihingen, Potsdam): finding their files in folders and zips, building tiles.

Both readers (:class:`~segweak.data.sources.VaihingenSource`, :class:`~segweak.data.potsdam.PotsdamSource`)
scan a root with :func:`scan_release` and turn each tile's files into a :class:`~segweak.data.tiles.Tile`
with :func:`release_tile`, which checks the headers (bands, 8-bit, sizes of labels and DSM) first.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from segweak.data.dsm import DsmChannel, DsmNormalisation
from segweak.data.palette import Palette
from segweak.data.raster import (
    RasterHeader,
    check_image_header,
    check_label_header,
    check_same_size,
    read_header,
    zip_locator,
)
from segweak.data.tiles import Tile
from segweak.errors import SegweakError


@dataclass
class _Entry:
    locator: str
    origin: str  # "folder" or the zip name
    kind: str  # the role the classifier gave the file, e.g. "image", "complete", "eroded", "dsm"


Classifier = Callable[[tuple[str, ...]], "tuple[Any, str] | None"]
"""Maps a file's path components to ``(tile key, role)``, or None when the file is not of the release."""


@dataclass
class ReleaseScan:
    """Files of an official release found under a root, one per (tile key, role).

    Attributes:
        files: ``{key: {role: entry}}``; when several copies exist, extracted ones win over zipped ones,
            then zips in name order.
        containers: The root folder (when it held release files) and every zip that did.
        nested_zips: Zips that hold further zips (e.g. an unextracted ``Potsdam.zip``).
    """

    files: dict[Any, dict[str, _Entry]]
    containers: list[str]
    nested_zips: list[str]


def scan_release(root: Path, classify: Classifier, what: str) -> ReleaseScan:
    """Find an official release's files under ``root`` (a folder, or one zip), reading zips in place.

    Folders are searched recursively; zips (in the folder or given as ``root``) are listed, never
    extracted, and their members are addressed by :func:`zip_locator`.

    Args:
        root: Folder or zip.
        classify: Gives each file's ``(key, role)`` from its path components (relative to the folder or
            inside the zip), or None to skip it.
        what: Data set name for messages (e.g. ``"Vaihingen"``).

    Raises:
        SegweakError: When ``root`` does not exist, is a file but not a zip, or a zip is unreadable.
    """
    if not root.exists():
        raise SegweakError(
            f"{what} root {root} does not exist; pass the folder holding the official zips "
            "or their extracted contents"
        )
    found: dict[Any, dict[str, list[_Entry]]] = {}
    containers: list[str] = []
    nested: list[str] = []

    def add(key_role: tuple[Any, str] | None, make: Callable[[str], _Entry]) -> None:
        if key_role is not None:
            key, role = key_role
            found.setdefault(key, {}).setdefault(role, []).append(make(role))

    zips: list[Path] = []
    if root.is_file():
        if root.suffix.lower() != ".zip":
            raise SegweakError(
                f"{what} root {root} is a file but not a zip; pass a folder or an official zip"
            )
        zips = [root]
    else:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() == ".zip":
                zips.append(path)
            elif path.is_file():
                add(
                    classify(path.relative_to(root).parts),
                    lambda role, p=path: _Entry(str(p), "folder", role),
                )
        if found:
            containers.append(str(root))
    for z in zips:
        try:
            with zipfile.ZipFile(z) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise SegweakError(
                f"{z} is not a readable zip archive ({exc}); re-download it "
                "(segweak download resumes partial files)"
            ) from None
        n_before = sum(len(v) for r in found.values() for v in r.values())
        for name in names:
            add(
                classify(PurePosixPath(name).parts),
                lambda role, n=name, zz=z: _Entry(zip_locator(zz, n), zz.name, role),
            )
        if sum(len(v) for r in found.values() for v in r.values()) > n_before:
            containers.append(str(z))
        if any(n.lower().endswith(".zip") for n in names):
            nested.append(str(z))

    chosen: dict[Any, dict[str, _Entry]] = {}
    for key, roles in found.items():
        sel: dict[str, _Entry] = {}
        for role, entries in roles.items():
            # Extracted copies first (faster to read), then zips in name order.
            entries.sort(key=lambda e: (e.origin != "folder", e.origin, e.locator))
            sel[role] = entries[0]
        chosen[key] = sel
    return ReleaseScan(chosen, containers, nested)


def nested_zip_hint(scan: ReleaseScan) -> str:
    """Advice for a root whose release files sit in zips inside zips ('' when there are none)."""
    if not scan.nested_zips:
        return ""
    return (
        f" ({', '.join(Path(z).name for z in scan.nested_zips[:3])} hold(s) further zips: extract that outer "
        "archive once; segweak reads the inner zips in place)"
    )


def dsm_channel(
    locator: str, image: RasterHeader, image_locator: str, dsm: DsmNormalisation, gsd: float
) -> DsmChannel:
    """Check a tile's DSM header against its image and return the channel that reads it."""
    header = read_header(locator)
    if header.count != 1:
        raise SegweakError(f"DSM {locator} has {header.count} bands; a DSM has one band of elevations")
    check_same_size(header, locator, image, image_locator, "DSM")
    return DsmChannel(locator, dsm, gsd)


def release_tile(
    tile_id: str,
    image: str,
    label: str,
    *,
    eroded: str | None,
    use_eroded: bool,
    bands: int,
    palette: Palette,
    what: str,
    dsm: DsmNormalisation | None = None,
    dsm_locator: str | None = None,
    gsd: float = 0.0,
) -> Tile:
    """Check one release tile's headers and return its :class:`~segweak.data.tiles.Tile` (its own group).

    Args:
        tile_id: Tile id (also its split group).
        image: Locator of the image.
        label: Locator of the full colour label (or the eroded one when there is no full label).
        eroded: Locator of the eroded (``_noBoundary``) label, if any; checked like ``label``.
        use_eroded: :meth:`~segweak.data.tiles.Tile.read` decodes the eroded label.
        bands: Image bands (3 also allows a constant alpha 4th band).
        palette: Colour palette of the labels.
        what: Data set name for messages (e.g. ``"Vaihingen"``).
        dsm: DSM channel rule; with it ``dsm_locator`` is read as an extra channel.
        dsm_locator: Locator of the tile's DSM.
        gsd: Ground sampling distance in metres (for the DSM rule).

    Raises:
        SegweakError: A header that breaks the release's contract, naming the file.
    """
    ih = read_header(image)
    check_image_header(ih, image, bands, what)
    for lab in dict.fromkeys([label] + ([eroded] if eroded else [])):
        lh = read_header(lab)
        check_label_header(lh, lab, "rgb")
        check_same_size(lh, lab, ih, image, "label")
    extra: tuple[Any, ...] = ()
    if dsm is not None:
        if dsm_locator is None:
            raise SegweakError(f"tile {tile_id} has no DSM file")
        extra = (dsm_channel(dsm_locator, ih, image, dsm, gsd),)
    return Tile(
        id=tile_id,
        group=tile_id,
        shape=ih.shape,
        image_path=image,
        label_path=label,
        georef=ih.georef,
        eroded_label_path=eroded,
        palette=palette,
        use_eroded=use_eroded,
        bands=bands,
        extra=extra,
    )
