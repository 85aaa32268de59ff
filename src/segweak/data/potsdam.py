"""Reader of the ISPRS 2D semantic labelling data set Potsdam (zips or extracted folders).

The release (extracted from ``Potsdam.zip``) is a folder of zips, each holding one product for the 38
tiles of 6000×6000 px at 5 cm, named by their grid position ``{row}_{col}`` (e.g. ``2_10``):

=================================  ==========================================  ====================
archive (or extracted folder)      file                                        content
=================================  ==========================================  ====================
``2_Ortho_RGB.zip``                ``top_potsdam_{row}_{col}_RGB.tif``         R, G, B (uint8)
``3_Ortho_IRRG.zip``               ``top_potsdam_{row}_{col}_IRRG.tif``        IR, R, G (uint8)
``4_Ortho_RGBIR.zip``              ``top_potsdam_{row}_{col}_RGBIR.tif``       R, G, B, IR (uint8)
``5_Labels_all.zip``               ``top_potsdam_{row}_{col}_label.tif``       colour labels
``5_Labels_all_noBoundary.zip``    ``top_potsdam_{row}_{col}_label_noBoundary.tif``  eroded labels
``1_DSM.zip``                      ``dsm_potsdam_{rr}_{cc}.tif`` (zero-padded)  float32 DSM, metres
=================================  ==========================================  ====================

``5_Labels_for_participants*.zip`` hold the same labels for the 24 training tiles and are read too.
Files are found recursively by name in folders and zips (read in place, never extracted) by
:func:`~segweak.data.release.scan_release`; an extracted copy wins over a zipped one. The colour code
is Vaihingen's (:func:`~segweak.data.palette.vaihingen_palette`).
The DSM normalisation JPEGs of ``1_DSM_normalisation.zip`` are not read: the DSM channel is computed
from ``1_DSM`` by :mod:`segweak.data.dsm`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from segweak.data.dsm import DsmNormalisation
from segweak.data.palette import DEFAULT_TOLERANCE, ClassSet, Palette, vaihingen_palette
from segweak.data.release import nested_zip_hint, release_tile, scan_release
from segweak.data.tiles import Tile, dsm_band_record, image_band_records
from segweak.errors import SegweakError, short_list

POTSDAM_GSD = 0.05
"""Ground sampling distance of the Potsdam orthophotos and DSMs in metres."""

POTSDAM_IMAGERY: dict[str, tuple[str, list[str]]] = {
    "RGB": ("2_Ortho_RGB", ["R", "G", "B"]),
    "IRRG": ("3_Ortho_IRRG", ["IR", "R", "G"]),
    "RGBIR": ("4_Ortho_RGBIR", ["R", "G", "B", "IR"]),
}
"""Image product -> (release folder/zip name, band names in file order)."""

_TOP_RE = re.compile(r"^top_potsdam_(\d+)_(\d+)_(RGBIR|RGB|IRRG|label_noBoundary|label)\.tif$", re.IGNORECASE)
_DSM_RE = re.compile(r"^dsm_potsdam_(\d+)_(\d+)\.tif$", re.IGNORECASE)
_ROLES = {"rgb": "RGB", "irrg": "IRRG", "rgbir": "RGBIR", "label": "label", "label_noboundary": "eroded"}


def _classify(parts: tuple[str, ...]) -> tuple[tuple[int, int], str] | None:
    """Tile ``(row, col)`` and role (``RGB``, ``IRRG``, ``RGBIR``, ``label``, ``eroded``, ``dsm``)."""
    m = _TOP_RE.match(parts[-1])
    if m:
        return (int(m.group(1)), int(m.group(2))), _ROLES[m.group(3).lower()]
    m = _DSM_RE.match(parts[-1])
    if m:
        return (int(m.group(1)), int(m.group(2))), "dsm"
    return None


class PotsdamSource:
    """ISPRS Potsdam: one image product, the colour labels and optionally the DSM (see the module docstring).

    Args:
        root: Folder holding the release zips and/or their extracted contents, or one zip.
        imagery: Image product: ``RGB``, ``IRRG`` or ``RGBIR`` (4 bands).
        keep_clutter: Keep clutter as a 6th class (otherwise ignore).
        eroded: Read the eroded (``_label_noBoundary``) labels, whose black boundary bands are ignored.
        tolerance: Colour snapping tolerance (see :mod:`segweak.data.palette`).
        dsm: Append the DSM (``1_DSM``) as an extra channel mapped to 0..255 by this rule.
    """

    kind = "potsdam"

    def __init__(
        self,
        root: str | os.PathLike[str],
        imagery: str = "RGBIR",
        keep_clutter: bool = False,
        eroded: bool = False,
        tolerance: float | None = None,
        dsm: DsmNormalisation | None = None,
    ) -> None:
        key = imagery.upper()
        if key not in POTSDAM_IMAGERY:
            raise SegweakError(
                f"Potsdam imagery {imagery!r} is not a product of the release; use one of "
                f"{', '.join(POTSDAM_IMAGERY)}"
            )
        self.root = Path(root)
        self.imagery = key
        self.keep_clutter = keep_clutter
        self.eroded = eroded
        self.dsm = dsm
        self.palette: Palette = vaihingen_palette(
            keep_clutter, DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
        )
        self.classes: ClassSet = self.palette.classes
        self._tiles: list[Tile] | None = None
        self._containers: list[str] = []
        self._unlabelled: list[str] = []

    @property
    def band_order(self) -> str:
        """The product name, plus ``+nDSM`` / ``+DSM`` with a DSM channel."""
        return self.imagery + (f"+{self.dsm.channel_name}" if self.dsm else "")

    def bands(self) -> list[dict[str, Any]]:
        """One ``store.json`` ``bands`` entry per channel: name, source and normalisation."""
        folder, names = POTSDAM_IMAGERY[self.imagery]
        out = image_band_records(names, f"{folder}/top_potsdam_{{row}}_{{col}}_{self.imagery}.tif")
        if self.dsm is not None:
            out.append(dsm_band_record(self.dsm, "1_DSM/dsm_potsdam_{row}_{col}.tif", POTSDAM_GSD))
        return out

    def tiles(self) -> list[Tile]:
        """All tiles with the chosen image product and a label, sorted by (row, col) (headers only)."""
        if self._tiles is not None:
            return list(self._tiles)
        scan = scan_release(self.root, _classify, "Potsdam")
        files = scan.files
        with_images = [k for k, roles in files.items() if self.imagery in roles]
        if not with_images:
            other = sorted({r for roles in files.values() for r in roles if r in POTSDAM_IMAGERY})
            hint = (
                f"; found {', '.join(other)} tiles instead: choose one with --imagery (dataset.imagery)"
                if other
                else f"; add {POTSDAM_IMAGERY[self.imagery][0]}.zip or its extracted folder"
            )
            raise SegweakError(
                f"no Potsdam top_potsdam_{{row}}_{{col}}_{self.imagery}.tif images found under "
                f"{self.root}{hint}{nested_zip_hint(scan)}"
            )
        label_role = "eroded" if self.eroded else "label"
        tiles: list[Tile] = []
        unlabelled: list[str] = []
        no_dsm: list[str] = []
        n_bands = len(POTSDAM_IMAGERY[self.imagery][1])
        for row, col in sorted(with_images):
            roles = files[(row, col)]
            tid = f"potsdam_{row}_{col}"
            if label_role not in roles:
                unlabelled.append(tid)
                continue
            if self.dsm is not None and "dsm" not in roles:
                no_dsm.append(tid)
                continue
            tiles.append(
                release_tile(
                    tid,
                    roles[self.imagery].locator,
                    # Without the full label, the eroded one is the tile's only label.
                    roles["label"].locator if "label" in roles else roles[label_role].locator,
                    eroded=roles["eroded"].locator if "eroded" in roles else None,
                    use_eroded=self.eroded,
                    bands=n_bands,
                    palette=self.palette,
                    what="Potsdam",
                    dsm=self.dsm,
                    dsm_locator=roles["dsm"].locator if self.dsm is not None else None,
                    gsd=POTSDAM_GSD,
                )
            )
        if no_dsm:
            raise SegweakError(
                f"a DSM channel was requested but {len(no_dsm)} tile(s) under {self.root} have no "
                f"dsm_potsdam_{{row}}_{{col}}.tif ({short_list(no_dsm, 5)}); add 1_DSM.zip or drop the "
                "DSM option"
            )
        if not tiles:
            which = "_label_noBoundary.tif (5_Labels_all_noBoundary.zip)" if self.eroded else "_label.tif"
            raise SegweakError(
                f"no Potsdam tile under {self.root} has a {which} label ({len(unlabelled)} image(s) without "
                "one); add 5_Labels_all.zip (and 5_Labels_all_noBoundary.zip for --eroded) or its extracted "
                "folder"
            )
        self._tiles, self._unlabelled, self._containers = tiles, unlabelled, scan.containers
        return list(tiles)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for store metadata."""
        tiles = self.tiles()
        return {
            "kind": self.kind,
            "root": str(self.root.resolve()),
            "containers": list(self._containers),
            "imagery": self.imagery,
            "keep_clutter": self.keep_clutter,
            "eroded": self.eroded,
            "tolerance": self.palette.tolerance,
            "band_order": self.band_order,
            "bands": self.bands(),
            "dsm": self.dsm.describe(POTSDAM_GSD) if self.dsm else None,
            "classes": list(self.classes.names),
            "palette": self.palette.to_dict(),
            "n_tiles": len(tiles),
            "tiles": [t.id for t in tiles],
            "unlabelled": list(self._unlabelled),
        }
