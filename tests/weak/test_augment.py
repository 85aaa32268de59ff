import pytest
import torch

from segweak.errors import SegweakError
from segweak.weak.augment import strong_photometric


def _images(b=3, c=3, h=16, w=20):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(0))


def test_deterministic_given_seed_or_generator_and_keeps_shape_dtype():
    x = _images()
    a, b = strong_photometric(x, 7), strong_photometric(x, 7)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    assert not torch.equal(a, strong_photometric(x, 8))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(strong_photometric(x, g1), strong_photometric(x, g2))
    assert not torch.equal(strong_photometric(x, g1), strong_photometric(x, g2.manual_seed(4)))
    half = strong_photometric(x.half(), 7)
    assert half.dtype == torch.float16
    with pytest.raises(ValueError, match="float"):
        strong_photometric(x.long(), 7)


def test_cutout_sets_one_square_per_sample_to_fill():
    x = _images()
    out = strong_photometric(x, 1, brightness=0, contrast=0, noise_std=0, cutout_size=0.25, fill=-9.0)
    side = round(0.25 * 16)
    changed = (out - x).abs() > 1e-4  # the identity jitter (gain 1, shift 0) may round the last bit
    for b in range(3):
        assert torch.equal(changed[b, 0], changed[b, 1]) and torch.equal(changed[b, 0], changed[b, 2])
        rows, cols = changed[b, 0].nonzero(as_tuple=True)
        assert len(rows) == side * side
        assert int(rows.max() - rows.min()) == side - 1 and int(cols.max() - cols.min()) == side - 1
        assert (out[b][:, changed[b, 0]] == -9.0).all()
    assert not torch.equal(changed[0], changed[1])  # positions differ between samples
    none = strong_photometric(x, 1, brightness=0, contrast=0, noise_std=0, cutout_boxes=0)
    torch.testing.assert_close(none, x)  # pixel positions and values untouched


def test_per_channel_jitter_stays_in_range():
    x = _images(b=4)
    out = strong_photometric(x, 2, brightness=0.3, contrast=0.5, noise_std=0, cutout_boxes=0)
    mean_in, mean_out = x.mean((2, 3)), out.mean((2, 3))
    gain = (out - mean_out[..., None, None]).std((2, 3)) / (x - mean_in[..., None, None]).std((2, 3))
    assert ((gain >= 0.5 - 1e-5) & (gain <= 1.5 + 1e-5)).all()
    assert ((mean_out - mean_in).abs() <= 0.3 + 1e-5).all()
    assert gain.std() > 0.01 and (mean_out - mean_in).std() > 0.01  # drawn per sample and channel
    noisy = strong_photometric(x, 2, brightness=0.3, contrast=0.5, noise_std=0.2, cutout_boxes=0)
    assert 0.1 < float((noisy - out).std()) < 0.3


def test_rejects_bad_options():
    x = _images()
    for kwargs in ({"contrast": 1.5}, {"brightness": -1}, {"noise_std": -0.1}, {"cutout_size": 0}):
        with pytest.raises(SegweakError, match="strong augmentation"):
            strong_photometric(x, 0, **kwargs)
