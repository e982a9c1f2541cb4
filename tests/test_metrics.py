"""Metrics on small cases computed by hand (the reference evaluator's conventions)."""

import numpy as np
import pytest

from zsseg.errors import ZssegError
from zsseg.evaluation.metrics import ConfusionMatrix, compute_metrics


def m_matrix(gt, pred, num_classes):
    matrix = ConfusionMatrix(num_classes)
    matrix.update(np.array(gt), np.array(pred))
    return matrix


def scored(gt, pred, num_classes, unseen=None):
    return compute_metrics(m_matrix(gt, pred, num_classes), unseen)


def test_hand_computed_case():
    # pairs scored: (0,0) (0,1) (1,1) (1,1) (2,unlabelled); the ignored pixel (-1 -> 2) counts nowhere.
    m = scored([0, 0, 1, 1, 2, -1], [0, 1, 1, 1, -1, 2], 3)
    # IoU: class 0 = 1 / (2 + 1 - 1); class 1 = 2 / (2 + 3 - 2); class 2 = 0 / (1 + 0 - 0)
    assert m.per_class_iou == pytest.approx([50.0, 200 / 3, 0.0])
    assert m.per_class_acc == pytest.approx([50.0, 100.0, 0.0])
    assert m.mIoU == pytest.approx((50 + 200 / 3 + 0) / 3)
    assert m.pAcc == pytest.approx(60.0)  # 3 of 5 scored pixels
    assert m.mAcc == pytest.approx(50.0)
    assert m.fwIoU == pytest.approx(0.4 * 50 + 0.4 * 200 / 3 + 0.2 * 0)
    assert m.classes_in_mean == 3 and m.hIoU is None


def test_classes_predicted_but_absent_from_ground_truth_count_in_the_mean():
    # class 3 is predicted once but never in the ground truth: it has no IoU of its own, but the
    # reference's evaluator divides by the classes in the ground truth or the predictions.
    m = scored([0, 0, 1], [3, 0, 1], 4)
    assert m.per_class_iou[2] is None and m.per_class_iou[3] is None
    assert m.per_class_iou[:2] == pytest.approx([50.0, 100.0])
    assert m.mIoU == pytest.approx(50.0) and m.classes_in_mean == 3 and m.miou_rule == "gt-or-predicted"
    # The other rule, by name: the ground truth's classes only.
    gt_only = compute_metrics(m_matrix([0, 0, 1], [3, 0, 1], 4), rule="gt")
    assert gt_only.mIoU == pytest.approx(75.0) and gt_only.classes_in_mean == 2
    with pytest.raises(ZssegError, match="unknown mIoU rule"):
        compute_metrics(m_matrix([0], [0], 1), rule="mean")


def test_zero_shot_split():
    gt = [0, 0, 1, 2, 2, 2, 3, 3]
    pred = [0, 1, 1, 2, 2, 0, 3, 3]
    # IoU: class 0 = 1 / (2 + 2 - 1); class 1 = 1 / (1 + 2 - 1); class 2 = 2 / (3 + 2 - 2); class 3 = 1
    m = scored(gt, pred, 4, unseen=[2, 3])
    assert m.per_class_iou == pytest.approx([100 / 3, 50.0, 200 / 3, 100.0])
    seen, novel = (100 / 3 + 50) / 2, (200 / 3 + 100) / 2
    assert m.mIoU_seen == pytest.approx(seen) and m.mIoU_unseen == pytest.approx(novel)
    assert m.hIoU == pytest.approx(2 * seen * novel / (seen + novel))


def test_unseen_classes_absent_from_ground_truth_give_no_unseen_score():
    m = scored([0, 1], [0, 1], 3, unseen=[2])
    assert m.mIoU_seen == 100.0 and m.mIoU_unseen is None and m.hIoU is None


def test_matrices_add_up():
    rng = np.random.default_rng(0)
    gt = rng.integers(-1, 5, (2, 40, 30))
    pred = rng.integers(-1, 5, (2, 40, 30))
    whole = ConfusionMatrix(5)
    for g, p in zip(gt, pred):
        whole.update(g, p)
    parts = [ConfusionMatrix(5), ConfusionMatrix(5)]
    parts[0].update(gt[0], pred[0])
    parts[1].update(gt[1], pred[1])
    parts[0].merge(ConfusionMatrix.from_counts(parts[1].as_tensor()))
    assert np.array_equal(parts[0].counts, whole.counts)
    assert compute_metrics(whole).mIoU == compute_metrics(parts[0]).mIoU


def test_bad_inputs():
    matrix = ConfusionMatrix(3)
    with pytest.raises(ZssegError, match="must match"):
        matrix.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ZssegError, match="outside -1..2"):
        matrix.update(np.zeros((2, 2), int), np.full((2, 2), 3))
    with pytest.raises(ZssegError, match="nothing to score"):
        compute_metrics(ConfusionMatrix(3))
