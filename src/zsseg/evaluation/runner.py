"""Benchmark evaluation: predict every image of a dataset split and score it (`zsseg eval`).

    report = zsseg.evaluate("ade20k-150", data_root="datasets", limit=100)   # the paper's settings
    report = zsseg.evaluate("coco-stuff", protocol="zero-shot", proposals="maskformer", proposal_weights="model_final.pth")
    report = zsseg.evaluate("coco-stuff", oracle=True, proposals="contour-hierarchy")  # proposal quality alone
    report.to_dict()   # the JSON `zsseg eval --output` writes

`evaluate` applies the reference code's test settings for the benchmark
(`zsseg.evaluation.reference_settings`) wherever the configuration and the options leave them
open, as `zsseg eval` does, and records them. Protocols (the paper's two):
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

from ..config import SegmenterConfig, load_config
from ..data.datasets import SampleReader, SegmentationDataset, UnreadableLabel, load_dataset, unseen_classes
from ..data.vocabulary import Vocabulary
from ..errors import SettingError, ZssegError, counted
from ..outputs.writers import SOFTWARE, check_target, write_label_png
from ..runs.distributed import Distributed, distributed_session, for_each_shard
from ..runs.progress import Progress
from ..runs.read_ahead import pipeline_enabled
from .metrics import MIOU_RULES, ConfusionMatrix, SegmentationMetrics, compute_metrics
from .predictors import ClipPredictor, OraclePredictor
from .reference_settings import BenchmarkSettings, benchmark_settings

#: A predictor maps (HWC uint8 image, [H, W] int ground truth) to an [H, W] int label map
#: (-1 = unlabelled); see `zsseg.evaluation.predictors`.
Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class EvaluationReport:
    """What `evaluate` returns; `to_dict` is the JSON that `zsseg eval --output` writes.

    Attributes:
        benchmark: how the benchmark's settings were applied: their source, the rule for the
            seen classes, the class names and the mIoU rule.
        config: the record of what made the predictions (`Segmenter.record`), or the oracle's.
    """

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
    benchmark: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "software": SOFTWARE,
            "dataset": self.dataset,
            "split": self.split,
            "protocol": self.protocol,
            **self.metrics.as_dict(self.class_names),
            "num_images": self.num_images,
            "skipped_images": self.skipped_images,
            "seconds_per_image": self.seconds_per_image,
            "wall_seconds": self.wall_seconds,
            "processes": self.processes,
            "benchmark": self.benchmark,
            "config": self.config,
        }

    as_dict = to_dict

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
        """The means, the settings and what was evaluated: `--quiet`'s output."""
        m = self.metrics
        summary = [("mIoU", m.mIoU), ("fwIoU", m.fwIoU), ("pAcc", m.pAcc), ("mAcc", m.mAcc)]
        if self.protocol == "zero-shot":
            summary += [("mIoU(seen)", m.mIoU_seen), ("mIoU(unseen)", m.mIoU_unseen), ("hIoU", m.hIoU)]
        lines = ["  ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in summary)]
        lines.append(f"settings: {describe_settings(self.benchmark, self.config)}")
        skipped = f" ({self.skipped_images} skipped: no readable label map)" if self.skipped_images else ""
        lines.append(
            f"{self.dataset} {self.split}, {self.protocol}: {counted(self.num_images, 'image')}{skipped}, "
            f"mIoU over {m.classes_in_mean} of {len(self.class_names)} classes (present in the "
            f"{'ground truth or the predictions' if m.miou_rule == MIOU_RULES[0] else 'ground truth'}), "
            f"{self.seconds_per_image:.2f} s per image per process, {counted(self.processes, 'process', 'processes')}"
        )
        return lines


def describe_settings(benchmark: dict, config: dict) -> str:
    """One line of the settings an evaluation ran with (the JSON has them all)."""
    size = config.get("size") or {}
    parts = [f"size {size.get('test_size') or 'as is'}/{size.get('max_size')}"]
    crop = (config.get("region") or {}).get("crop") or {}
    if config.get("proposals") is not None and not config.get("oracle"):
        parts.append(f"mask threshold {crop.get('threshold')}")
    models = config.get("models") or {}
    ensemble = models.get("ensemble")
    if ensemble:
        parts.append(f"lambda {ensemble['weight']}" + (f" ({ensemble['classifier']} alone)" if ensemble["classifier"] != "ensemble" else ""))
    if benchmark.get("seen_classes"):
        parts.append(f"seen {benchmark['seen_classes']}")
    for key in ("prompt", "network_prompt"):
        prompt = models.get(key)
        if prompt:
            parts.append(f"{key.replace('_', ' ')} {prompt.get('name') or prompt.get('source') or prompt.get('kind')}")
    parts.append(f"names {benchmark.get('class_names')}")
    rule = "ground truth or predictions" if benchmark.get("miou_rule") == MIOU_RULES[0] else "ground truth"
    parts.append(f"mIoU over classes in the {rule}")
    return ", ".join(parts) + f" (from {benchmark.get('settings')})"


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
    dataset.check_outside(folder, "save_predictions")
    for sample in dataset.samples[:limit]:
        check_target(folder / f"{sample.name}.png", advice="choose another folder for the predictions")


@dataclass
class BenchmarkPlan:
    """What `evaluate` runs: the segmenter's configuration, the vocabulary, and the record of
    the benchmark's settings it applied."""

    config: SegmenterConfig
    vocabulary: Vocabulary
    benchmark: dict


def benchmark_plan(dataset: SegmentationDataset, protocol: str, config: SegmenterConfig | None, options: dict,
                   class_names: str = "reference", seen_classes: str | None = None, miou_rule: str = MIOU_RULES[0]) -> BenchmarkPlan:
    """The configuration for `dataset` under `protocol`: without `config`, the reference code's
    settings for the benchmark wherever `options` leave them open (`reference_settings`); the
    classes as the reference names them (or `class_names` "zsseg": the built-in vocabulary);
    and, with a trained network, the seen classes by `seen_classes` ("split", "none", "names";
    default the benchmark's)."""
    row = benchmark_settings(dataset.name, protocol)
    if class_names not in ("reference", "zsseg"):
        raise SettingError("class_names", f"{{setting}} must be 'reference' or 'zsseg', got '{class_names}'")
    vocabulary = row.vocabulary() if class_names == "reference" else dataset.vocabulary
    first = SegmenterConfig.from_options(config, **options)
    preset = {} if config is not None else _open_settings(row, first, options)
    rule = seen_classes or row.seen
    seen = {}
    if first.trained and "seen" not in options:
        flags = row.seen_flags(dataset.unseen, dataset.num_classes, rule)
        seen["seen"] = None if flags is None else tuple(name for name, flag in zip(vocabulary.names, flags) if flag)
    final = SegmenterConfig.from_options(config, **preset, **seen, **options)
    benchmark = {"settings": row.source if config is None else "the given configuration", "seen_classes": rule if first.trained else None,
                 "class_names": row.class_names if class_names == "reference" else dataset.vocabulary.name, "miou_rule": miou_rule}
    return BenchmarkPlan(final, vocabulary, benchmark)


def _open_settings(row: BenchmarkSettings, first: SegmenterConfig, options: dict) -> dict:
    """The benchmark's settings that `first` (the options alone) uses and leaves open."""
    preset = row.segmenter_options(first.trained)
    proposal_method = first.proposals is not None
    uses = {"test_size": proposal_method, "max_size": True, "mask_threshold": proposal_method, "prompt": True,
            "ensemble_weight": first.trained and first.method != "fcn", "network_prompt": first.trained}
    return {key: value for key, value in preset.items() if uses[key] and value is not None and options.get(key) is None}


def evaluate(dataset: str | SegmentationDataset, *, data_root: str | Path | None = None, split: str = "val", limit: int | None = None,
             protocol: str | None = None, config: SegmenterConfig | str | Path | None = None, oracle: bool = False,
             class_names: str = "reference", seen_classes: str | None = None, miou_rule: str = MIOU_RULES[0],
             skip_missing_labels: bool = False, save_predictions: str | Path | None = None, workers: int | None = None,
             pipeline: bool = True, progress: bool = True, **options) -> EvaluationReport:
    """Predict and score the first `limit` images (all if None) of a benchmark split, with the
    reference code's settings for the benchmark where `config` and `options` leave them open.

    Args:
        dataset: a benchmark's name (`zsseg datasets` lists them) read under `data_root`
            (default `$DETECTRON2_DATASETS`, else ./datasets), or a loaded `SegmentationDataset`.
        protocol: "cross-dataset" (default) or "zero-shot" (also seen/unseen mIoU and hIoU).
        config: a `SegmenterConfig`, or a file holding one (an output's record): then it is the
            configuration, and the benchmark's settings are not applied.
        oracle: score the proposals alone (each takes the ground-truth class it overlaps most).
        class_names: "reference" (the reference code's class strings) or "zsseg" (the built-in
            vocabulary, split into synonyms).
        seen_classes: which classes the ensemble with a trained network takes as seen.
        miou_rule: what mIoU divides by (`zsseg.evaluation.metrics.MIOU_RULES`).
        skip_missing_labels: leave out images whose label map is missing or unreadable.
        save_predictions: a folder for each prediction as NAME.png (class indices, 255 unlabelled).
        workers: processes that read the images and label maps ahead (default 4 on CUDA, else 0).
        pipeline: prepare the next image on a worker thread while CLIP works on this one.
        options: settings by their flat names (`zsseg.config.OPTIONS`: clip, proposals,
            max_proposals, ...); the command line's flags map onto them.
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)[0]
    if not isinstance(dataset, SegmentationDataset):
        dataset = load_dataset(dataset, data_root, split, skip_missing_labels=skip_missing_labels)
    protocol = protocol or "cross-dataset"
    unseen_classes(dataset, protocol)
    if limit is not None and limit < 1:
        raise SettingError("limit", f"{{setting}} must be at least 1, got {limit}")
    from ..segmenter import loaded_models

    loaded = loaded_models(options)  # models given loaded are used as they are; their settings are recorded
    plan = benchmark_plan(dataset, protocol, config, options, class_names, seen_classes, miou_rule)
    if save_predictions is not None:
        check_prediction_folder(dataset, Path(save_predictions), limit)
    with distributed_session(plan.config.clip.device) as context:
        predictor, record = _predictor(plan, dataset, oracle, context.device, loaded)
        scoring = Scoring(dataset, predictor, protocol, context, save_predictions, skip_missing_labels, miou_rule)
        report = scoring.run(limit, workers, pipeline, progress)
    report.class_names, report.benchmark, report.config = list(plan.vocabulary.names), plan.benchmark, record
    return report


def _predictor(plan: BenchmarkPlan, dataset: SegmentationDataset, oracle: bool, device: str, loaded: dict):
    """The predictor of `plan` on `device` (with the models of `loaded` already loaded), and the
    record of what makes its predictions."""
    from ..segmenter import Segmenter

    config = plan.config
    if oracle:
        if config.method != "two-stage":
            raise SettingError("oracle", f"{{setting}} scores proposals alone, with no classifier; method {config.method} does not apply")
        clip = config.clip
        proposals = loaded.get("proposals") or config.proposals.build(device, clip=clip.source, tokenizer=clip.tokenizer)
        record = {"oracle": True, "proposals": config.to_dict()["proposals"], "size": config.to_dict()["size"]}
        return OraclePredictor(proposals, dataset.num_classes, config.size.max_size, config.size.test_size), record
    segmenter = Segmenter(config, device=device, **loaded)
    return ClipPredictor(segmenter, plan.vocabulary), segmenter.record(plan.vocabulary)


class Scoring:
    """One evaluation run over a dataset: the confusion matrix, the timings and the counts of
    this process's share, summed over the processes at the end."""

    def __init__(self, dataset: SegmentationDataset, predictor: Predictor, protocol: str, context: Distributed = Distributed(),
                 save_predictions: str | Path | None = None, skip_unreadable_labels: bool = False, miou_rule: str = MIOU_RULES[0]):
        check_not_pseudo_labelled(dataset, getattr(getattr(predictor, "segmenter", predictor), "proposals", None))
        self.dataset, self.predictor, self.protocol, self.context = dataset, predictor, protocol, context
        self.save = None if save_predictions is None else Path(save_predictions)
        self.skip_unreadable, self.miou_rule = skip_unreadable_labels, miou_rule
        self.matrix = ConfusionMatrix(dataset.num_classes)
        self.busy = 0.0  # this process's wall time per step, waiting for the step's image included
        self.unreadable = 0
        self.staged = hasattr(predictor, "prepare") and hasattr(predictor, "finish")

    def run(self, limit: int | None = None, workers: int | None = None, pipeline: bool = True, progress: bool = True) -> EvaluationReport:
        dataset, context = self.dataset, self.context
        count = len(dataset) if limit is None else min(limit, len(dataset))
        started = self.last = time.perf_counter()
        description = f"{dataset.name} {dataset.split}" + (f" (process 0 of {context.world_size})" if context.enabled else "")
        mine = context.shard(count)
        self.bar = Progress(len(mine), description, "image", enabled=progress and context.is_main)
        workers = workers if workers is not None else 4 if str(context.device).startswith("cuda") else 0
        try:
            for_each_shard(count, context, self.work, load=SampleReader(dataset), workers=workers, prepare=self.ready,
                           pipeline=pipeline and self.staged and pipeline_enabled())
        finally:
            self.bar.close()
        return self.report(count, len(mine), time.perf_counter() - started)

    def ready(self, index: int, loaded: tuple) -> tuple | ZssegError:
        """The checked image and label, and the predictor's prepared half; or the error met."""
        try:
            image, label = _checked(self.dataset, index, loaded)
            return image, label, self.predictor.prepare(image, label) if self.staged else None
        except ZssegError as error:
            return error

    def work(self, index: int, item: tuple | ZssegError) -> None:
        try:
            if isinstance(item, ZssegError):
                raise item
            image, label, prepared = item
            prediction = self.predictor.finish(prepared) if self.staged else self.predictor(image, label)
            _score(self.dataset, index, label, prediction, self.matrix, self.save)
        except UnreadableLabel as error:
            if not self.skip_unreadable:
                raise SettingError("skip_missing_labels", f"{error}; set {{setting}} to leave such images out") from None
            self.unreadable += 1
        finally:
            now = time.perf_counter()
            self.busy, self.last = self.busy + now - self.last, now
            self.bar.update(1)

    def report(self, count: int, mine: int, wall: float) -> EvaluationReport:
        context, dataset = self.context, self.dataset
        unseen = unseen_classes(dataset, self.protocol)
        counts = context.sum(self.matrix.as_tensor())
        totals = context.sum(torch.tensor([self.busy, float(mine - self.unreadable), float(self.unreadable)], dtype=torch.float64))
        metrics = compute_metrics(ConfusionMatrix.from_counts(counts.numpy()), unseen, dataset.unseen_sets if unseen else None,
                                  self.miou_rule)
        return EvaluationReport(dataset=dataset.name, split=dataset.split, protocol=self.protocol, class_names=list(dataset.class_names),
                                metrics=metrics, num_images=count - int(totals[2]), skipped_images=int(totals[2]),
                                seconds_per_image=float(totals[0] / max(totals[1], 1.0)), wall_seconds=wall,
                                processes=context.world_size)


def evaluate_predictor(dataset: SegmentationDataset, predictor: Predictor, *, protocol: str = "cross-dataset", limit: int | None = None,
                       context: Distributed = Distributed(), save_predictions: str | Path | None = None, progress: bool = True,
                       skip_unreadable_labels: bool = False, miou_rule: str = MIOU_RULES[0], workers: int | None = None,
                       pipeline: bool = True) -> EvaluationReport:
    """Score any predictor (`zsseg.evaluation.predictors`, or a function of (image, ground
    truth)) on the first `limit` images of `dataset`: `evaluate` without the benchmark's
    settings, for a model built by hand. Every process of a torchrun world calls it alike."""
    unseen_classes(dataset, protocol)
    if limit is not None and limit < 1:
        raise SettingError("limit", f"{{setting}} must be at least 1, got {limit}")
    if save_predictions is not None:
        check_prediction_folder(dataset, Path(save_predictions), limit)
    scoring = Scoring(dataset, predictor, protocol, context, save_predictions, skip_unreadable_labels, miou_rule)
    return scoring.run(limit, workers, pipeline, progress)


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
        check_target(save / f"{sample.name}.png", advice="choose another folder for the predictions")
        try:
            write_label_png(save / f"{sample.name}.png", prediction, dataset.num_classes)
        except OSError as error:
            raise ZssegError(f"cannot write the prediction of {sample.name} to {save}: {error.strerror or error}") from None


__all__ = ["BenchmarkPlan", "ClipPredictor", "EvaluationReport", "OraclePredictor", "Predictor", "Scoring", "benchmark_plan",
           "check_prediction_folder", "describe_settings", "evaluate", "evaluate_predictor"]
