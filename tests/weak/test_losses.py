import math

import pytest
import torch

from segweak.errors import SegweakError
from segweak.weak.losses import PROPORTION_LOSSES, proportion_loss_rows


def proportion_loss(name):
    """The batch loss the methods optimise: the mean of the per-patch rows (no patch masked)."""
    rows = proportion_loss_rows(name)
    return lambda p_hat, p, eps: rows(p_hat, p, eps).mean()


P = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
P_HAT = torch.tensor([[0.25, 0.25, 0.5], [0.5, 0.5, 0.0]])


def test_registry_and_unknown_name():
    assert set(PROPORTION_LOSSES) == {"ce", "kl", "l1", "mse"}
    with pytest.raises(SegweakError, match="ce, kl, l1, mse"):
        proportion_loss_rows("bce")


def test_hand_computed_values():
    # ce: row1 -(0.5 ln .25 + 0.5 ln .25) = ln 4; row2 -ln 0.5 = ln 2 -> mean (ln4 + ln2)/2
    assert float(proportion_loss("ce")(P_HAT, P, 1e-6)) == pytest.approx((math.log(4) + math.log(2)) / 2)
    # kl: row1 0.5 ln(.5/.25)*2 = ln 2; row2 1*ln(1/.5) = ln 2 -> ln 2
    assert float(proportion_loss("kl")(P_HAT, P, 1e-6)) == pytest.approx(math.log(2))
    # l1: row1 .25+.25+.5 = 1; row2 .5+.5+0 = 1 -> 1 (sum over classes, mean over batch)
    assert float(proportion_loss("l1")(P_HAT, P, 1e-6)) == pytest.approx(1.0)
    # mse: row1 .0625+.0625+.25 = .375; row2 .25+.25 = .5 -> .4375
    assert float(proportion_loss("mse")(P_HAT, P, 1e-6)) == pytest.approx(0.4375)


@pytest.mark.parametrize("name", list(PROPORTION_LOSSES))
def test_zero_proportions_finite_values_and_gradients(name):
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    p_hat = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)  # zero where p is 1
    loss = proportion_loss(name)(p_hat, p, 1e-6)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(p_hat.grad).all()


@pytest.mark.parametrize("name", list(PROPORTION_LOSSES))
def test_minimum_at_target(name):
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(4, 5), dim=1)
    at = float(proportion_loss(name)(p, p, 1e-6))
    for _ in range(5):
        other = torch.softmax(torch.log(p) + 0.3 * torch.randn(4, 5), dim=1)
        assert float(proportion_loss(name)(other, p, 1e-6)) > at
    if name != "ce":
        assert at == pytest.approx(0.0, abs=1e-6)
    else:  # ce at p_hat = p is the entropy of p
        assert at == pytest.approx(float(-(p * p.log()).sum(1).mean()), rel=1e-5)


def test_kl_equals_ce_minus_entropy():
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(3, 4), 1)
    p_hat = torch.softmax(torch.randn(3, 4), 1)
    h = float(-(p * p.log()).sum(1).mean())
    assert float(proportion_loss("kl")(p_hat, p, 1e-6)) == pytest.approx(
        float(proportion_loss("ce")(p_hat, p, 1e-6)) - h
    )


@pytest.mark.parametrize("name", ["ce", "kl", "mse"])
def test_gradcheck_float64(name):
    torch.manual_seed(2)
    p = torch.softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    p_hat = torch.softmax(torch.randn(3, 4, dtype=torch.float64), 1).requires_grad_()
    fn = proportion_loss(name)
    assert torch.autograd.gradcheck(lambda x: fn(x, p, 1e-6), (p_hat,))


def test_gradcheck_l1_away_from_kinks():
    p = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    p_hat = torch.tensor([[0.3, 0.1, 0.6]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: proportion_loss("l1")(x, p, 1e-6), (p_hat,))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        proportion_loss("ce")(torch.ones(2, 3) / 3, torch.ones(2, 4) / 4, 1e-6)


@pytest.mark.parametrize("name", list(PROPORTION_LOSSES))
def test_rows_are_per_patch(name):
    rows = proportion_loss_rows(name)(P_HAT, P, 1e-6)
    assert rows.shape == (2,)
    torch.testing.assert_close(rows[1:], proportion_loss_rows(name)(P_HAT[1:], P[1:], 1e-6))
