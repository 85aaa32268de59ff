"""The ``segweak`` command: a thin layer that parses options and calls the stage functions.

Every subcommand imports its stage lazily (so ``segweak --help`` is fast) and turns
:class:`~segweak.errors.SegweakError` into one red line and exit code 2.

Importing this module sets segweak's CPU thread defaults (:mod:`segweak.runtime`): OpenMP reads them
once, when torch is first imported, so they must be in place before any stage module loads torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typer.core import TyperCommand

from segweak import __version__, runtime
from segweak.errors import SegweakError

if TYPE_CHECKING:  # rich loads lazily, for startup speed (`segweak --help`)
    from rich.table import Table

runtime.configure_threads()

app = typer.Typer(
    name="segweak",
    help="Weakly supervised semantic segmentation experiments on aerial imagery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
prepare_app = typer.Typer(help="Cut labelled tiles into a prepared patch store.", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segweak {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Weakly supervised semantic segmentation experiments on aerial imagery."""


# ---- data commands (synth, download, prepare, split, info) ----------------------------------------

# -- synth / download (owner: data sources helper) --


@app.command("synth")
def synth_cmd(
    out: str = typer.Option(..., "--out", help="Output directory (must not exist unless --overwrite)."),
    tiles: int = typer.Option(6, "--tiles", help="Number of areas (tiles, or images for 'scenes')."),
    size: tuple[int, int] = typer.Option((512, 512), "--size", help="Tile size: HEIGHT WIDTH in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same pixels)."),
    zips: bool = typer.Option(False, "--zips", help="Write the official zip archives instead of folders."),
    eroded: bool = typer.Option(True, "--eroded/--no-eroded", help="Also write _noBoundary eroded labels."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing output of an earlier `segweak synth` (nothing else)."
    ),
    layout: str = typer.Option(
        "vaihingen",
        "--layout",
        help="vaihingen (official release), potsdam (official release) or scenes (Scene N/images + "
        "Scene N/masks with palette-mode PNG masks, 2 images per scene).",
    ),
    dsm: bool = typer.Option(False, "--dsm", help="Also write float32 DSMs (vaihingen, potsdam)."),
) -> None:
    """Generate a synthetic data set in an official layout (Vaihingen, Potsdam) or the scene layout."""
    from segweak.data.synthetic import synthesize, synthesize_potsdam, synthesize_scenes

    common = dict(height=size[0], width=size[1], seed=seed, overwrite=overwrite)
    if layout == "vaihingen":
        path = synthesize(out, n_tiles=tiles, zips=zips, eroded=eroded, dsm=dsm, **common)
    elif layout == "potsdam":
        path = synthesize_potsdam(out, n_tiles=tiles, zips=zips, eroded=eroded, dsm=dsm, **common)
    elif layout == "scenes":
        if zips or dsm:
            raise SegweakError("--layout scenes writes plain folders without DSMs: drop --zips and --dsm")
        path = synthesize_scenes(out, n_scenes=max(1, (tiles + 1) // 2), per_scene=2, **common)
    else:
        raise SegweakError(f"--layout must be vaihingen, potsdam or scenes, got {layout!r}")
    typer.echo(f"wrote synthetic {layout}-layout data ({size[0]}×{size[1]} px) to {path}")


@app.command("download")
def download_cmd(
    out: str = typer.Option(..., "--out", help="Directory for the zip files."),
    url: list[str] = typer.Option(
        ..., "--url", help="Base URL (official names appended) or URL of one zip; repeatable."
    ),
    user: str | None = typer.Option(None, "--user", help="HTTP basic-auth user (ISPRS login)."),
    password: str | None = typer.Option(None, "--password", help="HTTP basic-auth password."),
    sha256: list[str] = typer.Option([], "--sha256", help="Expected checksum NAME=HEX; repeatable."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Download the official Vaihingen zips (resumable; verifies SHA-256 when given)."""
    from segweak.data.download import download, parse_sha256

    results = download(out, url, user=user, password=password, sha256=parse_sha256(sha256), progress=progress)
    for r in results:
        if r.status == "missing":
            typer.echo(f"{r.name}: not on the server (optional), skipped")
        else:
            check = "verified" if r.verified else "not verified (no known checksum)"
            typer.echo(f"{r.name}: {r.status}, sha256 {r.sha256} {check}")


# -- prepare / split / info (owner: data store helper) --


def _split_table(name: str, by: str, seed: int, fractions: dict, subsets: dict) -> Table:
    """Table of a split's subsets: target fraction, then patches and valid pixels achieved.

    Args:
        name: The split's name (title).
        by: Its grouping, ``patch`` or ``group`` (title).
        seed: Its seed (title).
        fractions: ``{subset: target fraction}`` (None: held-out groups, no target).
        subsets: ``{subset: {patches, patch_fraction, pixels, pixel_fraction, ...}}`` in display order
            (a manifest's ``achieved`` or ``info``'s ``split.subsets``).
    """
    from rich.table import Table

    table = Table(title=f"split {name!r} (by {by}, seed {seed})")
    for col in ("subset", "target", "patches", "patch fraction", "valid pixels", "pixel fraction"):
        table.add_column(col, justify="left" if col == "subset" else "right")
    for sub, ach in subsets.items():
        target = fractions.get(sub)
        table.add_row(
            sub,
            "groups" if target is None else f"{target:.3f}",
            str(ach["patches"]),
            f"{ach['patch_fraction']:.3f}",
            str(ach["pixels"]),
            f"{ach['pixel_fraction']:.3f}",
        )
    return table


def _excluded_note(n: int) -> str:
    return f"excluded {n} patch(es) without valid pixels" if n else ""


def _print_split_table(manifest: dict) -> None:
    from rich.console import Console

    from segweak.data.splits import fraction_warning, target_fractions

    m = manifest
    Console().print(_split_table(m["name"], m["by"], m["seed"], target_fractions(m), m["achieved"]))
    if manifest.get("nested"):
        typer.echo("nested: val/test fixed by the seed, strong grows by prefix with the strong fraction")
    if "test_groups" in manifest:
        held = manifest["test_groups"]
        typer.echo(
            f"test: {len(held['groups'])} held-out groups ({held['rule']}): {', '.join(held['groups'])}"
        )
    warning = fraction_warning(manifest)
    if warning:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW)
    note = _excluded_note(len(manifest["excluded"]["no_valid_pixels"]))
    if note:
        typer.echo(note)
    if manifest.get("weak_only"):
        typer.echo(
            f"weak also holds {len(manifest['weak_only'])} patch(es) of images without a mask, labelled only "
            f"by weak-label set {manifest['weak_labels']!r}"
        )
    no_labels = manifest["excluded"].get("no_pixel_labels")
    if no_labels:
        typer.echo(
            f"excluded {len(no_labels)} patch(es) of images without a mask"
            + (
                ""
                if manifest.get("weak_labels")
                else " (give --weak-labels NAME to use them as weak patches)"
            )
            + (" that no bag covers" if manifest.get("weak_labels") else "")
        )


def _prepared(out: Path) -> None:
    from segweak.data.store import Store

    st = Store(out)
    eroded = " (with eroded-label masks)" if st.has_eroded_masks else ""
    typer.echo(
        f"wrote {out}: {len(st)} patches of {st.patch}x{st.patch} from {st.meta['n_tiles']} tiles{eroded}"
    )
    unlabelled = st.meta.get("unlabelled_tiles") or []
    if unlabelled:
        typer.echo(
            f"{len(unlabelled)} image(s) have no mask and were stored unlabelled (e.g. {unlabelled[0]}): "
            "import their weak labels (`segweak weak import`) and split with --weak-labels NAME"
        )


_DSM_HELP = (
    "Add the DSM as an extra channel: ndsm (height above local ground) or range (absolute elevation, "
    "needs --dsm-range); see docs/store.md."
)


def _dsm_rule(dsm: str | None, dsm_range: tuple[float, float] | None, dsm_window: float) -> object:
    """Return the DSM channel rule of the --dsm options (None without --dsm)."""
    if dsm is None:
        if dsm_range is not None:
            raise SegweakError("--dsm-range needs --dsm ndsm or --dsm range")
        return None
    from segweak.data.dsm import DsmNormalisation

    return DsmNormalisation(method=dsm, range_m=dsm_range, window_m=dsm_window)


_ERODED_METRICS_HELP = (
    "When every tile also has an eroded (_noBoundary) label, store it too (masks_eroded.npy), so "
    "evaluation reports metrics on the eroded labels next to the full ones (the ISPRS convention)."
)


@prepare_app.command("vaihingen")
def prepare_vaihingen_cmd(
    root: Path = typer.Option(
        ..., "--root", help="Folder with the official zips or their extracted folders."
    ),
    out: Path = typer.Option(..., "--out", help="Output store directory."),
    patch: int = typer.Option(256, "--patch", help="Square patch side in pixels."),
    stride: int | None = typer.Option(
        None, "--stride", help="Window step in pixels (1..patch); default: the patch size (no overlap)."
    ),
    keep_clutter: bool = typer.Option(
        False, "--keep-clutter", help="Keep clutter as a 6th class (else ignore)."
    ),
    eroded: bool = typer.Option(
        False, "--eroded", help="Use the eroded (_noBoundary) labels: object boundaries become ignore."
    ),
    tolerance: float | None = typer.Option(
        None, "--tolerance", help="Max colour distance snapped to a palette colour (default: the palette's)."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an existing store (only a folder holding a store and nothing else).",
    ),
    dsm: str | None = typer.Option(None, "--dsm", help=_DSM_HELP),
    dsm_range: tuple[float, float] | None = typer.Option(
        None, "--dsm-range", help="LOW HIGH metres mapped to 0..255 (default for ndsm: 0 51)."
    ),
    dsm_window: float = typer.Option(100.0, "--dsm-window", help="ndsm ground window in metres."),
    eroded_metrics: bool = typer.Option(
        True, "--eroded-metrics/--no-eroded-metrics", help=_ERODED_METRICS_HELP
    ),
) -> None:
    """Prepare a store from ISPRS Vaihingen (official zips or extracted folders)."""
    from segweak.data.sources import VaihingenSource
    from segweak.data.store import prepare

    rule = _dsm_rule(dsm, dsm_range, dsm_window)
    source = VaihingenSource(root, keep_clutter=keep_clutter, eroded=eroded, tolerance=tolerance, dsm=rule)
    _prepared(
        prepare(source, out, patch=patch, stride=stride, overwrite=overwrite, eroded_metrics=eroded_metrics)
    )


@prepare_app.command("potsdam")
def prepare_potsdam_cmd(
    root: Path = typer.Option(
        ..., "--root", help="Folder with the Potsdam release zips (2_Ortho_RGB.zip, ...) or their folders."
    ),
    out: Path = typer.Option(..., "--out", help="Output store directory."),
    imagery: str = typer.Option(
        "RGBIR", "--imagery", help="Image product: RGB, IRRG or RGBIR (4 bands: R, G, B, IR)."
    ),
    patch: int = typer.Option(256, "--patch", help="Square patch side in pixels."),
    stride: int | None = typer.Option(
        None, "--stride", help="Window step in pixels (1..patch); default: the patch size (no overlap)."
    ),
    keep_clutter: bool = typer.Option(
        False, "--keep-clutter", help="Keep clutter as a 6th class (else ignore)."
    ),
    eroded: bool = typer.Option(
        False, "--eroded", help="Use the eroded (_label_noBoundary) labels: boundaries become ignore."
    ),
    tolerance: float | None = typer.Option(
        None, "--tolerance", help="Max colour distance snapped to a palette colour (default: the palette's)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store."),
    dsm: str | None = typer.Option(None, "--dsm", help=_DSM_HELP),
    dsm_range: tuple[float, float] | None = typer.Option(
        None, "--dsm-range", help="LOW HIGH metres mapped to 0..255 (default for ndsm: 0 51)."
    ),
    dsm_window: float = typer.Option(100.0, "--dsm-window", help="ndsm ground window in metres."),
    eroded_metrics: bool = typer.Option(
        True, "--eroded-metrics/--no-eroded-metrics", help=_ERODED_METRICS_HELP
    ),
) -> None:
    """Prepare a store from ISPRS Potsdam (release zips or extracted folders)."""
    from segweak.data.potsdam import PotsdamSource
    from segweak.data.store import prepare

    rule = _dsm_rule(dsm, dsm_range, dsm_window)
    source = PotsdamSource(
        root, imagery=imagery, keep_clutter=keep_clutter, eroded=eroded, tolerance=tolerance, dsm=rule
    )
    _prepared(
        prepare(source, out, patch=patch, stride=stride, overwrite=overwrite, eroded_metrics=eroded_metrics)
    )


@prepare_app.command("folder")
def prepare_folder_cmd(
    images: str = typer.Option(
        ..., "--images", help="Folder of images, or a quoted glob pattern such as 'data/*/images/*.jpg'."
    ),
    masks: str = typer.Option(
        ...,
        "--masks",
        help="Folder of masks (paired by relative path without extension), or a template of each "
        "image's mask path such as '{parent}/masks/{stem}.png' (docs/palette.md).",
    ),
    palette: Path = typer.Option(..., "--palette", help="Palette YAML (class names and colours/values)."),
    out: Path = typer.Option(..., "--out", help="Output store directory."),
    patch: int = typer.Option(256, "--patch", help="Square patch side in pixels."),
    stride: int | None = typer.Option(
        None, "--stride", help="Window step in pixels (1..patch); default: the patch size (no overlap)."
    ),
    group_by: str = typer.Option(
        "image", "--group-by", help="Split groups: 'image', 'parent' folder or 'top' folder (the scene)."
    ),
    tolerance: float | None = typer.Option(
        None, "--tolerance", help="Max colour distance snapped to a palette colour (default: the palette's)."
    ),
    band_order: str = typer.Option(
        "RGB",
        "--band-order",
        help="Image bands, e.g. RGB, IRRG, RGBIR or R,G,B,NIR (4 names: 4-band images).",
    ),
    allow_missing_masks: bool = typer.Option(
        False,
        "--allow-missing-masks",
        help="Keep images that have no mask, unlabelled (all ignore), for weak labels imported from a "
        "table; without it an image without a mask is an error.",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an existing store (only a folder holding a store and nothing else).",
    ),
) -> None:
    """Prepare a store from images and colour or index masks (two folders, or masks by a path template)."""
    from segweak.data.sources import FolderSource
    from segweak.data.store import prepare

    source = FolderSource(
        images,
        masks,
        palette,
        group_by=group_by,
        tolerance=tolerance,
        band_order=band_order,
        allow_missing_masks=allow_missing_masks,
    )
    _prepared(prepare(source, out, patch=patch, stride=stride, overwrite=overwrite, inputs=[palette]))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _SplitCommand(TyperCommand):
    """``segweak split``, whose ``--fractions`` takes 3 or 4 numbers (``--fractions 0.1 0.6 0.1 0.2``).

    Click options have a fixed number of values; this rewrites the (up to 4) numbers after
    ``--fractions`` into repeated ``--fractions X`` of a multiple option before click parses them.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        rewritten: list[str] = []
        i = 0
        while i < len(args):
            if args[i] == "--":
                rewritten += args[i:]
                break
            if args[i] != "--fractions":
                rewritten.append(args[i])
                i += 1
                continue
            i += 1
            taken = 0
            while i < len(args) and taken < 4 and _is_number(args[i]):
                rewritten += ["--fractions", args[i]]
                i += 1
                taken += 1
            if not taken:
                rewritten.append("--fractions")  # click reports the missing value
        return super().parse_args(ctx, rewritten)


@app.command("split", cls=_SplitCommand)
def split_cmd(
    store: Path = typer.Argument(..., help="Prepared store directory."),
    name: str = typer.Option("default", "--name", help="Split name (STORE/splits/NAME.json)."),
    fractions: list[float] = typer.Option(
        None,
        "--fractions",
        help="Strong, weak, val and optionally test fractions (3 or 4 numbers summing to 1); "
        "default 0.1 0.7 0.2.",
    ),
    nested: bool = typer.Option(
        False, "--nested", help="Nested construction: val/test fixed by the seed, strong sets grow by prefix."
    ),
    test: str | None = typer.Option(
        None,
        "--test",
        help="Hold whole groups out as the test subset: 'official' (ISPRS Vaihingen test areas) or "
        "comma-separated group ids; --fractions then gives strong weak val of the rest.",
    ),
    by: str = typer.Option("patch", "--by", help="'patch' or 'group' (whole groups go to one subset)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    presence_threshold: float = typer.Option(
        0.0, "--presence-threshold", help="A class is present when its proportion exceeds this."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing split of that name."),
    weak_labels: str | None = typer.Option(
        None,
        "--weak-labels",
        help="Imported weak-label set (segweak weak import): patches of images without a mask that its "
        "bags cover become weak patches.",
    ),
) -> None:
    """Split a store into strong / weak / val (/ test) subsets and print the achieved fractions."""
    from segweak.data.splits import OFFICIAL_TEST, make_split

    test_spec: str | list[str] | None = test
    if test is not None and test != OFFICIAL_TEST:
        test_spec = [g.strip() for g in test.split(",") if g.strip()]
    manifest = make_split(
        store,
        name=name,
        fractions=fractions or (0.1, 0.7, 0.2),
        by=by,
        seed=seed,
        presence_threshold=presence_threshold,
        overwrite=overwrite,
        weak_labels=weak_labels,
        nested=nested,
        test=test_spec,
    )
    _print_split_table(manifest)


@app.command("info")
def info_cmd(
    store: Path = typer.Argument(..., help="Prepared store directory."),
    split: str | None = typer.Option(None, "--split", help="Also summarise this split."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON with stable keys (docs/store.md)."),
    verify: bool = typer.Option(
        False, "--verify", help="Reread every file and check it against the SHA-256 recorded at prepare."
    ),
) -> None:
    """Describe a store: source, classes, patches and, with --split, the subsets."""
    import json

    from rich.console import Console
    from rich.table import Table

    from segweak.data.info import info

    data = info(store, split=split, verify=verify)
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    console = Console()
    console.print(
        f"[bold]{data['path']}[/bold] (store format {data['format_version']}, segweak {data['tool_version']})"
    )
    console.print(
        f"source: {data['source']}   band order: {data['band_order']}   channels: {data['channels']}"
    )
    console.print(
        f"patches: {data['n_patches']} of {data['patch']}x{data['patch']} (stride {data['stride']}) "
        f"from {data['n_tiles']} tiles; valid pixels: {data['n_valid_pixels']}"
    )
    if data["n_tiles_unlabelled"]:
        first = data["unlabelled_tiles"][0]
        console.print(
            f"with pixel masks: {data['n_tiles_labelled']} tiles, {data['n_patches_labelled']} patches; "
            f"without (--allow-missing-masks, weak labels only): {data['n_tiles_unlabelled']} tiles "
            f"(e.g. {first}), {data['n_patches_unlabelled']} patches"
        )
    if data.get("eroded_masks"):
        console.print("eroded-label masks: yes (evaluation reports eroded-label metrics too)")
    table = Table(title="classes")
    table.add_column("index", justify="right")
    table.add_column("class")
    table.add_column("pixel fraction", justify="right")
    for i, c in enumerate(data["classes"]):
        f = data["class_pixel_fraction"][c]
        table.add_row(str(i), c, "-" if f is None else f"{f:.3f}")
    console.print(table)
    console.print(f"splits: {', '.join(data['splits']) or '(none)'}")
    for w in data["weak_labels"]:
        if "error" in w:
            console.print(f"weak labels {w['name']!r}: [red]{w['error']}[/red]")
        else:
            console.print(
                f"weak labels {w['name']!r}: imported from {w['file']} (sha256 {w['sha256'][:12]}…), "
                f"{w['bags']} bag(s), {w['patches']} patch(es)"
            )
    if "verified" in data:
        console.print(
            "verified (SHA-256 as recorded at prepare): "
            + ", ".join(f"{f} {v}" for f, v in data["verified"].items())
        )
    elif not data["verifiable"]:
        console.print(
            "note: store.json records no content hashes (prepared by an older segweak); "
            "`info --verify` cannot check this store, re-run `segweak prepare` to make it verifiable"
        )
    if "split" in data:
        sp = data["split"]
        order = list(sp["subsets"])
        console.print(_split_table(sp["name"], sp["by"], sp["seed"], sp["fractions"], sp["subsets"]))
        # The split's statistics always describe the computed labels; imported sets are listed above.
        console.print("weak labels of the split: computed from the masks")
        w = Table(title="mean weak label per subset")
        w.add_column("class")
        for sub in order:
            w.add_column(sub, justify="right")
        for c in data["classes"]:
            cells = [sp["subsets"][sub]["mean_weak"][c] for sub in order]
            w.add_row(c, *("-" if v is None else f"{v:.3f}" for v in cells))
        console.print(w)
        note = _excluded_note(sp["excluded"].get("no_valid_pixels", 0))
        if note:
            console.print(note)


weak_app = typer.Typer(help="Weak labels brought from outside the store.", no_args_is_help=True)
app.add_typer(weak_app, name="weak")


@weak_app.command("import")
def weak_import_cmd(
    table: Path = typer.Argument(
        ...,
        help="CSV or Parquet table (image[, x0, y0, x1, y1 | geometry (WKT)][, bag], one column per "
        "class), or GeoJSON / GeoPackage polygons with those attributes (image optional).",
    ),
    store: Path = typer.Option(..., "--store", help="Prepared store directory."),
    name: str = typer.Option(..., "--name", help="Weak-label set name (STORE/weak/NAME.json)."),
    tolerance: float = typer.Option(0.01, "--tolerance", help="Largest accepted |sum - 1| of a row."),
    normalise: bool = typer.Option(False, "--normalise", help="Rescale rows whose sum is off (warns)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing set of that name."),
    region_crs: str = typer.Option(
        "file",
        "--region-crs",
        help="Polygon coordinates: 'file' (the file's CRS, reprojected to each image's), 'pixel' (image "
        "pixel columns/rows) or a CRS such as EPSG:25832 for a file that declares none.",
    ),
    min_cover: float = typer.Option(
        1.0, "--min-cover", help="Polygons: smallest share of a patch's pixels inside it to join its bag."
    ),
    skip_unplaced: bool = typer.Option(
        False,
        "--skip-unplaced",
        help="Polygons without an image: leave out those that give no patch on any tile (warns) instead "
        "of stopping.",
    ),
) -> None:
    """Import class proportions per image, pixel window or polygon as bags of patches (docs/store.md)."""
    from segweak.data.weak_tables import import_table, unplaced_warning

    data = import_table(
        table,
        store,
        name,
        tolerance=tolerance,
        normalise=normalise,
        overwrite=overwrite,
        region_crs=region_crs,
        min_cover=min_cover,
        skip_unplaced=skip_unplaced,
    )
    if data["skipped_rows"]:
        warning = unplaced_warning(data["skipped_rows"], "--skip-unplaced")
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if data["normalised_rows"]:
        typer.secho(
            f"warning: {data['normalised_rows']} row(s) did not sum to 1 within {tolerance} and were "
            "normalised (--normalise)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    sizes = sorted(len(b["patches"]) for b in data["bags"])
    typer.echo(
        f"weak labels {name!r}: {len(sizes)} bag(s), {data['n_patches']} patch(es), patches per bag "
        f"{sizes[0]}..{sizes[-1]}, from {table} (sha256 {data['source']['sha256'][:12]}…) -> "
        f"{Path(store) / 'weak' / (name + '.json')}"
    )


# -- end prepare / split / info --


# ---- training commands (train, evaluate, predict) -------------------------------------------------


def _metric_line(metrics: dict) -> str:
    def fmt(v: object) -> str:
        return "n/a" if v is None else f"{float(v):.4f}"

    return (
        f"mIoU {fmt(metrics.get('miou'))}  mF1 {fmt(metrics.get('mf1'))}  OA {fmt(metrics.get('oa'))}"
        f"  prop-MAE {fmt(metrics.get('prop_mae'))}  presence-F1 {fmt(metrics.get('presence_f1'))}"
    )


@app.command("train")
def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="TrainConfig YAML file."),
    overrides: list[str] | None = typer.Option(
        None, "--set", "-s", help="Override a config key, e.g. --set trainer.max_epochs=5 (repeatable)."
    ),
    method: str | None = typer.Option(
        None, "--method", help="Training method (method), e.g. supervised, proportion, joint."
    ),
    stage: str | None = typer.Option(
        None, "--stage", hidden=True, help="Deprecated: the old name of --method (strong, weak, ...)."
    ),
    store: Path | None = typer.Option(None, "--store", help="Prepared store (data.store)."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Parent of run directories (out_dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from checkpoints/last.ckpt."),
    wait: bool = typer.Option(
        False, "--wait", help="If another segweak process uses the run directory, wait for it to finish."
    ),
) -> None:
    """Train one run of a training method; writes RUN/config.yaml, checkpoints, history.csv, metrics.json."""
    from segweak.config import TrainConfig, load_config
    from segweak.train.engine import is_global_zero, train

    sets = list(overrides or [])
    if method is not None:
        sets.append(f"method={method}")
    if stage is not None:
        sets.append(f"stage={stage}")
    if store is not None:
        sets.append(f"data.store={store}")
    if out_dir is not None:
        sets.append(f"out_dir={out_dir}")
    if resume:
        sets.append("resume=true")
    cfg = load_config(TrainConfig, config, sets)
    if is_global_zero():
        typer.echo(runtime.thread_summary())
    metrics = train(cfg, wait=wait)
    if is_global_zero():  # under DDP every rank runs this command; one result line is enough
        chosen = f"best epoch {metrics.get('best_epoch')}"
        if metrics.get("selection") == "last":
            chosen = f"last epoch {metrics.get('selected_epoch')}"
        typer.echo(f"{cfg.run_dir}: {_metric_line(metrics)} ({chosen})")
        if metrics.get("test"):
            typer.echo(f"  test ({metrics['test']['n_patches']} patches): {_metric_line(metrics['test'])}")


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt) written by segweak train."),
    store: Path = typer.Option(..., "--store", help="Prepared store directory."),
    split: str = typer.Option("default", "--split", help="Split name."),
    subset: str = typer.Option(
        "val", "--subset", help="strong, weak, val, test (a split that holds one out), full or all."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the metrics to this JSON file."),
    batch_size: int = typer.Option(16, "--batch-size", help="Batch size."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
) -> None:
    """Evaluate a checkpoint on a subset of a split (same metrics as training's validation)."""
    from segweak.evaluate.evaluate import evaluate

    metrics = evaluate(
        checkpoint, store, split=split, subset=subset, batch_size=batch_size, device=device, out=out
    )
    typer.echo(f"{checkpoint} on {split}/{subset}: {_metric_line(metrics)}")
    if metrics.get("eroded"):
        typer.echo(f"  eroded labels: {_metric_line(metrics['eroded'])}")
    for name, iou in metrics["per_class_iou"].items():
        typer.echo(f"  {name:<16} IoU {'absent' if iou is None else f'{iou:.4f}'}")


@app.command("predict")
def predict_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.ckpt) written by segweak train."),
    store: Path = typer.Option(..., "--store", help="Prepared store whose tiles to predict."),
    out: Path = typer.Option(..., "--out", help="Output directory (PNG, GeoTIFF, metrics.json)."),
    tiles: list[str] | None = typer.Option(None, "--tiles", help="Tile ids (repeatable); default: all."),
    overlap: float = typer.Option(0.5, "--overlap", help="Window overlap fraction in [0, 1)."),
    blend: str = typer.Option("gaussian", "--blend", help="gaussian or mean."),
    window: int | None = typer.Option(None, "--window", help="Window side; default: the store's patch."),
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per forward pass."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
) -> None:
    """Predict whole tiles with a sliding window; write colour PNGs, GeoTIFFs and full-tile metrics."""
    from segweak.evaluate.predict import predict_tiles

    result = predict_tiles(
        checkpoint,
        store,
        out,
        tiles=tiles,
        window=window,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        device=device,
    )
    typer.echo(f"predicted {len(result['tiles'])} tile(s) into {out}")
    if result.get("overall"):
        typer.echo(f"  full labels:        {_metric_line(result['overall'])}")
    if result.get("overall_no_boundary"):
        typer.echo(f"  no-boundary labels: {_metric_line(result['overall_no_boundary'])}")
    seen = {t: e["training_patches"] for t, e in result["tiles"].items() if e.get("training_patches")}
    if seen and (result.get("overall") or result.get("overall_no_boundary")):
        listed = ", ".join(f"{t} ({n})" for t, n in seen.items())
        typer.secho(
            f"  note: these tiles contain patches trained on (strong/weak subsets): {listed}; "
            "their full-tile metrics are not a held-out evaluation (use `segweak evaluate` on the val "
            "subset, or a split made with --by group, for held-out numbers)",
            fg=typer.colors.YELLOW,
        )


@app.command("pseudo-label")
def pseudo_label_cmd(
    checkpoint: Path = typer.Argument(..., help="Teacher checkpoint (.ckpt) written by segweak train."),
    store: Path = typer.Option(..., "--store", help="Prepared store directory."),
    split: str = typer.Option("default", "--split", help="Split name; its weak subset is labelled."),
    out: Path = typer.Option(..., "--out", help="Artefact directory to write (must not exist)."),
    assignment: str = typer.Option("topk", "--assignment", help="topk or sinkhorn."),
    keep: float = typer.Option(
        1.0, "--keep", help="Fraction in (0, 1] of each patch's pixels labelled (most confident)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Patches per teacher forward pass."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    noise: str = typer.Option(
        "",
        "--noise",
        help="The student run's weak.noise as YAML, e.g. '{model: dirichlet, concentration: 50}': "
        "the quotas come from those noisy proportions.",
    ),
) -> None:
    """Label the weak patches with a teacher under their class proportions (for method pseudo_label)."""
    from segweak.config import noise_config
    from segweak.train.pseudo_labels import PseudoLabels, make_pseudo_labels

    noise_cfg = noise_config(noise) if noise else None

    path = make_pseudo_labels(
        checkpoint,
        store,
        split,
        out,
        assignment=assignment,
        keep=keep,
        batch_size=batch_size,
        device=device,
        noise=noise_cfg,
        log=typer.echo,
    )
    stats = PseudoLabels(path).meta["stats"]
    agreement = stats["teacher_agreement"]
    typer.echo(
        f"{path}: {stats['labelled']} of {stats['pixels']} pixels labelled; teacher argmax kept on "
        f"{'n/a' if agreement is None else f'{agreement:.1%}'} of them"
    )
    typer.echo(f"train a student with --set method=pseudo_label --set methods.pseudo_label.labels={path}")


# ---- experiment commands (run, report, demo) ------------------------------------------------------


def _print_results(exp_dir: Path, console: object | None = None) -> None:
    """Print the per-stage results table and the headline(s) of a finished experiment."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from segweak.experiment.results import load_experiment
    from segweak.report.report import headlines, summary_table
    from segweak.report.views import headline_metric, sweep_points

    console = console or Console()
    exp = load_experiment(exp_dir)
    metric = headline_metric(exp)
    title = f"results: {exp.results.get('name')}"
    if exp.results.get("synthetic"):
        title += " (SYNTHETIC data)"
    # One table per sweep point, the point in its title: a point column (``key=value`` of dotted keys,
    # often 40+ characters) would squeeze every number to "…" in an 80-column terminal.
    for point in sweep_points(exp):
        header, rows = summary_table(point.exp, metric)
        # No vertical rules and one space between columns: 9 columns of "0.631 ± 0.012" must fit 80
        # terminal columns.
        table = Table(
            title=f"{title} at {point.label}" if point.label else title,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        for i, col in enumerate(header):
            # The row names stay whole (no "baseli…"); the number cells wrap, and fold rather than
            # being cut to "…" where a word does not fit.
            if i == 0:
                table.add_column(col, justify="left", no_wrap=True)
            else:
                table.add_column(col, justify="right", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)  # type: ignore[attr-defined]
    for text in headlines(exp):
        console.print(text.replace("**", ""), highlight=False)  # type: ignore[attr-defined]


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise SegweakError(
            f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 0,1,2"
        ) from None
    if not seeds:
        raise SegweakError("--seeds: give at least one seed, e.g. --seeds 0")
    return seeds


@app.command("run")
def run_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Experiment YAML (see docs/config.md)."),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a key, e.g. --set seeds=[0,1] --set train.trainer.max_epochs=5."
    ),
    out: Path | None = typer.Option(None, "--out", help="Experiment directory (overrides out_dir)."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.md / report.html."),
    wait: bool = typer.Option(
        False, "--wait", help="If another segweak process uses the experiment, wait for it to finish."
    ),
) -> None:
    """Run the protocol (baseline, weak, finetune, full and compared methods over seeds); rerun to resume."""
    from segweak.experiment.plan import load_experiment_config
    from segweak.experiment.run import run_experiment

    sets = list(overrides or [])
    if out is not None:
        sets.append(f"out_dir={out}")
    cfg = load_experiment_config(config, sets)
    exp_dir = run_experiment(cfg, make_report=not no_report, wait=wait)
    from segweak.train.engine import is_global_zero

    if not is_global_zero():  # the other DDP ranks only took part in training
        return
    _print_results(exp_dir)
    typer.echo(f"results: {exp_dir / 'results.csv'}")
    if not no_report:
        typer.echo(f"report: {exp_dir / 'report.html'}  (Markdown: {exp_dir / 'report.md'})")


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="Experiment directory written by `segweak run`."),
    samples: int | None = typer.Option(None, "--samples", help="Patches in the prediction grid (0: none)."),
) -> None:
    """(Re)write report.md, report.html and plots/ of an experiment directory."""
    from segweak.experiment.samples import ensure_samples
    from segweak.report.report import report

    # Predicting the sample patches is experiment work; the report only reads samples.npz.
    ensure_samples(run_dir, samples, log=lambda msg: typer.echo(f"segweak report: {msg}"))
    path = report(run_dir, samples=samples)
    _print_results(run_dir)
    typer.echo(f"report: {path}  (Markdown: {run_dir / 'report.md'})")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("segweak-demo"), "--out", help="Experiment directory."),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Training seeds, e.g. 0,1,2 (default: demo.yaml's)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Tiny sizes, seconds: a smoke test, numbers meaningless."
    ),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a demo.yaml key, e.g. --set train.weak.area=valid (repeatable)."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="If another segweak process uses the directory, wait for it to finish."
    ),
) -> None:
    """Run the whole protocol on SYNTHETIC data on the CPU in minutes (no download needed)."""
    from rich.console import Console

    from segweak.experiment.demo import demo

    console = Console()
    console.print(
        "[bold yellow]segweak demo: the data are SYNTHETIC (procedurally generated Vaihingen-layout "
        "tiles); the numbers exercise the pipeline, they are not results on Vaihingen.[/]"
    )
    exp_dir = demo(
        out, seeds=_parse_seeds(seeds), quick=quick, console=console, overrides=overrides, wait=wait
    )
    _print_results(exp_dir, console)
    console.print(
        "[bold yellow]Reminder: SYNTHETIC data.[/] "
        f"results: {exp_dir / 'results.csv'}   report: {exp_dir / 'report.html'}",
        highlight=False,
    )


def _one_line(message: str) -> str:
    """Join a message's lines: the promise is one line, even when a wrapped library message has more."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``segweak`` console script; returns the process exit code."""
    try:
        policy = runtime.configured_policy()
        if policy is not None and policy.error:
            raise SegweakError(policy.error)
        app(args=argv, standalone_mode=False)
    except (SegweakError, FileExistsError) as exc:
        typer.secho(f"error: {_one_line(str(exc))}", fg=typer.colors.RED, err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.secho("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        return 130
    except Exception as exc:  # click usage errors
        import click

        # typer >= 0.29 vendors click: its usage errors derive from typer.exceptions.TyperException.
        usage_errors = (click.exceptions.ClickException, typer.exceptions.TyperException)
        if isinstance(exc, usage_errors) and hasattr(exc, "show"):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
