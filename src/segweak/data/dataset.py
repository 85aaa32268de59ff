"""``SegweakDataset``: one subset of a split of a prepared store, as a torch Dataset of dicts.

Design decisions:

* Weak patches never return their ``mask`` unless ``with_mask=True`` is passed explicitly (for
  evaluation code), so training code on the weak subset cannot use pixel labels by accident.
* ``valid`` (float32 H×W, 1 where the mask is not ignore = 255) is the area over which the weak label
  (class proportions) was computed. It carries no class, but it does carry pixel structure: it traces
  every ignored region (eroded object boundaries, clutter in the 5-class set). Items with a ``mask``
  carry it (it adds nothing to the mask); weak items only when ``with_valid=True`` is asked for
  (``weak.area: valid``), so the default weak item reveals nothing about its pixels.
* ``noise`` (a :class:`~segweak.config.NoiseConfig`, ``weak.noise``) corrupts the weak labels once,
  when the dataset is built, keyed by store patch index or bag id (:mod:`segweak.weak.noise`): every
  item of a patch carries the same noisy label in every epoch. ``presence`` is derived from the
  noisy proportions (what an estimate would give). ``clean_weak`` keeps the uncorrupted ones.
* ``with_weak=False`` gives unlabelled items (image, id, index): the weak labels are not even computed.
* ``masks`` replaces the store's masks by others indexed by store patch index (e.g. the pseudo-labels
  of :class:`~segweak.train.pseudo_labels.PseudoLabels`); the store's masks are then never read, and
  the replacement goes through the same transform as the image, so flips and rotations stay aligned.
* Patches of images stored without a pixel mask (``Store.unlabelled``; in the weak subset only when
  the split was made with ``--weak-labels``) carry labels only through an imported ``weak_set``. A
  dataset that reads pixel labels (``with_mask``, ``with_valid``, ``masks``) or computed weak labels
  leaves them out (``dropped_no_pixel_labels`` counts them): their masks are all ignore, so they have
  no pixel loss, no computed proportions and no valid area. ``weak.area: valid`` with an imported set
  that covers such patches is refused (the area its proportions were measured over is unknown).
* The dataset holds a :class:`~segweak.data.store.Store`, whose memmaps are opened lazily in each
  process, so it can be pickled to DataLoader workers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segweak.data.splits import load_split
from segweak.data.store import IGNORE_INDEX, Store, open_store
from segweak.data.transforms import Transform, normalization_lut, normalize, normalize_with_lut
from segweak.errors import SegweakError
from segweak.weak import noise as weak_noise
from segweak.weak.labels import presence, proportions

SUBSET_CHOICES = ("strong", "weak", "val", "test", "full", "all")
"""``test`` exists only in splits that hold one out; ``full`` = strong ∪ weak (with masks: the
full-supervision upper bound); ``all`` = every split patch (test included)."""

_MASK_DEFAULT = {"strong": True, "val": True, "test": True, "full": True, "weak": False, "all": False}


class SegweakDataset(Dataset):
    """Patches of one subset of a split.

    Args:
        store: Store or store path.
        split: Split name (``STORE/splits/NAME.json``) or an already loaded manifest dict.
        subset: ``strong``, ``weak``, ``val``, ``test`` (only in a split that has one), ``full``
            (strong ∪ weak, with masks) or ``all`` (every patch of the split, without masks unless
            ``with_mask=True``).
        transform: Optional dict -> dict callable applied to the uint8 ``image`` (H×W×C) and
            ``mask`` (H×W) before normalisation (e.g.
            :func:`~segweak.data.transforms.default_train_transform`).
        with_mask: Return ``mask``; ``None`` = True for strong/val/test/full, False for weak/all.
        presence_threshold: Override the split's presence threshold.
        with_valid: Return ``valid``; ``None`` = the same as ``with_mask``.
        with_weak: Return the weak labels ``weak`` and ``presence``; False also never computes them
            (masks are read only when ``with_mask`` or ``with_valid`` asks for them).
        weak_set: An imported weak-label set (:func:`segweak.data.weak_tables.load_set`): the subset is
            restricted to the bags whose patches all lie in it, every item carries its bag's
            proportions and ``bag`` (int, the bag's position in the set). Needs ``with_weak``.
        masks: Masks to use instead of the store's: ``masks[index]`` is the uint8 ``(P, P)`` mask of
            store patch ``index`` (255 = ignore). ``mask`` and ``valid`` then come from it.
        with_eroded: Also return ``mask_eroded``, the store's eroded-boundary mask (evaluation only:
            no transform may be given). Needs ``with_mask`` and a store with eroded masks.
        noise: Weak-label noise (:class:`~segweak.config.NoiseConfig`); None or model ``none``
            leaves the labels as they are. Only for training data: evaluation stays clean.

    Items (dict):
        ``image``: float32 ``(C, P, P)``, ``(x - mean) / std`` per channel with the store's
        ``image_stats`` (0..255 scale); ``mask``: int64 ``(P, P)``, 255 = ignore (only when masks are
        returned); ``valid``: float32 ``(P, P)`` (only with ``with_valid``); ``weak``: float32
        ``(K,)`` class proportions over valid pixels (sum 1) and ``presence``: float32 ``(K,)`` 1.0
        where the proportion exceeds the threshold (only with ``with_weak``); ``mask_eroded``: int64
        ``(P, P)``, 255 = ignore (only with ``with_eroded``); ``id``: str;
        ``index``: int patch index in the store; ``bag``: int (only with ``weak_set``).

    Attributes:
        bags: ``(n,)`` int64 bag of each item (only with ``weak_set``, else None).
        bags_dropped: Bags of ``weak_set`` left out because some of their patches are not in the subset.
        clean_weak: ``(n, K)`` float32 weak labels before ``noise`` (the same array as ``weak``
            without noise; None without weak labels).
        dropped_no_pixel_labels: Patches of images without a pixel mask left out (module docstring).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        split: str | dict[str, Any],
        subset: str,
        transform: Transform | None = None,
        with_mask: bool | None = None,
        presence_threshold: float | None = None,
        with_valid: bool | None = None,
        with_weak: bool = True,
        weak_set: dict[str, Any] | None = None,
        masks: Any = None,
        with_eroded: bool = False,
        noise: Any = None,
    ) -> None:
        self.store = open_store(store)
        if subset not in SUBSET_CHOICES:
            raise SegweakError(f"subset must be one of {', '.join(SUBSET_CHOICES)}, got {subset!r}")
        self.split = split if isinstance(split, dict) else load_split(self.store, split)
        subsets = self.split["subsets"]
        if subset == "full":
            idx = subsets["strong"] + subsets["weak"]
        elif subset == "all":
            idx = [i for indices in subsets.values() for i in indices]
        elif subset not in subsets:
            raise SegweakError(
                f"split {self.split['name']!r} of store {self.store.path} has no {subset!r} subset "
                f"(it has {', '.join(subsets)}); make a split with one (`segweak split`)"
            )
        else:
            idx = subsets[subset]
        self.subset = subset
        self.indices = np.asarray(sorted(idx), dtype=np.int64)
        self.transform = transform
        self.with_mask = _MASK_DEFAULT[subset] if with_mask is None else bool(with_mask)
        self.with_valid = self.with_mask if with_valid is None else bool(with_valid)
        self.with_weak = bool(with_weak)
        self.masks = masks
        self.with_eroded = bool(with_eroded)
        if self.with_eroded and (transform is not None or not self.with_mask or masks is not None):
            raise ValueError("with_eroded is for evaluation: it needs with_mask, no transform and no masks")
        if self.with_eroded:
            self.store.eroded_masks  # noqa: B018 - raises a SegweakError when the store has none
        self.noise = noise
        thr = self.split.get("presence_threshold", 0.0) if presence_threshold is None else presence_threshold
        self.presence_threshold = float(thr)
        self.weak: np.ndarray | None = None
        self.clean_weak: np.ndarray | None = None
        self.presence: np.ndarray | None = None
        self.bags: np.ndarray | None = None
        self.bags_dropped = 0
        self.dropped_no_pixel_labels = 0
        maskless = self.store.unlabelled[self.indices]
        if maskless.any():
            if weak_set is not None and self.with_valid:
                raise SegweakError(
                    f"weak.area: valid needs pixel masks, but subset {subset!r} holds "
                    f"{int(maskless.sum())} patch(es) of images without a mask (weak labels only); "
                    "use weak.area: patch"
                )
            if (
                self.with_mask
                or self.with_valid
                or masks is not None
                or (self.with_weak and weak_set is None)
            ):
                self.dropped_no_pixel_labels = int(maskless.sum())
                self.indices = self.indices[~maskless]
        if weak_set is not None:
            if not self.with_weak:
                raise ValueError("weak_set needs with_weak=True")
            self._use_bags(weak_set)
        elif self.with_weak:
            counts = self.store.counts[self.indices] if len(self.indices) else np.zeros((0, self.num_classes))
            props = proportions(counts)
            self.clean_weak = props.astype(np.float32)
            if weak_noise.is_active(noise):
                props = weak_noise.apply(props, self.indices, noise, weak_noise.PATCH_DOMAIN)
            self.weak = props.astype(np.float32)
            self.presence = presence(props, self.presence_threshold).astype(np.float32)
        self.mean = self.store.mean
        self.std = self.store.std
        self._lut = normalization_lut(self.mean, self.std)  # (C, 256) float32

    def _use_bags(self, weak_set: dict[str, Any]) -> None:
        """Keep the subset's patches that are in whole bags and label them with their bag."""
        members = set(self.indices.tolist())
        records = weak_set["bags"]
        clean = np.asarray([rec["proportions"] for rec in records], dtype=np.float64)
        clean = clean.reshape(len(records), self.num_classes)
        # One noisy label per bag (keyed by its id), shared by all its patches, as a real estimate is.
        keys = [weak_noise.bag_key(rec["id"]) for rec in records]
        noisy = weak_noise.apply(clean, keys, self.noise, weak_noise.BAG_DOMAIN)
        index, bag = [], []
        for b, rec in enumerate(records):
            # A bag's proportion describes all its patches together: a bag cut by the split (some patches
            # strong or val) would pair that proportion with part of the region, so it is left out.
            if not all(i in members for i in rec["patches"]):
                self.bags_dropped += 1
                continue
            index += rec["patches"]
            bag += [b] * len(rec["patches"])
        order = np.argsort(np.asarray(index, dtype=np.int64), kind="stable")
        self.indices = np.asarray(index, dtype=np.int64)[order]
        self.bags = np.asarray(bag, dtype=np.int64)[order]
        self.clean_weak = clean[self.bags].astype(np.float32)
        self.weak = noisy[self.bags].astype(np.float32)
        self.presence = presence(self.weak, self.presence_threshold).astype(np.float32)

    @property
    def classes(self) -> list[str]:
        """Class names."""
        return self.store.classes

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return self.store.num_classes

    def _normalize(self, image: np.ndarray) -> np.ndarray:
        # Fast table lookup for uint8 (the contract); a custom transform returning floats on the
        # 0..255 scale still gets the same (x - mean) / std.
        if image.dtype == np.uint8:
            return normalize_with_lut(image, self._lut)
        return normalize(image, self.mean, self.std)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self.indices):
            raise IndexError(f"index {i} out of range for {len(self.indices)} patches")
        index = int(self.indices[i])
        image = np.asarray(self.store.images[index])
        if self.with_mask or self.with_valid:
            mask = np.asarray((self.store.masks if self.masks is None else self.masks)[index])
        else:
            # The mask is not read when nothing returned derives from it; a blank one keeps the
            # transform's contract (and its random draws) the same.
            mask = np.zeros(image.shape[:2], dtype=np.uint8)
        if self.transform is not None:
            out = self.transform({"image": image, "mask": mask})
            image, mask = out["image"], out["mask"]
        item: dict[str, Any] = {"image": torch.from_numpy(self._normalize(np.asarray(image)))}
        if self.with_valid:
            item["valid"] = torch.from_numpy(np.ascontiguousarray(mask != IGNORE_INDEX, dtype=np.float32))
        if self.weak is not None and self.presence is not None:
            item["weak"] = torch.from_numpy(self.weak[i].copy())
            item["presence"] = torch.from_numpy(self.presence[i].copy())
        item["id"] = self.store.ids[index]
        item["index"] = index
        if self.bags is not None:
            item["bag"] = int(self.bags[i])
        if self.with_mask:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        if self.with_eroded:
            item["mask_eroded"] = torch.from_numpy(
                np.ascontiguousarray(self.store.eroded_masks[index], dtype=np.int64)
            )
        return item

    def __repr__(self) -> str:
        return (
            f"SegweakDataset(store={str(self.store.path)!r}, split={self.split['name']!r}, "
            f"subset={self.subset!r}, n={len(self)}, with_mask={self.with_mask}, "
            f"with_valid={self.with_valid}, with_weak={self.with_weak}, with_eroded={self.with_eroded}, "
            f"masks={'store' if self.masks is None else type(self.masks).__name__})"
        )
