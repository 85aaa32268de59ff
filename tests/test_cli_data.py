import json
from pathlib import Path

import numpy as np
import pytest

from segweak.cli import main
from segweak.data.store import Store


@pytest.fixture(scope="module")
def cli_store(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "store"
    assert (
        main(["prepare", "vaihingen", "--root", str(synthetic_root), "--out", str(out), "--patch", "64"]) == 0
    )
    return out


def test_prepare_vaihingen(cli_store, capsys):
    st = Store(cli_store)
    assert len(st) == 3 * 4 and st.patch == 64
    assert st.meta["source"]["describe"]["keep_clutter"] is False


def test_prepare_keeps_eroded_masks_unless_told_not_to(cli_store, synthetic_root, tmp_path, capsys):
    assert Store(cli_store).has_eroded_masks  # the synthetic set has _noBoundary labels for every tile
    out = tmp_path / "full-only"
    args = ["prepare", "vaihingen", "--root", str(synthetic_root), "--out", str(out), "--patch", "128"]
    assert main([*args, "--no-eroded-metrics"]) == 0
    assert "(with eroded-label masks)" not in capsys.readouterr().out
    assert not Store(out).has_eroded_masks and not (out / "masks_eroded.npy").exists()
    assert main([*args, "--overwrite"]) == 0
    assert "(with eroded-label masks)" in capsys.readouterr().out
    assert Store(out).has_eroded_masks


def test_prepare_existing_output_and_bad_patch(cli_store, synthetic_root, tmp_path, capsys):
    assert main(["prepare", "vaihingen", "--root", str(synthetic_root), "--out", str(cli_store)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    out = tmp_path / "big"
    args = ["prepare", "vaihingen", "--root", str(synthetic_root), "--out", str(out), "--patch", "256"]
    assert main(args) == 2
    assert "smaller --patch" in capsys.readouterr().err
    assert not out.exists()


def test_prepare_keep_clutter(synthetic_root, tmp_path):
    out = tmp_path / "six"
    args = ["prepare", "vaihingen", "--root", str(synthetic_root), "--out", str(out), "--patch", "128"]
    assert main([*args, "--keep-clutter", "--eroded"]) == 0
    st = Store(out)
    assert st.classes[-1] == "clutter" and len(st.classes) == 6
    assert st.meta["source"]["describe"]["eroded"] is True
    assert all("noBoundary" in t["read_label_path"] for t in st.meta["tiles"])


def test_split_and_info(cli_store, capsys):
    args = ["split", str(cli_store), "--name", "g", "--fractions", "0.2", "0.6", "0.2", "--seed", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "strong" in out and "patch fraction" in out
    assert main(["info", str(cli_store), "--split", "g", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_patches"] == 12 and data["split"]["name"] == "g" and data["split"]["seed"] == 3
    assert data["split"]["fractions"] == {"strong": 0.2, "weak": 0.6, "val": 0.2}
    assert sum(s["patches"] for s in data["split"]["subsets"].values()) == 12
    assert main(["info", str(cli_store), "--split", "g"]) == 0
    text = capsys.readouterr().out
    assert "weak" in text and "impervious" in text
    assert "computed from the masks" in text  # where the split's weak labels come from


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fractions", "0.5", "0.5", "0.5"], "sum to 1"),
        (["--fractions", "-0.5", "1.0", "0.5"], "non-negative"),
        (["--by", "tile"], "--by"),
    ],
)
def test_split_errors(cli_store, capsys, args, message):
    assert main(["split", str(cli_store), "--name", "bad", *args]) == 2
    assert message in capsys.readouterr().err


def test_split_wrong_fraction_count(cli_store, capsys):
    assert main(["split", str(cli_store), "--fractions", "0.5", "0.5"]) == 2
    assert "3 or 4 numbers" in capsys.readouterr().err
    # At most four numbers are read: a fifth is an unexpected argument (click usage error).
    assert main(["split", str(cli_store), "--fractions", "0.2", "0.2", "0.2", "0.2", "0.2"]) == 2
    assert "unexpected extra argument" in capsys.readouterr().err
    assert not (cli_store / "splits" / "default.json").exists()


def test_split_four_fractions_nested(cli_store, capsys):
    args = ["split", str(cli_store), "--name", "n4", "--fractions", "0.25", "0.25", "0.25", "0.25"]
    assert main([*args, "--nested", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "test" in out and "nested" in out
    man = json.loads((cli_store / "splits" / "n4.json").read_text())
    assert man["nested"] is True and [len(man["subsets"][s]) for s in ("strong", "weak", "val", "test")] == [
        3,
        3,
        3,
        3,
    ]
    # The three-number form and its default keep working, without a test subset.
    assert main(["split", str(cli_store), "--name", "d3", "--seed", "1"]) == 0
    man3 = json.loads((cli_store / "splits" / "d3.json").read_text())
    assert set(man3["subsets"]) == {"strong", "weak", "val"} and "nested" not in man3


def test_split_test_groups(cli_store, capsys):
    assert main(["split", str(cli_store), "--name", "tg", "--test", "area3, area1"]) == 0
    out = capsys.readouterr().out
    assert "test: 2 held-out groups (groups): area1, area3" in out
    man = json.loads((cli_store / "splits" / "tg.json").read_text())
    st = Store(cli_store)
    assert man["test_groups"] == {"rule": "groups", "groups": ["area1", "area3"]}
    assert {st.groups[i] for i in man["subsets"]["test"]} == {"area1", "area3"}
    assert {st.groups[i] for s in ("strong", "weak", "val") for i in man["subsets"][s]} == {"area2"}
    assert main(["split", str(cli_store), "--name", "o", "--test", "official"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks 16 of the 17 ISPRS test areas" in err
    assert main(["split", str(cli_store), "--name", "o", "--test", "area9"]) == 2
    assert "has no group(s) area9" in capsys.readouterr().err
    assert not (cli_store / "splits" / "o.json").exists()


def test_info_errors(cli_store, tmp_path, capsys):
    assert main(["info", str(cli_store), "--split", "missing"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 2
    assert "not a segweak store" in capsys.readouterr().err


SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "vaihingen_samples"

INDEX_PALETTE = """\
mode: index
classes:
  - {name: impervious, value: 1}
  - {name: building, value: 2}
  - {name: low_vegetation, value: 3}
  - {name: tree, value: 4}
  - {name: car, value: 5}
ignore: [0, 6]
"""


def test_prepare_folder_real_index_masks(tmp_path, capsys):
    sample = SAMPLES / "vaihingen_mmseg_pseudo"
    if not sample.is_dir():
        pytest.skip(f"real Vaihingen samples not found at {SAMPLES}")
    palette = tmp_path / "palette.yaml"
    palette.write_text(INDEX_PALETTE)
    out = tmp_path / "store"
    args = ["prepare", "folder", "--images", str(sample / "images"), "--masks", str(sample / "labels")]
    args += ["--palette", str(palette), "--out", str(out), "--patch", "128", "--band-order", "IRRG"]
    assert main(args) == 0
    st = Store(out)
    assert len(st) == 16 and st.meta["band_order"] == "IRRG"
    from PIL import Image

    raw = np.asarray(Image.open(sample / "labels" / "area1_0_0_512_512.png"))
    for k in range(5):  # class k is stored value k + 1; 0 (eroded boundary) is ignore
        assert int(st.counts[:, k].sum()) == int((raw == k + 1).sum())
    assert int(st.valid.sum()) == int(((raw >= 1) & (raw <= 5)).sum())
    assert main(["split", str(out), "--by", "group"]) == 2
    assert "at least 3 groups" in capsys.readouterr().err
