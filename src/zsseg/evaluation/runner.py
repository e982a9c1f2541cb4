"""Benchmark evaluation: predict every image of a dataset split and score it (`zsseg eval`).

    dataset = load_dataset("coco-stuff", root, "val")
    report = evaluate(dataset, ClipPredictor(Segmenter(...), dataset.vocabulary), protocol="zero-shot")
    report = evaluate(dataset, OraclePredictor(build_proposal_generator("selective-search"), dataset.num_classes))

Protocols (the paper's two):
- "cross-dataset": the model segments with the benchmark's whole vocabulary; mIoU etc.
- "zero-shot": the same predictions, with the classes split into seen and unseen (COCO-Stuff
  156/15, VOC 15/5): mIoU over each, and their harmonic mean hIoU.

Under torchrun the images are sharded across the processes (image i goes to process
i mod N) and the confusion matrices are summed, so the numbers equal a single process's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..assembly import assemble_labels
from ..data.datasets import SegmentationDataset, unseen_classes
from ..runs.distributed import Distributed, for_each_shard
from ..errors import ZssegError, counted
from ..data.images import resize_image, resize_labels
from ..runs.read_ahead import pipeline_enabled
from ..runs.progress import Progress
from .metrics import MIOU_RULES, ConfusionMatrix, SegmentationMetrics, compute_metrics
from ..proposals import ProposalGenerator
from ..segmenter import DEFAULT_MAX_SIZE, PreparedImage, Segmenter
from ..data.vocabulary import Vocabulary
from ..outputs.writers import check_target, write_label_png

#: A predictor maps (HWC uint8 image, [H, W] int ground truth) to an [H, W] int label map
#: (-1 = unlabelled). Only oracle and ground-truth-proposal predictors read the ground truth.
Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ClipPredictor:
    """The zsseg pipeline: proposals, CLIP region classification (Eq. 1), assembly (Eq. 2).

    `seen` (`[C]` bool), for the ensemble with a trained network: the classes taken as seen
    (the benchmark's split; see `Segmenter.segment`)."""

    def __init__(self, segmenter: Segmenter, vocabulary: Vocabulary, seen: list[bool] | None = None):
        self.segmenter = segmenter
        self.vocabulary = segmenter.prepare(vocabulary)
        self.seen = seen

    def __call__(self, image: np.ndarray, label: np.ndarray) -> np.ndarray:
        return self.finish(self.prepare(image, label))

    def prepare(self, image: np.ndarray, label: np.ndarray) -> PreparedImage:
        """The half that runs no model (proposals, crops: `Segmenter.prepare_image`), which
        `evaluate` runs on a worker thread for the next image while `finish` runs on this one."""
        return self.segmenter.prepare_image(image, ground_truth=label)

    def finish(self, prepared: PreparedImage) -> np.ndarray:
        return self.segmenter.finish(prepared, self.vocabulary, seen=self.seen).label_map


class OraclePredictor:
    """The paper's oracle (Table 6): each proposal takes the ground-truth class it overlaps most.

    The score then measures the proposals alone: no CLIP is involved. Proposals are made at the
    processing size (longer side `max_size`), where the ground truth is resized by nearest
    neighbour; proposals that cover only ignored pixels are dropped; Eq. 2 assembles the one-hot
    classes and the labels are upsampled to full size. Ground-truth proposals are made at full
    size, so with them the oracle reproduces the ground truth exactly (100 mIoU).
    """

    def __init__(self, proposals: ProposalGenerator, num_classes: int, max_size: int | None = DEFAULT_MAX_SIZE,
                 test_size: int | None = None):
        self.proposals = proposals
        self.num_classes = num_classes
        self.max_size = max_size
        self.test_size = test_size

    def __call__(self, image: np.ndarray, label: np.ndarray) -> np.ndarray:
        masks, small_label = self.propose(image, label)
        return oracle_labels(masks, small_label, self.num_classes, label.shape)

    def propose(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Proposals `[K, h, w]` at the working size, and the ground truth resized to it."""
        size = self.proposals.proposal_size(label.shape[0], label.shape[1], self.max_size, self.test_size)
        small_label = resize_labels(label, size)
        return self.proposals.generate(resize_image(image, size), small_label), small_label


def oracle_labels(masks: torch.Tensor, label: np.ndarray, num_classes: int, size: tuple[int, int]) -> np.ndarray:
    """`[H, W]` int32 oracle prediction at `size` from proposals `[K, h, w]` and the ground
    truth `label` resized to (h, w)."""
    probs, keep = oracle_classes(masks, label, num_classes)
    return assemble_labels(masks[keep], probs, size=size).numpy().astype(np.int32)


def oracle_classes(masks: torch.Tensor, label: np.ndarray, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot `[K', C]` class of each proposal: the label most frequent under its binarised
    mask (ties: the lower index); `keep` marks the K' proposals that cover a labelled pixel."""
    flat = torch.from_numpy(np.ascontiguousarray(label)).reshape(-1).long()
    labelled = flat >= 0
    counts = torch.zeros(len(masks), num_classes, dtype=torch.long)
    for k, mask in enumerate(masks):
        inside = flat[(mask.reshape(-1) >= 0.5) & labelled]
        counts[k] = torch.bincount(inside, minlength=num_classes)[:num_classes]
    keep = counts.sum(dim=1) > 0
    probs = torch.nn.functional.one_hot(counts[keep].argmax(dim=1), num_classes).float()
    return probs, keep


class UnreadableLabel(ZssegError):
    """An image's label map cannot be read (or holds values its benchmark does not define)."""


@dataclass
class EvaluationReport:
    """What `evaluate` returns; `as_dict` is the JSON that `zsseg eval --output` writes."""

    dataset: str
    split: str
    protocol: str
    class_names: list[str]
    metrics: SegmentationMetrics
    num_images: int
    skipped_images: int
    seconds_per_image: float
    wall_seconds: float
    processes: int
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "protocol": self.protocol,
            **self.metrics.as_dict(self.class_names),
            "num_images": self.num_images,
            "skipped_images": self.skipped_images,
            "seconds_per_image": self.seconds_per_image,
            "wall_seconds": self.wall_seconds,
            "processes": self.processes,
            **self.settings,
        }

    def table(self) -> str:
        """Per-class IoU of the classes present in the ground truth, then the summary."""
        m = self.metrics
        width = min(40, max(len(n) for n in self.class_names))
        lines = [f"{'class':{width}s}  {'IoU':>6s}  {'Acc':>6s}"]
        for name, iou, acc in zip(self.class_names, m.per_class_iou, m.per_class_acc):
            if iou is not None:
                lines.append(f"{name[:width]:{width}s}  {iou:6.2f}  {acc:6.2f}")
        return "\n".join([*lines, "", *self.summary()])

    def summary(self) -> list[str]:
        """The means, the settings (for a benchmark run) and what was evaluated: `--quiet`'s output."""
        m = self.metrics
        lines = []
        summary = [("mIoU", m.mIoU), ("fwIoU", m.fwIoU), ("pAcc", m.pAcc), ("mAcc", m.mAcc)]
        if self.protocol == "zero-shot":
            summary += [("mIoU(seen)", m.mIoU_seen), ("mIoU(unseen)", m.mIoU_unseen), ("hIoU", m.hIoU)]
        lines.append("  ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in summary))
        if self.settings.get("benchmark_settings"):
            lines.append(f"settings: {describe_settings(self.settings)}")
        skipped = f" ({self.skipped_images} skipped: no readable label map)" if self.skipped_images else ""
        lines.append(
            f"{self.dataset} {self.split}, {self.protocol}: {counted(self.num_images, 'image')}{skipped}, "
            f"mIoU over {m.classes_in_mean} of {len(self.class_names)} classes (present in the "
            f"{'ground truth or the predictions' if m.miou_rule == MIOU_RULES[0] else 'ground truth'}), "
            f"{self.seconds_per_image:.2f} s per image per process, {counted(self.processes, 'process', 'processes')}"
        )
        return lines


def describe_settings(settings: dict) -> str:
    """One line of the settings an evaluation ran with (the JSON has them all)."""
    parts = []
    shorter, longer = settings.get("test_size") or (None, None)
    if shorter or longer:
        parts.append(f"size {shorter or 'as is'}/{longer}")
    for key, label in (("mask_threshold", "mask threshold"), ("ensemble_weight", "lambda"), ("seen_classes", "seen")):
        if settings.get(key) is not None:
            parts.append(f"{label} {settings[key]}")
    for key in ("prompt", "network_prompt"):
        prompt = settings.get(key)
        if prompt:
            parts.append(f"{key.replace('_', ' ')} {prompt.get('name') or prompt.get('source') or prompt.get('kind')}")
    parts.append(f"names {settings.get('class_names')}")
    parts.append(f"mIoU over classes in the {'ground truth or predictions' if settings.get('miou_rule') == MIOU_RULES[0] else 'ground truth'}")
    return ", ".join(parts) + f" (from {settings['benchmark_settings']})"


def check_not_pseudo_labelled(dataset: SegmentationDataset, proposals: object) -> None:
    """Refuse to score a self-trained network on the images it was pseudo-labelled on: their
    pseudo-labels copied the seen ground truth, which the network then learned, so the score
    (seen IoU near 100) would measure memorised labels, not the model."""
    trained = getattr(proposals, "trained", None)
    record = getattr(trained, "self_training", None)
    if record and record.get("dataset") == dataset.name and record.get("split") == dataset.split:
        raise ZssegError(
            f"this proposal network was self-trained on pseudo-labels of {dataset.name} {dataset.split}, which hold that split's "
            "seen ground truth: its scores there would be inflated (seen IoU near 100), not a result; evaluate on another split "
            "(val); the labels' own diagnostic is in their pseudo-labels.json"
        )


def check_prediction_folder(dataset: SegmentationDataset, folder: Path, limit: int | None = None) -> None:
    """Refuse a prediction folder inside the dataset's folders, or one where a prediction would
    replace a file that zsseg did not write (checked for the first `limit` images)."""
    dataset.check_outside(folder, "--save-predictions")
    for sample in dataset.samples[:limit]:
        check_target(folder / f"{sample.name}.png", advice="choose another --save-predictions folder")


def evaluate(
    dataset: SegmentationDataset,
    predictor: Predictor,
    *,
    protocol: str = "cross-dataset",
    limit: int | None = None,
    context: Distributed = Distributed(),
    save_predictions: Path | None = None,
    progress: bool = True,
    settings: dict | None = None,
    skip_unreadable_labels: bool = False,
    miou_rule: str = MIOU_RULES[0],
    class_names: list[str] | None = None,
    workers: int = 0,
    pipeline: bool = True,
) -> EvaluationReport:
    """Predict and score the first `limit` images (all if None) of `dataset`.

    Args:
        predictor: maps (image, ground truth) to a label map; see `ClipPredictor`,
            `OraclePredictor`.
        context: this process's place under torchrun (`init_distributed()`); every process
            of the run calls `evaluate` with the same arguments.
        save_predictions: folder where each prediction is written as `NAME.png` (NAME = the
            image's file stem): class indices of the dataset's vocabulary, 255 unlabelled
            (16-bit with 65535 for vocabularies above 255 classes). It may not be inside the
            dataset's folders, and only files that zsseg wrote are replaced.
        skip_unreadable_labels: leave out images whose label map is missing or cannot be
            read, and count them in `skipped_images`; else such an image is an error.
        miou_rule: what mIoU divides by (`zsseg.evaluation.metrics.MIOU_RULES`; the reference's first).
        class_names: the names the report gives the classes (default the dataset's).
        workers: DataLoader processes that read the images and label maps ahead (0: here).
        pipeline: a predictor with `prepare` and `finish` (`ClipPredictor`) prepares the next
            image on a worker thread while it finishes this one (`zsseg.runs.read_ahead`; the same
            scores; also off with $ZSSEG_PIPELINE=0).
    """
    unseen = unseen_classes(dataset, protocol)
    check_not_pseudo_labelled(dataset, getattr(getattr(predictor, "segmenter", predictor), "proposals", None))
    if limit is not None and limit < 1:
        raise ZssegError(f"--limit must be at least 1, got {limit}")
    if save_predictions is not None:
        check_prediction_folder(dataset, save_predictions, limit)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    matrix = ConfusionMatrix(dataset.num_classes)
    busy = 0.0  # this process's wall time per step, waiting for the step's image included
    unreadable = 0
    started = time.perf_counter()
    mine = context.shard(count)
    description = f"{dataset.name} {dataset.split}" + (f" (process 0 of {context.world_size})" if context.enabled else "")
    bar = Progress(len(mine), description, "image", enabled=progress and context.is_main)
    staged = hasattr(predictor, "prepare") and hasattr(predictor, "finish")
    last = time.perf_counter()

    def ready(index: int, loaded: tuple) -> tuple | ZssegError:
        """The checked image and label, and the predictor's prepared half; or the error met."""
        try:
            image, label = _checked(dataset, index, loaded)
            return image, label, predictor.prepare(image, label) if staged else None
        except ZssegError as error:
            return error

    def work(index: int, item: tuple | ZssegError) -> None:
        nonlocal busy, unreadable, last
        try:
            if isinstance(item, ZssegError):
                raise item
            image, label, prepared = item
            prediction = predictor.finish(prepared) if staged else predictor(image, label)
            _score(dataset, index, label, prediction, matrix, save_predictions)
        except UnreadableLabel as error:
            if not skip_unreadable_labels:
                raise ZssegError(f"{error}; pass --skip-missing-labels to leave such images out") from None
            unreadable += 1
        finally:
            busy += time.perf_counter() - last
            last = time.perf_counter()
            bar.update(1)

    try:
        for_each_shard(count, context, work, load=SampleReader(dataset), workers=workers, prepare=ready,
                       pipeline=pipeline and staged and pipeline_enabled())
    finally:
        bar.close()
    counts = context.sum(matrix.as_tensor())
    totals = context.sum(torch.tensor([busy, float(len(mine) - unreadable), float(unreadable)], dtype=torch.float64))
    metrics = compute_metrics(ConfusionMatrix.from_counts(counts.numpy()), unseen, dataset.unseen_sets if unseen else None, miou_rule)
    return EvaluationReport(
        dataset=dataset.name,
        split=dataset.split,
        protocol=protocol,
        class_names=list(class_names or dataset.class_names),
        metrics=metrics,
        num_images=count - int(totals[2]),
        skipped_images=int(totals[2]),
        seconds_per_image=float(totals[0] / max(totals[1], 1.0)),
        wall_seconds=time.perf_counter() - started,
        processes=context.world_size,
        settings=dict(settings or {}),
    )


class SampleReader:
    """`(image, label)` of an image of `dataset` (what `evaluate` scores, read in DataLoader
    workers); the label is an `UnreadableLabel` where its map cannot be read."""

    def __init__(self, dataset: SegmentationDataset):
        self.dataset = dataset

    def __call__(self, index: int) -> tuple:
        image = self.dataset.load_image(index)
        try:
            label = self.dataset.load_label(index)
        except ZssegError as error:
            label = UnreadableLabel(str(error))
        return image, label


def _checked(dataset: SegmentationDataset, index: int, loaded: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The image and label map read for sample `index`, refused if the map is unreadable or of
    another size."""
    image, label = loaded
    if isinstance(label, UnreadableLabel):
        raise label
    dataset.check_sizes(index, image, label)
    return image, label


def _score(dataset: SegmentationDataset, index: int, label: np.ndarray, prediction: np.ndarray, matrix: ConfusionMatrix,
           save: Path | None) -> None:
    sample = dataset.samples[index]
    if prediction.shape != label.shape:
        raise ZssegError(f"{sample.name}: prediction is {prediction.shape}, label map is {label.shape}")
    matrix.update(label, prediction)
    if save is not None:
        check_target(save / f"{sample.name}.png", advice="choose another --save-predictions folder")
        try:
            write_label_png(save / f"{sample.name}.png", prediction, dataset.num_classes)
        except OSError as error:
            raise ZssegError(f"cannot write the prediction of {sample.name} to {save}: {error.strerror or error}") from None
