import pytest
import torch

from segweak.config import ModelConfig
from segweak.errors import SegweakError
from segweak.models import factory
from segweak.models.factory import (
    ARCHITECTURES,
    TINY_TEST_ENCODER,
    build_model,
    check_signature,
    encoder_parameters,
    head_parameters,
    input_divisor,
    model_signature,
    reset_head,
)

TINY = dict(encoder=TINY_TEST_ENCODER, weights="none")


def test_registry_covers_smp_architectures():
    for name in (
        "fpn",
        "unet",
        "unetplusplus",
        "deeplabv3",
        "deeplabv3plus",
        "pspnet",
        "linknet",
        "manet",
        "pan",
    ):
        assert name in ARCHITECTURES
    assert ModelConfig().arch == "fpn"


@pytest.mark.parametrize("arch", ["fpn", "unet", "deeplabv3plus"])
def test_build_forward_shape(arch):
    model = build_model(ModelConfig(arch=arch, **TINY), num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 5, 32, 32)
    out.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_arch_case_insensitive_and_four_channels():
    model = build_model(ModelConfig(arch="FPN", in_channels=4, **TINY), num_classes=3)
    assert model(torch.randn(2, 4, 32, 32)).shape == (2, 3, 32, 32)
    assert input_divisor(model) == 32


def test_unknown_arch_lists_valid_names():
    with pytest.raises(SegweakError) as err:
        build_model(ModelConfig(arch="fpnn", **TINY), 5)
    msg = str(err.value)
    assert "model.arch" in msg and "did you mean fpn" in msg and "deeplabv3plus" in msg


def test_unknown_encoders_hint():
    with pytest.raises(SegweakError, match=r"resnet34.*tu-<any timm model>"):
        build_model(ModelConfig(encoder="resnet35", weights="none"), 5)
    with pytest.raises(SegweakError, match="tu-efficientnet_lite0"):
        build_model(ModelConfig(encoder="tu-efficientnet_lite9", weights="none"), 5)


def test_offline_only_for_lite0():
    with pytest.raises(SegweakError, match="tu-tf_efficientnet_lite0"):
        build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights="offline"), 5)


def test_imagenet_download_failure_is_clear(monkeypatch):
    class Boom(torch.nn.Module):
        def __init__(self, **kwargs):
            raise OSError("no network")

    monkeypatch.setitem(factory.ARCHITECTURES, "fpn", Boom)
    with pytest.raises(SegweakError, match="offline.*none"):
        build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights="imagenet"), 5)


def test_weights_file_round_trip_and_strict_errors(tmp_path):
    torch.manual_seed(0)
    src = build_model(ModelConfig(**TINY), 5)
    path = tmp_path / "enc.pth"
    torch.save(src.encoder.state_dict(), path)
    dst = build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights=str(path)), 5)
    for k, v in src.encoder.state_dict().items():
        assert torch.equal(v, dst.encoder.state_dict()[k]), k

    # a whole smp model state_dict: only the encoder.* part is used when every key has that prefix
    whole = tmp_path / "whole.pt"
    torch.save({k: v for k, v in src.state_dict().items() if k.startswith("encoder.")}, whole)
    build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights=str(whole)), 5)

    # safetensors
    from safetensors.torch import save_file

    st = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in src.encoder.state_dict().items()}, str(st))
    build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights=str(st)), 5)

    # missing + unexpected keys
    broken = dict(src.encoder.state_dict())
    first = next(iter(broken))
    broken["model.extra.weight"] = broken.pop(first)
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(SegweakError) as err:
        build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights=str(bad)), 5)
    assert "missing keys" in str(err.value) and first in str(err.value)
    assert "unexpected keys" in str(err.value) and "model.extra.weight" in str(err.value)

    # a file with pickled objects is refused (weights_only=True)
    evil = tmp_path / "evil.pth"
    torch.save({"x": object()}, evil)
    with pytest.raises(SegweakError, match="weights-only"):
        build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights=str(evil)), 5)


def test_weights_path_errors(tmp_path):
    with pytest.raises(SegweakError, match="neither"):
        build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights=str(tmp_path / "nope.pth")), 5)
    other = tmp_path / "w.bin"
    other.write_bytes(b"x")
    with pytest.raises(SegweakError, match="suffix"):
        build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights=str(other)), 5)


def test_parameter_groups_partition_the_model():
    model = build_model(ModelConfig(**TINY), 5)
    enc = list(encoder_parameters(model))
    head = list(head_parameters(model))
    ids_enc, ids_head = {id(p) for p in enc}, {id(p) for p in head}
    assert ids_enc and ids_head and not (ids_enc & ids_head)
    assert ids_enc | ids_head == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.segmentation_head.parameters()} <= ids_head


def test_reset_head_changes_only_the_head():
    model = build_model(ModelConfig(**TINY), 5)
    with torch.no_grad():
        for p in model.segmentation_head.parameters():
            p.fill_(0.123)
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    reset_head(model)
    conv = model.segmentation_head[0]
    assert not torch.allclose(conv.weight, torch.full_like(conv.weight, 0.123))
    assert torch.all(conv.bias == 0)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k])


def test_signature_check():
    cfg = ModelConfig(**TINY)
    sig = model_signature(cfg, 5)
    assert sig == {"arch": "fpn", "encoder": TINY_TEST_ENCODER, "in_channels": 3, "num_classes": 5}
    check_signature(sig, model_signature(ModelConfig(encoder=TINY_TEST_ENCODER, weights="offline"), 5))
    with pytest.raises(SegweakError) as err:
        check_signature(
            sig, model_signature(ModelConfig(arch="unet", encoder=TINY_TEST_ENCODER), 6), "best.ckpt"
        )
    msg = str(err.value)
    assert "arch: best.ckpt has 'fpn', config has 'unet'" in msg and "num_classes" in msg
    assert "in_channels:" not in msg  # only differing fields are named
