"""Self-training on the unseen classes (the paper's "+ST", Tables 2-3): pseudo-label, retrain.

    zsseg train proposals --dataset coco-stuff --protocol zero-shot ... --output-dir runs/zs
    zsseg pseudo-label --dataset coco-stuff --proposal-weights runs/zs ... --output-dir runs/pl
    zsseg train proposals --dataset coco-stuff --protocol zero-shot --pseudo-labels runs/pl ... --output-dir runs/st
    zsseg eval --dataset coco-stuff --split val --protocol zero-shot --proposal-weights runs/st ...

Pseudo-labels, after the reference code (`GeneralizedPseudoSemSegEvaluator` with
`PSEUDO_WITH_PRIOR`, then `tools/json2dir.py`):

- The trained zero-shot model (the proposal network ensembled with CLIP, or any training-free
  generator with CLIP) segments each training image with the dataset's whole vocabulary.
- The prior: only unseen classes may be given. Each pixel takes the unseen class with the
  highest Eq. 2 score, computed with the proposals' probabilities of the seen classes left
  out and not renormalised, so the score is the share of the covering proposals' probability
  that went to that class (0..1).
- A pixel whose score is below the reject threshold, or zero (no proposal, or none gave an
  unseen class any probability), is ignored.
- A pixel whose ground truth is a seen class keeps its ground truth. Every other pixel, whose
  ground truth is an unseen class or void, takes its pseudo-label, as in the reference. The
  unseen ground truth is never read to make a label.

The reference thresholds a softmax over its (unnormalised) per-pixel scores instead; the
arg-max is the same, only the threshold's scale differs. Its default threshold, 0, keeps every
pixel, and so does ours (pixels without any unseen score aside).

The output folder holds `NAME.png` per image, in the dataset's own label encoding (raw values,
ignore value and palette of its label maps: the files can stand in for its ground truth), and
`pseudo-labels.json`: the settings, how many pixels each class got, and a diagnostic of the
labels against the training images' own unseen ground truth. That diagnostic is labelled as
such: scoring a self-trained network on these images would copy the seen ground truth into
its own score (seen IoU near 100, a confusion users of the reference code met), so `zsseg
eval` refuses a self-trained network on the split it was pseudo-labelled on
(`zsseg.evaluation.runner.check_not_pseudo_labelled`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..assembly import assemble_top
from ..catalogue import DEFAULT_REJECT_THRESHOLD
from ..models.loading import fingerprint
from ..data.datasets import IGNORE, SampleReader, SegmentationDataset, UnreadableLabel, read_label_file, unseen_classes
from ..runs.distributed import Distributed, for_each_shard
from ..errors import SettingError, ZssegError, counted
from ..evaluation.metrics import ConfusionMatrix, compute_metrics
from ..proposals import GroundTruthProposals, MaskFormerProposals
from ..segmenter import PER_PIXEL_METHODS, Segmenter
from ..runs.read_ahead import pipeline_enabled
from ..runs.progress import Progress
from ..data.pseudo_labels import FORMAT, MANIFEST_NAME, read_manifest
from ..outputs.writers import SOFTWARE, check_target, decodes_whole, whole, write_json, write_png, written_by_zsseg



def pseudo_label_map(
    masks: torch.Tensor, probs: torch.Tensor, ground_truth: np.ndarray, seen: torch.Tensor, reject_threshold: float = DEFAULT_REJECT_THRESHOLD
) -> np.ndarray:
    """One image's pseudo-labels (see the module docstring).

    Args:
        masks: `[K, h, w]` proposals at the processing size.
        probs: `[K, C]` their class probabilities over the whole vocabulary.
        ground_truth: `[H, W]` the image's labels (0..C-1, -1 ignored); only its seen-class
            pixels are read.
        seen: `[C]` bool, the seen classes.
        reject_threshold: pixels whose unseen score is below it are ignored.

    Returns:
        `[H, W]` int32: the ground truth on seen-class pixels, an unseen class or -1 elsewhere.
    """
    seen = torch.as_tensor(seen, dtype=torch.bool)
    unseen = (~seen).nonzero().flatten()
    labels, scores = assemble_top(masks, probs[:, unseen], size=tuple(ground_truth.shape))
    keep = (labels >= 0) & (scores > 0) & (scores >= reject_threshold)
    pseudo = torch.where(keep, unseen[labels.clamp_min(0)], IGNORE).numpy().astype(np.int32)
    gt = np.asarray(ground_truth)
    on_seen = (gt >= 0) & seen.numpy()[np.clip(gt, 0, None)]
    pseudo[on_seen] = gt[on_seen]
    return pseudo


class LabelEncoding:
    """Writes label maps as a dataset's own label files: its raw value of each class, its
    ignore value (255 where it has one) and, for palette PNGs (VOC), its palette."""

    def __init__(self, dataset: SegmentationDataset):
        sample = dataset.samples[0]
        table = dataset.spec.lookup(sample)
        values, first = np.unique(table, return_index=True)  # first raw value giving each label
        raw = dict(zip(values.tolist(), first.tolist()))
        missing = [dataset.class_names[c] for c in range(dataset.num_classes) if c not in raw]
        if missing:
            raise ZssegError(f"{dataset.name} label files have no value for {', '.join(missing[:3])}; cannot write its labels")
        ignore = [v for v in (255, 65535) if v < len(table) and table[v] == IGNORE] or np.flatnonzero(table == IGNORE).tolist()
        if not ignore:
            raise ZssegError(f"{dataset.name} label files have no ignore value; cannot write pseudo-labels with ignored pixels")
        self.values = np.array([ignore[0]] + [raw[c] for c in range(dataset.num_classes)], dtype=np.int64)
        self.dtype = np.uint8 if self.values.max() <= 255 else np.uint16
        self.palette = None
        try:
            with Image.open(sample.label) as image:
                if image.mode == "P":
                    self.palette = image.getpalette()
        except (OSError, ValueError):
            pass  # the label is read (and its error reported) when its image is labelled

    def image(self, labels: np.ndarray) -> Image.Image:
        data = self.values[np.asarray(labels) + 1].astype(self.dtype)
        if self.palette is None:
            return Image.fromarray(data)
        image = Image.fromarray(data, mode="P")
        image.putpalette(self.palette)
        return image

    def write(self, path: Path, labels: np.ndarray) -> None:
        write_png(path, self.image(labels))


@dataclass
class PseudoLabelReport:
    """What `pseudo_label` returns: the folder, how many images were labelled now and how many
    were already there (a resumed run), and the manifest it wrote."""

    folder: Path
    labelled: int
    reused: int
    manifest: dict

    def summary(self) -> list[str]:
        m = self.manifest
        pixels = m["pixels"]
        total = max(1, pixels["total"])
        lines = [f"{'unseen class':24s} {'pixels':>12s} {'share':>7s}"]
        for name, count in pixels["pseudo_labels"].items():
            lines.append(f"{name[:24]:24s} {count:12d} {100 * count / total:6.2f}%")
        lines.append(
            f"{m['dataset']} {m['split']}: {counted(m['num_images'], 'image')} ({self.labelled} labelled now, {self.reused} already done); "
            f"pixels: {100 * pixels['seen_ground_truth'] / total:.1f}% seen ground truth, "
            f"{100 * sum(pixels['pseudo_labels'].values()) / total:.1f}% unseen pseudo-labels, {100 * pixels['ignored'] / total:.1f}% ignored"
        )
        check = m["diagnostic"]
        miou = "n/a" if check["mIoU_unseen"] is None else f"{check['mIoU_unseen']:.2f}"
        lines.append(f"diagnostic, not a result: on the training pixels whose ground truth is unseen, the pseudo-labels "
                     f"have mIoU {miou} and label {check['covered']:.1f}% of them")
        return lines


def model_signature(segmenter: Segmenter) -> dict:
    """What identifies the model that makes the labels (part of a run's signature): its record,
    and the fingerprints of the weights it loaded."""
    signature = {"record": segmenter.record(), "clip_weights": segmenter.clip.weights_fingerprint()}
    if isinstance(segmenter.proposals, MaskFormerProposals):
        signature["proposal_weights"] = fingerprint(dict(segmenter.proposals.model.state_dict()))
    return signature


def pseudo_label(
    dataset: SegmentationDataset,
    segmenter: Segmenter,
    output_dir: Path,
    *,
    protocol: str = "zero-shot",
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD,
    limit: int | None = None,
    context: Distributed = Distributed(),
    progress: bool = True,
    workers: int = 0,
    pipeline: bool = True,
) -> PseudoLabelReport:
    """Pseudo-label the first `limit` images (all if None) of `dataset` into `output_dir`.

    Rerunning with the same settings resumes: images whose label file is there are not
    labelled again. Under torchrun the images are sharded as in `evaluate`.

    Args:
        segmenter: the zero-shot model (see the module docstring).
        workers: DataLoader processes that read the images and label maps ahead (0: here).
        pipeline: prepare the next image (proposals, crops) on a worker thread while CLIP
            works on this one (`zsseg.runs.read_ahead`; the same labels; also off with $ZSSEG_PIPELINE=0).
    """
    run = PseudoLabelling(dataset, segmenter, output_dir, protocol, reject_threshold, limit, context)
    return run.run(progress, workers, pipeline)


class PseudoLabelling:
    """One pseudo-labelling run: its checks and manifest, this process's share of the images,
    and the counts summed over the processes at the end."""

    def __init__(self, dataset: SegmentationDataset, segmenter: Segmenter, output_dir: Path, protocol: str, reject_threshold: float,
                 limit: int | None, context: Distributed):
        unseen = unseen_classes(dataset, protocol)
        if unseen is None:
            raise SettingError("protocol", "pseudo-labels are for the zero-shot {setting}: the cross-dataset one has no unseen classes")
        if not 0.0 <= reject_threshold <= 1.0:
            raise SettingError("reject_threshold", f"{{setting}} must be in [0, 1], got {reject_threshold}")
        if segmenter.method in PER_PIXEL_METHODS:
            raise SettingError("method", f"pseudo-labels are made from proposals ({{setting}} two-stage or fast), not {segmenter.method}")
        if isinstance(segmenter.proposals, GroundTruthProposals):
            raise SettingError("proposals", "the ground-truth {setting} read the ground truth, unseen classes included; pseudo-labels "
                               "need a model that does not")
        if limit is not None and limit < 1:
            raise SettingError("limit", f"{{setting}} must be at least 1, got {limit}")
        self.dataset, self.segmenter, self.output_dir, self.context = dataset, segmenter, Path(output_dir), context
        self.reject_threshold = reject_threshold
        self.count = len(dataset) if limit is None else min(limit, len(dataset))
        self.unseen = np.array(sorted(unseen))
        self.seen = torch.ones(dataset.num_classes, dtype=torch.bool)
        self.seen[list(unseen)] = False
        self.pixels = np.zeros(dataset.num_classes + 1, dtype=np.int64)  # index 0: ignored
        self.matrix = ConfusionMatrix(dataset.num_classes)
        self.done = {"labelled": 0, "reused": 0}

    def header(self) -> dict:
        dataset, count = self.dataset, self.count
        signature = {"dataset": dataset.name, "split": dataset.split, "protocol": "zero-shot", "num_images": count,
                     "first_image": dataset.samples[0].name, "last_image": dataset.samples[count - 1].name,
                     "reject_threshold": self.reject_threshold, "model": model_signature(self.segmenter)}
        return {"format": FORMAT, **{k: v for k, v in signature.items() if k != "model"},
                "seen_classes": [n for n, s in zip(dataset.class_names, self.seen.tolist()) if s],
                "unseen_classes": [dataset.class_names[i] for i in self.unseen], "signature": signature,
                "config": self.segmenter.record(dataset.vocabulary)}

    def run(self, progress: bool = True, workers: int = 0, pipeline: bool = True) -> PseudoLabelReport:
        dataset, context = self.dataset, self.context
        header = self.header()
        check_output_dir(self.output_dir, dataset, self.count, header["signature"])
        if context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if not (self.output_dir / MANIFEST_NAME).exists():
                write_json(self.output_dir / MANIFEST_NAME, {**header, "complete": False})
        context.sum(torch.zeros(1))  # every process waits for the folder and its manifest
        self.encoding = LabelEncoding(dataset)
        self.vocabulary = self.segmenter.prepare(dataset.vocabulary)
        self.bar = Progress(len(context.shard(self.count)), f"pseudo-labelling {dataset.name} {dataset.split}", "image",
                            enabled=progress and context.is_main)
        started = time.perf_counter()
        try:
            for_each_shard(self.count, context, self.work, load=SampleReader(dataset), workers=workers, prepare=self.ready,
                           pipeline=pipeline and pipeline_enabled())
        finally:
            self.bar.close()
        return self.finish(header, time.perf_counter() - started)

    def ready(self, index: int, loaded: tuple) -> tuple | ZssegError:
        """The image's label map and its prepared half, or None for it when zsseg has already
        written its labels (a resumed run); or the error met."""
        image, label = loaded
        try:
            if isinstance(label, UnreadableLabel):
                raise label
            self.dataset.check_sizes(index, image, label)
            target = self.output_dir / f"{self.dataset.samples[index].name}.png"
            return label, None if whole(target) else self.segmenter.prepare_image(image)
        except ZssegError as error:
            return error

    def work(self, index: int, item: tuple | ZssegError) -> None:
        if isinstance(item, ZssegError):
            raise item
        sample = self.dataset.samples[index]
        target = self.output_dir / f"{sample.name}.png"
        label, prepared = item
        if prepared is None:
            pseudo = self.dataset.spec.lookup(sample)[read_label_file(target)]
            if pseudo.shape != label.shape or (pseudo < IGNORE).any():
                raise ZssegError(f"{target} does not hold labels of {sample.name}; remove it and rerun to label that image again")
            self.done["reused"] += 1
        else:
            if not damaged_label(target):  # the run's manifest vouches for its own damaged labels
                check_target(target, advice="choose another output folder")
            result = self.segmenter.finish(prepared, self.vocabulary)
            pseudo = pseudo_label_map(result.masks[result.keep], result.region_probs[result.keep], label, self.seen, self.reject_threshold)
            try:
                self.encoding.write(target, pseudo)
            except OSError as error:
                raise ZssegError(f"cannot write {target}: {error.strerror or error}") from None
            self.done["labelled"] += 1
        self.pixels[:] += np.bincount(pseudo.ravel() + 1, minlength=self.dataset.num_classes + 1)
        self.matrix.update(np.where(np.isin(label, self.unseen), label, IGNORE), pseudo)
        self.bar.update(1)

    def finish(self, header: dict, seconds: float) -> PseudoLabelReport:
        context, dataset, unseen = self.context, self.dataset, self.unseen
        pixels = context.sum(torch.from_numpy(self.pixels)).numpy()
        counts = context.sum(self.matrix.as_tensor()).numpy()
        totals = context.sum(torch.tensor([self.done["labelled"], self.done["reused"]]))
        metrics = compute_metrics(ConfusionMatrix.from_counts(counts), tuple(unseen.tolist()))
        unseen_gt = int(counts[unseen].sum())
        labelled_gt = unseen_gt - int(counts[unseen, -1].sum())
        manifest = {
            **header, "complete": True, "seconds": seconds,
            "pixels": {"total": int(pixels.sum()), "seen_ground_truth": int(pixels[1:][self.seen.numpy()].sum()),
                       "pseudo_labels": {dataset.class_names[i]: int(pixels[i + 1]) for i in unseen}, "ignored": int(pixels[0])},
            "diagnostic": {
                "note": "agreement of the pseudo-labels with the training images' own unseen ground truth (never read to make "
                "them), on the pixels whose ground truth is unseen: a check of the labels, not a result",
                "mIoU_unseen": metrics.mIoU_unseen, "iou": {dataset.class_names[i]: metrics.per_class_iou[i] for i in unseen},
                "covered": 100.0 * labelled_gt / max(1, unseen_gt),
                "accuracy": 100.0 * int(counts[unseen, unseen].sum()) / max(1, unseen_gt),
            },
        }
        if context.is_main:
            write_json(self.output_dir / MANIFEST_NAME, manifest)
        return PseudoLabelReport(self.output_dir, int(totals[0]), int(totals[1]), {"software": SOFTWARE, **manifest})


def check_output_dir(folder: Path, dataset: SegmentationDataset, count: int, signature: dict) -> None:
    """Refuse a folder inside the dataset, one holding pseudo-labels made with other settings,
    or one where a label file would replace a file that zsseg did not write."""
    dataset.check_outside(folder, "output_dir")
    if folder.exists() and not folder.is_dir():
        raise SettingError("output_dir", f"{{setting}} {folder} exists and is not a folder")
    manifest = folder / MANIFEST_NAME
    if manifest.exists():
        record = read_manifest(folder)  # first: a manifest that is not zsseg's is the thing to name
        check_only_ours(folder, labels_vouched=True)
        if record.get("signature") != signature:
            old = record.get("signature") or {}
            changed = sorted(k for k in signature.keys() | old.keys() if signature.get(k) != old.get(k))
            raise ZssegError(
                f"{folder} holds pseudo-labels made with other settings ({', '.join(changed)} differ); "
                "rerun the command that made them to resume, or choose another output folder"
            )
        return
    for sample in dataset.samples[:count]:
        target = folder / f"{sample.name}.png"
        if target.exists():
            raise ZssegError(f"{folder} holds {target.name} but no {MANIFEST_NAME}: not a pseudo-label run of zsseg; choose another output folder")
    check_only_ours(folder)


def damaged_label(path: Path) -> bool:
    """A label file that something damaged before its mark (emptied, cut inside its header): in
    a folder whose manifest is zsseg's, it is one of the run's labels, to be written again."""
    return path.suffix == ".png" and path.is_file() and not written_by_zsseg(path) and not decodes_whole(path)


def check_only_ours(folder: Path, labels_vouched: bool = False) -> None:
    """Refuse a folder holding anything zsseg did not write (its own temporary files aside, and
    with `labels_vouched`, for a folder with zsseg's manifest, its damaged labels): label files
    would be written among, and could be mistaken for, someone else's."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        ours = entry.is_file() and (written_by_zsseg(entry) or (entry.name.startswith(".") and entry.name.endswith(".tmp"))
                                    or (labels_vouched and damaged_label(entry)))
        if not ours:
            raise ZssegError(f"{folder} holds {entry.name}, which zsseg did not write; choose another output folder")
