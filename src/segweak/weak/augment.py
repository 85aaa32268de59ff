"""Strong photometric augmentation of a batch on its device, for two-view consistency methods.

FixMatch and mean-teacher style methods compare predictions on two views of the same patch: a
*weak* view (the data pipeline's geometric augmentation: flips, 90° rotations) and a *strong* view
made here from the weak one. The strong view changes pixel values only, never their positions:
a pixel target taken from the other view (a FixMatch pseudo-label, a teacher probability) must
describe the same ground location, and the weak labels (proportions over the valid area) must still
hold. A geometric change would need the same warp applied to the targets and to the area mask, and
would move pixels out of the patch, changing its class proportions.

The augmentation runs on the images' device in a few batched tensor operations, with one random draw
per sample, from an explicit generator so that runs are reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor

from segweak.errors import SegweakError


def _generator(generator: torch.Generator | int, device: torch.device) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(int(generator))


def strong_photometric(
    images: Tensor,
    generator: torch.Generator | int,
    *,
    brightness: float = 0.4,
    contrast: float = 0.4,
    noise_std: float = 0.1,
    cutout_boxes: int = 1,
    cutout_size: float = 0.25,
    fill: float = 0.0,
) -> Tensor:
    """Per-sample strong photometric augmentation: channel jitter, gaussian noise, cutout.

    For sample b and channel c of a normalised image x (zero mean, unit std per channel over the
    dataset), with μ_{b,c} the channel's mean over the patch,

        x' = μ_{b,c} + a_{b,c} (x − μ_{b,c}) + β_{b,c} + σ ξ,
        a ~ U(1 − contrast, 1 + contrast),  β ~ U(−brightness, brightness),  ξ ~ N(0, 1) per pixel,

    then ``cutout_boxes`` squares of side round(cutout_size · min(H, W)) at uniform positions (inside
    the patch, possibly overlapping) are set to ``fill`` in every channel (0 = the dataset mean;
    cutout as in DeVries & Taylor 2017, used by FixMatch's strong augmentation). Pixel positions are
    unchanged (see the module docstring for why).

    Args:
        images: (B, C, H, W) floating-point batch, on any device.
        generator: A ``torch.Generator`` (on the images' device for speed; a CPU generator works on
            any device, its draws are moved) or an int seed for a new generator on the images'
            device. The same generator state and inputs give the same output on the same device.
        brightness: Half-range of the additive per-channel shift, in dataset-std units (≥ 0).
        contrast: Half-range of the per-channel gain around 1, in [0, 1].
        noise_std: Standard deviation σ ≥ 0 of the per-pixel gaussian noise.
        cutout_boxes: Number of cutout squares per sample (≥ 0).
        cutout_size: Side of a square as a fraction of min(H, W), in (0, 1].
        fill: Value of cutout pixels.

    Returns:
        (B, C, H, W) tensor of the input dtype and device.

    Raises:
        SegweakError: For an option out of range.
        ValueError: When ``images`` is not a 4-D floating-point tensor.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"strong_photometric needs a (B, C, H, W) float batch, got {images.dtype} {tuple(images.shape)}"
        )
    if brightness < 0 or not 0 <= contrast <= 1 or noise_std < 0:
        raise SegweakError(
            f"strong augmentation: need brightness >= 0, contrast in [0, 1] and noise_std >= 0; "
            f"got {brightness}, {contrast}, {noise_std}"
        )
    if int(cutout_boxes) < 0 or not 0 < cutout_size <= 1:
        raise SegweakError(
            "strong augmentation: need cutout_boxes >= 0 and cutout_size in (0, 1]; "
            f"got {cutout_boxes}, {cutout_size}"
        )
    b, c, h, w = images.shape
    dev = images.device
    gen = _generator(generator, dev)

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=gen, device=gen.device).to(dev)

    x = images.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    gain = 1.0 + contrast * (2.0 * uniform(b, c, 1, 1) - 1.0)
    shift = brightness * (2.0 * uniform(b, c, 1, 1) - 1.0)
    x = mean + gain * (x - mean) + shift
    if noise_std > 0:
        x = x + noise_std * torch.randn((b, c, h, w), generator=gen, device=gen.device).to(dev)
    if cutout_boxes > 0:
        side = max(1, round(cutout_size * min(h, w)))
        n = int(cutout_boxes)
        # Top-left corners uniform over the positions that keep the square inside the patch.
        top = (uniform(b, n) * (h - side + 1)).floor().clamp_max(h - side)
        left = (uniform(b, n) * (w - side + 1)).floor().clamp_max(w - side)
        rows = torch.arange(h, device=dev, dtype=torch.float32)[None, None, :, None]
        cols = torch.arange(w, device=dev, dtype=torch.float32)[None, None, None, :]
        in_rows = (rows >= top[:, :, None, None]) & (rows < top[:, :, None, None] + side)
        in_cols = (cols >= left[:, :, None, None]) & (cols < left[:, :, None, None] + side)
        boxes = (in_rows & in_cols).any(dim=1, keepdim=True)  # (B, 1, H, W)
        x = x.masked_fill(boxes, float(fill))
    return x.to(images.dtype)
