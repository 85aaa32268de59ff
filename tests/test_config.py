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
    cfg_file.write_text("method: proportion\ndata:\n  store: s\n  batch_size: 4\noptim:\n  lr: 0.01\n")
    cfg = load_config(
        TrainConfig,
        cfg_file,
        ["trainer.max_epochs=3", "optim.lr=1e-4", "model.weights=none", "loss.class_weights=[1, 2, 3, 4, 5]"],
    ).validate()
    assert cfg.method == "proportion"
    assert cfg.data.batch_size == 4
    assert cfg.trainer.max_epochs == 3
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert isinstance(cfg.optim.lr, float)
    assert cfg.model.weights == "none"
    assert cfg.loss.class_weights == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert cfg.run_dir == Path("runs") / "proportion-seed0"


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
    with pytest.raises(SegweakError, match="stage: 'semi' is not valid.*strong, weak.*method"):
        load_config(TrainConfig, None, ["stage=semi", "data.store=x"]).validate()
    with pytest.raises(
        SegweakError, match="weak.area: 'valid_area' is not valid; choose one of patch, valid"
    ):
        load_config(TrainConfig, None, ["weak.area=valid_area", "data.store=x"]).validate()
    with pytest.raises(SegweakError, match="data.store is not set"):
        load_config(TrainConfig, None).validate()
    with pytest.raises(SegweakError, match="init.reset_head is true but init.checkpoint is not set"):
        load_config(TrainConfig, None, ["init.reset_head=true", "data.store=x"]).validate()
    with pytest.raises(SegweakError, match=r"data.batch_sizes.weak must be an integer >= 1"):
        load_config(TrainConfig, None, ["data.batch_sizes.weak=0", "data.store=x"]).validate()


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


def test_registry_names_checked_where_training_starts() -> None:
    from segweak.methods import check_config

    # Loading a config needs no registry (config.py imports no torch); check_config does the rest.
    cfg = load_config(TrainConfig, None, ["data.store=x", "method=mil"]).validate()
    with pytest.raises(
        SegweakError, match=r"method: unknown training method 'mil'; valid: .*joint.*proportion"
    ):
        check_config(cfg)
    with pytest.raises(SegweakError, match="fpn"):
        check_config(load_config(TrainConfig, None, ["data.store=x", "model.arch=fnp"]))


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


def test_config_module_imports_no_torch_and_no_registry() -> None:
    import subprocess
    import sys

    code = (
        "import sys, segweak.config; "
        "bad = [m for m in ('torch', 'segweak.methods', 'segweak.models') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


OLD_TRAIN = {
    "stage": "weak",
    "weak": {
        "method": "proportion_presence",
        "loss": "kl",
        "eps": 1e-5,
        "presence_threshold": 0.1,
        "use_valid_area": True,
        "lse_r": 3.0,
        "presence_weight": 0.2,
        "presence_pooling": "max",
        "entropy_weight": 0.3,
    },
    "finetune": {"init_from": None, "reset_head": False},
    "data": {"store": "s"},
}


def test_migrate_old_train_keys() -> None:
    from segweak.config import migrate_train_dict

    new, found = migrate_train_dict(OLD_TRAIN)
    assert new["method"] == "proportion_presence" and "stage" not in new and "finetune" not in new
    # Only the options the old method read move to its section (entropy_weight had no effect).
    assert new["methods"] == {
        "proportion_presence": {
            "loss": "kl",
            "eps": 1e-5,
            "lse_r": 3.0,
            "presence_weight": 0.2,
            "presence_pooling": "max",
        }
    }
    assert new["weak"] == {"presence_threshold": 0.1, "area": "valid"}
    assert new["init"] == {"checkpoint": None, "reset_head": False}
    assert {"stage", "weak.method", "weak.use_valid_area", "finetune.init_from"} <= set(found)
    assert OLD_TRAIN["stage"] == "weak"  # the input is not modified

    for stage, method, subset in (("strong", "supervised", None), ("full", "supervised", "full")):
        new, _ = migrate_train_dict({"stage": stage, "weak": {"loss": "kl", "use_valid_area": False}})
        assert new["method"] == method and new["weak"] == {"area": "patch"}
        assert (new.get("methods") or {}).get("supervised", {}).get("subset") == subset
        assert "proportion" not in (new.get("methods") or {})  # weak options of a strong run dropped
    new, _ = migrate_train_dict(
        {"stage": "finetune", "finetune": {"init_from": "w.ckpt", "reset_head": True}}
    )
    assert new == {"method": "supervised", "init": {"checkpoint": "w.ckpt", "reset_head": True}}
    # A config in the new layout is left alone.
    current = {"method": "joint", "weak": {"area": "patch"}, "methods": {"joint": {"weight": 0.5}}}
    assert migrate_train_dict(current) == (current, [])
    with pytest.raises(SegweakError, match="stage .* and method .* are both set"):
        migrate_train_dict({"stage": "weak", "method": "proportion"})


def test_old_keys_in_a_file_load_with_one_deprecation_line(tmp_path: Path, capsys) -> None:
    cfg_file = tmp_path / "old.yaml"
    cfg_file.write_text("stage: weak\nweak:\n  method: proportion\n  loss: l1\ndata:\n  store: s\n")
    cfg = load_config(TrainConfig, cfg_file, ["finetune.reset_head=false"])
    assert cfg.method == "proportion" and cfg.methods == {"proportion": {"loss": "l1"}}
    assert cfg.weak.area == "patch"  # use_valid_area not given: the new (leak-free) default
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deprecated" in err[0] and "stage" in err[0] and "weak.loss" in err[0]
    load_config(TrainConfig, None, ["method=proportion", "data.store=s"])
    assert capsys.readouterr().err == ""


def test_method_options_are_strict() -> None:
    from segweak.methods import check_config, method_options

    cfg = load_config(TrainConfig, None, ["data.store=x", "method=joint", "methods.joint.wieght=2"])
    with pytest.raises(SegweakError, match=r"methods\.joint\.wieght.*valid keys: .*weight"):
        check_config(cfg)
    cfg = load_config(TrainConfig, None, ["data.store=x", "method=joint", "methods.joint.ramp=cosine"])
    with pytest.raises(SegweakError, match=r"methods\.joint\.ramp: 'cosine' is not valid"):
        check_config(cfg)
    # A typo in another method's section fails too (shared experiment sections are checked early).
    cfg = load_config(TrainConfig, None, ["data.store=x", "method=joint", "methods.proportion.los=kl"])
    with pytest.raises(SegweakError, match=r"methods\.proportion\.los"):
        check_config(cfg)
    cfg = load_config(TrainConfig, None, ["data.store=x", "method=joint", "methods.jiont.weight=1"])
    with pytest.raises(
        SegweakError, match=r"methods\.jiont: no training method of that name; valid: .*joint"
    ):
        check_config(cfg)
    # Resolved: only the method's own section, every option filled in.
    cfg = load_config(TrainConfig, None, ["data.store=x", "method=joint", "methods.joint.weight=0.5"])
    resolved = check_config(cfg)
    assert list(resolved.methods) == ["joint"] and resolved.methods["joint"]["weight"] == 0.5
    assert resolved.methods["joint"]["weak_loss"] == "proportion"
    assert method_options(resolved).weight == 0.5


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


def _experiment(split: dict, source: str = "synthetic"):
    from segweak.config import ExperimentConfig, from_dict

    folder = {"images": "i", "masks": "m", "palette": "p"} if source == "folder" else {}
    data = {"dataset": {"source": source, "store": "s", "root": "r", **folder}, "split": split}
    return from_dict(ExperimentConfig, data).validate()


def test_split_section_accepts_four_fractions_nested_and_test() -> None:
    cfg = _experiment({"fractions": [0.1, 0.6, 0.1, 0.2], "nested": True})
    assert cfg.split.fractions == [0.1, 0.6, 0.1, 0.2] and cfg.split.nested is True and cfg.split.test is None
    assert _experiment({"test": "official"}, source="vaihingen").split.test == "official"
    assert _experiment({"test": ["area1", "area3"]}, source="store").split.test == ["area1", "area3"]
    defaults = _experiment({})
    assert defaults.split.nested is False and defaults.split.test is None


@pytest.mark.parametrize(
    ("split", "source", "match"),
    [
        ({"fractions": [0.2, 0.6, 0.2, 0.2]}, "synthetic", r"split\.fractions: expected three .* or four"),
        ({"fractions": [0.5, 0.5]}, "synthetic", r"split\.fractions"),
        ({"fractions": [-0.1, 0.9, 0.2]}, "synthetic", r"split\.fractions.*non-negative"),
        ({"fractions": [0.2, 0.6, 0.2, 0.0]}, "synthetic", r"split\.fractions: the test fraction"),
        (
            {"test": "official", "fractions": [0.1, 0.6, 0.1, 0.2]},
            "vaihingen",
            r"split\.fractions: split\.test",
        ),
        ({"test": "tiles"}, "vaihingen", r"split\.test: 'tiles' is not valid; choose one of official"),
        ({"test": "official"}, "folder", r"split\.test: 'official' .* dataset\.source is 'folder'"),
        ({"test": ["a", "a"]}, "store", r"split\.test: give distinct group ids"),
        ({"test": []}, "store", r"split\.test: give distinct group ids"),
        ({"test": 3}, "store", r"split\.test: expected"),
        ({"nested": "yes"}, "store", r"split\.nested: expected true or false"),
    ],
)
def test_split_section_errors_name_the_key(split: dict, source: str, match: str) -> None:
    with pytest.raises(SegweakError, match=match):
        _experiment(split, source)
