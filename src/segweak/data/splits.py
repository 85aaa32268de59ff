"""Split a prepared store into the ``strong``, ``weak`` and ``val`` subsets.

* ``strong``: patches whose pixel masks are used for training;
* ``weak``: patches used only through their weak labels (class proportions);
* ``val``: held-out patches with pixel masks for validation / testing.

Splits are deterministic: the same store, options and seed give a byte-identical manifest
``STORE/splits/NAME.json`` (sorted indices, key-sorted JSON, ``np.random.default_rng(seed)``).
Patches without a single valid pixel carry no label at all; they are excluded and listed under
``excluded.no_valid_pixels``.

``by="patch"`` assigns patches independently (largest-remainder rounding of the target fractions).
``by="group"`` keeps every group (by default a source image) in one subset, so neighbouring,
overlapping patches of one tile cannot leak between training and validation: groups are shuffled
and assigned greedily to the subset furthest below its target patch count. The achieved fractions
are reported in the manifest, in patches and in valid pixels, because with few groups they can be
far from the targets.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from segweak.data.store import Store, open_store
from segweak.errors import SegweakError
from segweak.io import atomic_write_json
from segweak.weak.labels import presence as _presence_check

FORMAT_VERSION = 1
SUBSETS = ("strong", "weak", "val")
OPTIONAL_SUBSETS = ("test",)
"""Subsets a manifest may have besides :data:`SUBSETS`: ``test`` is held out of training and of model
selection, and evaluated once on the selected checkpoint (manifests without it work as before)."""
BY_CHOICES = ("patch", "group")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(strong, weak, val)`` fractions.

    Raises:
        SegweakError: Unless there are exactly 3 finite non-negative numbers summing to 1 (±1e-6).
    """
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError) as exc:
        raise SegweakError(f"--fractions must be 3 numbers (strong weak val), got {fractions!r}") from exc
    if len(fr) != 3:
        raise SegweakError(
            f"--fractions needs exactly 3 numbers (strong weak val), got {len(fr)}: {fr}; e.g. 0.1 0.7 0.2"
        )
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise SegweakError(f"--fractions must be non-negative numbers, got {fr}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise SegweakError(f"--fractions must sum to 1, got {fr} (sum {sum(fr):.6g}); e.g. 0.1 0.7 0.2")
    return fr[0], fr[1], fr[2]


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name or ""):
        raise SegweakError(
            f"split name {name!r} is invalid: use letters, digits, '_', '-', '.' (not starting with '.')"
        )


def _allocate(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Integer subset sizes summing to ``n`` (largest remainder), each positive fraction >= 1 patch."""
    exact = [f * n for f in fractions]
    sizes = [math.floor(x) for x in exact]
    rest = n - sum(sizes)
    # Largest remainder first; ties broken by subset order so the result is deterministic.
    order = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[:rest]:
        sizes[i] += 1
    for i in range(3):
        if fractions[i] > 0 and sizes[i] == 0:
            donor = max(range(3), key=lambda j: (sizes[j], -j))
            if sizes[donor] <= 1:
                raise SegweakError(
                    f"only {n} patches with valid pixels: too few for the fractions {list(fractions)}"
                )
            sizes[donor] -= 1
            sizes[i] += 1
    return sizes


def _split_by_patch(
    eligible: np.ndarray, fractions: tuple[float, float, float], rng: np.random.Generator
) -> list[np.ndarray]:
    sizes = _allocate(len(eligible), fractions)
    perm = rng.permutation(eligible)
    bounds = np.cumsum([0, *sizes])
    return [np.sort(perm[bounds[i] : bounds[i + 1]]) for i in range(3)]


def _split_by_group(
    eligible: np.ndarray, groups: list[str], fractions: tuple[float, float, float], rng: np.random.Generator
) -> list[np.ndarray]:
    patch_groups = np.asarray([groups[i] for i in eligible])
    names = sorted(set(patch_groups.tolist()))
    positive = [i for i in range(3) if fractions[i] > 0]
    if len(names) < len(positive):
        raise SegweakError(
            f"--by group needs at least {len(positive)} groups (one per non-empty subset) but the store "
            f"has {len(names)} group(s) with valid pixels ({', '.join(names)}); use --by patch or a "
            "source with more images"
        )
    order = [names[i] for i in rng.permutation(len(names))]
    sizes = {g: int((patch_groups == g).sum()) for g in names}
    n = len(eligible)
    target = [f * n for f in fractions]
    assigned: dict[str, int] = {}
    filled = [0, 0, 0]
    # Seed every positive subset with one group (largest target first), then greedy by deficit.
    seeds = sorted(positive, key=lambda i: (-target[i], i))
    for g, sub in zip(order, seeds, strict=False):
        assigned[g] = sub
        filled[sub] += sizes[g]
    for g in order[len(seeds) :]:
        sub = max(positive, key=lambda i: (target[i] - filled[i], -i))
        assigned[g] = sub
        filled[sub] += sizes[g]
    return [
        np.sort(eligible[np.isin(patch_groups, [g for g, s in assigned.items() if s == i])]) for i in range(3)
    ]


def make_split(
    store: Store | str | os.PathLike[str],
    name: str = "default",
    fractions: Sequence[float] = (0.1, 0.7, 0.2),
    by: str = "patch",
    seed: int = 0,
    presence_threshold: float = 0.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Create the split manifest ``STORE/splits/NAME.json``.

    Args:
        store: A :class:`~segweak.data.store.Store` or its path.
        name: Split name (file name without ``.json``).
        fractions: Target ``(strong, weak, val)`` fractions of the patches with valid pixels.
        by: ``"patch"`` (independent patches) or ``"group"`` (whole groups to one subset).
        seed: Seed for ``np.random.default_rng``.
        presence_threshold: Stored in the manifest; a class is present in a patch when its
            proportion exceeds it (used by the dataset's ``presence`` vector).
        overwrite: Replace an existing manifest of that name.

    Returns:
        The manifest dict (format in ``docs/store.md``).

    Raises:
        SegweakError: Bad fractions / ``by`` / name / threshold, existing split without
            ``overwrite``, or too few patches or groups for the subsets.
    """
    st = open_store(store)
    _check_name(name)
    fr = check_fractions(fractions)
    if by not in BY_CHOICES:
        raise SegweakError(f"--by must be one of {', '.join(BY_CHOICES)}, got {by!r}")
    _presence_check(np.zeros((1, 1)), presence_threshold)  # validates the threshold range
    path = st.path / "splits" / f"{name}.json"
    if path.exists() and not overwrite:
        raise SegweakError(
            f"split {name!r} already exists ({path}); choose another --name or pass --overwrite"
        )

    all_idx = np.arange(len(st), dtype=np.int64)
    no_valid = all_idx[st.valid == 0]
    eligible = all_idx[st.valid > 0]
    if len(eligible) == 0:
        raise SegweakError(f"store {st.path} has no patch with valid (non-ignore) pixels; nothing to split")
    rng = np.random.default_rng(int(seed))
    if by == "patch":
        parts = _split_by_patch(eligible, fr, rng)
    else:
        parts = _split_by_group(eligible, st.groups, fr, rng)

    n_el = len(eligible)
    px_total = int(st.valid[eligible].sum())
    achieved = {}
    for sub, idx in zip(SUBSETS, parts, strict=True):
        px = int(st.valid[idx].sum())
        achieved[sub] = {
            "patches": len(idx),
            "patch_fraction": round(len(idx) / n_el, 6),
            "pixels": px,
            "pixel_fraction": round(px / px_total, 6) if px_total else 0.0,
        }
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "by": by,
        "seed": int(seed),
        "fractions": {s: f for s, f in zip(SUBSETS, fr, strict=True)},
        "presence_threshold": float(presence_threshold),
        "n_patches": len(st),
        "subsets": {s: [int(i) for i in idx] for s, idx in zip(SUBSETS, parts, strict=True)},
        "excluded": {"no_valid_pixels": [int(i) for i in no_valid]},
        "achieved": achieved,
    }
    if by == "group":
        manifest["groups"] = {
            s: sorted({st.groups[i] for i in idx}) for s, idx in zip(SUBSETS, parts, strict=True)
        }
    atomic_write_json(path, manifest)
    return manifest


FRACTION_TOLERANCE = 0.05
"""Largest gap between a target and an achieved patch fraction that passes without a warning."""


def fraction_warning(manifest: dict[str, Any], tolerance: float = FRACTION_TOLERANCE) -> str | None:
    """Say when a split's achieved patch fractions stray from its targets (typical of few groups).

    Args:
        manifest: A split manifest (``make_split`` / ``load_split``).
        tolerance: Largest absolute gap, per subset, that is accepted silently.

    Returns:
        A one-line warning naming the worst subset, or ``None`` when every subset is within tolerance.
    """
    gaps = {
        sub: manifest["achieved"][sub]["patch_fraction"] - manifest["fractions"][sub]
        for sub in SUBSETS
        if sub in manifest["achieved"]
    }
    if not gaps:
        return None
    worst = max(gaps, key=lambda sub: abs(gaps[sub]))
    if abs(gaps[worst]) <= tolerance:
        return None
    hint = ""
    if manifest.get("by") == "group":
        n_groups = sum(len(v) for v in (manifest.get("groups") or {}).values()) or None
        hint = (
            f" ({n_groups} groups are too few to split finely)" if n_groups else " (whole groups are split)"
        ) + "; use --by patch or data with more groups for closer fractions"
    return (
        f"split {manifest['name']!r}: {worst} holds {manifest['achieved'][worst]['patch_fraction']:.3f} of "
        f"the patches, target {manifest['fractions'][worst]:.3f}{hint}"
    )


def load_split(store: Store | str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Read and validate the split manifest ``STORE/splits/NAME.json``.

    Raises:
        SegweakError: When the split does not exist (the message lists the existing ones), is not
            valid JSON, has another format version, or refers to patches the store does not have.
    """
    st = open_store(store)
    path = st.path / "splits" / f"{name}.json"
    if not path.is_file():
        existing = st.split_names()
        hint = f"existing splits: {', '.join(existing)}" if existing else "the store has no splits yet"
        raise SegweakError(
            f"split {name!r} not found in {st.path} ({hint}); "
            f"create it with `segweak split {st.path} --name {name}`"
        )
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SegweakError(f"cannot read split manifest {path}: {exc}") from exc
    if man.get("format_version") != FORMAT_VERSION:
        raise SegweakError(
            f"{path} has format_version {man.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    subsets = man.get("subsets", {})
    if not set(SUBSETS) <= set(subsets) <= set(SUBSETS + OPTIONAL_SUBSETS):
        raise SegweakError(
            f"{path}: 'subsets' must have the keys {', '.join(SUBSETS)} and optionally "
            f"{', '.join(OPTIONAL_SUBSETS)}; re-run `segweak split`"
        )
    n = len(st)
    for sub, idx in subsets.items():
        if idx and (min(idx) < 0 or max(idx) >= n):
            raise SegweakError(
                f"{path}: subset {sub!r} refers to patches outside 0..{n - 1}; the store was re-prepared, "
                "re-run `segweak split`"
            )
    if man.get("n_patches", n) != n:
        raise SegweakError(
            f"{path} was made for a store of {man.get('n_patches')} patches but this store has {n}; "
            "re-run `segweak split`"
        )
    return man
