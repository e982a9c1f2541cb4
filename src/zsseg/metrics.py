"""Semantic segmentation metrics from one dataset-level confusion matrix.

The conventions are detectron2's `SemSegEvaluator`, so numbers carry over unchanged:

- pixels whose ground truth is the ignore label count nowhere;
- per-class IoU = TP / (GT + predicted - TP) and accuracy = TP / GT, defined only for classes
  present in the ground truth (GT > 0). A class that is predicted but absent from the
  ground truth has no IoU and does not enter any mean;
- mIoU and mAcc average over the classes present in the ground truth;
- fwIoU weights each class's IoU by its share of ground-truth pixels; pAcc = sum TP / sum GT.

One addition: a pixel the model leaves unlabelled (no proposal covers it, label -1) is a miss
for its ground-truth class (it counts in GT, in no prediction). detectron2 never produces such
pixels; counting them as misses means leaving pixels unlabelled can never raise a score.

Zero-shot splits add mIoU over the seen classes, over the unseen classes (each over those of its
classes present in the ground truth) and their harmonic mean hIoU. All values are percentages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import ZssegError


class ConfusionMatrix:
    """Counts `[ground truth, prediction]` pixel pairs over a dataset.

    Index C (one past the last class) holds predictions of -1 ("unlabelled"); ground-truth
    pixels outside 0..C-1 are ignored. Counts are int64, so the matrices of several processes
    add up exactly.
    """

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ZssegError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, ground_truth: np.ndarray, prediction: np.ndarray) -> None:
        """Add one image: integer label maps of the same shape; ground truth outside 0..C-1 is
        ignored, prediction -1 means unlabelled."""
        ground_truth = np.asarray(ground_truth)
        prediction = np.asarray(prediction)
        if ground_truth.shape != prediction.shape:
            raise ZssegError(f"prediction is {prediction.shape}, ground truth is {ground_truth.shape}: they must match")
        c = self.num_classes
        valid = (ground_truth >= 0) & (ground_truth < c)
        gt = ground_truth[valid].astype(np.int64)
        pred = prediction[valid].astype(np.int64)
        if pred.size and (pred.min() < -1 or pred.max() >= c):
            raise ZssegError(f"prediction holds labels outside -1..{c - 1}")
        pred = np.where(pred < 0, c, pred)
        self.counts += np.bincount(gt * (c + 1) + pred, minlength=c * (c + 1)).reshape(c, c + 1)

    def merge(self, other: "ConfusionMatrix") -> None:
        if other.num_classes != self.num_classes:
            raise ZssegError("cannot merge confusion matrices of different vocabularies")
        self.counts += other.counts

    def as_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.counts.copy())

    @classmethod
    def from_counts(cls, counts: np.ndarray | torch.Tensor) -> "ConfusionMatrix":
        counts = np.asarray(counts, dtype=np.int64)
        matrix = cls(counts.shape[0])
        if counts.shape != matrix.counts.shape:
            raise ZssegError(f"confusion counts must be [C, C+1], got {list(counts.shape)}")
        matrix.counts = counts.copy()
        return matrix


@dataclass
class SegmentationMetrics:
    """Scores in percent. `per_class_iou` / `per_class_acc` are None for classes absent from
    the ground truth."""

    mIoU: float
    fwIoU: float
    pAcc: float
    mAcc: float
    per_class_iou: list[float | None]
    per_class_acc: list[float | None]
    classes_in_mean: int
    mIoU_seen: float | None = None
    mIoU_unseen: float | None = None
    hIoU: float | None = None

    def as_dict(self, class_names: list[str]) -> dict:
        result = {
            "mIoU": self.mIoU,
            "fwIoU": self.fwIoU,
            "pAcc": self.pAcc,
            "mAcc": self.mAcc,
            "classes_in_mean": self.classes_in_mean,
        }
        if self.hIoU is not None or self.mIoU_seen is not None:
            result.update(mIoU_seen=self.mIoU_seen, mIoU_unseen=self.mIoU_unseen, hIoU=self.hIoU)
        result["per_class_iou"] = dict(zip(class_names, self.per_class_iou))
        result["per_class_acc"] = dict(zip(class_names, self.per_class_acc))
        return result


def compute_metrics(matrix: ConfusionMatrix, unseen: list[int] | tuple[int, ...] | None = None) -> SegmentationMetrics:
    """Metrics of a confusion matrix; with `unseen` (class indices), also the zero-shot ones."""
    counts = matrix.counts.astype(np.float64)
    c = matrix.num_classes
    tp = np.diagonal(counts[:, :c]).copy()
    gt = counts.sum(axis=1)  # includes pixels left unlabelled
    pred = counts[:, :c].sum(axis=0)
    present = gt > 0
    if not present.any():
        raise ZssegError("no ground-truth pixel of any class was evaluated: nothing to score")
    iou = np.full(c, np.nan)
    acc = np.full(c, np.nan)
    iou[present] = tp[present] / (gt + pred - tp)[present]
    acc[present] = tp[present] / gt[present]
    metrics = SegmentationMetrics(
        mIoU=100 * float(iou[present].mean()),
        fwIoU=100 * float((iou[present] * gt[present]).sum() / gt.sum()),
        pAcc=100 * float(tp.sum() / gt.sum()),
        mAcc=100 * float(acc[present].mean()),
        per_class_iou=[None if np.isnan(v) else 100 * float(v) for v in iou],
        per_class_acc=[None if np.isnan(v) else 100 * float(v) for v in acc],
        classes_in_mean=int(present.sum()),
    )
    if unseen is not None:
        is_unseen = np.zeros(c, dtype=bool)
        is_unseen[list(unseen)] = True
        seen = _mean_or_none(iou[present & ~is_unseen])
        novel = _mean_or_none(iou[present & is_unseen])
        metrics.mIoU_seen, metrics.mIoU_unseen = seen, novel
        if seen is not None and novel is not None:
            metrics.hIoU = 0.0 if seen + novel == 0 else 2 * seen * novel / (seen + novel)
    return metrics


def _mean_or_none(values: np.ndarray) -> float | None:
    return 100 * float(values.mean()) if values.size else None
