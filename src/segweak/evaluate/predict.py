"""Sliding-window prediction of whole tiles, blended softmax probabilities, PNG + GeoTIFF output.

For each tile, windows of ``window`` pixels are placed every ``stride = round(window * (1 - overlap))``
pixels, the last window of each row/column shifted to end at the tile edge (the same policy as the
store's patches: no padding, see :mod:`segweak.data.tiling`). Per-window softmax probabilities are
accumulated with per-pixel weights (``gaussian``: a 2-D Gaussian centred on the window, σ = window/8,
floored so edge pixels keep a small non-zero weight; ``mean``: uniform) and normalised by the summed
weights; the prediction is their argmax.

Outputs in ``out_dir``: ``<tile>.png`` (colours of the store's palette) and, when the tile is
georeferenced, ``<tile>.tif`` (uint8 class indices, the source's CRS and transform); with labels,
``metrics.json``: per-tile and overall metrics against the labels and, where the eroded
``_noBoundary`` labels exist, against those (the ISPRS convention).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segweak.data.palette import colorize
from segweak.data.splits import load_split
from segweak.data.store import Store, StoreTiles, open_store
from segweak.data.tiling import windows
from segweak.data.transforms import normalize
from segweak.errors import SegweakError
from segweak.io import atomic_write_bytes, atomic_write_json
from segweak.metrics import confusion_matrix, metrics_from_confusion
from segweak.models.factory import check_in_channels
from segweak.train.checkpoint import build_model_from_checkpoint, check_classes, load_checkpoint
from segweak.train.preflight import check_device, check_output_dir, check_positive, check_window

BLENDS = ("gaussian", "mean")


def blend_weights(window: int, blend: str) -> torch.Tensor:
    """Per-pixel weights of one window.

    Args:
        window: Window side ``P``.
        blend: ``gaussian`` or ``mean``.

    Returns:
        (P, P) float32 weights, max 1, all > 0.
    """
    if blend == "mean":
        return torch.ones(window, window)
    if blend != "gaussian":
        raise SegweakError(f"--blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    sigma = window / 8.0
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2.0
    g = torch.exp(-(x**2) / (2 * sigma**2))
    w = torch.outer(g, g)
    w = w / w.max()
    # Pixels at a tile's border are only covered by window borders: keep their weight non-zero.
    return w.clamp_min(1e-3).float()


def check_overlap(overlap: float) -> None:
    """Refuse an ``overlap`` outside ``[0, 1)`` (1 would never advance the window)."""
    if not 0.0 <= overlap < 1.0:
        raise SegweakError(f"--overlap must be in [0, 1), got {overlap}")


def stride_for(window: int, overlap: float) -> int:
    """Window step for a fractional ``overlap`` in ``[0, 1)``."""
    check_overlap(overlap)
    return max(1, int(round(window * (1.0 - overlap))))


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    num_classes: int,
    window: int,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 8,
) -> torch.Tensor:
    """Blended softmax probabilities of one normalised image.

    Args:
        model: Network returning logits (B, K, P, P) for (B, C, P, P) input; evaluated as given
            (call ``model.eval()`` first).
        image: (C, H, W) float32 normalised image, on the model's device.
        num_classes: ``K``.
        window: Window side ``P`` (H and W must be >= P).
        overlap: Fraction of overlap between neighbouring windows.
        blend: ``gaussian`` or ``mean``.
        batch_size: Windows per forward pass.

    Returns:
        (K, H, W) float32 probabilities (summing to 1 over K), on the image's device.
    """
    _, h, w = image.shape
    origins = windows((h, w), window, stride_for(window, overlap))
    device = image.device
    weights = blend_weights(window, blend).to(device)
    acc = torch.zeros(num_classes, h, w, dtype=torch.float32, device=device)
    norm = torch.zeros(h, w, dtype=torch.float32, device=device)
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        batch = torch.stack([image[:, r : r + window, c : c + window] for r, c in chunk])
        probs = model(batch).float().softmax(dim=1) * weights
        for (r, c), p in zip(chunk, probs, strict=True):
            acc[:, r : r + window, c : c + window] += p
            norm[r : r + window, c : c + window] += weights
    return acc / norm


def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _geotiff_bytes(mask: np.ndarray, georef: dict[str, Any], classes: list[str]) -> bytes:
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine

    t = georef.get("transform")
    crs = georef.get("crs")
    profile = {
        "driver": "GTiff",
        "height": mask.shape[0],
        "width": mask.shape[1],
        "count": 1,
        "dtype": "uint8",
        "compress": "deflate",
        "nodata": 255,
    }
    if t is not None:
        profile["transform"] = Affine(*t[:6])
    if crs:
        profile["crs"] = rasterio.crs.CRS.from_user_input(crs)
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(mask, 1)
            dst.update_tags(classes=",".join(classes))
        return mem.read()


def _is_georeferenced(georef: dict[str, Any] | None) -> bool:
    if not georef:
        return False
    t = georef.get("transform")
    identity = t is not None and [float(v) for v in t[:6]] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return bool(georef.get("crs")) or (t is not None and not identity)


def predict_tiles(
    checkpoint: str | Path,
    store: Store | str | Path,
    out_dir: str | Path,
    tiles: list[str] | None = None,
    window: int | None = None,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Predict whole tiles of a store with a sliding window and write PNG/GeoTIFF/metrics.

    Args:
        checkpoint: ``.ckpt`` written by ``segweak train`` (loaded weights-only).
        store: Prepared store (path or :class:`~segweak.data.store.Store`); its ``store.json`` lists the
            tiles, their source paths, georeferencing, palette and normalisation statistics.
        out_dir: Output directory (created).
        tiles: Tile ids to predict; ``None`` = every tile of the store.
        window: Window side; ``None`` = the store's patch size.
        overlap: Overlap fraction between neighbouring windows, ``[0, 1)``.
        blend: ``gaussian`` or ``mean``.
        batch_size: Windows per forward pass.
        device: Torch device string.

    Returns:
        ``{"checkpoint", "window", "stride", "blend", "tiles": {id: {"png", "geotiff"|None, "metrics"|None,
        "metrics_no_boundary"|None, "training_patches": int|None}}, "overall": metrics|None,
        "overall_no_boundary": metrics|None}``; ``training_patches`` counts the tile's patches in the
        checkpoint's split's strong/weak subsets (``None``: unknown), i.e. whether the tile is held out,
        also written to ``out_dir/metrics.json``.

    Raises:
        SegweakError: Bad options (device, batch size, window, overlap, blend, ``out_dir``), unknown
            tile ids, class or band mismatch between checkpoint and store (all before anything is
            written), unreadable sources.
    """
    if blend not in BLENDS:
        raise SegweakError(f"--blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    dev = check_device(device)
    check_positive(batch_size, "--batch-size")
    if window is not None:
        check_positive(window, "--window")
    check_overlap(overlap)
    check_output_dir(out_dir)
    st = open_store(store)
    ckpt = load_checkpoint(checkpoint)
    model, train_cfg, classes = build_model_from_checkpoint(ckpt, checkpoint)
    check_classes(classes, list(st.classes), checkpoint, f"store {st.path}")
    check_in_channels(train_cfg.model.in_channels, st.meta, str(st.path), str(checkpoint))
    seen = _patches_seen_in_training(st, train_cfg.data.split)
    source = StoreTiles(st)
    if source.palette is None:
        raise SegweakError(f"{st.path}/store.json has no palette; re-run `segweak prepare` to record it")
    wanted = source.ids() if not tiles else list(tiles)
    unknown = [t for t in wanted if t not in source.records]
    if unknown:
        raise SegweakError(
            f"--tiles: unknown tile id(s) {', '.join(unknown)}; the store has {', '.join(source.ids())}"
        )
    window = int(window or st.patch)
    check_window(window, model, {t: source.records[t]["shape"] for t in wanted})
    stride = stride_for(window, overlap)
    model.to(dev)
    k = len(classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = np.zeros((k, k), dtype=np.int64)
    total_nb = np.zeros((k, k), dtype=np.int64)
    any_label = any_eroded = False
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "store": str(st.path),
        "window": window,
        "stride": stride,
        "overlap": overlap,
        "blend": blend,
        "classes": list(classes),
        "tiles": {},
    }
    for tile_id in wanted:
        image = source.image(tile_id)
        x = torch.from_numpy(normalize(image, st.mean, st.std)).to(dev)
        probs = predict_probabilities(model, x, k, window, overlap, blend, batch_size)
        pred = probs.argmax(dim=0).to(torch.uint8).cpu().numpy()
        del probs, x
        entry: dict[str, Any] = {"png": None, "geotiff": None, "metrics": None, "metrics_no_boundary": None}
        # Full-tile metrics are only held-out when no patch of the tile was trained on.
        entry["training_patches"] = seen.get(tile_id) if seen is not None else None
        png = atomic_write_bytes(out / f"{tile_id}.png", _png_bytes(colorize(pred, source.palette)))
        entry["png"] = str(png)
        georef = source.georef(tile_id)
        if _is_georeferenced(georef):
            tif = atomic_write_bytes(out / f"{tile_id}.tif", _geotiff_bytes(pred, georef, classes))
            entry["geotiff"] = str(tif)
        label = source.label(tile_id)
        if label is not None:
            cm = confusion_matrix(pred, label, k)
            total += cm
            any_label = True
            entry["metrics"] = metrics_from_confusion(torch.from_numpy(cm), classes)
        eroded = source.label(tile_id, eroded=True)
        if eroded is not None:
            cm = confusion_matrix(pred, eroded, k)
            total_nb += cm
            any_eroded = True
            entry["metrics_no_boundary"] = metrics_from_confusion(torch.from_numpy(cm), classes)
        result["tiles"][tile_id] = entry
    result["overall"] = metrics_from_confusion(torch.from_numpy(total), classes) if any_label else None
    result["overall_no_boundary"] = (
        metrics_from_confusion(torch.from_numpy(total_nb), classes) if any_eroded else None
    )
    atomic_write_json(out / "metrics.json", result)
    return result


def _patches_seen_in_training(store: Store, split_name: str) -> dict[str, int] | None:
    """Count, per tile, the patches of the split's ``strong`` and ``weak`` subsets.

    Those patches are trained on somewhere in the protocol (weak labels or pixel labels), so a full
    tile that contains any of them is not a held-out evaluation.

    Args:
        store: An open :class:`~segweak.data.store.Store`.
        split_name: The split the checkpoint was trained with.

    Returns:
        ``{tile_id: count}`` for every tile, or ``None`` when the store lacks that split (e.g. the
        checkpoint was trained on another store), in which case overlap is unknown.
    """
    if split_name not in store.split_names():
        return None
    subsets = load_split(store, split_name)["subsets"]
    trained = set(subsets.get("strong", [])) | set(subsets.get("weak", []))
    counts = dict.fromkeys(store.tiles, 0)
    for index in trained:
        counts[store.tiles[index]] += 1
    return counts


__all__ = ["BLENDS", "blend_weights", "predict_probabilities", "predict_tiles"]
