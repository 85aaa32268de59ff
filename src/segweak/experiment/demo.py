"""``segweak demo``: the whole protocol on SYNTHETIC data, on a CPU, in minutes.

Synthesises Vaihingen-layout tiles, prepares a store, splits it 10/70/20 and runs baseline, weak,
finetune and full over the seeds with the settings of the packaged ``segweak/configs/demo.yaml``
(identical to ``configs/demo.yaml`` at the repository root), then prints the results table and the
report's path. ``quick=True`` shrinks everything to seconds (for tests and smoke checks); its numbers
are meaningless.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from segweak.config import (
    ExperimentConfig,
    deep_merge,
    deprecation_notice,
    from_dict,
    migrate_experiment_dict,
    parse_overrides,
)
from segweak.errors import SegweakError

#: Overrides of ``--quick``: tiny tiles, one epoch, a randomly initialised tiny network.
QUICK_OVERRIDES: dict[str, Any] = {
    "dataset": {"patch": 32, "stride": None, "synthetic": {"tiles": 3, "height": 64, "width": 64}},
    "split": {"fractions": [0.2, 0.5, 0.3]},
    "train": {
        # The smallest timm encoder, randomly initialised: a smoke run checks plumbing, not accuracy.
        "model": {"encoder": "tu-test_efficientnet", "weights": "none"},
        "data": {"batch_size": 4},
        "trainer": {"max_epochs": 1},
    },
    "stage_overrides": {},
    "report": {"samples": 2},
}


def demo_config_text() -> str:
    """Text of the packaged demo config (``segweak/configs/demo.yaml``)."""
    return resources.files("segweak").joinpath("configs/demo.yaml").read_text(encoding="utf-8")


def demo_config(
    out: str | Path = "segweak-demo",
    seeds: list[int] | None = None,
    quick: bool = False,
    overrides: list[str] | None = None,
) -> ExperimentConfig:
    """Build the demo's experiment config.

    Args:
        out: Experiment directory.
        seeds: Training seeds (default: those of ``demo.yaml``).
        quick: Shrink to a seconds-long smoke run (meaningless numbers).
        overrides: ``key=value`` strings applied last (``segweak demo --set``), e.g.
            ``train.weak.area=valid``.

    Returns:
        A validated :class:`ExperimentConfig`.
    """
    data = yaml.safe_load(demo_config_text())
    if quick:
        data = deep_merge(data, QUICK_OVERRIDES)
        data["stage_overrides"] = {}
    data["out_dir"] = str(out)
    if seeds is not None:
        data["seeds"] = list(seeds)
    data = deep_merge(data, parse_overrides(overrides))
    try:
        data, legacy = migrate_experiment_dict(data)
        if legacy:
            deprecation_notice("segweak demo --set", legacy)
        cfg = from_dict(ExperimentConfig, data)
    except SegweakError as exc:
        raise SegweakError(f"demo config: {exc}") from None
    if cfg.dataset.source != "synthetic":
        raise SegweakError("packaged demo config must use dataset.source: synthetic")
    return cfg.validate()


def demo(
    out: str | Path = "segweak-demo",
    seeds: list[int] | None = None,
    quick: bool = False,
    console: Any = None,
    overrides: list[str] | None = None,
    wait: bool = False,
) -> Path:
    """Run the demo experiment and return its directory (with results and report).

    A rerun with the same ``out`` skips finished runs, like ``segweak run``; ``wait`` waits for another
    segweak process using ``out`` instead of refusing (see :mod:`segweak.lock`).
    """
    from segweak.experiment.plan import check_train_sections
    from segweak.experiment.run import run_experiment

    cfg = demo_config(out, seeds=seeds, quick=quick, overrides=overrides)
    check_train_sections(cfg)
    return run_experiment(cfg, console=console, wait=wait)
