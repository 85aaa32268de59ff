"""Experiment configs for Potsdam, DSM channels and folder layouts: validation and the prepared store."""

from __future__ import annotations

from pathlib import Path

import pytest

from segweak.config import ExperimentConfig, from_dict
from segweak.data.store import Store
from segweak.data.synthetic import synthesize_potsdam, synthesize_scenes
from segweak.errors import SegweakError
from segweak.experiment.data import prepare_data


def _cfg(tmp_path: Path, dataset: dict) -> ExperimentConfig:
    data = {"out_dir": str(tmp_path / "exp"), "dataset": {"patch": 32, **dataset}, "seeds": [0]}
    return from_dict(ExperimentConfig, data).validate()


@pytest.mark.parametrize(
    ("dataset", "match"),
    [
        ({"source": "potsdam"}, "dataset.root is not set.*Potsdam"),
        ({"source": "potsdam", "root": "x", "imagery": "CIR"}, "dataset.imagery"),
        ({"source": "folder", "images": "i", "masks": "m", "palette": "p", "dsm": "ndsm"}, "dataset.dsm"),
        ({"source": "synthetic", "dsm": "slope"}, "dataset.dsm"),
        ({"source": "synthetic", "dsm": "range"}, "dataset.dsm_range"),
        ({"source": "synthetic", "dsm": "ndsm", "dsm_range": [1]}, "dataset.dsm_range"),
        (
            {"source": "synthetic", "dsm": "ndsm", "dsm_range": [5, 1]},
            "dataset.dsm_range.*high must be above",
        ),
        ({"source": "synthetic", "dsm": "ndsm", "dsm_window": 0}, "dataset.dsm_window.*> 0"),
        ({"source": "synthetic", "group_by": "scene"}, "dataset.group_by"),
    ],
)
def test_dataset_errors_name_the_key(tmp_path, dataset, match):
    with pytest.raises(SegweakError, match=match):
        _cfg(tmp_path, dataset)


def test_potsdam_store_and_dsm_change_is_a_mismatch(tmp_path):
    root = synthesize_potsdam(tmp_path / "p", n_tiles=1, height=64, width=64)
    store = Store(prepare_data(_cfg(tmp_path, {"source": "potsdam", "root": str(root)}), log=lambda m: None))
    assert store.meta["band_order"] == "RGBIR" and store.meta["channels"] == 4
    with_dsm = _cfg(tmp_path, {"source": "potsdam", "root": str(root), "dsm": "ndsm", "dsm_window": 2.0})
    with pytest.raises(SegweakError, match="does not match the config.*bands RGBIR != RGBIR\\+nDSM"):
        prepare_data(with_dsm, log=lambda m: None)


def test_synthetic_source_with_dsm(tmp_path):
    cfg = _cfg(
        tmp_path, {"source": "synthetic", "dsm": "ndsm", "synthetic": {"tiles": 1, "height": 64, "width": 64}}
    )
    store = Store(prepare_data(cfg, log=lambda m: None))
    assert store.meta["band_order"] == "IRRG+nDSM" and store.images.shape[-1] == 4


def test_folder_source_with_scene_layout(tmp_path):
    data = synthesize_scenes(tmp_path / "d", n_scenes=2, per_scene=1, height=64, width=64)
    cfg = _cfg(
        tmp_path,
        {
            "source": "folder",
            "images": f"{data}/*/images/*.jpg",
            "masks": "{parent}/masks/{stem}.png",
            "palette": str(data / "palette.yaml"),
            "group_by": "top",
        },
    )
    store = Store(prepare_data(cfg, log=lambda m: None))
    assert sorted(set(store.groups)) == ["Scene 1", "Scene 2"]
