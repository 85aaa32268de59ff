"""Import layering of the package, checked on the source (AST), including imports inside functions.

An import placed inside a function hides a circle from Python but not from this scan: the rules hold
for every ``import`` statement of a module, wherever it is.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from segweak.data.potsdam import PotsdamSource
from segweak.data.sources import FolderSource, VaihingenSource
from segweak.data.synthetic import synthesize, synthesize_potsdam
from segweak.data.tiles import Source

SRC = Path(__file__).resolve().parents[1] / "src" / "segweak"


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (``from x import y`` gives ``x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(SRC)} imports {name}")
    return out


def test_train_never_imports_evaluate() -> None:
    assert _violations("train", ("segweak.evaluate",)) == []


def test_data_imports_no_training_evaluation_or_reporting() -> None:
    forbidden = (
        "segweak.train",
        "segweak.evaluate",
        "segweak.report",
        "segweak.experiment",
        "segweak.methods",
    )
    assert _violations("data", forbidden) == []


def test_config_imports_only_stdlib_yaml_errors_io() -> None:
    allowed_segweak = {"segweak.errors", "segweak.io"}
    bad = [
        name
        for name in _imports(SRC / "config.py")
        if name.split(".")[0] not in sys.stdlib_module_names
        and name != "yaml"
        and name not in allowed_segweak
        and name != "__future__"
    ]
    assert bad == []


def test_shared_metric_and_loss_modules_sit_below_train_and_evaluate() -> None:
    for module in ("metrics.py", "models/losses.py"):
        names = _imports(SRC / module)
        assert not [
            n for n in names if n.startswith(("segweak.train", "segweak.evaluate", "segweak.methods"))
        ]


def test_loading_and_validating_a_config_does_not_import_torch(tmp_path: Path) -> None:
    # A fresh interpreter: this test process has long imported torch.
    code = (
        "import sys\n"
        "from segweak.config import TrainConfig\n"
        "cfg = TrainConfig()\n"
        "cfg.data.store = 'x'\n"
        "cfg.weak.labels = 'survey'\n"
        "cfg.validate()\n"
        "heavy = [m for m in ('torch', 'numpy', 'segweak.data.weak_tables') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert done.stdout.strip() == ""


def test_every_source_satisfies_the_source_protocol(tmp_path: Path) -> None:
    vaihingen = synthesize(tmp_path / "v", n_tiles=1, height=32, width=32, seed=0)
    potsdam = synthesize_potsdam(tmp_path / "p", n_tiles=1, height=32, width=32, seed=0)
    sources = [
        VaihingenSource(vaihingen),
        PotsdamSource(potsdam),
        FolderSource(
            vaihingen / "top",
            tmp_path / "masks",
            VaihingenSource(vaihingen).palette,
        ),
    ]
    for source in sources:
        assert isinstance(source, Source), type(source).__name__
    tiles = sources[0].tiles()
    assert tiles and tiles[0].read()[0].shape == (32, 32, 3)


@pytest.mark.parametrize("bad", ["../up", ".hidden", "a/b", "computed"])
def test_weak_labels_name_is_checked_by_the_config_without_the_table_module(bad: str) -> None:
    from segweak.config import TrainConfig
    from segweak.errors import SegweakError

    cfg = TrainConfig()
    cfg.data.store = "x"
    cfg.weak.labels = bad
    if bad == "computed":
        cfg.validate()  # the default: labels computed from the masks
        return
    with pytest.raises(SegweakError, match="weak.labels: .* is not a valid weak-label set name"):
        cfg.validate()


def test_weak_maths_never_reads_the_store() -> None:
    # weak/ is the maths on tensors that data/ (datasets, splits, info) builds on; imported weak-label
    # sets live beside the store in data/, so no import runs back up from weak/ to data/.
    assert _violations("weak", ("segweak.data",)) == []
