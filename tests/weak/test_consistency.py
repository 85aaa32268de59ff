import pytest
import torch
import torch.nn.functional as F

from segweak.errors import SegweakError
from segweak.weak.consistency import IGNORE, consistency_ce, fixmatch_targets, softmax_mse


def _logits(seed=0, b=2, k=3, h=6, w=6):
    return torch.randn(b, k, h, w, generator=torch.Generator().manual_seed(seed)) * 3


def test_fixmatch_keeps_exactly_the_pixels_above_threshold():
    logits = _logits()
    q = torch.softmax(logits, 1)
    for tau in (0.0, 0.6, 0.9, 1.0):
        targets, fraction = fixmatch_targets(logits, tau)
        conf, arg = q.max(1)
        keep = conf >= tau
        assert targets.dtype == torch.int64 and targets.shape == (2, 6, 6)
        assert torch.equal(targets[keep], arg[keep]) and (targets[~keep] == IGNORE).all()
        assert float(fraction) == pytest.approx(float(keep.float().mean()))
    assert fixmatch_targets(logits, 0.6)[0].eq(IGNORE).any()  # the threshold does drop pixels


def test_fixmatch_area_mask_and_float16():
    logits = _logits(1)
    area = torch.zeros(2, 6, 6)
    area[:, :3] = 1
    targets, fraction = fixmatch_targets(logits.half(), 0.5, area)
    assert (targets[:, 3:] == IGNORE).all()
    conf = torch.softmax(logits.half().float(), 1).amax(1)[:, :3]
    assert float(fraction) == pytest.approx(float((conf >= 0.5).float().mean()))
    with pytest.raises(SegweakError, match="threshold"):
        fixmatch_targets(logits, 1.2)


def test_consistency_ce_is_the_mean_over_kept_pixels():
    weak, strong = _logits(2), _logits(3).requires_grad_()
    targets, _ = fixmatch_targets(weak, 0.8)
    keep = targets != IGNORE
    per_px = F.cross_entropy(strong.detach(), targets.clamp_max(2), reduction="none")
    torch.testing.assert_close(consistency_ce(strong, targets), per_px[keep].mean())
    torch.testing.assert_close(consistency_ce(strong, targets, "all"), per_px[keep].sum() / targets.numel())
    with pytest.raises(SegweakError, match="reduction"):
        consistency_ce(strong, targets, "mean")


def test_consistency_ce_is_zero_and_differentiable_when_nothing_is_kept():
    strong = _logits(4).requires_grad_()
    targets = torch.full((2, 6, 6), IGNORE)
    loss = consistency_ce(strong, targets)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(strong.grad, torch.zeros_like(strong))


def test_softmax_mse_formula_and_teacher_gets_no_gradient():
    student, teacher = _logits(5).requires_grad_(), _logits(6).requires_grad_()
    expected = (torch.softmax(student, 1) - torch.softmax(teacher, 1)).pow(2).mean()
    loss = softmax_mse(student, teacher)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    assert float(softmax_mse(student, student.detach().clone()).detach()) == 0.0
    area = torch.zeros(2, 6, 6)
    area[0, :2] = 1
    diff = (torch.softmax(student, 1) - torch.softmax(teacher, 1)).pow(2).detach()
    assert float(softmax_mse(student, teacher, area).detach()) == pytest.approx(
        float(diff[0, :, :2].mean()), rel=1e-5
    )
    assert float(softmax_mse(student, teacher, torch.zeros(2, 6, 6)).detach()) == 0.0
