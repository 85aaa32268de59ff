"""Sample predictions of an experiment: a few validation patches predicted by every row's checkpoint.

Each row's checkpoint is the one it reports (``selection``: ``best.ckpt`` or ``last.ckpt``).

The report's sample grid shows them, but the report never runs a model: this module writes the
artefact ``EXP/samples.npz`` (after the runs, by :func:`segweak.experiment.run.run_experiment`; for an
experiment directory without one, by ``segweak report`` before it renders), and
:mod:`segweak.report.figures` only reads it (:func:`read_samples`).

``samples.npz`` holds (N patches, G rows, P patch size, C channels, K classes):

* ``indices`` (N,) int64: store patch indices, chosen by :func:`choose_samples`;
* ``images`` (N, P, P, C) uint8 and ``masks`` (N, P, P) uint8 (255 = ignore): the patches as stored;
* ``predictions`` (G, N, P, P) uint8: each row's predicted class indices, in report row order;
* ``colors`` (K, 3) uint8: display colour of each class (the store palette's);
* ``meta``: a JSON string with :func:`wanted_spec`'s fields (what the artefact was made from, so a
  changed choice or a retrained run is noticed), the row ``labels``, the rows ``missing`` a checkpoint,
  ``classes`` and ``patch_ids``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segweak.errors import SegweakError
from segweak.experiment.results import Experiment, load_experiment, row_group
from segweak.io import atomic_write_bytes

SAMPLES_FILE = "samples.npz"
"""Name of the sample-predictions artefact in the experiment directory."""

SAMPLES_FORMAT_VERSION = 1

DEFAULT_SAMPLES = 4
"""Patches in the grid when the experiment config sets no ``report.samples``."""


@dataclass
class Samples:
    """The content of ``samples.npz`` (shapes in the module docstring)."""

    indices: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    predictions: np.ndarray
    colors: np.ndarray
    meta: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        """Display name of each row in ``predictions``."""
        return list(self.meta.get("labels") or [])


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


def _store_path(exp: Experiment) -> Path | None:
    store_rel = exp.results.get("store")
    if not store_rel:
        return None
    return Path(store_rel) if Path(store_rel).is_absolute() else exp.path / store_rel


def _stamp(path: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a checkpoint (``None`` when missing): a retrained run changes it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def wanted_spec(exp: Experiment, n: int, sample_seed: int) -> dict[str, Any] | str:
    """Return what a current ``samples.npz`` is made from, or the reason there can be none.

    Patches of the first split seed's validation subset; the selected checkpoint of training seed
    ``sample_seed`` (the first seed when it was not trained) of every row.

    Returns:
        ``{format_version, n, sample_seed, split_seed, split, seed, runs: [[label, run_dir, stamp,
        checkpoint]]}`` (``checkpoint`` relative to ``run_dir``) or a sentence starting
        ``sample predictions skipped:``.
    """
    store_path = _store_path(exp)
    if store_path is None:
        return "sample predictions skipped: results.json names no store"
    if not (store_path / "store.json").is_file():
        return f"sample predictions skipped: store {store_path} not found"
    k = (exp.results.get("split_seeds") or [0])[0]
    split = (exp.results.get("splits") or {}).get(str(k))
    if split is None:
        return "sample predictions skipped: results.json names no split"
    seeds = sorted({int(r["seed"]) for r in exp.rows})
    if not seeds:
        return "sample predictions skipped: no results rows"
    seed = sample_seed if sample_seed in seeds else seeds[0]
    runs: list[list[Any]] = []
    for g in exp.groups():
        row = next(
            (
                r
                for r in exp.rows
                if row_group(r) == g and int(r["seed"]) == seed and int(r["split_seed"]) == k
            ),
            None,
        )
        run_dir = str(row["run_dir"]) if row else ""
        ckpt = exp.path / run_dir / _selected(row)
        runs.append([exp.label(g), run_dir, _stamp(ckpt) if row else None, _selected(row)])
    return {
        "format_version": SAMPLES_FORMAT_VERSION,
        "n": n,
        "sample_seed": sample_seed,
        "split_seed": k,
        "split": split,
        "seed": seed,
        "runs": runs,
    }


def _selected(row: dict[str, Any] | None) -> str:
    """Checkpoint a results row reports, relative to its run directory (``selection``: best or last)."""
    name = "last.ckpt" if row is not None and row.get("selection") == "last" else "best.ckpt"
    return f"checkpoints/{name}"


def read_samples(exp_dir: str | Path) -> Samples | None:
    """Read ``EXP/samples.npz``; ``None`` when it is missing or unreadable (then it is rewritten)."""
    path = Path(exp_dir) / SAMPLES_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return Samples(
                indices=data["indices"],
                images=data["images"],
                masks=data["masks"],
                predictions=data["predictions"],
                colors=data["colors"],
                meta=meta,
            )
    except (OSError, KeyError, ValueError):
        return None


def is_current(samples: Samples | None, spec: dict[str, Any]) -> bool:
    """Whether ``samples`` was made from :func:`wanted_spec` ``spec`` (same patches, same checkpoints)."""
    if samples is None:
        return False
    return {k: samples.meta.get(k) for k in spec} == json.loads(json.dumps(spec))


def write_samples(exp: Experiment, spec: dict[str, Any]) -> Path | str:
    """Predict the sample patches with every row's checkpoint and write ``EXP/samples.npz`` atomically.

    Returns:
        The artefact's path, or a sentence starting ``sample predictions skipped:`` when the
        validation subset is empty.
    """
    from segweak.data.splits import load_split
    from segweak.data.store import Store

    store_path = _store_path(exp)
    assert store_path is not None  # wanted_spec checked it
    store = Store(store_path)
    val_idx = list(load_split(store, spec["split"])["subsets"]["val"])
    picks = choose_samples(store, val_idx, spec["n"])
    if not picks:
        return "sample predictions skipped: the validation subset is empty"
    labels, missing, predictions = [], [], []
    for label, run_dir, stamp, selected in spec["runs"]:
        if stamp is None:
            missing.append(label)
            continue
        ckpt = exp.path / run_dir / selected
        predictions.append(predict_patches(ckpt, store, spec["split"], picks))
        labels.append(label)
    classes = list(store.classes)
    patches = store.patches
    meta = {
        **spec,
        "labels": labels,
        "missing": missing,
        "classes": classes,
        "patch_ids": [str(patches[i].get("id", i)) for i in picks],
    }
    size = store.patch
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        indices=np.asarray(picks, dtype=np.int64),
        images=np.stack([np.asarray(store.images[i]) for i in picks]),
        masks=np.stack([np.asarray(store.masks[i]) for i in picks]),
        predictions=np.stack(predictions) if predictions else np.zeros((0, len(picks), size, size), np.uint8),
        colors=palette_colors(store.meta, classes),
        meta=np.asarray(json.dumps(meta)),
    )
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
        log(f"predicting {count} validation patches with each row's selected checkpoint -> {SAMPLES_FILE}")
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
