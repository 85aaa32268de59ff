"""Sample predictions of an experiment: a few validation patches predicted by every row's checkpoint.

Each row's checkpoint is the one it reports (``selection``: ``best.ckpt`` or ``last.ckpt``).

The report's sample grid shows them, but the report never runs a model: this module writes the
artefact ``EXP/samples.npz`` (after the runs, by :func:`segweak.experiment.run.run_experiment`; for an
experiment directory without one, by ``segweak report`` before it renders), and
:mod:`segweak.report.figures` only reads it (:func:`read_samples`).

An experiment has one *grid* per sweep point (one grid, point ``""``, without a sweep). Points on the
same store show the same patches (chosen among the validation patches all of them share), so their
grids can be compared side by side. ``samples.npz`` (format_version 2) holds, for grid ``g`` (N
patches, G rows, P patch size, C channels, K classes):

* ``g<g>_indices`` (N,) int64: store patch indices, chosen by :func:`choose_samples`;
* ``g<g>_images`` (N, P, P, C) uint8 and ``g<g>_masks`` (N, P, P) uint8 (255 = ignore): the patches as
  stored;
* ``g<g>_predictions`` (G, N, P, P) uint8: each row's predicted class indices, in report row order;
* ``g<g>_colors`` (K, 3) uint8: display colour of each class (the store palette's);
* ``meta``: a JSON string with :func:`wanted_spec`'s fields (what the artefact was made from, so a
  changed choice or a retrained run is noticed) and ``grids``: per grid its ``point``, the row
  ``labels``, the rows ``missing`` a checkpoint, ``classes`` and ``patch_ids``.

Format version 1 (one grid, arrays without the ``g<g>_`` prefix) is still read; it is never current
for a version-2 spec, so the report asks for it to be rewritten and ``segweak report`` rewrites it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segweak.errors import SegweakError
from segweak.experiment.plan import manifest_name
from segweak.experiment.results import Experiment, load_experiment, row_group
from segweak.io import atomic_write_bytes

SAMPLES_FILE = "samples.npz"
"""Name of the sample-predictions artefact in the experiment directory."""

SAMPLES_FORMAT_VERSION = 2
"""2: one grid per sweep point; 1 (read, never current): a single grid, that of the first point."""

DEFAULT_SAMPLES = 4
"""Patches in the grid when the experiment config sets no ``report.samples``."""

_ARRAYS = ("indices", "images", "masks", "predictions", "colors")


@dataclass
class SampleGrid:
    """One sweep point's sample predictions (shapes in the module docstring, prefix ``g<g>_`` dropped).

    Attributes:
        point: The sweep point's label (``""`` without a sweep).
        indices: (N,) store patch indices.
        images: (N, P, P, C) uint8 patches as stored.
        masks: (N, P, P) uint8 truth (255 = ignore).
        predictions: (G, N, P, P) uint8, one per row in ``labels``.
        colors: (K, 3) uint8 display colour per class.
        meta: ``labels``, ``missing``, ``classes``, ``patch_ids`` of this grid.
    """

    point: str
    indices: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    predictions: np.ndarray
    colors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """Display name of each row in ``predictions``."""
        return list(self.meta.get("labels") or [])


@dataclass
class Samples:
    """The content of ``samples.npz``: what it was made from (``meta``) and one grid per point."""

    meta: dict[str, Any]
    grids: list[SampleGrid]


def sample_settings(exp: Experiment, n: int | None = None) -> tuple[int, int]:
    """Return ``(patches, sample_seed)``: ``n`` or ``report.samples`` (4), and ``report.sample_seed``."""
    rep_cfg = exp.config.get("report") or {}
    count = n if n is not None else int(rep_cfg.get("samples", DEFAULT_SAMPLES))
    return count, int(rep_cfg.get("sample_seed", 0))


def palette_colors(meta: dict[str, Any], classes: list[str]) -> np.ndarray:
    """Display colour per class index (K, 3) uint8 from a store's ``palette`` metadata.

    The store records its :class:`~segweak.data.palette.Palette` (``to_dict`` form), whose display
    colours are the official ones for Vaihingen; classes get grey levels when it cannot be read.
    """
    from segweak.data.palette import Palette

    try:
        pal = Palette.from_dict(meta["palette"])
        colors = np.asarray(pal.display, dtype=np.uint8).reshape(-1, 3)
        if len(colors) == len(classes):
            return colors
    except (SegweakError, KeyError, TypeError, ValueError):
        pass
    levels = np.linspace(40, 220, num=max(1, len(classes))).astype(np.uint8)
    return np.stack([levels, levels, levels], axis=1)


def choose_samples(store: Any, val_idx: list[int], n: int) -> list[int]:
    """Pick ``n`` validation patches deterministically, favouring patches that show many classes."""
    if n <= 0 or not val_idx:
        return []
    counts = np.asarray(store.counts)[np.asarray(val_idx)]
    richness = (counts > 0).sum(axis=1)
    order = sorted(range(len(val_idx)), key=lambda i: (-int(richness[i]), int(val_idx[i])))
    # Spread the picks over the richness ranking so the grid is not n near-duplicates.
    step = max(1, len(order) // n)
    picks = [order[i] for i in range(0, len(order), step)][:n]
    return sorted(int(val_idx[i]) for i in picks)


def predict_patches(checkpoint: Path, store: Any, split: str, indices: list[int]) -> np.ndarray:
    """Predicted class index maps (N, P, P) uint8 of store patches ``indices`` with a checkpoint.

    The checkpoint is read weights-only; images are normalised by the same dataset code training uses.
    """
    import torch

    from segweak.data.dataset import SegweakDataset
    from segweak.train.checkpoint import build_model_from_checkpoint, load_checkpoint

    model, _, _ = build_model_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
    ds = SegweakDataset(store, split, "val", with_mask=False)
    pos = {int(i): k for k, i in enumerate(ds.indices)}
    missing = [i for i in indices if int(i) not in pos]
    if missing:
        raise SegweakError(f"patches {missing} are not in the validation subset of split {split!r}")
    images = [torch.as_tensor(ds[pos[int(i)]]["image"]) for i in indices]
    with torch.no_grad():
        logits = model(torch.stack(images))
    return logits.argmax(dim=1).to(torch.uint8).numpy()


def _resolve(exp: Experiment, store_rel: str) -> Path:
    return Path(store_rel) if Path(store_rel).is_absolute() else exp.path / store_rel


def _stamp(path: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a checkpoint (``None`` when missing): a retrained run changes it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _point_entries(exp: Experiment) -> list[tuple[dict[str, Any], Experiment]]:
    """``[(results.json point entry, the point read alone)]`` in the sweep's point order.

    Without a sweep there is one point, label ``""``. Results written before ``points`` recorded
    each point's ``splits`` (or before ``points`` existed) get the entry's store and split names from
    the experiment-wide ``store`` and the point's ``split`` (see :func:`wanted_spec`).
    """
    points = exp.by_point()
    entries = {str(e.get("point") or ""): e for e in exp.results.get("points") or []}
    order = [label for label in entries if label in points]
    order += [label for label in points if label not in entries]  # a stray row's point, last
    return [(entries.get(label, {"point": label}), points[label]) for label in order]


def _point_split(exp: Experiment, entry: dict[str, Any], k: int) -> str | None:
    """Split manifest name of split seed ``k`` at one point (``None`` when results.json names none)."""
    named = (entry.get("splits") or {}).get(str(k))
    if named:
        return str(named)
    base = entry.get("split")
    if base:  # results.json before points recorded their manifests: the one naming rule
        return manifest_name(str(base), len(exp.results.get("split_seeds") or [0]), k)
    return (exp.results.get("splits") or {}).get(str(k))


def wanted_spec(exp: Experiment, n: int, sample_seed: int) -> dict[str, Any] | str:
    """Return what a current ``samples.npz`` is made from, or the reason there can be none.

    For every sweep point (one without a sweep): patches of the first split seed's validation
    subset; the selected checkpoint of training seed ``sample_seed`` (the first seed when it was not
    trained) of every row of that point.

    Returns:
        ``{format_version, n, sample_seed, split_seed, seed, points: [{point, store, split, runs:
        [[label, run_dir, stamp, checkpoint]]}]}`` (``checkpoint`` relative to ``run_dir``) or a
        sentence starting ``sample predictions skipped:``.
    """
    if not exp.results.get("store"):
        return "sample predictions skipped: results.json names no store"
    k = (exp.results.get("split_seeds") or [0])[0]
    seeds = sorted({int(r["seed"]) for r in exp.rows})
    if not seeds:
        return "sample predictions skipped: no results rows"
    seed = sample_seed if sample_seed in seeds else seeds[0]
    points: list[dict[str, Any]] = []
    for entry, point_exp in _point_entries(exp):
        store_rel = str(entry.get("store") or exp.results["store"])
        if not (_resolve(exp, store_rel) / "store.json").is_file():
            return f"sample predictions skipped: store {_resolve(exp, store_rel)} not found"
        split = _point_split(exp, entry, k)
        if split is None:
            return "sample predictions skipped: results.json names no split"
        # Its own rows, labelled as a report of that point labels them.
        runs: list[list[Any]] = []
        for g in point_exp.groups():
            row = next(
                (
                    r
                    for r in point_exp.rows
                    if row_group(r) == g and int(r["seed"]) == seed and int(r["split_seed"]) == k
                ),
                None,
            )
            run_dir = str(row["run_dir"]) if row else ""
            ckpt = exp.path / run_dir / _selected(row)
            runs.append([point_exp.label(g), run_dir, _stamp(ckpt) if row else None, _selected(row)])
        points.append(
            {"point": str(entry.get("point") or ""), "store": store_rel, "split": split, "runs": runs}
        )
    return {
        "format_version": SAMPLES_FORMAT_VERSION,
        "n": n,
        "sample_seed": sample_seed,
        "split_seed": k,
        "seed": seed,
        "points": points,
    }


def _selected(row: dict[str, Any] | None) -> str:
    """Checkpoint a results row reports, relative to its run directory (``selection``: best or last)."""
    name = "last.ckpt" if row is not None and row.get("selection") == "last" else "best.ckpt"
    return f"checkpoints/{name}"


def read_samples(exp_dir: str | Path) -> Samples | None:
    """Read ``EXP/samples.npz`` (format 2, or 1 as one grid); ``None`` when missing or unreadable."""
    path = Path(exp_dir) / SAMPLES_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if "grids" not in meta:  # format 1: one grid, its fields at the top level
                arrays = {name: data[name] for name in _ARRAYS}
                return Samples(meta, [SampleGrid("", **arrays, meta=meta)])
            grids = []
            for g, grid_meta in enumerate(meta["grids"]):
                arrays = {name: data[f"g{g}_{name}"] for name in _ARRAYS}
                grids.append(SampleGrid(str(grid_meta.get("point") or ""), **arrays, meta=grid_meta))
            return Samples(meta, grids)
    except (OSError, KeyError, TypeError, ValueError):
        return None


def is_current(samples: Samples | None, spec: dict[str, Any]) -> bool:
    """Whether ``samples`` was made from :func:`wanted_spec` ``spec`` (same patches, same checkpoints)."""
    if samples is None:
        return False
    return {k: samples.meta.get(k) for k in spec} == json.loads(json.dumps(spec))


def _shared_picks(exp: Experiment, spec: dict[str, Any]) -> dict[str, list[int]]:
    """``{store: patch indices}``: the sample patches of every point on each store.

    Chosen among the validation patches every point on that store shares (with nested splits, the
    whole validation subset), so the points' grids show the same patches; a store whose points share
    none gets no entry (each point then chooses its own).
    """
    from segweak.data.splits import load_split
    from segweak.data.store import Store

    shared: dict[str, set[int] | None] = {}
    stores: dict[str, Any] = {}
    for point in spec["points"]:
        if point["store"] not in stores:
            stores[point["store"]] = Store(_resolve(exp, point["store"]))
        store = stores[point["store"]]
        val = {int(i) for i in load_split(store, point["split"])["subsets"]["val"]}
        have = shared.get(point["store"])
        shared[point["store"]] = val if have is None else have & val
    out = {}
    for key, common in shared.items():
        picks = choose_samples(stores[key], sorted(common or ()), spec["n"])
        if picks:
            out[key] = picks
    return out


def write_samples(exp: Experiment, spec: dict[str, Any]) -> Path | str:
    """Predict the sample patches with every row's checkpoint and write ``EXP/samples.npz`` atomically.

    Returns:
        The artefact's path, or a sentence starting ``sample predictions skipped:`` when a point's
        validation subset is empty.
    """
    from segweak.data.splits import load_split
    from segweak.data.store import Store

    shared = _shared_picks(exp, spec)
    arrays: dict[str, np.ndarray] = {}
    grids: list[dict[str, Any]] = []
    stores: dict[str, Store] = {}
    # A run shared by several points (``full`` over a strong-fraction sweep) predicts the same patches
    # once: the split only checks that the patches are validation patches.
    predicted: dict[tuple[str, str, tuple[int, ...]], np.ndarray] = {}
    for g, point in enumerate(spec["points"]):
        if point["store"] not in stores:
            stores[point["store"]] = Store(_resolve(exp, point["store"]))
        store = stores[point["store"]]
        picks = shared.get(point["store"]) or choose_samples(
            store, list(load_split(store, point["split"])["subsets"]["val"]), spec["n"]
        )
        if not picks:
            where = f" at {point['point']}" if point["point"] else ""
            return f"sample predictions skipped: the validation subset{where} is empty"
        labels, missing, predictions = [], [], []
        for label, run_dir, stamp, selected in point["runs"]:
            if stamp is None:
                missing.append(label)
                continue
            ckpt = exp.path / run_dir / selected
            key = (str(ckpt), point["store"], tuple(int(i) for i in picks))
            if key not in predicted:
                predicted[key] = predict_patches(ckpt, store, point["split"], picks)
            predictions.append(predicted[key])
            labels.append(label)
        classes = list(store.classes)
        size = store.patch
        arrays[f"g{g}_indices"] = np.asarray(picks, dtype=np.int64)
        arrays[f"g{g}_images"] = np.stack([np.asarray(store.images[i]) for i in picks])
        arrays[f"g{g}_masks"] = np.stack([np.asarray(store.masks[i]) for i in picks])
        arrays[f"g{g}_predictions"] = (
            np.stack(predictions) if predictions else np.zeros((0, len(picks), size, size), np.uint8)
        )
        arrays[f"g{g}_colors"] = palette_colors(store.meta, classes)
        grids.append(
            {
                "point": point["point"],
                "labels": labels,
                "missing": missing,
                "classes": classes,
                "patch_ids": [str(store.patches[i].get("id", i)) for i in picks],
            }
        )
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, meta=np.asarray(json.dumps({**spec, "grids": grids})))
    return atomic_write_bytes(exp.path / SAMPLES_FILE, buf.getvalue())


def ensure_samples(
    exp_dir: str | Path, n: int | None = None, log: Callable[[str], None] | None = None
) -> str | None:
    """Make ``EXP/samples.npz`` current for ``n`` patches (``report.samples`` when ``None``).

    An artefact made from the same patches and the same checkpoints is kept; otherwise it is
    rewritten. With ``n = 0`` nothing is done.

    Returns:
        ``None`` when the artefact is current (or not wanted), else why there is none.

    Raises:
        SegweakError: When the experiment directory holds no ``results.json``.
    """
    exp = load_experiment(exp_dir)
    count, sample_seed = sample_settings(exp, n)
    if count <= 0:
        return None
    spec = wanted_spec(exp, count, sample_seed)
    if isinstance(spec, str):
        return spec
    if is_current(read_samples(exp.path), spec):
        return None
    if log is not None:
        points = len(spec["points"])
        at = f" at each of {points} sweep points" if points > 1 else ""
        log(
            f"predicting {count} validation patches with each row's selected checkpoint{at} -> {SAMPLES_FILE}"
        )
    try:
        written = write_samples(exp, spec)
    except (SegweakError, ImportError, RuntimeError, KeyError, ValueError) as exc:
        # A checkpoint another segweak version wrote, say: the report goes on without the grid.
        written = f"sample predictions could not be made: {exc}"
    if isinstance(written, str):
        if log is not None:
            log(written)
        return written
    return None
