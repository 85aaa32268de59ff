"""Safe checkpoint loading: weights-only unpickling, model reconstruction and signature checks.

A segweak checkpoint is a Lightning checkpoint written by :class:`~segweak.train.module.SegModule`:

* ``state_dict``: module weights, the network's under the ``model.`` prefix, the training method's
  state (an EMA teacher, ...) under ``method.``;
* ``hyper_parameters``: plain data only: ``cfg`` (the resolved ``TrainConfig`` as a dict),
  ``num_classes`` and ``classes`` (class names in index order);
* ``segweak``: ``{"format_version": 2, "signature": model_signature(...), "classes": [...],
  "method": ..., "history": [...], "train_seconds": ...}``.

Checkpoints written before training methods existed (``format_version`` 1: ``stage`` instead of
``method``, ``cfg`` with ``stage``/``finetune``/``weak.method`` keys) still load: their config is
migrated with :func:`segweak.config.migrate_train_dict`.

Everything is plain data or tensors, so ``torch.load(path, map_location="cpu", weights_only=True)``
reads it without executing any pickled code; a checkpoint that needs more is refused.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from segweak.config import ModelConfig, TrainConfig, from_dict, migrate_train_dict
from segweak.errors import SegweakError
from segweak.io import atomic_write_bytes

MODEL_PREFIX = "model."
"""Prefix of the network's parameters inside the module's ``state_dict``."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint writer that never leaves a truncated ``.ckpt`` behind.

    Lightning's default writes the serialised bytes straight into the final path, so a run killed
    mid-write leaves a corrupt ``last.ckpt`` that blocks ``resume``. Here the bytes go to a temporary
    file beside the target, which is then renamed over it (atomic on POSIX).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        """Serialise ``checkpoint`` with ``torch.save`` and write it to ``path`` atomically."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` onto the CPU.

    Args:
        path: Checkpoint file (``.ckpt``).

    Returns:
        The checkpoint mapping.

    Raises:
        SegweakError: When the file is missing, is not a checkpoint, or holds pickled objects other
            than tensors and plain data (refused: loading them could execute arbitrary code).
    """
    path = Path(path)
    if path.is_dir():
        raise SegweakError(f"checkpoint {path} is a directory; give a .ckpt file (e.g. {path}/best.ckpt)")
    if not path.is_file():
        raise SegweakError(
            f"checkpoint {path} not found; give the path of a .ckpt file (e.g. RUN/checkpoints/best.ckpt)"
        )
    # Only a torch.save file gets as far as the unpickler: anything else (text, an empty or truncated
    # file) would otherwise be reported by the weights-only unpickler as holding unsafe objects.
    if not _looks_like_torch_file(path):
        raise SegweakError(
            f"{path} is not a PyTorch checkpoint file (empty, truncated or another format); give a .ckpt "
            "written by segweak train, e.g. RUN/checkpoints/best.ckpt"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SegweakError(
            f"checkpoint {path} holds pickled objects other than tensors and plain data; segweak only "
            f"loads checkpoints weights-only and refuses it (only load checkpoints written by segweak "
            f"from trusted sources). Detail: {_first_line(exc)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise SegweakError(
            f"{path} is not a readable PyTorch checkpoint file ({_first_line(exc)}); is it a complete .ckpt "
            "written by segweak train?"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise SegweakError(f"checkpoint {path} has no 'state_dict'; it was not written by segweak train")
    return ckpt


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` is a complete zip archive (torch.save's format) or a legacy pickle stream.

    ``zipfile.is_zipfile`` looks for the end-of-archive record, so a truncated download fails here.
    """
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as fh:
        head = fh.read(2)
    # torch.save(..., _use_new_zipfile_serialization=False) starts with a pickle protocol >= 2 header.
    return len(head) == 2 and head[0] == 0x80 and head[1] >= 2


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def checkpoint_config(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> TrainConfig:
    """Return the ``TrainConfig`` a checkpoint was trained with (from its hyperparameters).

    A config of the layout before training methods is migrated (no notice: the user did not write it).

    Raises:
        SegweakError: When the checkpoint carries no segweak hyperparameters, or they do not load.
    """
    hp = ckpt.get("hyper_parameters") or {}
    if "cfg" not in hp:
        raise SegweakError(
            f"checkpoint {path} has no segweak hyperparameters ('cfg'); it was not written by segweak"
        )
    try:
        return from_dict(TrainConfig, migrate_train_dict(hp["cfg"])[0])
    except SegweakError as exc:
        raise SegweakError(
            f"checkpoint {path}: its recorded config does not load ({exc}); it was written by an "
            "incompatible segweak version: retrain it, or evaluate it with that version"
        ) from None


def checkpoint_classes(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> list[str]:
    """Class names (index order) a checkpoint was trained with."""
    hp = ckpt.get("hyper_parameters") or {}
    if "classes" not in hp:
        raise SegweakError(f"checkpoint {path} records no class names; it was not written by segweak")
    return list(hp["classes"])


def model_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Return the network's weights (``model.`` prefix removed) from a checkpoint."""
    return {k[len(MODEL_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}


def check_classes(saved: list[str], expected: list[str], path: str | Path, what: str) -> None:
    """Raise a clear error when a checkpoint's classes differ from the store's / config's.

    Args:
        saved: Class names stored in the checkpoint.
        expected: Class names of the data it is used with.
        path: Checkpoint path (for the message).
        what: What ``expected`` comes from, e.g. ``"store runs/store"``.
    """
    if len(saved) != len(expected):
        raise SegweakError(
            f"checkpoint {path} was trained with {len(saved)} classes ({', '.join(saved)}), "
            f"{what} has {len(expected)} ({', '.join(expected)}); "
            "use a checkpoint trained on the same class set"
        )
    if list(saved) != list(expected):
        raise SegweakError(
            f"checkpoint {path} was trained with classes {saved}, {what} has {expected} "
            "(same count, different names or order); use a checkpoint trained on the same class set"
        )


def build_model_from_checkpoint(
    ckpt: dict[str, Any], path: str | Path = "checkpoint"
) -> tuple[nn.Module, TrainConfig, list[str]]:
    """Rebuild the network a checkpoint holds and load its weights (strictly).

    The network is built with ``weights: none`` (the checkpoint provides every weight, so no
    pretrained download or package lookup happens).

    Returns:
        ``(model in eval mode on CPU, its TrainConfig, class names)``.
    """
    from segweak.models.factory import build_model

    cfg = checkpoint_config(ckpt, path)
    classes = checkpoint_classes(ckpt, path)
    model_cfg = ModelConfig(**{**cfg.model.__dict__, "weights": "none"})
    model = build_model(model_cfg, len(classes))
    try:
        model.load_state_dict(model_state_dict(ckpt), strict=True)
    except RuntimeError as exc:
        raise SegweakError(f"checkpoint {path} does not match its recorded model config: {exc}") from None
    model.eval()
    return model, cfg, classes
