"""Report and plot wording about the data set actually used, taken from the store's ``store.json``.

A folder dataset of RGB photos must not be described as "false-colour IRRG" with "official colours"
and "eroded boundaries": every phrase here is derived from the recorded source kind, bands, classes
and palette, with a neutral fallback when a store predates a key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ISPRS_KINDS = ("vaihingen", "potsdam")
"""Source kinds whose labels use the ISPRS colour code."""


@dataclass(frozen=True)
class DataWording:
    """Phrases describing a store's data.

    Attributes:
        image: How the first three channels are displayed, e.g. ``"false-colour IRRG image (IR, R, G
            shown as red, green, blue)"`` or ``"RGB image"``.
        colours: Whose colours label maps use, e.g. ``"the ISPRS colour code"``.
        ignore: What value 255 stands for, e.g. ``"eroded boundaries, clutter"``.
        channels: The model's input channels, e.g. ``"4 input channels: R, G, B, IR"`` plus how any
            non-image channel was made.
    """

    image: str
    colours: str
    ignore: str
    channels: str


def read_store_meta(store: str | Path | None) -> dict[str, Any] | None:
    """Return the ``store.json`` of a store directory, or None when it cannot be read."""
    if store is None:
        return None
    try:
        return json.loads((Path(store) / "store.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _band_names(meta: dict[str, Any]) -> list[str]:
    bands = meta.get("bands")
    if bands:
        return [str(b.get("name", f"band {i + 1}")) for i, b in enumerate(bands)]
    order = meta.get("band_order")
    if order:
        from segweak.data.sources import band_names

        try:
            return band_names(str(order))
        except Exception:  # a free-text band order from an older store: show it as it is
            return [str(order)]
    return []


def _image_phrase(names: list[str], channels: int) -> str:
    shown = names[:3]
    if shown == ["R", "G", "B"]:
        text = "RGB image"
    elif shown in (["IR", "R", "G"], ["NIR", "R", "G"]):
        text = "false-colour IRRG image (near-infrared shown as red)"
    elif len(shown) == 3:
        text = f"image (bands {', '.join(shown)} shown as red, green, blue)"
    else:
        text = "image (first three bands shown as red, green, blue)"
    hidden = names[3:] if len(names) > 3 else [f"band {i + 1}" for i in range(3, channels)]
    if hidden:
        text += f"; {', '.join(hidden)} not shown"
    return text


def _ignore_phrase(meta: dict[str, Any], kind: str) -> str:
    describe = (meta.get("source") or {}).get("describe") or {}
    classes = meta.get("classes") or []
    if kind in ISPRS_KINDS:
        parts = []
        if describe.get("eroded"):
            parts.append("eroded class boundaries")
        if "clutter" not in classes:
            parts.append("clutter")
        return ", ".join(parts) or "black (boundary) pixels, if any"
    palette = meta.get("palette") or {}
    ignore = palette.get("ignore") or []
    if not ignore:
        return "none: the palette ignores nothing"
    values = ", ".join(str(list(v)) if isinstance(v, list) else str(v) for v in ignore)
    return f"the palette's ignore {'colours' if palette.get('mode') == 'rgb' else 'values'} {values}"


def _channels_phrase(meta: dict[str, Any], names: list[str]) -> str:
    channels = int(meta.get("channels") or len(names) or 0)
    listed = ", ".join(names) if names else "?"
    text = f"{channels} input channel{'s' if channels != 1 else ''}: {listed}"
    for band in meta.get("bands") or []:
        norm = band.get("normalisation")
        if isinstance(norm, dict) and norm.get("meaning"):
            text += f" ({band.get('name')}: {norm['meaning']})"
    if channels != 3:
        text += (
            f"; pretrained encoders have their 3-channel first convolution adapted to {channels} "
            "channels (kernels repeated cyclically and scaled by 3/C, as timm and smp do)"
        )
    return text


def data_wording(meta: dict[str, Any] | None) -> DataWording:
    """Return the wording for a store's metadata (``store.json``); neutral phrases when ``meta`` is None."""
    if not meta:
        return DataWording(
            image="image (first three bands shown as red, green, blue)",
            colours="the palette's display colours",
            ignore="ignored pixels",
            channels="input channels unknown (store not found)",
        )
    kind = str((meta.get("source") or {}).get("kind") or "")
    names = _band_names(meta)
    channels = int(meta.get("channels") or len(names) or 3)
    return DataWording(
        image=_image_phrase(names, channels),
        colours="the ISPRS colour code" if kind in ISPRS_KINDS else "the palette's display colours",
        ignore=_ignore_phrase(meta, kind),
        channels=_channels_phrase(meta, names),
    )
