"""Report wording comes from the store that was used, not from Vaihingen."""

from __future__ import annotations

import json
from pathlib import Path

from segweak.data.dsm import DsmNormalisation
from segweak.data.potsdam import PotsdamSource
from segweak.data.sources import FolderSource
from segweak.data.store import prepare
from segweak.data.synthetic import synthesize_potsdam, synthesize_scenes
from segweak.report import report as rep
from segweak.report.wording import data_wording, read_store_meta

from .test_report import _make_exp, _protocol_rows


def _folder_store(tmp_path: Path) -> Path:
    data = synthesize_scenes(tmp_path / "scenes", n_scenes=1, per_scene=1, height=64, width=64)
    pal = tmp_path / "palette.yaml"
    pal.write_text((data / "palette.yaml").read_text().replace("ignore: []", "ignore: [[0, 0, 0]]"))
    src = FolderSource(f"{data}/*/images/*.jpg", "{parent}/masks/{stem}.png", pal)
    return prepare(src, tmp_path / "folder-store", patch=32, progress=False)


def test_folder_rgb_store_is_not_described_as_vaihingen(tmp_path):
    words = data_wording(read_store_meta(_folder_store(tmp_path)))
    assert words.image == "RGB image"
    assert words.colours == "the palette's display colours"
    assert words.ignore == "the palette's ignore colours [0, 0, 0]"
    assert words.channels == "3 input channels: R, G, B"
    text = " ".join(words.__dict__.values())
    assert "IRRG" not in text and "eroded" not in text and "clutter" not in text and "official" not in text


def test_vaihingen_and_potsdam_wording(tiny_store, tmp_path):
    words = data_wording(read_store_meta(tiny_store))
    assert words.image.startswith("false-colour IRRG image")
    assert words.colours == "the ISPRS colour code" and words.ignore == "clutter"
    root = synthesize_potsdam(tmp_path / "p", n_tiles=1, height=32, width=32)
    src = PotsdamSource(root, eroded=True, keep_clutter=True, dsm=DsmNormalisation(window_m=1.0))
    words = data_wording(read_store_meta(prepare(src, tmp_path / "s", patch=32, progress=False)))
    assert words.image == "RGB image; IR, nDSM not shown"
    assert words.ignore == "eroded class boundaries"
    assert words.channels.startswith("5 input channels: R, G, B, IR, nDSM (nDSM: height above local ground")
    assert "adapted to 5 channels" in words.channels
    assert data_wording(None).channels.startswith("input channels unknown")


def test_report_on_a_folder_store_states_its_channels_and_ignore(tmp_path):
    exp = _make_exp(tmp_path, _protocol_rows(), synthetic=False)
    store = _folder_store(tmp_path)
    results = json.loads((exp / "results.json").read_text())
    results["store"] = str(store)
    (exp / "results.json").write_text(json.dumps(results))
    rep.report(exp, samples=0)
    md = (exp / "report.md").read_text()
    assert "3 input channels: R, G, B" in md
    assert "pixels labelled 255 (the palette's ignore colours [0, 0, 0]) are ignored" in md
    assert "eroded boundaries" not in md and "IRRG" not in md
