import json
import math

import numpy as np
import pytest
import torch

from segweak.metrics import (
    ConfusionMatrixMetric,
    PresenceF1Metric,
    ProportionMAEMetric,
    confusion_matrix,
    metrics_from_confusion,
    proportion_mae,
)

# compute() before update() is deliberate in some tests (empty accumulators)
pytestmark = pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")

CLASSES = ["a", "b", "c"]

# A 3x4 example, classes a=0, b=1, c=2, 255 = ignore.
TARGET = np.array(
    [
        [0, 0, 1, 1],
        [0, 2, 1, 255],
        [2, 2, 255, 1],
    ]
)
PRED = np.array(
    [
        [0, 1, 1, 1],
        [0, 2, 0, 2],  # the last pixel is ignored in the target: its prediction (2) must not count
        [2, 0, 1, 1],
    ]
)
# Counting by hand over the 10 non-ignored pixels (truth, pred):
#   (0,0) (0,1) (1,1) (1,1) | (0,0) (2,2) (1,0) | (2,2) (2,0) (1,1)
# truth a: pred a,b,a      -> cm[0] = [2, 1, 0]
# truth b: pred b,b,a,b    -> cm[1] = [1, 3, 0]
# truth c: pred c,c,a      -> cm[2] = [1, 0, 2]
EXPECTED_CM = np.array([[2, 1, 0], [1, 3, 0], [1, 0, 2]])
# a: TP 2, FP 1+1=2, FN 1 -> IoU 2/5 = 0.4,  F1 4/7
# b: TP 3, FP 1,     FN 1 -> IoU 3/5 = 0.6,  F1 6/8 = 0.75
# c: TP 2, FP 0,     FN 1 -> IoU 2/3,        F1 4/5 = 0.8
# OA = (2+3+2)/10 = 0.7


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, EXPECTED_CM)
    # torch input gives the same
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(PRED), torch.from_numpy(TARGET), 3), EXPECTED_CM
    )


def test_metrics_hand_computed():
    m = metrics_from_confusion(EXPECTED_CM, CLASSES)
    assert m["per_class_iou"] == pytest.approx({"a": 0.4, "b": 0.6, "c": 2 / 3})
    assert m["per_class_f1"] == pytest.approx({"a": 4 / 7, "b": 0.75, "c": 0.8})
    assert m["miou"] == pytest.approx((0.4 + 0.6 + 2 / 3) / 3)
    assert m["mf1"] == pytest.approx((4 / 7 + 0.75 + 0.8) / 3)
    assert m["oa"] == pytest.approx(0.7)
    assert m["n_pixels"] == 10
    assert m["absent_classes"] == []
    assert m["classes"] == CLASSES


def test_ignore_pixels_excluded_whatever_predicted():
    pred2 = PRED.copy()
    pred2[TARGET == 255] = 0  # change predictions only where the target is ignored
    np.testing.assert_array_equal(confusion_matrix(pred2, TARGET, 3), EXPECTED_CM)
    # pred values at ignored pixels may even be out of range
    pred3 = PRED.copy()
    pred3[TARGET == 255] = 255
    np.testing.assert_array_equal(confusion_matrix(pred3, TARGET, 3), EXPECTED_CM)


def test_absent_class_is_null_and_excluded_from_means():
    # Truth has no class c; c is predicted on one pixel of a.
    target = np.array([0, 0, 1, 1, 255])
    pred = np.array([0, 2, 1, 1, 2])
    cm = confusion_matrix(pred, target, 3)
    # cm rows: a -> [1, 0, 1]; b -> [0, 2, 0]; c -> [0, 0, 0]
    np.testing.assert_array_equal(cm, [[1, 0, 1], [0, 2, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm, CLASSES)
    assert m["per_class_iou"]["c"] is None and m["per_class_f1"]["c"] is None
    assert m["absent_classes"] == ["c"]
    assert m["absent_false_positives"] == {"c": 1}
    # a: TP1 FP0 FN1 -> IoU 0.5, F1 2/3; b: IoU 1, F1 1
    assert m["per_class_iou"]["a"] == pytest.approx(0.5)
    assert m["miou"] == pytest.approx(0.75)  # mean over a and b only
    assert m["mf1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["oa"] == pytest.approx(3 / 4)
    # JSON: absent -> null
    assert json.loads(json.dumps(m))["per_class_iou"]["c"] is None


def test_empty_confusion_gives_none():
    m = metrics_from_confusion(np.zeros((3, 3), np.int64), CLASSES)
    assert m["miou"] is None and m["oa"] is None and m["n_pixels"] == 0
    assert m["absent_classes"] == CLASSES


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0]), np.array([5]), 3)
    with pytest.raises(ValueError):
        metrics_from_confusion(np.zeros((2, 2)), CLASSES)


def test_torchmetric_accumulates_like_numpy():
    metric = ConfusionMatrixMetric(num_classes=3)
    t = torch.from_numpy(TARGET)
    p = torch.from_numpy(PRED)
    # two batches: split rows, B=1 each (B, H, W)
    metric.update(p[None, :2], t[None, :2])
    metric.update(p[None, 2:], t[None, 2:])
    cm = metric.compute()
    assert cm.dtype == torch.long
    np.testing.assert_array_equal(cm.numpy(), EXPECTED_CM)
    metric.reset()
    assert int(metric.compute().sum()) == 0


def test_torchmetric_random_matches_numpy():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 5, (4, 16, 16), generator=g)
    t[t == 4] = 255
    p = torch.randint(0, 5, (4, 16, 16), generator=g)
    metric = ConfusionMatrixMetric(num_classes=5)
    metric.update(p, t)
    np.testing.assert_array_equal(metric.compute().numpy(), confusion_matrix(p, t, 5))


def test_proportion_mae():
    p_hat = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    p = np.array([[0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])
    # |diffs| = 0.25 0.25 0 | 1 0.5 0.5 -> sum 2.5 / 6
    assert proportion_mae(p_hat, p) == pytest.approx(2.5 / 6)
    metric = ProportionMAEMetric()
    metric.update(torch.tensor(p_hat[:1]), torch.tensor(p[:1]))
    metric.update(torch.tensor(p_hat[1:]), torch.tensor(p[1:]))
    assert float(metric.compute()) == pytest.approx(2.5 / 6)
    assert math.isnan(float(ProportionMAEMetric().compute()))


def test_presence_f1_micro():
    pred = torch.tensor([[1, 0, 1], [1, 1, 0]])
    target = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # TP: (0,0) (1,0) (1,1) = 3; FP: (0,2) = 1; FN: (0,1) = 1 -> F1 = 6/8
    metric = PresenceF1Metric()
    metric.update(pred, target)
    assert float(metric.compute()) == pytest.approx(0.75)
    empty = PresenceF1Metric()
    empty.update(torch.zeros(2, 3), torch.zeros(2, 3))
    assert float(empty.compute()) == 1.0
