from pathlib import Path

import pytest

from segweak.config import (
    TrainConfig,
    dump_yaml,
    load_config,
    parse_overrides,
)
from segweak.errors import SegweakError


def test_defaults_and_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("stage: weak\ndata:\n  store: s\n  batch_size: 4\noptim:\n  lr: 0.01\n")
    cfg = load_config(
        TrainConfig,
        cfg_file,
        ["trainer.max_epochs=3", "optim.lr=1e-4", "model.weights=none", "loss.class_weights=[1, 2, 3, 4, 5]"],
    ).validate()
    assert cfg.stage == "weak"
    assert cfg.data.batch_size == 4
    assert cfg.trainer.max_epochs == 3
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert isinstance(cfg.optim.lr, float)
    assert cfg.model.weights == "none"
    assert cfg.loss.class_weights == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert cfg.run_dir == Path("runs") / "weak-seed0"


def test_int_accepted_for_float() -> None:
    cfg = load_config(TrainConfig, None, ["optim.lr=1", "data.store=x"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_unknown_key_names_the_dotted_key(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("trainer:\n  max_epoch: 3\n")
    with pytest.raises(SegweakError, match=r"trainer\.max_epoch.*valid keys.*max_epochs"):
        load_config(TrainConfig, cfg_file)


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(SegweakError, match=r"data\.batch_size: expected an integer"):
        load_config(TrainConfig, None, ["data.batch_size=big"])
    with pytest.raises(SegweakError, match=r"trainer\.deterministic: expected true or false"):
        load_config(TrainConfig, None, ["trainer.deterministic=3"])


def test_bad_choice_and_missing_store() -> None:
    with pytest.raises(SegweakError, match="stage: 'semi' is not valid; choose one of strong, weak"):
        load_config(TrainConfig, None, ["stage=semi", "data.store=x"]).validate()
    with pytest.raises(SegweakError, match="data.store is not set"):
        load_config(TrainConfig, None).validate()
    with pytest.raises(SegweakError, match="finetune.init_from"):
        load_config(TrainConfig, None, ["stage=finetune", "data.store=x"]).validate()


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SegweakError, match="not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(SegweakError, match="not valid YAML"):
        load_config(TrainConfig, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(SegweakError, match="mapping"):
        load_config(TrainConfig, lst)


def test_parse_overrides() -> None:
    assert parse_overrides(["a.b=1", "a.c=x", "d=[0.1, 0.7, 0.2]", "e=null", "f=true"]) == {
        "a": {"b": 1, "c": "x"},
        "d": [0.1, 0.7, 0.2],
        "e": None,
        "f": True,
    }
    with pytest.raises(SegweakError, match="expected key=value"):
        parse_overrides(["novalue"])


def test_dump_roundtrip(tmp_path: Path) -> None:
    cfg = load_config(TrainConfig, None, ["data.store=s", "trainer.seed=7"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    again = load_config(TrainConfig, path)
    assert again == cfg


def test_registry_names_checked_at_validation() -> None:
    with pytest.raises(SegweakError, match="weak.method: 'mil' is not valid; choose one of .*proportion"):
        load_config(TrainConfig, None, ["data.store=x", "weak.method=mil"]).validate()
    with pytest.raises(SegweakError, match="fpn"):
        load_config(TrainConfig, None, ["data.store=x", "model.arch=fnp"]).validate()


@pytest.mark.parametrize(
    "sets",
    [
        ["trainer.accelerator=gpu", "trainer.devices=[0, 2]", "trainer.strategy=ddp"],
        ["trainer.accelerator=gpu", "trainer.devices='0,1'", "trainer.precision=16-mixed"],
        ["trainer.accelerator=cuda", "trainer.devices=-1", "trainer.precision=bf16-true"],
        ["trainer.accelerator=auto", "trainer.devices=auto", "trainer.precision=64-true"],
        ["trainer.devices=2", "trainer.strategy=ddp", "trainer.precision=bf16-mixed"],
        ["trainer.accelerator=gpu", "trainer.strategy=ddp_find_unused_parameters_true"],
        ["trainer.max_epochs=-1", "trainer.max_steps=5"],
        ["trainer.limit_train_batches=10", "trainer.limit_val_batches=0.5", "trainer.seed=4294967295"],
        ["data.eval_batch_size=1", "data.num_workers=0", "model.in_channels=4"],
    ],
)
def test_valid_trainer_values_are_accepted(sets: list[str]) -> None:
    cfg = load_config(TrainConfig, None, ["data.store=x", *sets]).validate()
    assert cfg.trainer.devices is not None


@pytest.mark.parametrize(
    "sets, match",
    [
        (["trainer.devices=[0, 1]"], r"trainer\.devices: \[0, 1\] is not valid with trainer\.accelerator"),
        (["trainer.devices=-1"], "trainer.devices: -1 is not valid with trainer.accelerator=cpu"),
        (["trainer.accelerator=gpu", "trainer.devices=[0, 0]"], "distinct GPU ids"),
        (["trainer.accelerator=gpu", "trainer.devices=[]"], "trainer.devices"),
        (["trainer.accelerator=gpu", "trainer.devices=gpu0"], "trainer.devices: 'gpu0' is not valid"),
        (["trainer.accelerator=hpu"], "trainer.accelerator: 'hpu' is not supported"),
        (["trainer.strategy=fsdp"], "trainer.strategy: 'fsdp' is not valid"),
        (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps must be >= 1"),
        (["trainer.strategy=ddp_spawn"], "trainer.strategy='ddp_spawn' trains in spawned"),
        (["trainer.strategy=ddp_fork_find_unused_parameters_true"], "use trainer.strategy=ddp"),
        (["model.in_channels=0"], "model.in_channels must be >= 1"),
    ],
)
def test_invalid_trainer_values_name_the_key(sets: list[str], match: str) -> None:
    with pytest.raises(SegweakError, match=match):
        load_config(TrainConfig, None, ["data.store=x", *sets]).validate()


def test_config_validation_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from segweak.config import TrainerConfig, _validate_trainer; "
        "_validate_trainer(TrainerConfig()); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: [1\n  seed: 2\n")
    with pytest.raises(SegweakError) as info:
        load_config(TrainConfig, bad)
    assert "\n" not in str(info.value) and "bad.yaml is not valid YAML" in str(info.value)
    assert "line " in str(info.value)
