"""Preparing an experiment's data: the source, the prepared store and one split per split seed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segweak.config import ExperimentConfig, WeakLabelsImport
from segweak.errors import SegweakError
from segweak.experiment.plan import experiment_store, split_name, split_weak_labels


def _dsm(cfg: ExperimentConfig) -> Any:
    """Return the DSM channel rule of ``dataset.dsm`` (None without a DSM channel)."""
    ds = cfg.dataset
    if ds.dsm is None:
        return None
    from segweak.data.dsm import DsmNormalisation

    rng = tuple(ds.dsm_range) if ds.dsm_range is not None else None
    return DsmNormalisation(method=ds.dsm, range_m=rng, window_m=ds.dsm_window)  # type: ignore[arg-type]


def _make_source(cfg: ExperimentConfig, exp_dir: Path, log: Callable[[str], None]) -> Any:
    """Build the data source the store is prepared from (generating synthetic data if asked)."""
    ds = cfg.dataset
    from segweak.data import sources

    dsm = _dsm(cfg)
    if ds.source == "synthetic":
        from segweak.data.synthetic import synthesize

        root = exp_dir / "synthetic"
        if not root.exists():
            log(
                f"generating SYNTHETIC Vaihingen-layout data: {ds.synthetic.tiles} tiles of "
                f"{ds.synthetic.height}x{ds.synthetic.width} px -> {root}"
            )
            synthesize(
                root,
                n_tiles=ds.synthetic.tiles,
                height=ds.synthetic.height,
                width=ds.synthetic.width,
                seed=ds.synthetic.seed,
                zips=False,
                eroded=ds.synthetic.eroded,
                log=log,
                dsm=dsm is not None,
            )
        return sources.VaihingenSource(
            root, keep_clutter=ds.keep_clutter, eroded=ds.eroded, tolerance=ds.tolerance, dsm=dsm
        )
    if ds.source == "vaihingen":
        return sources.VaihingenSource(
            ds.root, keep_clutter=ds.keep_clutter, eroded=ds.eroded, tolerance=ds.tolerance, dsm=dsm
        )
    if ds.source == "potsdam":
        from segweak.data.potsdam import PotsdamSource

        return PotsdamSource(
            ds.root,
            imagery=ds.imagery,
            keep_clutter=ds.keep_clutter,
            eroded=ds.eroded,
            tolerance=ds.tolerance,
            dsm=dsm,
        )
    if ds.source == "folder":
        return sources.FolderSource(
            ds.images,
            ds.masks,
            ds.palette,
            group_by=ds.group_by,
            tolerance=ds.tolerance,
            band_order=ds.band_order,
        )
    raise SegweakError(f"dataset.source {ds.source!r} has no source to prepare from")


def _store_mismatches(meta: dict[str, Any], cfg: ExperimentConfig, source: Any) -> list[str]:
    """Differences between an existing store's metadata and what the experiment would prepare."""
    ds = cfg.dataset
    stride = ds.stride or ds.patch
    out = []
    if meta.get("patch") != ds.patch:
        out.append(f"patch {meta.get('patch')} != dataset.patch {ds.patch}")
    if meta.get("stride") != stride:
        out.append(f"stride {meta.get('stride')} != dataset.stride {stride}")
    from segweak.data.store import class_names

    classes = class_names(source.classes)
    if list(meta.get("classes", [])) != classes:
        out.append(f"classes {meta.get('classes')} != {classes}")
    band_order = getattr(source, "band_order", None)
    if band_order is not None and meta.get("band_order") != band_order:
        out.append(f"bands {meta.get('band_order')} != {band_order}")
    n_tiles = meta.get("n_tiles")
    expected_tiles = len(source.tiles())
    if n_tiles is not None and n_tiles != expected_tiles:
        out.append(f"{n_tiles} tiles != {expected_tiles} tiles in the source")
    return out


def prepare_data(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> Path:
    """Return the prepared store of the experiment, preparing it when needed.

    An existing store is reused when its metadata (patch, stride, classes, tiles) matches the
    config; otherwise this is an error (the runs trained on it would no longer match).

    Raises:
        SegweakError: When an existing store does not match, or preparation fails.
    """
    from segweak.data.store import Store, prepare

    exp_dir = Path(cfg.out_dir)
    store_path = experiment_store(cfg)
    if cfg.dataset.source == "store":
        if not (store_path / "store.json").is_file():
            raise SegweakError(
                f"dataset.store {store_path} is not a prepared store (no store.json); run segweak prepare"
            )
        Store(store_path)  # validates the format version
        log(f"using prepared store {store_path}")
        return store_path
    source = _make_source(cfg, exp_dir, log)
    if (store_path / "store.json").is_file():
        meta = Store(store_path).meta
        bad = _store_mismatches(meta, cfg, source)
        if bad:
            raise SegweakError(
                f"the existing store {store_path} does not match the config ({'; '.join(bad)}); "
                "delete it (and the runs trained on it) or set dataset.store / out_dir to a new path"
            )
        log(f"store {store_path} is up to date ({meta.get('n_patches')} patches), skipping prepare")
        return store_path
    stride = cfg.dataset.stride or cfg.dataset.patch
    log(f"preparing store {store_path} (patch {cfg.dataset.patch}, stride {stride})")
    prepare(
        source,
        store_path,
        patch=cfg.dataset.patch,
        stride=stride,
        overwrite=False,
        progress=False,
        log=log,
    )
    return store_path


def _import_options(imp: WeakLabelsImport) -> dict[str, Any]:
    """Return the options of an import that change the set it writes, as ``STORE/weak/NAME.json`` has them.

    ``region_crs``, ``min_cover`` and ``skip_unplaced`` only matter for polygons (GeoJSON, GeoPackage
    or a WKT column), so for other tables they are recorded as null.
    """
    from segweak.data.weak_tables import polygon_regions

    polygons = polygon_regions(imp.table)
    return {
        "tolerance": imp.tolerance,
        "normalise": imp.normalise,
        "region_crs": imp.region_crs if polygons else None,
        "min_cover": imp.min_cover if polygons else None,
        "skip_unplaced": imp.skip_unplaced if polygons else None,
    }


def check_weak_label_imports(cfg: ExperimentConfig) -> None:
    """Refuse, before any work, an import whose table can only fail once the store exists.

    A CSV / Parquet table with a WKT column declares no CRS, so ``region_crs: file`` (the default)
    cannot place its polygons; the header alone says so.

    Raises:
        SegweakError: Naming ``weak_labels[i].region_crs`` and what to set.
    """
    from segweak.data.weak_tables import GEO_SUFFIXES, polygon_regions

    for i, imp in enumerate(cfg.weak_labels):
        wkt = Path(imp.table).suffix.lower() not in GEO_SUFFIXES and polygon_regions(imp.table)
        if wkt and imp.region_crs == "file":
            raise SegweakError(
                f"weak_labels[{i}].region_crs: {imp.table} has a WKT polygon column and a table declares "
                "no CRS; set region_crs to the polygons' CRS (e.g. EPSG:32632) or to pixel"
            )


def import_weak_labels(cfg: ExperimentConfig, store_path: Path, log: Callable[[str], None] = print) -> None:
    """Import every ``weak_labels`` table into a prepared store, unless it holds that very import.

    Each table becomes ``STORE/weak/NAME.json`` (:func:`segweak.data.weak_tables.import_table`, the same as
    ``segweak weak import``). An existing set of that name is kept when it was imported from a file
    with the same SHA-256 and the same options (so rerunning an experiment, or another point of a
    sweep on the same store, imports nothing); any other existing set is never replaced.

    Raises:
        SegweakError: ``weak_labels[i]: ...`` when the store holds another set of that name, or a bad
            row of the table (one line naming it).
    """
    from segweak.data.store import file_sha256
    from segweak.data.weak_tables import import_table, set_path, unplaced_warning

    for i, imp in enumerate(cfg.weak_labels):
        where = f"weak_labels[{i}]"
        table = Path(imp.table)
        sha = file_sha256(table)
        wanted = _import_options(imp)
        out = set_path(store_path, imp.name)
        if out.exists():
            try:
                have = json.loads(out.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                have = {}
            # A set imported before skip_unplaced existed was imported without it: False for polygons
            # (whose sets record a min_cover), null for other tables.
            legacy = {"skip_unplaced": False if have.get("min_cover") is not None else None}
            recorded = {key: have.get(key, legacy.get(key)) for key in wanted}
            have_sha = str((have.get("source") or {}).get("sha256", ""))
            if have_sha == sha and recorded == wanted:
                log(
                    f"{where}: weak-label set {imp.name!r} of {store_path} is this import of {table}, "
                    "reusing it"
                )
                continue
            differs = "the table's SHA-256" if have_sha != sha else f"options {recorded}, wanted {wanted}"
            raise SegweakError(
                f"{where}: store {store_path} already has weak-label set {imp.name!r} from "
                f"{(have.get('source') or {}).get('file', 'another import')} ({differs} differ); give "
                f"{where}.name another name, or delete {out} (and the runs trained on it) to import {table}"
            )
        try:
            data = import_table(
                table,
                store_path,
                imp.name,
                tolerance=imp.tolerance,
                normalise=imp.normalise,
                region_crs=imp.region_crs,
                min_cover=imp.min_cover,
                skip_unplaced=imp.skip_unplaced,
            )
        except SegweakError as exc:
            raise SegweakError(f"{where}: {exc}") from None
        normalised = data["normalised_rows"]
        note = f", {normalised} row(s) normalised ({where}.normalise)" if normalised else ""
        if data.get("skipped_rows"):  # say which regions the set lost, as `segweak weak import` does
            note += "; WARNING: " + unplaced_warning(data["skipped_rows"], f"{where}.skip_unplaced")
        log(
            f"{where}: imported {table} (sha256 {sha[:12]}) as weak-label set {imp.name!r}: "
            f"{len(data['bags'])} bag(s), {data['n_patches']} patch(es){note}"
        )


def make_splits(
    cfg: ExperimentConfig, store_path: Path, log: Callable[[str], None] = print
) -> dict[int, str]:
    """Make (or check and reuse) one split manifest per split seed; return ``{split_seed: name}``.

    Every ``split`` key is passed on (``fractions``, ``by``, ``nested``, ``test``), and
    ``train.weak.labels`` when it names an imported set (:func:`~segweak.experiment.plan.split_weak_labels`).

    Raises:
        SegweakError: When a manifest of that name exists with other settings.
    """
    from segweak.data.splits import fraction_warning, load_split, make_split, split_mismatch
    from segweak.data.store import Store

    store = Store(store_path)
    names: dict[int, str] = {}
    sp = cfg.split
    weak_labels = split_weak_labels(cfg)
    for k in sp.seeds:
        name = split_name(cfg, k)
        names[k] = name
        manifest = store_path / "splits" / f"{name}.json"
        if manifest.is_file():
            existing = load_split(store, name)
            diff = split_mismatch(existing, sp.fractions, sp.by, k, nested=sp.nested, test=sp.test)
            if diff is None and existing.get("weak_labels") != weak_labels:
                diff = f"weak_labels {existing.get('weak_labels')}, wanted {weak_labels}"
            if diff is not None:
                raise SegweakError(
                    f"split manifest {manifest} exists with other settings ({diff}); set split.name to a "
                    "new name or delete the manifest and the runs trained on it"
                )
            log(f"split {name!r} exists, reusing it")
            continue
        nested = ", nested" if sp.nested else ""
        test = f", test {sp.test}" if sp.test is not None else ""
        log(f"making split {name!r} (fractions {sp.fractions}, by {sp.by}{nested}{test}, seed {k})")
        made = make_split(
            store,
            name,
            fractions=sp.fractions,
            by=sp.by,
            seed=k,
            nested=sp.nested,
            test=sp.test,
            weak_labels=weak_labels,
        )
        warning = fraction_warning(made)
        if warning:
            log(f"warning: {warning}")
    return names
