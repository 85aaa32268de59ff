import pytest
import torch
import torch.nn.functional as F

from segweak.models.losses import dice_loss, pixel_loss


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, generator=gen, requires_grad=True)
    mask = torch.randint(0, 5, (2, 8, 8), generator=gen)
    mask[0, :3] = 255
    return logits, mask


@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 3.0, 0.5, 4.0]])
def test_pixel_loss_equals_cross_entropy_mean(batch, weights) -> None:
    logits, mask = batch
    w = torch.tensor(weights) if weights is not None else None
    expected = F.cross_entropy(logits, mask, weight=w, ignore_index=255)
    assert torch.allclose(pixel_loss(logits, mask, w), expected, atol=1e-6)


def test_all_ignore_batch_gives_zero_and_finite_gradients(batch) -> None:
    logits, mask = batch
    loss = pixel_loss(logits, torch.full_like(mask, 255), dice_weight=1.0)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_dice_perfect_prediction_and_weighting(batch) -> None:
    logits, mask = batch
    perfect = F.one_hot(mask.clamp(max=4), 5).permute(0, 3, 1, 2).float() * 50.0
    assert dice_loss(perfect, mask).item() == pytest.approx(0.0, abs=1e-4)
    assert 0.0 < dice_loss(logits, mask).item() < 1.0
    ce = pixel_loss(logits, mask)
    both = pixel_loss(logits, mask, dice_weight=0.5)
    assert both.item() == pytest.approx(ce.item() + 0.5 * dice_loss(logits, mask).item(), rel=1e-5)
