"""Summary of a prepared store and of one of its splits (``segweak info``).

The summary reads the store, its split manifests and its imported weak-label sets, so it lives above
all three (:mod:`segweak.data.store`, :mod:`segweak.data.splits`, :mod:`segweak.data.weak_tables`) instead
of inside the store reader, which those modules import.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from segweak.data.splits import load_split
from segweak.data.store import Store, open_store
from segweak.data.weak_tables import summary as weak_summary
from segweak.weak.labels import presence, proportions


def info(
    store_path: Store | str | os.PathLike[str], split: str | None = None, verify: bool = False
) -> dict[str, Any]:
    """Summary of a store (and optionally one split) as a JSON-ready dict with stable keys.

    With ``verify``, every file is reread and checked against its recorded SHA-256 first
    (:meth:`Store.verify`); the result is under ``verified`` (``{file: "ok"}``).

    Keys (documented in ``docs/store.md``): ``path, format_version, tool_version, created, source,
    classes, num_classes, patch, stride, channels, band_order, bands, n_tiles, n_patches, n_tiles_labelled,
    n_tiles_unlabelled, n_patches_labelled, n_patches_unlabelled, unlabelled_tiles, n_valid_pixels,
    class_pixel_fraction {class: f}, image_stats, splits [names], weak_labels [{name, kind, file, sha256,
    bags, patches}]`` and, with ``split``, ``split``:
    ``{name, by, seed, fractions, presence_threshold, excluded, subsets: {subset: {patches,
    patch_fraction, pixels, pixel_fraction, mean_weak {class: f}, presence_rate {class: f}}}}``.
    """
    st = open_store(store_path)
    verified = st.verify() if verify else None
    m = st.meta
    total_valid = int(st.valid.sum())
    per_class = st.counts.sum(axis=0)
    # Images kept without a mask (prepare folder --allow-missing-masks) hold patches that only an
    # imported weak-label set can train on; a store's patch count alone hides how many those are.
    unlabelled_tiles = list(m.get("unlabelled_tiles") or [])
    n_unlabelled = int(st.unlabelled.sum())
    out: dict[str, Any] = {
        "path": str(st.path),
        "format_version": m["format_version"],
        "tool_version": m.get("tool_version"),
        "created": m.get("created"),
        "source": m.get("source", {}).get("kind"),
        "classes": st.classes,
        "num_classes": st.num_classes,
        "patch": m["patch"],
        "stride": m["stride"],
        "channels": m.get("channels"),
        "band_order": m.get("band_order"),
        "bands": m.get("bands"),
        "n_tiles": m["n_tiles"],
        "n_patches": len(st),
        "n_tiles_labelled": m["n_tiles"] - len(unlabelled_tiles),
        "n_tiles_unlabelled": len(unlabelled_tiles),
        "n_patches_labelled": len(st) - n_unlabelled,
        "n_patches_unlabelled": n_unlabelled,
        "unlabelled_tiles": unlabelled_tiles,
        "n_valid_pixels": total_valid,
        "class_pixel_fraction": {
            c: (float(per_class[i] / total_valid) if total_valid else None) for i, c in enumerate(st.classes)
        },
        "image_stats": {"mean": m["image_stats"]["mean"], "std": m["image_stats"]["std"]},
        "splits": st.split_names(),
        "weak_labels": weak_summary(st),
        "eroded_masks": st.has_eroded_masks,
        "verifiable": bool(m.get("files")),
    }
    if verified is not None:
        out["verified"] = verified
    if split is not None:
        man = load_split(st, split)
        subsets: dict[str, Any] = {}
        for name, idx in man["subsets"].items():
            idx = np.asarray(idx, dtype=np.int64)
            props = proportions(st.counts[idx]) if idx.size else np.zeros((0, st.num_classes))
            pres = presence(props, man.get("presence_threshold", 0.0))
            ach = man["achieved"][name]
            subsets[name] = {
                "patches": ach["patches"],
                "patch_fraction": ach["patch_fraction"],
                "pixels": ach["pixels"],
                "pixel_fraction": ach["pixel_fraction"],
                "mean_weak": {
                    c: (float(props[:, i].mean()) if idx.size else None) for i, c in enumerate(st.classes)
                },
                "presence_rate": {
                    c: (float(pres[:, i].mean()) if idx.size else None) for i, c in enumerate(st.classes)
                },
            }
        out["split"] = {
            "name": man["name"],
            "by": man["by"],
            "seed": man["seed"],
            "fractions": man["fractions"],
            "presence_threshold": man.get("presence_threshold", 0.0),
            "excluded": {k: len(v) for k, v in man.get("excluded", {}).items()},
            "subsets": subsets,
        }
    return out
