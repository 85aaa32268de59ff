import copy
import math

import pytest
import torch
from torch import nn

from segweak.errors import SegweakError
from segweak.weak.teacher import ema_update, linear_rampup, sigmoid_rampup


def _pair():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    teacher = copy.deepcopy(student).requires_grad_(False)
    with torch.no_grad():  # the student moves on: new weights, and BN statistics from a training pass
        for param in student.parameters():
            param.add_(torch.randn_like(param))
    student.train()(torch.randn(2, 3, 8, 8))
    return teacher, student


@pytest.mark.parametrize("decay", [0.99, 0.5, 0.123])
def test_ema_is_exactly_the_formula(decay):
    teacher, student = _pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, decay)
    s = student.state_dict()
    for name, value in teacher.state_dict().items():
        if value.is_floating_point():  # parameters and BN running mean / var
            expected = decay * before[name] + (1 - decay) * s[name]
            assert value.dtype == torch.float32 and torch.equal(value, expected), name
        else:  # num_batches_tracked
            assert torch.equal(value, s[name]), name
    assert not torch.equal(teacher[0].weight, before["0.weight"])


def test_ema_buffers_copy_mode_and_limits():
    teacher, student = _pair()
    w0 = teacher[0].weight.clone()
    ema_update(teacher, student, 0.9, buffers="copy")
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)
    assert torch.equal(teacher[1].running_var, student[1].running_var)
    assert torch.equal(teacher[0].weight, 0.9 * w0 + 0.1 * student[0].weight)
    ema_update(teacher, student, 0.0)
    for name, value in student.state_dict().items():
        assert torch.equal(teacher.state_dict()[name], value), name
    teacher, student = _pair()
    frozen = copy.deepcopy(teacher.state_dict())
    ema_update(teacher, student, 1.0)
    for name, value in teacher.state_dict().items():
        expected = frozen[name] if value.is_floating_point() else student.state_dict()[name]
        assert torch.equal(value, expected), name


def test_ema_rejects_bad_decay_mode_and_mismatched_models():
    teacher, student = _pair()
    with pytest.raises(SegweakError, match="decay"):
        ema_update(teacher, student, 1.5)
    with pytest.raises(SegweakError, match="buffers"):
        ema_update(teacher, student, 0.9, buffers="mean")
    with pytest.raises(ValueError, match="differ"):
        ema_update(teacher, nn.Sequential(nn.Conv2d(3, 4, 3)), 0.9)
    other = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match="shape"):
        ema_update(teacher, other, 0.9)


def test_sigmoid_rampup_at_start_middle_end():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(250, 100) == 1.0 and sigmoid_rampup(-3, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(7, 0) == 1.0
    values = [sigmoid_rampup(s, 10) for s in range(11)]
    assert values == sorted(values)


def test_linear_rampup_at_start_middle_end():
    assert linear_rampup(0, 8) == 0.0
    assert linear_rampup(4, 8) == 0.5
    assert linear_rampup(8, 8) == 1.0 and linear_rampup(20, 8) == 1.0
    assert linear_rampup(3, 0) == 1.0
    with pytest.raises(SegweakError, match="length"):
        linear_rampup(1, -1)
