"""Sweeps: one experiment config run at every point of a cross product of axes.

An experiment config's ``sweep`` maps dotted keys to lists of values::

    sweep:
      split.strong: [0.05, 0.1, 0.2]      # derived key: the strong fraction (nested splits)
      dataset.patch: [32, 64]             # one prepared store per distinct dataset section
      train.weak.noise: [{model: none}, {model: dirichlet, concentration: 20}]
      methods: [[proportion], [proportion, joint]]

Every point of the cross product is the experiment config with the point's values set (a mapping
value is merged over its section, as ``--set`` does); the protocol (stages x methods x split seeds x
seeds) runs at each point. What each key does:

* ``split.strong`` (derived): the strong fraction; the weak subset gets the rest of the strong + weak
  share of ``split.fractions`` (val and test keep theirs), and the splits are nested
  (``split.nested: true``), so smaller strong sets are subsets of larger ones and val/test are the
  same patches at every point;
* ``split.<key>``: another split key (not ``name`` or ``seeds``);
* ``dataset.<key>``: the data (e.g. ``patch``, the bag size); every distinct dataset section gets its
  own store, ``<out_dir>/stores/<slug>/``, shared by the points that use it;
* ``train.<key>`` / ``stage_overrides.<key>``: training keys of every run / of one row;
* ``methods``: each value is a list of methods.

``seeds`` and ``split.seeds`` are repeats of every point, never axes. A point's split manifests are
named ``<split.name>_<slug of its split.* and train.weak.labels values>`` (plain ``split.name`` when
no such axis), its runs live in ``<out_dir>/runs/<point slug>/<run name>``. Without ``sweep`` there
is one point with no factors and the layout of an experiment without sweeps.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segweak.config import DatasetConfig, ExperimentConfig, SplitConfig, deep_merge, from_dict, to_dict
from segweak.errors import SegweakError

STRONG = "split.strong"
"""Derived axis key: the strong fraction of the split (the rest of the strong + weak share is weak)."""

STORES_DIR = "stores"
"""Experiment subdirectory of the stores of a sweep over ``dataset.*`` keys (``stores/<slug>/``)."""

#: Keys that are not axes, and what to do instead.
_NOT_AXES = {
    "seeds": "training seeds repeat every point; list them in seeds, not in sweep",
    "split.seeds": "split seeds repeat every point; list them in split.seeds, not in sweep",
    "split.name": "the sweep names each point's split manifests itself",
    "dataset.source": "one experiment reads one source; run one experiment per source",
    "dataset.store": "the sweep places the store of each dataset section under <out_dir>/stores/",
}

_SLUG_BAD = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class SweepPoint:
    """One point of a sweep (the only point of an experiment without one).

    Attributes:
        factors: ``{dotted key: value}`` of the point, in axis order (``{}`` without a sweep).
        label: ``key=value`` pairs joined by ``,`` (``""`` without a sweep), e.g.
            ``split.strong=0.05,dataset.patch=64``: the ``point`` column of the results.
        slug: File-name form of the label (``""`` without a sweep), e.g. ``split.strong-0.05``: the
            point's directory under ``runs/`` (and ``pseudo/``).
        cfg: The experiment config at this point (no ``sweep``; ``split.name`` and, for a sweep over
            ``dataset.*``, ``dataset.store`` set for the point).
    """

    factors: dict[str, Any]
    label: str
    slug: str
    cfg: ExperimentConfig = field(repr=False)


def _flatten(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten ``{"a": {"b": [..]}}`` to ``{"a.b": [..]}`` (``--set sweep.a.b=[..]`` nests the key)."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _leaf_fields(cls: type, prefix: str = "") -> set[str]:
    """Dotted names of the non-dataclass fields of dataclass ``cls`` (nested dataclasses expanded)."""
    hints = typing.get_type_hints(cls)
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out |= _leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.add(f"{prefix}{f.name}")
    return out


def _check_key(cfg: ExperimentConfig, key: str, axes: dict[str, Any]) -> None:
    """Check that ``key`` is an axis the experiment can sweep (before looking at its values)."""
    where = f"sweep.{key}"
    if key in _NOT_AXES:
        raise SegweakError(f"{where}: not an axis: {_NOT_AXES[key]}")
    root, _, rest = key.partition(".")
    if key == STRONG:
        for other in ("split.fractions", "split.nested"):
            if other in axes:
                raise SegweakError(
                    f"{where}: sets split.fractions and split.nested itself; remove sweep.{other}"
                )
        return
    if key == "methods" or (root in ("train", "stage_overrides") and rest):
        return  # any training key: checked when applied (TrainConfig is strict)
    if root == "split" and f"split.{rest}" in _leaf_fields(SplitConfig, "split."):
        return
    if root == "dataset" and key in _leaf_fields(DatasetConfig, "dataset."):
        if rest.startswith("synthetic."):
            raise SegweakError(
                f"{where}: the synthetic data is generated once per experiment; sweep dataset.patch "
                "or other keys of how it is prepared, or run one experiment per synthetic dataset"
            )
        if cfg.dataset.source == "store":
            raise SegweakError(
                f"{where}: dataset.source is 'store', a store prepared once; sweep dataset keys with "
                "a source the experiment prepares (synthetic, vaihingen, potsdam, folder)"
            )
        return
    raise SegweakError(
        f"{where}: not a key an experiment can sweep; use split.strong, split.<key>, dataset.<key>, "
        "train.<key>, stage_overrides.<key> or methods (docs/config.md, 'Sweeps')"
    )


def sweep_axes(cfg: ExperimentConfig) -> dict[str, list[Any]]:
    """Return the checked axes of ``cfg.sweep`` (``{}`` without a sweep), in config order.

    Raises:
        SegweakError: Naming ``sweep.<key>``: not an axis, not a list, an empty list or a value listed
            twice.
    """
    axes = _flatten(cfg.sweep)
    for key, values in axes.items():
        _check_key(cfg, key, axes)
        if not isinstance(values, list) or not values:
            raise SegweakError(
                f"sweep.{key}: give a non-empty list of values, e.g. sweep: {{{key}: [a, b]}}; got {values!r}"
            )
        texts = [_value_text(v) for v in values]
        twice = next((t for i, t in enumerate(texts) if t in texts[:i]), None)
        if twice is not None:
            raise SegweakError(f"sweep.{key}: the value {twice} is listed twice")
    return axes


def _value_text(value: Any) -> str:
    """Return a value as written in a point label: strings bare, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _slug(factors: dict[str, Any]) -> str:
    """File-name form of ``factors``: ``key-value`` pairs joined by ``_`` (unsafe characters -> ``-``)."""
    parts = [_SLUG_BAD.sub("-", f"{k}-{_value_text(v)}").strip("-.") for k, v in factors.items()]
    return "_".join(parts)


def _apply(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return the raw experiment mapping ``data`` with the axis ``key`` set to ``value``."""
    if key != STRONG:
        node: Any = value
        for part in reversed(key.split(".")):
            node = {part: node}
        return deep_merge(data, node)
    fractions = [float(f) for f in data["split"]["fractions"]]
    share = fractions[0] + fractions[1]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= share + 1e-9:
        raise SegweakError(
            f"{value!r} is not a strong fraction in (0, {share:g}] (the strong + weak share of "
            f"split.fractions {fractions})"
        )
    # Rounded so that 0.8 - 0.05 reads 0.75 in manifests and logs, not 0.7499999999999999.
    fractions[0], fractions[1] = float(value), round(max(share - float(value), 0.0), 12)
    split = {**data["split"], "fractions": fractions, "nested": True}
    return {**data, "split": split}


def point_config(cfg: ExperimentConfig, factors: dict[str, Any]) -> ExperimentConfig:
    """Return the experiment config at the point ``factors`` (validated; without ``sweep``).

    Raises:
        SegweakError: When a value is invalid once set (the message names the config key).
    """
    data = copy.deepcopy(to_dict(cfg))
    data["sweep"] = {}
    for key, value in factors.items():
        data = _apply(data, key, value)
    point = from_dict(ExperimentConfig, data).validate()
    split_factors = {k: v for k, v in factors.items() if k.startswith("split.") or k == "train.weak.labels"}
    if split_factors:
        point.split.name = f"{cfg.split.name}_{_slug(split_factors)}"
    dataset_factors = {k: v for k, v in factors.items() if k.startswith("dataset.")}
    if dataset_factors:
        point.dataset.store = str(Path(cfg.out_dir) / STORES_DIR / _slug(dataset_factors))
    return point


def expand(
    cfg: ExperimentConfig, check: Callable[[ExperimentConfig], None] | None = None
) -> list[SweepPoint]:
    """Every point of the sweep, in order (the last axis varies fastest); one point without a sweep.

    Each axis value is first checked on its own (errors name ``sweep.<key>``), then every point
    (errors name the point), all before any work starts.

    Args:
        cfg: Validated experiment config.
        check: Extra check of a point's config (e.g. resolving every run's training config); raises
            :class:`SegweakError`.

    Raises:
        SegweakError: Naming ``sweep.<key>`` (or the point) and what is wrong.
    """
    axes = sweep_axes(cfg)
    if not axes:
        return [SweepPoint({}, "", "", cfg)]

    def checked(factors: dict[str, Any]) -> ExperimentConfig:
        point = point_config(cfg, factors)
        if check is not None:
            check(point)
        return point

    for key, values in axes.items():
        for value in values:
            try:
                checked({key: value})
            except SegweakError as exc:
                raise SegweakError(f"sweep.{key}: value {_value_text(value)}: {exc}") from None
    points: list[SweepPoint] = []
    seen: dict[str, str] = {}
    for combo in itertools.product(*axes.values()):
        factors = dict(zip(axes, combo, strict=True))
        label = ",".join(f"{k}={_value_text(v)}" for k, v in factors.items())
        try:
            point = checked(factors)
        except SegweakError as exc:
            raise SegweakError(f"sweep point {label}: {exc}") from None
        slug = _slug(factors)
        if slug in seen:
            raise SegweakError(
                f"sweep: the points {seen[slug]} and {label} get the same directory name {slug!r}; give "
                "values that differ in letters or digits"
            )
        seen[slug] = label
        points.append(SweepPoint(factors, label, slug, point))
    return points
