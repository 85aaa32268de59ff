"""Split a prepared store into the ``strong``, ``weak``, ``val`` and optionally ``test`` subsets.

* ``strong``: patches whose pixel masks are used for training;
* ``weak``: patches used only through their weak labels (class proportions);
* ``val``: held-out patches with pixel masks for validation and model selection;
* ``test`` (optional): patches held out of training *and* of model selection, evaluated once on the
  selected checkpoint. Given by a fourth fraction (``strong, weak, val, test``) or by whole groups
  (``test="official"``: the 17 ISPRS Vaihingen benchmark test areas; or a list of group ids).

Splits are deterministic: the same store, options and seed give a byte-identical manifest
``STORE/splits/NAME.json`` (sorted indices, key-sorted JSON, ``np.random.default_rng(seed)``).
Patches without a single valid pixel carry no label at all; they are excluded and listed under
``excluded.no_valid_pixels``.

``by="patch"`` assigns patches independently, ``by="group"`` keeps every group (by default a source
image) in one subset, so neighbouring, overlapping patches of one tile cannot leak between training
and validation. Two constructions:

* sequential (default): by patch, one seeded permutation cut into consecutive runs whose sizes are the
  largest-remainder rounding of the fractions; by group, the shuffled groups are assigned greedily to
  the subset furthest below its target patch count;
* nested (``nested=True``, for strong-fraction sweeps): one seeded order of the units (patches or
  groups); ``val``, then ``test``, take the leading units whose patch count is closest to their
  targets, ``strong`` the next ones closest to its target, ``weak`` the rest. ``val`` and ``test``
  therefore do not depend on the strong fraction, and a smaller strong fraction takes a prefix of a
  larger one's strong units: strong sets are nested, everything else of the pool is weak.

The achieved fractions are reported in the manifest, in patches and in valid pixels, because with few
groups they can be far from the targets.

Patches of images stored without a pixel mask (``prepare folder --allow-missing-masks``;
``store.json`` ``unlabelled_tiles``) never go to ``strong``, ``val`` or ``test``. With ``weak_labels=NAME``
(an imported weak-label set, ``segweak weak import``) those covered by one of its bags are added to
``weak`` (listed again under ``weak_only``); the others, and all of them without ``weak_labels``,
are excluded under ``excluded.no_pixel_labels``. The fractions and ``achieved`` statistics describe
the patches with pixel labels only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segweak.data.store import Store, open_store
from segweak.errors import SegweakError
from segweak.io import atomic_write_json, check_file_stem
from segweak.weak.labels import presence as _presence_check

FORMAT_VERSION = 1
SUBSETS = ("strong", "weak", "val")
OPTIONAL_SUBSETS = ("test",)
"""Subsets a manifest may have besides :data:`SUBSETS`: ``test`` is held out of training and of model
selection, and evaluated once on the selected checkpoint (manifests without it work as before)."""
BY_CHOICES = ("patch", "group")
OFFICIAL_TEST = "official"
"""``test`` value that holds out the ISPRS Vaihingen benchmark test areas (:data:`VAIHINGEN_TEST_AREAS`)."""
VAIHINGEN_TEST_AREAS = (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38)
"""Area numbers of the ISPRS 2D labelling benchmark's Vaihingen test set (the other 16 were released
for training); a Vaihingen store's group of area ``N`` is ``areaN``."""


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Validate ``(strong, weak, val)`` or ``(strong, weak, val, test)`` fractions.

    Returns:
        The fractions as a tuple of 3 or 4 floats.

    Raises:
        SegweakError: Unless there are 3 or 4 finite non-negative numbers summing to 1 (±1e-6), the
            fourth (``test``), when given, positive.
    """
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError) as exc:
        raise SegweakError(
            f"--fractions must be 3 or 4 numbers (strong weak val [test]), got {fractions!r}"
        ) from exc
    if len(fr) not in (3, 4):
        raise SegweakError(
            f"--fractions needs 3 or 4 numbers (strong weak val [test]), got {len(fr)}: {fr}; "
            "e.g. 0.1 0.7 0.2 or 0.1 0.6 0.1 0.2"
        )
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise SegweakError(f"--fractions must be non-negative numbers, got {fr}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise SegweakError(f"--fractions must sum to 1, got {fr} (sum {sum(fr):.6g}); e.g. 0.1 0.7 0.2")
    if len(fr) == 4 and fr[3] == 0:
        raise SegweakError(f"--fractions: the test fraction (4th number) is 0 in {fr}; give three numbers")
    return tuple(fr)


def _check_name(name: str) -> None:
    check_file_stem(name, "--name", "split")


def _check_test(test: str | Sequence[str] | None, n_fractions: int) -> str | list[str] | None:
    """Validate the ``test`` option (before any work): ``None``, ``"official"`` or group ids."""
    if test is None:
        return None
    if isinstance(test, str):
        if test != OFFICIAL_TEST:
            raise SegweakError(
                f"--test / split.test must be {OFFICIAL_TEST!r} or a list of group ids, got {test!r}"
            )
        spec: str | list[str] = test
    else:
        spec = [str(g) for g in test]
        if not spec or len(set(spec)) != len(spec):
            raise SegweakError(f"--test / split.test: give distinct group ids, got {spec}")
    if n_fractions == 4:
        raise SegweakError(
            "--test / split.test holds whole groups out as the test subset, so give three fractions "
            "(strong weak val, of the other patches), not four"
        )
    return spec


def _allocate(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Integer subset sizes summing to ``n`` (largest remainder), each positive fraction >= 1 patch."""
    k = len(fractions)
    exact = [f * n for f in fractions]
    sizes = [math.floor(x) for x in exact]
    rest = n - sum(sizes)
    # Largest remainder first; ties broken by subset order so the result is deterministic.
    order = sorted(range(k), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[:rest]:
        sizes[i] += 1
    for i in range(k):
        if fractions[i] > 0 and sizes[i] == 0:
            donor = max(range(k), key=lambda j: (sizes[j], -j))
            if sizes[donor] <= 1:
                raise SegweakError(
                    f"only {n} patches with valid pixels: too few for the fractions {list(fractions)}"
                )
            sizes[donor] -= 1
            sizes[i] += 1
    return sizes


def _split_by_patch(
    eligible: np.ndarray, fractions: tuple[float, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    sizes = _allocate(len(eligible), fractions)
    perm = rng.permutation(eligible)
    bounds = np.cumsum([0, *sizes])
    return [np.sort(perm[bounds[i] : bounds[i + 1]]) for i in range(len(fractions))]


def _too_few_groups(needed: int, names: list[str]) -> SegweakError:
    return SegweakError(
        f"--by group needs at least {needed} groups (one per non-empty subset) but only {len(names)} "
        f"group(s) with valid pixels are left to split ({_short(names)}); use --by patch or a source "
        "with more images"
    )


def _split_by_group(
    eligible: np.ndarray, groups: list[str], fractions: tuple[float, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    k = len(fractions)
    patch_groups = np.asarray([groups[i] for i in eligible])
    names = sorted(set(patch_groups.tolist()))
    positive = [i for i in range(k) if fractions[i] > 0]
    if len(names) < len(positive):
        raise _too_few_groups(len(positive), names)
    order = [names[i] for i in rng.permutation(len(names))]
    sizes = {g: int((patch_groups == g).sum()) for g in names}
    n = len(eligible)
    target = [f * n for f in fractions]
    assigned: dict[str, int] = {}
    filled = [0] * k
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
        np.sort(eligible[np.isin(patch_groups, [g for g, s in assigned.items() if s == i])]) for i in range(k)
    ]


# Order in which the nested construction fills the subsets (indices into strong, weak, val, test):
# the held-out subsets first, so that they cannot depend on the strong fraction.
_NESTED_FILL = (2, 3, 0, 1)


def _split_nested(
    eligible: np.ndarray,
    groups: list[str] | None,
    fractions: tuple[float, ...],
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Nested construction (see the module docstring) over patches (``groups=None``) or groups.

    Args:
        eligible: Sorted store indices of the patches to split, ``(N,)``.
        groups: Group key of every store patch for ``by="group"``; ``None`` for ``by="patch"``.
        fractions: ``(strong, weak, val[, test])`` targets, as fractions of ``N`` patches.
        rng: Seeded generator; one permutation of the units is drawn from it.

    Returns:
        Sorted store indices of each subset, in the order of ``fractions``.
    """
    k = len(fractions)
    if groups is None:
        names: list[str] = []
        unit_of = np.arange(len(eligible))
        n_units = len(eligible)
    else:
        names_arr, unit_of = np.unique(np.asarray([groups[i] for i in eligible]), return_inverse=True)
        names = names_arr.tolist()
        n_units = len(names)
    order = rng.permutation(n_units)
    sizes = np.bincount(unit_of, minlength=n_units)[order]
    n = len(eligible)
    fill = [i for i in _NESTED_FILL if i < k and fractions[i] > 0]
    subset_of_unit = np.empty(n_units, dtype=np.int64)
    start = 0
    for pos, sub in enumerate(fill):
        left = n_units - start
        later = len(fill) - pos - 1  # subsets still to fill, each needs one unit
        if left - later < 1:
            if groups is not None:
                raise _too_few_groups(len(fill), names)
            raise SegweakError(
                f"only {n} patches with valid pixels: too few for the fractions {list(fractions)}"
            )
        if later == 0:
            take = left  # the last subset (weak, unless its fraction is 0) gets the rest
        else:
            # Leading units whose patch count is closest to the target; argmin breaks ties
            # towards fewer units. Monotone in the target, hence nested strong sets.
            reach = np.concatenate([[0], np.cumsum(sizes[start:])])
            take = int(np.argmin(np.abs(reach - fractions[sub] * n)))
            take = min(max(take, 1), left - later)
        subset_of_unit[order[start : start + take]] = sub
        start += take
    patch_subset = subset_of_unit[unit_of]
    return [eligible[patch_subset == i] for i in range(k)]  # eligible is sorted, so are the subsets


def _short(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _resolve_test_groups(st: Store, spec: str | list[str]) -> list[str]:
    """Group ids of the test subset, checked against the store.

    Raises:
        SegweakError: ``official`` on a store that is not Vaihingen or lacks one of the test areas;
            a group id the store does not have.
    """
    present = set(st.groups)
    if spec == OFFICIAL_TEST:
        kind = (st.meta.get("source") or {}).get("kind")
        if kind != "vaihingen":
            raise SegweakError(
                f"--test / split.test {OFFICIAL_TEST!r} holds out the ISPRS Vaihingen test areas, but store "
                f"{st.path} was prepared from source {kind!r}; use a Vaihingen store or list group ids"
            )
        wanted = [f"area{a}" for a in VAIHINGEN_TEST_AREAS]
        missing = [g for g in wanted if g not in present]
        if missing:
            raise SegweakError(
                f"--test / split.test {OFFICIAL_TEST!r}: store {st.path} lacks {len(missing)} of the "
                f"{len(wanted)} ISPRS test areas ({_short(missing)}); prepare it with the COMPLETE ground "
                "truth (ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip)"
            )
        return wanted
    unknown = [g for g in spec if g not in present]
    if unknown:
        raise SegweakError(
            f"--test / split.test: store {st.path} has no group(s) {_short(unknown)}; its groups are "
            f"{_short(sorted(present))}"
        )
    return sorted(spec)


def make_split(
    store: Store | str | os.PathLike[str],
    name: str = "default",
    fractions: Sequence[float] = (0.1, 0.7, 0.2),
    by: str = "patch",
    seed: int = 0,
    presence_threshold: float = 0.0,
    overwrite: bool = False,
    weak_labels: str | None = None,
    nested: bool = False,
    test: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Create the split manifest ``STORE/splits/NAME.json``.

    Args:
        store: A :class:`~segweak.data.store.Store` or its path.
        name: Split name (file name without ``.json``).
        fractions: Target ``(strong, weak, val)`` or ``(strong, weak, val, test)`` fractions of the
            patches with valid pixels; with ``test`` groups, ``(strong, weak, val)`` of the patches
            outside them.
        by: ``"patch"`` (independent patches) or ``"group"`` (whole groups to one subset).
        seed: Seed for ``np.random.default_rng``.
        presence_threshold: Stored in the manifest; a class is present in a patch when its
            proportion exceeds it (used by the dataset's ``presence`` vector).
        overwrite: Replace an existing manifest of that name.
        weak_labels: Name of an imported weak-label set whose bags make the patches of images
            without pixel masks weak patches (module docstring).
        nested: Use the nested construction (module docstring): for one seed, ``val`` and ``test``
            do not depend on the strong fraction and strong sets grow by prefix.
        test: Hold whole groups out as the ``test`` subset: ``"official"`` (the ISPRS Vaihingen test
            areas :data:`VAIHINGEN_TEST_AREAS`) or a list of group ids; ``None``: no test subset
            unless ``fractions`` has a fourth number.

    Returns:
        The manifest dict (format in ``docs/store.md``).

    Raises:
        SegweakError: Bad fractions / ``by`` / name / threshold / ``test``, existing split without
            ``overwrite``, or too few patches or groups for the subsets.
    """
    st = open_store(store)
    _check_name(name)
    fr = check_fractions(fractions)
    if by not in BY_CHOICES:
        raise SegweakError(f"--by must be one of {', '.join(BY_CHOICES)}, got {by!r}")
    test_spec = _check_test(test, len(fr))
    _presence_check(np.zeros((1, 1)), presence_threshold)  # validates the threshold range
    path = st.path / "splits" / f"{name}.json"
    if path.exists() and not overwrite:
        raise SegweakError(
            f"split {name!r} already exists ({path}); choose another --name or pass --overwrite"
        )
    test_groups = _resolve_test_groups(st, test_spec) if test_spec is not None else None

    all_idx = np.arange(len(st), dtype=np.int64)
    maskless = st.unlabelled
    weak_only, no_labels = _weak_only(st, weak_labels, all_idx[maskless])
    no_valid = all_idx[(st.valid == 0) & ~maskless]
    eligible = all_idx[(st.valid > 0) & ~maskless]
    if len(eligible) == 0:
        raise SegweakError(f"store {st.path} has no patch with valid (non-ignore) pixels; nothing to split")
    pool = eligible
    held_out: np.ndarray | None = None
    if test_groups is not None:
        in_test = np.isin(np.asarray([st.groups[i] for i in eligible]), test_groups)
        held_out, pool = eligible[in_test], eligible[~in_test]
        if len(held_out) == 0 or len(pool) == 0:
            empty = "test groups" if len(held_out) == 0 else "the other groups"
            raise SegweakError(
                f"--test / split.test: no patch with valid pixels in {empty} of store {st.path}; "
                "choose other test groups"
            )
    rng = np.random.default_rng(int(seed))
    if nested:
        parts = _split_nested(pool, st.groups if by == "group" else None, fr, rng)
    elif by == "patch":
        parts = _split_by_patch(pool, fr, rng)
    else:
        parts = _split_by_group(pool, st.groups, fr, rng)
    if held_out is not None:
        parts.append(held_out)
    subsets = (SUBSETS + OPTIONAL_SUBSETS)[: len(parts)]

    n_el = len(eligible)
    px_total = int(st.valid[eligible].sum())
    achieved = {}
    for sub, idx in zip(subsets, parts, strict=True):
        px = int(st.valid[idx].sum())
        achieved[sub] = {
            "patches": len(idx),
            "patch_fraction": round(len(idx) / n_el, 6),
            "pixels": px,
            "pixel_fraction": round(px / px_total, 6) if px_total else 0.0,
        }
    # New keys appear only when their option is used, so a sequential 3-fraction manifest stays
    # byte-identical to the ones earlier versions wrote (results made on them remain comparable).
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "by": by,
        "seed": int(seed),
        "fractions": {s: f for s, f in zip(SUBSETS + OPTIONAL_SUBSETS, fr, strict=False)},
        "presence_threshold": float(presence_threshold),
        "n_patches": len(st),
        "subsets": {s: [int(i) for i in idx] for s, idx in zip(subsets, parts, strict=True)},
        "excluded": {"no_valid_pixels": [int(i) for i in no_valid]},
        "achieved": achieved,
    }
    if nested:
        manifest["nested"] = True
    if test_groups is not None:
        manifest["test_groups"] = {
            "rule": OFFICIAL_TEST if test_spec == OFFICIAL_TEST else "groups",
            "groups": test_groups,
        }
    if by == "group":
        manifest["groups"] = {
            s: sorted({st.groups[i] for i in idx}) for s, idx in zip(subsets, parts, strict=True)
        }
    if maskless.any() or weak_labels is not None:
        # Added after the labelled patches were split, so the seeded assignment above is the same
        # whether or not the store also holds images without masks.
        manifest["subsets"]["weak"] = sorted(manifest["subsets"]["weak"] + [int(i) for i in weak_only])
        manifest["weak_only"] = [int(i) for i in weak_only]
        manifest["weak_labels"] = weak_labels
        manifest["excluded"]["no_pixel_labels"] = [int(i) for i in no_labels]
    atomic_write_json(path, manifest)
    return manifest


def _weak_only(st: Store, weak_labels: str | None, maskless: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the patches of images without masks into (covered by a bag of ``weak_labels``, the rest).

    Args:
        st: The store.
        weak_labels: Imported weak-label set name, or None (then no such patch is usable).
        maskless: ``(M,)`` sorted indices of the patches of tiles stored without a pixel mask.

    Returns:
        Two sorted int64 index arrays partitioning ``maskless``.
    """
    if weak_labels is None:
        return np.zeros(0, dtype=np.int64), maskless
    from segweak.data.weak_tables import check_set_name, load_set

    check_set_name(weak_labels, "--weak-labels")
    in_bags = np.asarray(sorted(i for b in load_set(st, weak_labels)["bags"] for i in b["patches"]), np.int64)
    covered = np.isin(maskless, in_bags)
    return maskless[covered], maskless[~covered]


def split_mismatch(
    manifest: dict[str, Any],
    fractions: Sequence[float],
    by: str,
    seed: int,
    nested: bool = False,
    test: str | Sequence[str] | None = None,
) -> str | None:
    """Say how an existing manifest differs from the settings that would make it (for reuse checks).

    Args:
        manifest: A loaded split manifest.
        fractions: Wanted ``fractions`` (as given to :func:`make_split`).
        by: Wanted unit.
        seed: Wanted seed.
        nested: Wanted construction.
        test: Wanted ``test`` option.

    Returns:
        ``None`` when the manifest was made with these settings, else a short description of the
        first difference, e.g. ``"nested False, wanted True"``.
    """
    have_fr = manifest.get("fractions", {})
    want_fr = dict(zip(SUBSETS + OPTIONAL_SUBSETS, (float(f) for f in fractions), strict=False))
    rule = (manifest.get("test_groups") or {}).get("rule")
    have_test: str | list[str] | None = rule
    if rule == "groups":
        have_test = list(manifest["test_groups"]["groups"])
    want_test = test if test is None or isinstance(test, str) else sorted(str(g) for g in test)
    checks = (
        ("seed", manifest.get("seed"), int(seed)),
        ("by", manifest.get("by"), by),
        ("nested", bool(manifest.get("nested", False)), bool(nested)),
        ("test", have_test, want_test),
    )
    for key, have, want in checks:
        if have != want:
            return f"{key} {have}, wanted {want}"
    if set(have_fr) != set(want_fr) or any(abs(float(have_fr[s]) - want_fr[s]) > 1e-9 for s in want_fr):
        return f"fractions {have_fr}, wanted {want_fr}"
    return None


def target_fractions(manifest: dict[str, Any]) -> dict[str, float | None]:
    """Each subset's target as a fraction of all split patches, comparable with ``achieved``.

    With ``test_groups`` the manifest's fractions apply to the patches outside the test groups, so
    they are scaled by that share; the test subset itself has no target (``None``).
    """
    fractions = manifest["fractions"]
    if "test_groups" not in manifest:
        return {sub: float(fractions[sub]) for sub in manifest["achieved"] if sub in fractions}
    scale = 1.0 - manifest["achieved"]["test"]["patch_fraction"]
    return {
        sub: (float(fractions[sub]) * scale if sub in fractions else None) for sub in manifest["achieved"]
    }


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
    targets = target_fractions(manifest)
    gaps = {
        sub: manifest["achieved"][sub]["patch_fraction"] - target
        for sub, target in targets.items()
        if target is not None
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
        f"the patches, target {targets[worst]:.3f}{hint}"
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


def check_store_and_split(store: str | Path, split: str) -> None:
    """Raise a clear error when the store or the split manifest is missing.

    Args:
        store: Store directory (``data.store``).
        split: Split name (``data.split``).
    """
    path = Path(store)
    if not (path / "store.json").is_file():
        raise SegweakError(
            f"data.store: {path} is not a prepared store (no store.json); create it with `segweak prepare`"
        )
    if not (path / "splits" / f"{split}.json").is_file():
        have = sorted(p.stem for p in (path / "splits").glob("*.json")) if (path / "splits").is_dir() else []
        raise SegweakError(
            f"data.split: split {split!r} not found in store {path} (have: {', '.join(have) or 'none'}); "
            f"create it with `segweak split {path} --name {split}`"
        )
