"""Pseudo-label artefacts: a teacher's proportion-guided pixel labels for the weak patches, on disk.

Stage (``segweak pseudo-label``, and ``segweak run`` before each round of ``pseudo_label``):
:func:`make_pseudo_labels` runs a teacher checkpoint over the weak subset of a split, turns its
probabilities into labels whose class counts match each patch's weak label
(:func:`segweak.weak.pseudo.assign_topk` or :func:`~segweak.weak.pseudo.assign_sinkhorn`) and writes
the artefact. Inputs are the weak patches' images and their weak labels (class proportions) only:
their pixel masks are never read. Labels cover the whole patch (the leak-free ``weak.area: patch``
view): the quotas are ``round(p_c · P²)``, and a class with ``p_c = 0`` is never assigned.

Artefact (``format_version`` 1), written to a temporary sibling and renamed when complete::

    OUT/
      pseudo.json   format_version, tool_version, created, kind "pseudo_labels", teacher {checkpoint,
                    sha256}, store {path, fingerprint}, split {name, subset, indices_sha256},
                    assignment, keep, assignment_options, weak_noise (only when the quotas
                    came from noisy proportions: ``weak.noise``'s model and parameters),
                    classes, patch, n_patches, stats, files
      labels.npy    uint8 (N, P, P): class indices, 255 = no label (``keep`` < 1)
      indices.npy   int64 (N,): store patch index of each row (the subset's indices, ascending)

The store's *fingerprint* is the SHA-256 of its ``store.json``, written once by ``segweak prepare``,
so an artefact is tied to the store's content wherever the store is moved. :class:`PseudoLabels`
reads an artefact (lazily memory-mapped, picklable to DataLoader workers) and
:meth:`PseudoLabels.check` refuses it for another store, split or subset.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segweak import __version__
from segweak.errors import SegweakError
from segweak.io import atomic_directory, atomic_write_json

FORMAT_VERSION = 1
KIND = "pseudo_labels"
META = "pseudo.json"
LABELS = "labels.npy"
INDICES = "indices.npy"
ASSIGNMENTS = ("topk", "sinkhorn")
"""Assignment of pixels to classes under the quotas: greedy top-k on the teacher's probabilities, or
an entropic optimal-transport plan made exact by the same greedy pass (``docs/methods.md``)."""
SUBSET = "weak"
"""The subset pseudo-labels are made for: the patches whose own pixel labels training never reads."""
SINKHORN_OPTIONS = {"n_iter": 50, "epsilon": 1.0}
"""Settings of :func:`~segweak.weak.pseudo.assign_sinkhorn` (its defaults), recorded in ``pseudo.json``."""
REQUEST_KEYS = (
    "teacher.sha256",
    "store.fingerprint",
    "split.name",
    "split.subset",
    "split.indices_sha256",
    "assignment",
    "keep",
    "assignment_options",
    "weak_noise",
)
"""What makes two artefacts the same: a rerun with equal values reuses the existing one."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def store_fingerprint(store: str | os.PathLike[str]) -> str:
    """SHA-256 of a store's ``store.json`` (written once by ``segweak prepare``)."""
    return file_sha256(Path(store) / "store.json")


def _indices_sha256(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


def _get(meta: dict[str, Any], dotted: str) -> Any:
    node: Any = meta
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def inference_device(accelerator: str) -> str:
    """Torch device of a teacher for ``trainer.accelerator`` (``gpu``; ``auto``: CUDA if present)."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return accelerator


def is_complete(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a finished pseudo-label artefact (its ``pseudo.json`` parses)."""
    meta = Path(path) / META
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


class PseudoLabels:
    """A pseudo-label artefact: per-patch masks indexed by store patch index.

    Args:
        path: Artefact directory (``pseudo.json``, ``labels.npy``, ``indices.npy``).

    Raises:
        SegweakError: When it is not a complete artefact, has another format version, or its files
            do not match ``pseudo.json``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not is_complete(self.path):
            raise SegweakError(
                f"{self.path} is not a pseudo-label artefact (no valid {META}); write one with "
                "`segweak pseudo-label CKPT --store S --split NAME --out DIR`"
            )
        self.meta: dict[str, Any] = json.loads((self.path / META).read_text(encoding="utf-8"))
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise SegweakError(
                f"{self.path / META}: format_version {version!r} is not supported (this segweak reads "
                f"{FORMAT_VERSION}); rewrite it with `segweak pseudo-label`"
            )
        try:
            n, patch = int(self.meta["n_patches"]), int(self.meta["patch"])
            self.meta["split"]["subset"], self.meta["store"]["fingerprint"]  # noqa: B018
            self.indices = np.load(self.path / INDICES)
            labels = np.load(self.path / LABELS, mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SegweakError(
                f"{self.path}: not a readable pseudo-label artefact ({type(exc).__name__}: {exc}); rewrite it"
            ) from None
        if labels.shape != (n, patch, patch) or labels.dtype != np.uint8 or self.indices.shape != (n,):
            raise SegweakError(
                f"{self.path}: {LABELS} {labels.dtype} {labels.shape} / {INDICES} {self.indices.shape} do "
                f"not match {META} ({n} patches of {patch} px); rewrite the artefact"
            )
        del labels
        self._row = {int(index): row for row, index in enumerate(self.indices)}
        self._labels: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        """uint8 (N, P, P) labels, memory-mapped on first use (in each process)."""
        if self._labels is None:
            self._labels = np.load(self.path / LABELS, mmap_mode="r")
        return self._labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> np.ndarray:
        """uint8 (P, P) mask of store patch ``index`` (255 = no label)."""
        row = self._row.get(int(index))
        if row is None:
            raise KeyError(f"patch {index} has no pseudo-label in {self.path}")
        return self.labels[row]

    def __getstate__(self) -> dict[str, Any]:
        # Memmaps are reopened in each DataLoader worker rather than pickled.
        return {**self.__dict__, "_labels": None}

    def check(self, store: str | os.PathLike[str], split: str, subset: str, noise: Any = None) -> None:
        """Refuse the artefact unless it was made for this store's content, this split and subset.

        Args:
            store: Store directory the training reads.
            split: Split name.
            subset: The subset whose masks it replaces.
            noise: The run's ``weak.noise``: the artefact's quotas must come from the same weak labels.

        Raises:
            SegweakError: One line naming what differs and what to do.
        """
        from segweak.data.splits import load_split

        hint = f"make pseudo-labels for it with `segweak pseudo-label CKPT --store {store} --split {split}`"
        if self.meta["split"]["subset"] != subset:
            raise SegweakError(
                f"pseudo-labels {self.path} are for subset {self.meta['split']['subset']!r}, not {subset!r}"
            )
        if self.meta["store"]["fingerprint"] != store_fingerprint(store):
            raise SegweakError(
                f"pseudo-labels {self.path} were made for another store ({self.meta['store']['path']}), "
                f"not {store} (store.json differs); {hint}"
            )
        if self.meta["split"]["name"] != split:
            raise SegweakError(
                f"pseudo-labels {self.path} were made for split {self.meta['split']['name']!r}, "
                f"not {split!r}; {hint}"
            )
        made, wanted_noise = self.meta.get("weak_noise"), noise_record(noise)
        if made != wanted_noise:
            none = {"model": "none"}
            raise SegweakError(
                f"pseudo-labels {self.path} were made from weak labels with noise {made or none}, "
                f"the run asks for weak.noise {wanted_noise or none}; make them with "
                f"`segweak pseudo-label CKPT --store {store} --split {split} --noise ...` to match"
            )
        wanted = np.asarray(sorted(load_split(store, split)["subsets"][subset]), dtype=np.int64)
        if not np.array_equal(wanted, self.indices):
            raise SegweakError(
                f"pseudo-labels {self.path} cover other patches than the {subset!r} subset of split "
                f"{split!r} now has (the split was remade); {hint}"
            )


def noise_record(noise: Any) -> dict[str, Any] | None:
    """``weak_noise`` of ``pseudo.json`` for ``noise``: None without noise (older artefacts lack the key)."""
    from segweak.weak.noise import is_active, parameters

    return parameters(noise) if is_active(noise) else None


def _differences(meta: dict[str, Any], request: dict[str, Any]) -> list[str]:
    return [key for key in REQUEST_KEYS if _get(meta, key) != _get(request, key)]


@torch.no_grad()
def make_pseudo_labels(
    teacher_ckpt: str | os.PathLike[str],
    store: str | os.PathLike[str],
    split: str,
    out_dir: str | os.PathLike[str],
    *,
    assignment: str = "topk",
    keep: float = 1.0,
    batch_size: int = 16,
    device: str = "cpu",
    noise: Any = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write a pseudo-label artefact for the weak subset of ``split`` (see the module docstring).

    Rerunning with the same request (teacher file, store content, split, ``assignment``, ``keep``)
    returns the existing artefact without recomputing it; another request at the same path is an
    error, and so is a path that holds anything else (nothing is ever overwritten).

    Args:
        teacher_ckpt: Teacher checkpoint (``.ckpt`` written by ``segweak train``), loaded weights-only.
        store: Prepared store.
        split: Split name; its ``weak`` subset is labelled.
        out_dir: Artefact directory to write.
        assignment: ``topk`` or ``sinkhorn``.
        keep: Fraction in (0, 1] of each patch's pixels that get a label, the teacher's most
            confident ones per class (the rest 255).
        batch_size: Patches per teacher forward pass.
        device: Torch device of the teacher, e.g. ``cpu`` or ``cuda``.
        noise: ``weak.noise`` (:class:`~segweak.config.NoiseConfig`): the quotas come from the
            noisy proportions the student's run would read; recorded as ``weak_noise``.
        log: Progress messages (default: none).

    Returns:
        ``out_dir``.

    Raises:
        SegweakError: Bad option, missing store/split/checkpoint, class or band mismatch between
            teacher and store, an empty weak subset, or an existing ``out_dir`` that is not this
            request's artefact.
    """
    from segweak.data.dataset import SegweakDataset
    from segweak.data.store import Store
    from segweak.evaluate.evaluate import class_names
    from segweak.io import check_disjoint
    from segweak.models.factory import check_in_channels
    from segweak.train.checkpoint import build_model_from_checkpoint, check_classes, load_checkpoint
    from segweak.train.datamodule import check_store_and_split
    from segweak.train.preflight import check_device, check_positive
    from segweak.weak.pseudo import assign_sinkhorn, assign_topk

    log = log or (lambda _msg: None)
    if assignment not in ASSIGNMENTS:
        raise SegweakError(f"assignment: {assignment!r} is not valid; choose one of {', '.join(ASSIGNMENTS)}")
    if not 0.0 < float(keep) <= 1.0:
        raise SegweakError(f"keep must be in (0, 1] (the fraction of pixels labelled), got {keep}")
    check_positive(batch_size, "batch size")
    dev = check_device(device, "device")
    teacher_path, out = Path(teacher_ckpt), Path(out_dir)
    check_store_and_split(store, split)
    if not teacher_path.is_file():
        raise SegweakError(
            f"teacher checkpoint {teacher_path} not found; give a .ckpt written by segweak train"
        )
    check_disjoint(out, [store, teacher_path], "output directory")
    st = Store(store)
    dataset = SegweakDataset(
        st, split, SUBSET, with_mask=False, with_valid=False, with_weak=True, noise=noise
    )
    request: dict[str, Any] = {
        "teacher": {"checkpoint": str(teacher_path), "sha256": file_sha256(teacher_path)},
        "store": {"path": str(store), "fingerprint": store_fingerprint(store)},
        "split": {"name": split, "subset": SUBSET, "indices_sha256": _indices_sha256(dataset.indices)},
        "assignment": assignment,
        "keep": float(keep),
        "assignment_options": dict(SINKHORN_OPTIONS) if assignment == "sinkhorn" else {},
    }
    if noise_record(noise) is not None:
        request["weak_noise"] = noise_record(noise)
    if os.path.lexists(out):
        if not is_complete(out):
            raise SegweakError(
                f"{out} exists and is not a pseudo-label artefact; choose another output directory"
            )
        diffs = _differences(PseudoLabels(out).meta, request)
        if diffs:
            raise SegweakError(
                f"{out} holds pseudo-labels of another request (differs at: {', '.join(diffs)}); choose "
                "another output directory, or delete it to remake it"
            )
        log(f"pseudo-labels {out} are complete for this teacher, store and split; reusing them")
        return out
    if len(dataset) == 0:
        raise SegweakError(f"subset 'weak' of split {split!r} in store {store} is empty; nothing to label")

    ckpt = load_checkpoint(teacher_path)
    model, cfg, classes = build_model_from_checkpoint(ckpt, teacher_path)
    del ckpt
    store_classes = class_names(st)
    check_classes(classes, store_classes, teacher_path, f"store {store}")
    check_in_channels(cfg.model.in_channels, st.meta, str(store), str(teacher_path))
    k, patch, n = len(classes), int(st.meta["patch"]), len(dataset)
    model.to(dev)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    counts = np.zeros(k, dtype=np.int64)
    agree = 0
    log(f"labelling {n} weak patches of split {split!r} with {teacher_path} ({assignment}, keep {keep})")
    with atomic_directory(out) as tmp:
        shape = (n, patch, patch)
        labels_mm = np.lib.format.open_memmap(tmp / LABELS, mode="w+", dtype=np.uint8, shape=shape)
        row = 0
        for batch in loader:
            image, p = batch["image"].to(dev), batch["weak"].to(dev)
            q = model(image).float().softmax(dim=1)  # (B, K, P, P)
            if assignment == "topk":
                labels = assign_topk(q, p, None, keep)
            else:
                labels = assign_sinkhorn(q, p, None, keep, **SINKHORN_OPTIONS)
            labelled = labels != 255
            agree += int((labelled & (labels == q.argmax(dim=1))).sum())
            counts += torch.bincount(labels[labelled], minlength=k).cpu().numpy()[:k]
            labels_mm[row : row + len(labels)] = labels.to(torch.uint8).cpu().numpy()
            row += len(labels)
        labels_mm.flush()
        del labels_mm
        np.save(tmp / INDICES, dataset.indices.astype(np.int64))
        n_labelled = int(counts.sum())
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "tool_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **request,
            "classes": list(store_classes),
            "patch": patch,
            "n_patches": n,
            "stats": {
                "pixels": n * patch * patch,
                "labelled": n_labelled,
                "per_class": {c: int(v) for c, v in zip(store_classes, counts, strict=True)},
                # Share of labelled pixels where the quotas kept the teacher's own argmax.
                "teacher_agreement": agree / n_labelled if n_labelled else None,
            },
            "files": {
                name: {"bytes": os.path.getsize(tmp / name), "sha256": file_sha256(tmp / name)}
                for name in (LABELS, INDICES)
            },
        }
        # Written last: a directory with pseudo.json is a complete artefact.
        atomic_write_json(tmp / META, meta)
    log(f"wrote {out}: {n_labelled} of {n * patch * patch} pixels labelled")
    return out
