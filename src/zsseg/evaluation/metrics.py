"""Semantic segmentation metrics from one dataset-level confusion matrix.

The conventions are those of the reference code's evaluator (zsseg.baseline's
`GeneralizedSemSegEvaluator`, detectron2's `SemSegEvaluator` with seen/unseen sets), so numbers
carry over unchanged:

- pixels whose ground truth is the ignore label count nowhere;
- per-class IoU = TP / (GT + predicted - TP) and accuracy = TP / GT, defined only for classes
  present in the ground truth (GT > 0);
- mIoU = the sum of those IoUs divided by the number of classes present in the ground truth
  **or in the predictions** (`MIOU_RULES[0]`): a class predicted where it never occurs adds 0
  to the sum and 1 to the count. The other rule, "gt", divides by the classes present in the
  ground truth only (what a plain mean over defined IoUs gives); it is higher whenever a
  model predicts absent classes, as on ADE20K-847, Pascal Context-459 or any `--limit` subset;
- mAcc averages the accuracies of the classes present in the ground truth;
- fwIoU weights each class's IoU by its share of ground-truth pixels; pAcc = sum TP / sum GT.

One addition: a pixel the model leaves unlabelled (no proposal covers it, label -1) is a miss
for its ground-truth class (it counts in GT, in no prediction). The reference never produces
such pixels; counting them as misses means leaving pixels unlabelled can never raise a score.

Zero-shot evaluation sets (the reference's `evaluation_set`: "base" = the seen classes, and for
COCO-Stuff also "novel_thing" and "novel_stuff"): for each set, the mIoU over it and over its
complement (same rule, restricted), their pixel accuracies, and the harmonic mean hIoU, which is
0 when either mIoU is 0. mIoU_seen, mIoU_unseen and hIoU are the "base" set's. All values are
percentages; a value that is undefined (no class to average over) is None.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..catalogue import MIOU_RULES  # noqa: F401  (the command line's choices)
from ..errors import ZssegError


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
class SetMetrics:
    """One evaluation set's scores (percent; None where undefined): over the set's classes and
    over the others ("un")."""

    mIoU: float | None
    pAcc: float | None
    mIoU_un: float | None
    pAcc_un: float | None
    hIoU: float | None


@dataclass
class SegmentationMetrics:
    """Scores in percent. `per_class_iou` / `per_class_acc` are None for classes absent from
    the ground truth. `classes_in_mean` is the count mIoU divides by (see `MIOU_RULES`)."""

    mIoU: float
    fwIoU: float
    pAcc: float
    mAcc: float
    per_class_iou: list[float | None]
    per_class_acc: list[float | None]
    classes_in_mean: int
    miou_rule: str = MIOU_RULES[0]
    sets: dict[str, SetMetrics] = field(default_factory=dict)

    @property
    def mIoU_seen(self) -> float | None:
        return self.sets["base"].mIoU if "base" in self.sets else None

    @property
    def mIoU_unseen(self) -> float | None:
        return self.sets["base"].mIoU_un if "base" in self.sets else None

    @property
    def hIoU(self) -> float | None:
        return self.sets["base"].hIoU if "base" in self.sets else None

    def as_dict(self, class_names: list[str]) -> dict:
        result = {
            "mIoU": self.mIoU,
            "fwIoU": self.fwIoU,
            "pAcc": self.pAcc,
            "mAcc": self.mAcc,
            "classes_in_mean": self.classes_in_mean,
            "miou_rule": self.miou_rule,
        }
        if self.sets:
            result.update(mIoU_seen=self.mIoU_seen, mIoU_unseen=self.mIoU_unseen, hIoU=self.hIoU)
            result["evaluation_sets"] = {name: asdict(values) for name, values in self.sets.items()}
        result["per_class_iou"] = dict(zip(class_names, self.per_class_iou))
        result["per_class_acc"] = dict(zip(class_names, self.per_class_acc))
        return result


def compute_metrics(
    matrix: ConfusionMatrix,
    unseen: list[int] | tuple[int, ...] | None = None,
    sets: dict[str, list[int] | tuple[int, ...]] | None = None,
    rule: str = MIOU_RULES[0],
) -> SegmentationMetrics:
    """Metrics of a confusion matrix.

    Args:
        unseen: the zero-shot unseen class indices: adds the "base" set (the other classes).
        sets: further evaluation sets by name (class indices), such as COCO-Stuff's
            "novel_thing" and "novel_stuff".
        rule: what mIoU divides by, a name in `MIOU_RULES`.
    """
    if rule not in MIOU_RULES:
        raise ZssegError(f"unknown mIoU rule '{rule}'; choose from {', '.join(MIOU_RULES)}")
    counts = matrix.counts.astype(np.float64)
    c = matrix.num_classes
    tp = np.diagonal(counts[:, :c]).copy()
    gt = counts.sum(axis=1)  # includes pixels left unlabelled
    pred = counts[:, :c].sum(axis=0)
    present = gt > 0
    if not present.any():
        raise ZssegError("no ground-truth pixel of any class was evaluated: nothing to score")
    counted = present | (pred > 0) if rule == MIOU_RULES[0] else present
    iou = np.full(c, np.nan)
    acc = np.full(c, np.nan)
    iou[present] = tp[present] / (gt + pred - tp)[present]
    acc[present] = tp[present] / gt[present]

    def mean_iou(members: np.ndarray) -> float:
        """The rule's mIoU over the classes in `members` (a fraction; NaN with none to count)."""
        denominator = int((counted & members).sum())
        return float(iou[present & members].sum() / denominator) if denominator else float("nan")

    def pixel_accuracy(members: np.ndarray) -> float:
        total = gt[members].sum()
        return float(tp[members].sum() / total) if total else float("nan")

    everything = np.ones(c, dtype=bool)
    metrics = SegmentationMetrics(
        mIoU=100 * mean_iou(everything),
        fwIoU=100 * float((iou[present] * gt[present]).sum() / gt.sum()),
        pAcc=100 * pixel_accuracy(everything),
        mAcc=100 * float(acc[present].mean()),
        per_class_iou=[None if np.isnan(v) else 100 * float(v) for v in iou],
        per_class_acc=[None if np.isnan(v) else 100 * float(v) for v in acc],
        classes_in_mean=int(counted.sum()),
        miou_rule=rule,
    )
    named = dict(sets or {})
    if unseen is not None:
        named = {"base": [i for i in range(c) if i not in set(unseen)], **named}
    for name, indices in named.items():
        members = np.zeros(c, dtype=bool)
        members[list(indices)] = True
        inside, outside = mean_iou(members), mean_iou(~members)
        metrics.sets[name] = SetMetrics(
            mIoU=_percent(inside),
            pAcc=_percent(pixel_accuracy(members)),
            mIoU_un=_percent(outside),
            pAcc_un=_percent(pixel_accuracy(~members)),
            hIoU=_percent(harmonic_mean(inside, outside)),
        )
    return metrics


def harmonic_mean(a: float, b: float) -> float:
    """2 / (1/a + 1/b) as the reference computes it: 0 when either is 0, NaN when either is NaN."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a == 0 or b == 0 else 2.0 / (1.0 / a + 1.0 / b)


def _percent(value: float) -> float | None:
    return None if np.isnan(value) else 100 * value
