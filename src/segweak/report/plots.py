"""Report figures: stage bars, per-class IoU, learning curves, loss terms and sample predictions.

matplotlib's object API is used (no pyplot global state, Agg rendering); predictions are shown in
the store palette's display colours, and captions describe the store's own bands and palette
(:mod:`segweak.report.wording`).

Every figure is written to ``EXP/plots/<name>.png``; :func:`make_plots` returns the written paths
(relative to the experiment directory) with their captions, and a list of notes for what could not be
drawn (e.g. a missing checkpoint), so the report can say so instead of silently dropping a figure.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segweak.errors import SegweakError
from segweak.io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from segweak.report.report import Experiment

#: Stage colours (colour-blind-safe Okabe-Ito palette).
STAGE_COLORS = {
    "baseline": "#999999",
    "weak": "#E69F00",
    "finetune": "#0072B2",
    "full": "#009E73",
    "control": "#CC79A7",
}
_TAB10 = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]

IGNORE_COLOR = (0, 0, 0)
"""Display colour of ignored pixels (value 255), black as in the official eroded labels."""


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def _color(exp: Experiment, group: tuple[str, str], i: int) -> str:
    """Stage colour; with several weak methods every group gets its own colour instead."""
    if len(exp.results.get("methods") or []) > 1:
        return _TAB10[i % len(_TAB10)]
    return STAGE_COLORS.get(group[0], _TAB10[i % len(_TAB10)])


def plot_stage_bars(exp: Experiment, path: Path) -> None:
    """Bar per stage: mean mIoU, mean F1 and OA with ±1 std error bars and every seed as a dot."""
    from segweak.report.report import mean_std

    groups = exp.groups()
    metrics = [("miou", "mIoU"), ("mf1", "mean F1"), ("oa", "OA")]
    fig = _figure(max(6.0, 1.6 * len(groups) + 2.5), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    x = np.arange(len(groups))
    alphas = [1.0, 0.6, 0.3]
    for j, (key, name) in enumerate(metrics):
        for i, g in enumerate(groups):
            vals = [v for v in exp.values(g, key).values() if v is not None]
            m, sd, _ = mean_std(vals)
            if m is None:
                continue
            xpos = x[i] + (j - 1) * width
            ax.bar(
                xpos, m, width * 0.95, yerr=sd, capsize=3, color=_color(exp, g, i), alpha=alphas[j],
                edgecolor="black", linewidth=0.5, label=name if i == 0 else None,
            )  # fmt: skip
            ax.scatter([xpos] * len(vals), vals, s=10, color="black", zorder=3)
            if key == "miou":
                ax.annotate(f"{m:.3f}", (xpos, m + (sd or 0.0)), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_xticks(x, [exp.label(g) for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("validation score")
    ax.set_title("Scores per stage (bars: mean over seeds, error bars: ±1 std, dots: seeds)", fontsize=10)
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="#777777", alpha=a, label=n) for a, (_, n) in zip(alphas, metrics, strict=True)
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_per_class(exp: Experiment, path: Path) -> None:
    """Draw grouped bars of per-class IoU (mean ± std over seeds), one bar per stage in each class group."""
    from segweak.report.report import mean_std

    groups = exp.groups()
    classes = exp.classes
    fig = _figure(max(7.0, 1.3 * len(classes) * max(1, len(groups)) / 3 + 3), 3.8)
    ax = fig.subplots()
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(classes))
    for i, g in enumerate(groups):
        means, sds = [], []
        for c in classes:
            m, sd, _ = mean_std(list(exp.values(g, f"iou_{c}").values()))
            means.append(np.nan if m is None else m)
            sds.append(0.0 if sd is None else sd)
        ax.bar(
            x + (i - (len(groups) - 1) / 2) * width, means, width * 0.95, yerr=sds, capsize=2,
            color=_color(exp, g, i), edgecolor="black", linewidth=0.4, label=exp.label(g),
        )  # fmt: skip
    ax.set_xticks(x, [c.replace("_", " ") for c in classes])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("IoU")
    ax.set_title("Per-class IoU (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=8, ncols=min(5, len(groups)), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_learning_curves(exp: Experiment, path: Path) -> bool:
    """Draw validation mIoU per epoch, one line set per stage: every seed thin, the mean thick.

    Returns:
        Whether any history was found (nothing is written otherwise).
    """
    from segweak.report.report import read_history, row_group

    groups = exp.groups()
    curves: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for r in exp.rows:
        g = row_group(r)
        hist = read_history(exp.path / r.get("run_dir", "") / "history.csv")
        pts = [(h["epoch"], h["val_miou"]) for h in hist if "epoch" in h and "val_miou" in h]
        if pts:
            e, v = zip(*pts, strict=True)
            curves.setdefault(g, []).append((np.asarray(e), np.asarray(v)))
    if not curves:
        return False
    fig = _figure(9.0, 3.6)
    ax = fig.subplots()
    for i, g in enumerate(groups):
        if g not in curves:
            continue
        color = _color(exp, g, i)
        for e, v in curves[g]:
            ax.plot(e, v, color=color, alpha=0.25, linewidth=0.8)
        n = min(len(v) for _, v in curves[g])
        mean = np.mean([v[:n] for _, v in curves[g]], axis=0)
        ax.plot(
            curves[g][0][0][:n],
            mean,
            color=color,
            linewidth=2.0,
            label=exp.label(g),
            marker="o",
            markersize=3,
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mIoU")
    ax.set_ylim(0, 1.0)
    ax.set_title("Learning curves (thick: mean over seeds, thin: each seed)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def plot_loss_terms(exp: Experiment, path: Path) -> bool:
    """Draw each group's training loss terms over optimiser steps (one panel per group).

    Per term: every seed thin, the mean over seeds thick. Read from the ``step`` and ``train_<term>``
    columns of each run's ``history.csv`` (per-epoch means); runs written before these columns
    existed are left out.

    Returns:
        Whether any run had them (nothing is written otherwise).
    """
    from segweak.report.report import read_history, row_group

    series: dict[tuple[str, str], dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for r in exp.rows:
        g = row_group(r)
        hist = [h for h in read_history(exp.path / r.get("run_dir", "") / "history.csv") if "step" in h]
        terms = [k for k in (hist[0] if hist else {}) if k.startswith("train_") and k != "train_loss"]
        for term in terms:
            pts = [(h["step"], h[term]) for h in hist if term in h]
            x, y = zip(*pts, strict=True)
            series.setdefault(g, {}).setdefault(term[len("train_") :], []).append(
                (np.asarray(x), np.asarray(y))
            )
    if not series:
        return False
    groups = [g for g in exp.groups() if g in series]
    ncols = min(3, len(groups))
    nrows = -(-len(groups) // ncols)
    fig = _figure(3.6 * ncols, 2.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, g in zip(axes, groups, strict=False):
        for j, (term, curves) in enumerate(series[g].items()):
            color = _TAB10[j % len(_TAB10)]
            for x, y in curves:
                ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            n = min(len(y) for _, y in curves)
            mean = np.mean([y[:n] for _, y in curves], axis=0)
            ax.plot(curves[0][0][:n], mean, color=color, linewidth=2.0, marker="o", markersize=3, label=term)
        ax.set_title(exp.label(g), fontsize=9)
        ax.set_xlabel("optimiser steps", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle("Training loss terms (epoch means; thick: mean over seeds, thin: each seed)", fontsize=10)
    _save(fig, path)
    return True


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


def colorize_mask(mask: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Colour a class-index mask: (H, W) uint8 -> (H, W, 3) uint8; 255 (ignore) in black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(colors)] = colors
    lut[255] = IGNORE_COLOR
    return lut[mask]


def false_colour(image: np.ndarray) -> np.ndarray:
    """Display image (H, W, 3) uint8: the first three bands as R, G, B (IRRG gives standard false colour)."""
    if image.shape[-1] >= 3:
        return np.ascontiguousarray(image[..., :3])
    return np.repeat(image[..., :1], 3, axis=-1)


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
    pos = {int(i): k for k, i in enumerate(ds.indices)} if hasattr(ds, "indices") else None
    images = []
    for idx in indices:
        item = ds[pos[idx]] if pos is not None else _find_item(ds, idx)
        images.append(torch.as_tensor(item["image"]))
    with torch.no_grad():
        logits = model(torch.stack(images))
    return logits.argmax(dim=1).to(torch.uint8).numpy()


def _find_item(ds: Any, idx: int) -> dict[str, Any]:
    for k in range(len(ds)):
        item = ds[k]
        if int(item["index"]) == idx:
            return item
    raise SegweakError(f"patch {idx} is not in the validation subset")


def plot_samples(exp: Experiment, path: Path, n: int, sample_seed: int) -> str | None:
    """Grid of validation patches: false-colour image, truth, and each stage's prediction.

    Uses the best checkpoint of training seed ``sample_seed`` (first split seed) of every stage.

    Returns:
        ``None`` when written, else the reason it could not be drawn.
    """
    from segweak.data.splits import load_split
    from segweak.data.store import Store
    from segweak.report.report import row_group

    store_rel = exp.results.get("store")
    if not store_rel:
        return "sample predictions skipped: results.json names no store"
    store_path = Path(store_rel) if Path(store_rel).is_absolute() else exp.path / store_rel
    if not (store_path / "store.json").is_file():
        return f"sample predictions skipped: store {store_path} not found"
    store = Store(store_path)
    split_seeds = exp.results.get("split_seeds") or [0]
    k = split_seeds[0]
    split = (exp.results.get("splits") or {}).get(str(k))
    if split is None:
        return "sample predictions skipped: results.json names no split"
    val_idx = list(load_split(store, split)["subsets"]["val"])
    picks = choose_samples(store, val_idx, n)
    if not picks:
        return "sample predictions skipped: the validation subset is empty"
    seeds = sorted({int(r["seed"]) for r in exp.rows})
    seed = sample_seed if sample_seed in seeds else seeds[0]
    columns: list[tuple[str, np.ndarray]] = []
    missing = []
    for g in exp.groups():
        row = next(
            (
                r
                for r in exp.rows
                if row_group(r) == g and int(r["seed"]) == seed and int(r["split_seed"]) == k
            ),
            None,
        )
        ckpt = exp.path / row["run_dir"] / "checkpoints" / "best.ckpt" if row else None
        if ckpt is None or not ckpt.is_file():
            missing.append(exp.label(g))
            continue
        columns.append((exp.label(g), predict_patches(ckpt, store, split, picks)))
    colors = palette_colors(store.meta, list(store.classes))
    ncols = 2 + len(columns)
    fig = _figure(1.9 * ncols + 0.3, 1.9 * len(picks) + 0.9)
    axes = np.atleast_2d(fig.subplots(len(picks), ncols, squeeze=False))
    for r, idx in enumerate(picks):
        panels = [("image", false_colour(np.asarray(store.images[idx]))),
                  ("truth", colorize_mask(np.asarray(store.masks[idx]), colors))]  # fmt: skip
        panels += [(name, colorize_mask(pred[r], colors)) for name, pred in columns]
        for c, (title, img) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(
                    store.patches[idx].get("id", str(idx)) if hasattr(store, "patches") else str(idx),
                    fontsize=7,
                )
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=colors[i] / 255.0, edgecolor="black", label=c) for i, c in enumerate(store.classes)
    ]
    handles.append(Patch(facecolor=np.asarray(IGNORE_COLOR) / 255.0, edgecolor="black", label="ignore"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(7, len(handles)), fontsize=8)
    _save(fig, path)
    return f"sample predictions: no best checkpoint for {', '.join(missing)}" if missing else None


def make_plots(
    exp: Experiment, n_samples: int = 4, sample_seed: int = 0
) -> tuple[dict[str, tuple[Path, str]], list[str]]:
    """Draw every report figure into ``EXP/plots``.

    Returns:
        ``({key: (path relative to EXP, caption)}, [notes about figures that could not be drawn])``.
    """
    out: dict[str, tuple[Path, str]] = {}
    notes: list[str] = []
    plots = exp.path / "plots"
    if not exp.rows:
        return out, ["no results rows: no plots"]
    plot_stage_bars(exp, plots / "scores_by_stage.png")
    out["miou"] = (
        Path("plots/scores_by_stage.png"),
        "mIoU, mean F1 and OA per stage (±1 std over seeds; dots: seeds).",
    )
    if exp.classes:
        plot_per_class(exp, plots / "per_class_iou.png")
        out["per_class"] = (
            Path("plots/per_class_iou.png"),
            "Per-class IoU per stage (mean ± std over seeds).",
        )
    if plot_learning_curves(exp, plots / "learning_curves.png"):
        out["curves"] = (
            Path("plots/learning_curves.png"),
            "Validation mIoU per epoch (from each run's history.csv).",
        )
    else:
        notes.append("learning curves skipped: no run has a history.csv with val_miou")
    if plot_loss_terms(exp, plots / "loss_terms.png"):
        out["loss_terms"] = (
            Path("plots/loss_terms.png"),
            "Training loss terms per optimiser step, one panel per row of the results (each method's "
            "terms as logged: weighted as optimised).",
        )
    (plots / "samples.png").unlink(missing_ok=True)  # never show a stale grid from an earlier report
    if n_samples > 0:
        try:
            reason = plot_samples(exp, plots / "samples.png", n_samples, sample_seed)
        except (SegweakError, ImportError, RuntimeError, KeyError, ValueError) as exc:
            reason = f"sample predictions could not be drawn: {exc}"
        if (plots / "samples.png").is_file() and (reason is None or "no best checkpoint for" in reason):
            from segweak.report.wording import data_wording, read_store_meta

            store = exp.results.get("store")
            words = data_wording(read_store_meta(exp.path / store if store else None))
            out["samples"] = (
                Path("plots/samples.png"),
                f"Validation patches (seed {sample_seed} best checkpoints): {words.image}, truth and each "
                f"stage's prediction in {words.colours} (black: ignored pixels).",
            )
        if reason:
            notes.append(reason)
    return out, notes
