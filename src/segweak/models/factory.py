"""Build segmentation networks from :class:`~segweak.config.ModelConfig` over segmentation_models_pytorch.

Architectures (``model.arch``, lower case) are smp 0.6's: ``fpn`` (default), ``unet``, ``unetplusplus``,
``manet``, ``linknet``, ``pspnet``, ``deeplabv3``, ``deeplabv3plus``, ``pan``, ``upernet``, ``segformer``
and ``dpt`` (DPT needs a ViT encoder such as ``tu-vit_tiny_patch16_224``).

Encoders (``model.encoder``): smp's own names (``smp.encoders.get_encoder_names()``, e.g. ``resnet34``)
or ``tu-<any timm model>`` (e.g. ``tu-tf_efficientnet_lite0``).

Weights (``model.weights``): ``imagenet`` (download by smp/timm; needs internet), ``offline`` (ImageNet
EfficientNet-Lite0 shipped in a pip package, encoder ``tu-tf_efficientnet_lite0`` only, see
:mod:`segweak.models.weights`), ``none`` (random init), or a path to an encoder ``state_dict`` file
(``.pth``/``.pt``/``.safetensors``), loaded with ``weights_only=True`` and checked strictly.

Tiny encoder for tests: :data:`TINY_TEST_ENCODER` (``tu-test_efficientnet``, timm's test network, with
``weights: none``). Measured on one CPU thread, batch 4, 32×32, forward+backward: FPN 24 ms, U-Net 24 ms
(1.8 M / 1.6 M parameters, mostly the decoder); for comparison ``tu-tf_efficientnet_lite0`` FPN 59 ms,
``resnet18`` FPN 65 ms.

Most architectures need input sides divisible by :func:`input_divisor` (32 for the default depth).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from segmentation_models_pytorch.base import initialization as smp_init
from torch import nn

from segweak.config import ModelConfig
from segweak.errors import SegweakError
from segweak.models.weights import OFFLINE_ENCODER, apply_offline_weights, load_encoder_weights

ARCHITECTURES: dict[str, type[nn.Module]] = dict(smp.MODEL_ARCHITECTURES_MAPPING)
"""Registry of architecture name (lower case) -> smp model class."""

TINY_TEST_ENCODER = "tu-test_efficientnet"
"""A tiny, fast encoder for tests and smoke runs (use with ``weights: none``)."""

WEIGHT_KEYWORDS = ("imagenet", "offline", "none")
"""Non-path values of ``model.weights``."""

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
"""Accepted suffixes of a local encoder weights file."""


def architecture_names() -> list[str]:
    """Return the valid ``model.arch`` values, sorted."""
    return sorted(ARCHITECTURES)


def encoder_names() -> list[str]:
    """Smp's own encoder names (``tu-<timm model>`` names are valid too and not listed)."""
    return list(smp.encoders.get_encoder_names())


def check_architecture(arch: str) -> type[nn.Module]:
    """Return the smp class of ``arch`` (case-insensitive).

    Raises:
        SegweakError: Listing the valid names when ``arch`` is unknown.
    """
    cls = ARCHITECTURES.get(arch.lower())
    if cls is None:
        close = difflib.get_close_matches(arch.lower(), list(ARCHITECTURES), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SegweakError(
            f"model.arch: unknown architecture {arch!r}{hint}; valid: {', '.join(architecture_names())}"
        )
    return cls


def check_encoder(encoder: str) -> None:
    """Check that ``encoder`` names an smp encoder or ``tu-<timm model>``, without building it.

    Raises:
        SegweakError: With close matches and the list of smp encoders.
    """
    if encoder.startswith("tu-"):
        timm_name = encoder[3:]
        if timm_name and timm.is_model(timm_name):
            return
        close = difflib.get_close_matches(timm_name.split(".")[0], timm.list_models(), n=5, cutoff=0.6)
        hint = f" did you mean {', '.join('tu-' + c for c in close)}?" if close else ""
        raise SegweakError(
            f"model.encoder: {encoder!r} is not a timm model ({timm_name!r} unknown to timm "
            f"{timm.__version__}).{hint} Any name from timm.list_models() works after 'tu-'"
        )
    if encoder in smp.encoders.encoders:
        return
    candidates = encoder_names() + ["tu-" + n for n in timm.list_models()]
    close = difflib.get_close_matches(encoder, candidates, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise SegweakError(
        f"model.encoder: unknown encoder {encoder!r}.{hint} Valid: smp encoders "
        f"({', '.join(encoder_names())}) or tu-<any timm model>, e.g. {OFFLINE_ENCODER}"
    )


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the segmentation network described by ``cfg``.

    Args:
        cfg: Model config (``arch``, ``encoder``, ``weights``, ``in_channels``).
        num_classes: Output channels K of the logits.

    Returns:
        An smp model: ``forward(x (B, in_channels, H, W)) -> logits (B, K, H, W)``, with ``.encoder``,
        ``.decoder`` and ``.segmentation_head``.

    Raises:
        SegweakError: For an unknown arch/encoder, bad weights value or file, failed download, or an
            invalid combination.
    """
    cls = check_architecture(cfg.arch)
    check_encoder(cfg.encoder)
    if num_classes < 1:
        raise SegweakError(f"build_model: num_classes must be >= 1, got {num_classes}")
    if cfg.in_channels < 1:
        raise SegweakError(f"model.in_channels must be >= 1, got {cfg.in_channels}")
    weights = cfg.weights.strip()
    kind = weights.lower() if weights.lower() in WEIGHT_KEYWORDS else "file"
    path: Path | None = None
    if kind == "offline" and cfg.encoder != OFFLINE_ENCODER:
        raise SegweakError(
            f"model.weights=offline only exists for model.encoder={OFFLINE_ENCODER} (got {cfg.encoder!r}); "
            "use model.weights=none, imagenet (needs internet) or a path to an encoder weights file"
        )
    if kind == "file":
        path = _check_weights_path(weights)

    encoder_weights: Any = None
    if kind == "imagenet":
        encoder_weights = _imagenet_weights_arg(cfg.encoder)
    kwargs = dict(
        encoder_name=cfg.encoder,
        encoder_weights=encoder_weights,
        in_channels=cfg.in_channels,
        classes=num_classes,
    )
    try:
        model = cls(**kwargs)
    except Exception as exc:  # smp/timm/hub raise many types; turn them into one clear message
        if kind == "imagenet":
            raise SegweakError(
                f"could not get ImageNet weights for model.encoder={cfg.encoder} "
                f"({type(exc).__name__}: {exc}). "
                f"Without internet use model.weights=offline (with model.encoder={OFFLINE_ENCODER}), "
                "model.weights=none, or a path to a local encoder weights file"
            ) from exc
        raise SegweakError(
            f"cannot build model.arch={cfg.arch} with model.encoder={cfg.encoder}, "
            f"in_channels={cfg.in_channels}: {type(exc).__name__}: {exc}"
        ) from exc

    if kind == "offline":
        apply_offline_weights(model, cfg.encoder)
    elif kind == "file":
        assert path is not None
        load_encoder_weights(model.encoder, _read_weights_file(path), source=str(path))
    return model


def check_in_channels(
    in_channels: int, store_meta: Mapping[str, Any], store: str, checkpoint: str | None = None
) -> None:
    """Raise when a model's input channels differ from a store's image channels.

    Args:
        in_channels: The model's ``model.in_channels``.
        store_meta: The store's ``store.json``.
        store: Store path, for the message.
        checkpoint: The checkpoint the model comes from (evaluation), or None (training config).

    Raises:
        SegweakError: Naming both numbers, the store's bands and what to change.
    """
    channels = store_meta.get("channels")
    if channels is None or int(channels) == int(in_channels):
        return
    bands = store_meta.get("band_order") or "?"
    if checkpoint is None:
        raise SegweakError(
            f"model.in_channels is {in_channels} but store {store} has {channels} channels ({bands}); set "
            f"--set model.in_channels={channels} (train.model.in_channels in an experiment config)"
        )
    raise SegweakError(
        f"checkpoint {checkpoint} takes {in_channels} input channels but store {store} has {channels} "
        f"({bands}); use a store prepared with the bands the checkpoint was trained on"
    )


def _imagenet_weights_arg(encoder: str) -> Any:
    """Return the ``encoder_weights`` argument smp expects for ImageNet weights of ``encoder``."""
    if encoder.startswith("tu-"):
        # smp's timm-universal encoders take a bool; the pretrained tag is part of the timm name.
        return True
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if "imagenet" not in settings:
        raise SegweakError(
            f"model.weights=imagenet: encoder {encoder!r} has no 'imagenet' weights in smp "
            f"(available: {', '.join(settings) or 'none'}); use model.weights=none or a weights file"
        )
    return "imagenet"


def _check_weights_path(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise SegweakError(
            f"model.weights: {value!r} is neither one of {', '.join(WEIGHT_KEYWORDS)} nor an existing file; "
            "give imagenet, offline, none, or the path of an encoder state_dict "
            f"({', '.join(WEIGHT_SUFFIXES)})"
        )
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise SegweakError(
            f"model.weights: {path} has suffix {path.suffix!r}; expected one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    return path


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read an encoder state_dict from ``.safetensors`` or a ``torch.save`` file (weights only)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            # weights_only=True: never execute pickled code from a user-supplied file.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SegweakError(
            f"model.weights: cannot read {path} as a weights-only state_dict ({type(exc).__name__}: {exc}); "
            "save it with torch.save(encoder.state_dict(), path) or safetensors"
        ) from exc
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SegweakError(
            f"model.weights: {path} does not hold a state_dict (a mapping of names to tensors); "
            "save the encoder with torch.save(model.encoder.state_dict(), path)"
        )
    state = dict(obj)
    # Accept the encoder part of a whole smp model's state_dict, whose keys start with "encoder.".
    if all(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items()}
    return state


def input_divisor(model: nn.Module) -> int:
    """Input height/width must be multiples of this (the encoder's output stride), 1 if unconstrained."""
    if not getattr(model, "requires_divisible_input_shape", True):
        return 1
    encoder = getattr(model, "encoder", None)
    return int(getattr(encoder, "output_stride", 32)) if encoder is not None else 1


def _require_smp(model: nn.Module, what: str) -> None:
    if not (hasattr(model, "encoder") and hasattr(model, "segmentation_head")):
        raise SegweakError(f"{what} needs an smp model with .encoder and .segmentation_head")


def encoder_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters of the encoder (``model.encoder``): for a separate encoder learning rate."""
    _require_smp(model, "encoder_parameters")
    return iter(list(model.encoder.parameters()))


def head_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """All parameters outside the encoder: decoder, segmentation head (and classification head if any).

    Together with :func:`encoder_parameters` this covers every parameter exactly once.
    """
    _require_smp(model, "head_parameters")
    enc = {id(p) for p in model.encoder.parameters()}
    return iter([p for p in model.parameters() if id(p) not in enc])


def reset_head(model: nn.Module) -> None:
    """Re-initialise the segmentation head (smp's own head init: Xavier-uniform weights, zero bias).

    Uses the global torch RNG, so seed first for reproducibility.
    """
    _require_smp(model, "reset_head")
    smp_init.initialize_head(model.segmentation_head)


def model_signature(cfg: ModelConfig, num_classes: int) -> dict[str, Any]:
    """Return what a checkpoint must match to be loadable: ``{arch, encoder, in_channels, num_classes}``.

    ``weights`` is not part of it: it only decides the initialisation.
    """
    return {
        "arch": cfg.arch.lower(),
        "encoder": cfg.encoder,
        "in_channels": int(cfg.in_channels),
        "num_classes": int(num_classes),
    }


def check_signature(
    saved: Mapping[str, Any], expected: Mapping[str, Any], source: str = "checkpoint"
) -> None:
    """Raise when a saved model signature differs from the expected one.

    Args:
        saved: Signature stored with the weights (from :func:`model_signature`).
        expected: Signature of the model about to receive the weights.
        source: Name of the file/checkpoint, for the message.

    Raises:
        SegweakError: Saying which fields differ, e.g. ``arch: checkpoint has 'unet', config has 'fpn'``.
    """
    keys = ("arch", "encoder", "in_channels", "num_classes")
    diffs = [
        f"{k}: {source} has {saved.get(k)!r}, config has {expected.get(k)!r}"
        for k in keys
        if saved.get(k) != expected.get(k)
    ]
    if diffs:
        raise SegweakError(
            f"cannot load {source} into this model: " + "; ".join(diffs) + ". "
            "Use the same model.arch/model.encoder/model.in_channels and class set as the run that wrote it"
        )
