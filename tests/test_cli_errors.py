"""Bad options and files: one line, exit code 2, no traceback, and nothing built or written.

Every case goes through the real entry point ``segweak.cli.main``; none of them trains (the
checkpoint fixture is written directly in segweak's checkpoint format).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from segweak.cli import main
from segweak.config import ModelConfig, TrainConfig, to_dict

TINY_MODEL = {"encoder": "tu-test_efficientnet", "weights": "none"}
CLASSES = ["impervious", "building", "low_vegetation", "tree", "car"]


def fails_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """Run the CLI; assert exit code 2 and one error line containing every ``expected`` text."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2, f"exit code {rc}, stderr: {captured.err}"
    assert "Traceback" not in captured.err + captured.out
    assert err.startswith("error: ") and "\n" not in err, err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    return err


@pytest.fixture(scope="module")
def checkpoint(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A segweak checkpoint of an untrained tiny FPN for the tiny store (no training needed)."""
    from segweak.models.factory import build_model

    cfg = TrainConfig()
    cfg.data.store = str(tiny_store)
    cfg.model = ModelConfig(**TINY_MODEL)
    model = build_model(cfg.model, len(CLASSES))
    ckpt = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"cfg": to_dict(cfg), "num_classes": len(CLASSES), "classes": CLASSES},
    }
    path = tmp_path_factory.mktemp("ckpt") / "best.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this machine look like one without a CUDA GPU (whatever it has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ---- segweak train -------------------------------------------------------------------------------


@pytest.fixture
def train_config(tiny_store: Path, tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    data = {
        "out_dir": str(tmp_path / "runs"),
        "data": {"store": str(tiny_store), "batch_size": 4},
        "model": TINY_MODEL,
        "trainer": {"max_epochs": 1, "progress_bar": False},
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.precision=8-bit", ["trainer.precision", "'8-bit'", "bf16-mixed"]),
        ("trainer.accelerator=tpu", ["trainer.accelerator", "'tpu'", "cpu, gpu"]),
        ("trainer.strategy=bogus", ["trainer.strategy", "'bogus'", "ddp"]),
        ("trainer.devices=0", ["trainer.devices", ">= 1"]),
        ("trainer.max_epochs=-5", ["trainer.max_epochs", "-5"]),
        ("trainer.max_epochs=-1", ["trainer.max_epochs=-1", "max_steps"]),
        ("trainer.max_steps=0", ["trainer.max_steps", "-1"]),
        ("trainer.limit_train_batches=2.5", ["trainer.limit_train_batches", "(0, 1]"]),
        ("trainer.limit_val_batches=0", ["trainer.limit_val_batches=0"]),
        ("trainer.seed=-1", ["trainer.seed", "0..4294967295"]),
        ("trainer.check_val_every_n_epoch=0", ["trainer.check_val_every_n_epoch", ">= 1"]),
        ("trainer.precision=16-mixed", ["trainer.precision", "CPU", "bf16-mixed"]),
        ("data.num_workers=-1", ["data.num_workers", ">= 0"]),
        ("data.eval_batch_size=0", ["data.eval_batch_size", ">= 1"]),
        ("model.in_channels=4", ["model.in_channels is 4", "has 3 channels", "model.in_channels=3"]),
        (
            "methods.pseudo_label.student_init=scratch",
            ["methods.pseudo_label.student_init", "'scratch'", "choose one of imagenet, teacher"],
        ),
    ],
)
def test_train_bad_keys(train_config, tmp_path, capsys, override, expected):
    fails_cleanly(["train", "--config", train_config, "--set", override], capsys, *expected)
    assert not (tmp_path / "runs").exists()


def test_train_gpu_without_cuda(train_config, tmp_path, capsys, no_cuda):
    fails_cleanly(
        ["train", "--config", train_config, "--set", "trainer.accelerator=gpu"],
        capsys,
        "trainer.accelerator=gpu",
        "no CUDA GPU",
    )
    # auto on a CPU-only machine follows the CPU rules (Lightning would switch 16-mixed to bf16)
    fails_cleanly(
        ["train", "-c", train_config, "-s", "trainer.accelerator=auto", "-s", "trainer.precision=16-mixed"],
        capsys,
        "trainer.precision",
        "CPU",
    )
    assert not (tmp_path / "runs").exists()


def test_binary_and_directory_config_files(tmp_path, capsys):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    fails_cleanly(["train", "--config", binary], capsys, str(binary), "not a text file")
    fails_cleanly(["run", "--config", binary], capsys, str(binary), "not a text file")
    fails_cleanly(["run", "--config", tmp_path], capsys, str(tmp_path), "is a directory")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1\nb: 2\n")
    fails_cleanly(["train", "--config", broken], capsys, str(broken), "not valid YAML", "line 2")


# ---- segweak run ---------------------------------------------------------------------------------


@pytest.fixture
def experiment(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "exp"
    path = tmp_path / "exp.yaml"
    data = {
        "out_dir": str(out),
        "dataset": {"source": "synthetic", "patch": 32, "synthetic": {"tiles": 2, "height": 64, "width": 64}},
        "seeds": [0],
        "train": {"model": TINY_MODEL, "trainer": {"max_epochs": 1}},
    }
    path.write_text(yaml.safe_dump(data))
    return path, out


def test_run_empty_config_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the defaults would write to ./runs/experiment
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    fails_cleanly(["run", "--config", empty], capsys, str(empty), "is empty", "dataset.source", "out_dir")
    other = tmp_path / "other.yaml"
    other.write_text("name: x\nseeds: [0]\n")
    fails_cleanly(["run", "--config", other], capsys, str(other), "does not set dataset.source")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.yaml", "other.yaml"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.trainer.precision=8-bit", ["trainer.precision", "'8-bit'"]),
        ("train.trainer.devices=0", ["trainer.devices"]),
        ("stage_overrides.weak.trainer.max_epochs=-5", ["stage weak", "trainer.max_epochs"]),
        ("train.model.in_channels=4", ["train.model.in_channels is 4", "3 band(s)", "IR+R+G"]),
        (
            "train.methods.pseudo_label.student_init=Teacher",
            ["train: methods.pseudo_label.student_init", "'Teacher'", "choose one of imagenet, teacher"],
        ),
    ],
)
def test_run_bad_keys_before_any_data(experiment, capsys, override, expected):
    path, out = experiment
    fails_cleanly(["run", "--config", path, "--set", override], capsys, *expected)
    assert not out.exists()


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["dataset.dsm=ndsm"], "dataset.source synthetic (IR+R+G+DSM) has 4 band(s)"),
        (["dataset.source=vaihingen", "dataset.root=nowhere"], "dataset.source vaihingen (IR+R+G) has 3"),
        (["dataset.source=potsdam", "dataset.root=nowhere"], "dataset.source potsdam (R+G+B+IR) has 4"),
    ],
)
def test_run_bands_known_before_preparing(experiment, capsys, sets, expected):
    path, out = experiment
    argv = ["run", "--config", path, "--set", "train.model.in_channels=5"]
    fails_cleanly([*argv, *(a for s in sets for a in ("--set", s))], capsys, "in_channels is 5", expected)
    assert not out.exists()


def test_run_gpu_without_cuda(experiment, capsys, no_cuda):
    path, out = experiment
    fails_cleanly(
        ["run", "--config", path, "--set", "train.trainer.accelerator=gpu"],
        capsys,
        "train.trainer.accelerator=gpu",
        "no CUDA GPU",
    )
    assert not out.exists()


def test_run_on_a_store_with_other_bands(tiny_store, tmp_path, capsys):
    out = tmp_path / "exp"
    path = tmp_path / "exp.yaml"
    data = {
        "out_dir": str(out),
        "dataset": {"source": "store", "store": str(tiny_store)},
        "seeds": [0],
        "train": {"model": {**TINY_MODEL, "in_channels": 4}},
    }
    path.write_text(yaml.safe_dump(data))
    splits = sorted((tiny_store / "splits").iterdir())
    fails_cleanly(["run", "--config", path], capsys, "train.model.in_channels is 4", str(tiny_store))
    assert not out.exists() and sorted((tiny_store / "splits").iterdir()) == splits


# ---- segweak evaluate / predict ------------------------------------------------------------------


def test_evaluate_bad_options(checkpoint, tiny_store, tmp_path, capsys, no_cuda):
    base = ["evaluate", checkpoint, "--store", tiny_store]
    fails_cleanly([*base, "--out", tmp_path], capsys, f"--out {tmp_path} is a directory")
    fails_cleanly([*base, "--batch-size", "0"], capsys, "--batch-size must be >= 1")
    fails_cleanly([*base, "--device", "cuda"], capsys, "--device cuda", "no CUDA GPU")
    fails_cleanly([*base, "--device", "banana"], capsys, "--device 'banana' is not a torch device")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_that_is_not_a_torch_file(checkpoint, tiny_store, tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("these are not weights\n")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    for path in (text, empty, truncated):
        err = fails_cleanly(
            ["evaluate", path, "--store", tiny_store], capsys, f"{path} is not a PyTorch checkpoint file"
        )
        assert "pickled" not in err
    # a zip archive without torch's records is not a checkpoint either
    other_zip = tmp_path / "other.ckpt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    fails_cleanly(["evaluate", other_zip, "--store", tiny_store], capsys, "not a readable PyTorch checkpoint")
    fails_cleanly(["evaluate", tmp_path, "--store", tiny_store], capsys, "is a directory")


def test_checkpoint_trained_on_other_bands(checkpoint, tiny_store, tmp_path, capsys):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["hyper_parameters"]["cfg"]["model"]["in_channels"] = 4
    from segweak.models.factory import build_model

    model = build_model(ModelConfig(**TINY_MODEL, in_channels=4), len(CLASSES))
    ckpt["state_dict"] = {f"model.{k}": v for k, v in model.state_dict().items()}
    four = tmp_path / "four.ckpt"
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    four.write_bytes(buf.getvalue())
    fails_cleanly(["evaluate", four, "--store", tiny_store], capsys, "takes 4 input channels", "has 3")
    out = tmp_path / "pred"
    fails_cleanly(["predict", four, "--store", tiny_store, "--out", out], capsys, "takes 4 input channels")
    assert not out.exists()


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--window", "7"], ["--window 7", "multiples of 32", "use e.g. 32"]),
        (["--window", "40"], ["--window 40", "32 or 64"]),
        (["--window", "0"], ["--window must be >= 1"]),
        (["--window", "256"], ["--window 256 is larger than tile", "at most 128"]),
        (["--batch-size", "0"], ["--batch-size must be >= 1"]),
        (["--overlap", "1.0"], ["--overlap must be in [0, 1)"]),
        (["--device", "banana"], ["--device 'banana'"]),
        (["--tiles", "nosuch"], ["--tiles", "nosuch"]),
    ],
    ids=["window7", "window40", "window0", "window-too-big", "batch0", "overlap1", "device", "tiles"],
)
def test_predict_bad_options(checkpoint, tiny_store, tmp_path, capsys, options, expected):
    out = tmp_path / "pred"
    fails_cleanly(["predict", checkpoint, "--store", tiny_store, "--out", out, *options], capsys, *expected)
    assert not out.exists()


def test_predict_out_is_a_file(checkpoint, tiny_store, tmp_path, capsys):
    out = tmp_path / "pred.png"
    out.write_bytes(b"mine")
    fails_cleanly(["predict", checkpoint, "--store", tiny_store, "--out", out], capsys, "is a file")
    assert out.read_bytes() == b"mine"


# ---- palettes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "classes, expected",
    [
        ([{"name": "a", "color": [1, 2, 3]}, {"name": "b", "color": [1, 2, 3]}], "used by both"),
        ([{"name": "a", "color": [1, 2, 3]}, {"name": "a", "color": [4, 5, 6]}], "duplicate class names"),
    ],
)
def test_palette_duplicates_name_the_file(tmp_path, capsys, classes, expected):
    palette = tmp_path / "my-palette.yaml"
    palette.write_text(yaml.safe_dump({"mode": "rgb", "classes": classes}))
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    out = tmp_path / "store"
    argv = ["prepare", "folder", "--images", tmp_path / "images", "--masks", tmp_path / "masks"]
    fails_cleanly([*argv, "--palette", palette, "--out", out], capsys, str(palette), expected)
    assert not out.exists()
