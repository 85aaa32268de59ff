import pytest
import torch

from segweak.errors import SegweakError
from segweak.weak.constraints import (
    area_shares,
    interval_loss,
    interval_loss_mean,
    interval_penalty,
    presence_loss,
    presence_loss_mean,
)
from segweak.weak.losses import mse_rows

P = torch.tensor([[0.5, 0.3, 0.2]])


def _logits_with_shares(shares, n=1000):
    """(1, K, 1, n) confident logits whose argmax shares are ``shares`` (n·share pixels per class)."""
    labels = torch.cat([torch.full((round(s * n),), c) for c, s in enumerate(shares)])
    return 50.0 * torch.nn.functional.one_hot(labels, len(shares)).T[None, :, None, :].float()


def test_interval_is_zero_with_zero_gradient_inside():
    p_hat = torch.tensor([[0.52, 0.29, 0.19]], requires_grad=True)
    rows = interval_penalty(p_hat, P, 0.1)
    rows.sum().backward()
    assert rows.shape == (1,)
    assert float(rows.detach()) == 0.0
    assert torch.equal(p_hat.grad, torch.zeros_like(p_hat))
    # Through the softmax too: logits whose shares are inside the interval get no gradient.
    logits = _logits_with_shares([0.52, 0.29, 0.19]).requires_grad_()
    loss = interval_loss(logits, P, 0.1)
    loss.sum().backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().max()) == 0.0


def test_interval_hand_computed_outside():
    # class 0 above (1.1·0.5 = 0.55) by 0.05, class 1 below (0.9·0.3 = 0.27) by 0.07, class 2 inside
    p_hat = torch.tensor([[0.6, 0.2, 0.2]], requires_grad=True)
    rows = interval_penalty(p_hat, P, 0.1)
    assert float(rows.detach()) == pytest.approx(0.05**2 + 0.07**2)
    rows.sum().backward()
    assert p_hat.grad[0, 0] > 0 and p_hat.grad[0, 1] < 0 and p_hat.grad[0, 2] == 0


def test_interval_penalises_absent_classes():
    p = torch.tensor([[1.0, 0.0]])
    assert float(interval_penalty(torch.tensor([[0.9, 0.1]]), p, 0.2)) == pytest.approx(0.01)
    assert float(interval_penalty(torch.tensor([[1.0, 0.0]]), p, 0.2)) == 0.0
    logits = _logits_with_shares([0.8, 0.2]).requires_grad_()
    loss = interval_loss(logits, p, 0.5)
    loss.sum().backward()
    assert float(loss.detach()) == pytest.approx(0.04, rel=1e-4)
    assert logits.grad[0, 1].sum() > 0  # descent lowers the absent class everywhere


def test_interval_with_tau_zero_is_the_squared_error():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(4, 5), 1)
    p_hat = torch.softmax(torch.randn(4, 5), 1)
    torch.testing.assert_close(interval_penalty(p_hat, p, 0.0), mse_rows(p_hat, p))


def test_interval_over_area_mask_and_mean_skips_empty_areas():
    logits = _logits_with_shares([0.5, 0.5], n=8).repeat(2, 1, 1, 1)  # (2, 2, 1, 8), first half class 0
    area = torch.zeros(2, 1, 8)
    area[0, 0, :4] = 1  # patch 0: only class-0 pixels; patch 1: empty area
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rows = interval_loss(logits, p, 0.1, area)
    assert float(rows[0]) < 1e-12 and float(rows[1]) == 0.0
    assert float(interval_loss(logits, p, 0.1)[0]) == pytest.approx(
        0.4**2 + 0.5**2, rel=1e-4
    )  # below 0.9 by 0.4, absent class at 0.5
    shares, keep = area_shares(torch.softmax(logits, 1), area)
    assert keep.tolist() == [1.0, 0.0]
    # patch 1's empty area is left out of the mean (not averaged in as a 0)
    area[1, 0, 0] = 1  # now patch 1 counts: one class-0 pixel against p = [0, 1]
    both = interval_loss_mean(logits, p, 0.1, area)
    assert float(both) == pytest.approx(float(interval_loss(logits, p, 0.1, area).mean()))
    area[1] = 0
    assert float(interval_loss_mean(logits, p, 0.1, area)) == pytest.approx(float(rows[0]))


def test_interval_probs_input_and_float16_logits():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4)
    p = torch.softmax(torch.randn(2, 3), 1)
    from_logits = interval_loss(logits.half(), p, 0.2)
    assert from_logits.dtype == torch.float32
    torch.testing.assert_close(
        interval_loss(torch.softmax(logits, 1), p, 0.2, probs=True), interval_loss(logits, p, 0.2)
    )


def test_interval_rejects_negative_tau_and_bad_shapes():
    with pytest.raises(SegweakError, match="tau"):
        interval_penalty(P, P, -0.1)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        interval_penalty(P, P[:, :2], 0.1)


def _presence_batch():
    torch.manual_seed(0)
    return torch.randn(2, 4, 5, 5), torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]])


def test_presence_loss_matches_the_formula():
    logits, presence = _presence_batch()
    q = torch.softmax(logits, 1)
    expected = -torch.log((q * presence[:, :, None, None]).sum(1)).mean(dim=(1, 2))
    torch.testing.assert_close(presence_loss(logits, presence), expected)
    torch.testing.assert_close(presence_loss_mean(logits, presence), expected.mean())


def test_presence_loss_ignores_how_mass_is_split_among_present_classes():
    presence = torch.tensor([[1.0, 1.0, 0.0]])
    for split in (0.0, 0.3, 0.5, 1.0):  # fraction of pixels labelled class 0 instead of class 1
        labels = (torch.arange(100) >= round(split * 100)).long()  # class 0 then class 1
        logits = 30.0 * torch.nn.functional.one_hot(labels, 3).T[None, :, None, :].float()
        assert float(presence_loss(logits, presence)) < 1e-9
    # Soft mixtures of present classes are also free, whatever the mixture.
    mixed = torch.zeros(1, 3, 1, 10)
    mixed[:, 0], mixed[:, 1], mixed[:, 2] = torch.randn(10), torch.randn(10), -40.0
    assert float(presence_loss(mixed, presence)) < 1e-9


def test_presence_loss_penalises_mass_on_absent_classes():
    presence = torch.tensor([[1.0, 0.0]])
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)  # half the mass on the absent class
    loss = presence_loss(logits, presence)
    assert float(loss.detach()) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    loss.sum().backward()
    assert (logits.grad[0, 1] > 0).all() and (logits.grad[0, 0] < 0).all()


def test_presence_loss_area_mask_and_patches_without_information():
    logits, presence = _presence_batch()
    logits.requires_grad_()
    area = torch.ones(2, 5, 5)
    area[0, :, :2] = 0
    q = torch.softmax(logits.detach(), 1)
    per_px = -torch.log((q[0] * presence[0, :, None, None]).sum(0))
    rows = presence_loss(logits, presence, area)
    assert float(rows[0].detach()) == pytest.approx(float(per_px[:, 2:].mean()), rel=1e-5)
    none = torch.zeros_like(presence)  # no present class, and an empty area: no information
    empty = torch.zeros(2, 5, 5)
    for pres, ar in ((none, None), (presence, empty)):
        loss = presence_loss_mean(logits, pres, ar)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()
