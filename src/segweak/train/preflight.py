"""Checks that need torch or the data on disk, run where work starts and before anything is built.

:mod:`segweak.config` validates values on their own (without importing torch). What depends on the
machine or on the model is checked here, at the entry points (``engine.train``,
``run_experiment``, ``evaluate``, ``predict_tiles``), so a bad option gives one
:class:`~segweak.errors.SegweakError` line before any data is prepared, model built or file written,
instead of a traceback from deep inside Lightning or a convolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from segweak.config import TrainerConfig, validate_trainer_for
from segweak.errors import SegweakError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def check_device(device: str, option: str = "--device") -> torch.device:
    """Parse a torch device string and check that this machine has it.

    Args:
        device: E.g. ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        option: Option name for the message.

    Returns:
        The parsed device.

    Raises:
        SegweakError: For a string torch does not parse, a device type segweak does not run on, or a
            CUDA/MPS device this machine does not have.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SegweakError(
            f"{option} {device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SegweakError(
                f"{option} {device}: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is "
                "false); use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SegweakError(
                f"{option} {device}: this machine has {count} CUDA GPU(s): cuda:0..cuda:{count - 1}"
            )
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise SegweakError(
                f"{option} {device}: Apple MPS is not available on this machine; use --device cpu"
            )
        return dev
    raise SegweakError(f"{option} {device!r}: segweak runs on cpu, cuda or mps")


def check_trainer_hardware(tc: TrainerConfig, prefix: str = "trainer.") -> None:
    """Check that the machine has what ``trainer.accelerator`` / ``trainer.devices`` ask for.

    ``auto`` resolves like Lightning's (CUDA, then MPS, then CPU); on a CPU-only machine the CPU rules
    for ``devices`` and ``precision`` then apply.

    Args:
        tc: A validated trainer config (:meth:`TrainConfig.validate`).
        prefix: Dotted prefix of the keys for messages (e.g. ``train.trainer.``).

    Raises:
        SegweakError: Naming the key and what to set instead.
    """
    accelerator = tc.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
        validate_trainer_for(tc, accelerator, prefix)
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise SegweakError(
                f"{prefix}accelerator={tc.accelerator}: torch sees no CUDA GPU on this machine; set "
                f"{prefix}accelerator=cpu (or auto: the GPU when there is one)"
            )
        count = torch.cuda.device_count()
        wanted = _device_ids(tc.devices)
        if isinstance(wanted, int) and wanted > count:
            raise SegweakError(
                f"{prefix}devices={tc.devices!r} asks for {wanted} GPUs, this machine has {count}; "
                f"set {prefix}devices to at most {count} (or -1 for all)"
            )
        if isinstance(wanted, list) and max(wanted) >= count:
            raise SegweakError(
                f"{prefix}devices={tc.devices!r} names GPU id {max(wanted)}, this machine has ids "
                f"0..{count - 1}"
            )
    elif accelerator == "mps" and not _mps_available():
        raise SegweakError(
            f"{prefix}accelerator=mps: Apple MPS is not available on this machine; "
            f"set {prefix}accelerator=cpu"
        )


def _device_ids(devices: int | str | list[int]) -> int | list[int] | None:
    """Return a device count (int), explicit ids (list) or ``None`` (``auto`` / ``-1``: all there are)."""
    if isinstance(devices, list):
        return list(devices)
    if isinstance(devices, int):
        return devices if devices >= 1 else None
    text = devices.strip()
    if text in ("auto", "-1"):
        return None
    if text.isdigit():
        return int(text)
    return [int(p) for p in text.split(",") if p.strip()]


def check_window(
    window: int, model: nn.Module, tile_shapes: dict[str, Any], option: str = "--window"
) -> None:
    """Check a sliding-window side against the model's input divisor and the tiles' sizes.

    Args:
        window: Window side in pixels.
        model: The network (its encoder's output stride sets the divisor).
        tile_shapes: ``{tile_id: (H, W)}`` of the tiles to predict.
        option: Option name for the message.
    """
    from segweak.models.factory import input_divisor

    if window < 1:
        raise SegweakError(f"{option} must be >= 1, got {window}")
    divisor = input_divisor(model)
    if window % divisor:
        lower = window // divisor * divisor
        hint = f"{lower} or {lower + divisor}" if lower else str(divisor)
        raise SegweakError(
            f"{option} {window}: this model needs window sides that are multiples of {divisor} (its "
            f"encoder's output stride); use e.g. {hint}"
        )
    for tile_id, shape in tile_shapes.items():
        h, w = int(shape[0]), int(shape[1])
        if window > min(h, w):
            raise SegweakError(
                f"{option} {window} is larger than tile {tile_id!r} ({h}x{w} px); use at most {min(h, w)}"
            )


def check_positive(value: int, option: str) -> None:
    """Refuse an option that must be >= 1 (batch sizes, counts)."""
    if value < 1:
        raise SegweakError(f"{option} must be >= 1, got {value}")


def check_output_file(path: str | Path, option: str = "--out") -> None:
    """Refuse an output file path that names an existing directory."""
    if Path(path).is_dir():
        raise SegweakError(
            f"{option} {path} is a directory; give a file path, e.g. {Path(path) / 'metrics.json'}"
        )


def check_output_dir(path: str | Path, option: str = "--out") -> None:
    """Refuse an output directory path that names an existing file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SegweakError(f"{option} {path} is a file; give a directory (it is created when missing)")
