"""Training the paper's retrained FCN baseline (`zsseg.networks.fcn`): per-pixel cross-entropy
of 100 x cosine logits against the frozen CLIP text embeddings of the training classes, upsampled
4x (bilinear), pixels of other classes (the unseen ones, zero-shot) and void ignored.

    run = train_fcn(load_dataset("coco-stuff", root, "train"), load_recipe("fcn", "cpu"), clip, Path("out"))

It shares `zsseg.training.loop.run_training` (DDP, atomic checkpoints, exact resume, log) and
MaskFormer's data stream, optimiser (AdamW, poly) and batch-norm freezing.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..data.datasets import SegmentationDataset, training_classes
from ..models.loading import ClipModel
from ..networks.fcn import FCN_FILES, PerPixelFcn, build_fcn
from ..networks.maskformer.weights import save_network
from ..runs.distributed import Distributed
from .recipes import Recipe
from .loop import TrainingResult, run_training
from .loop import check_output_dir as _check_output_dir
from .proposals import TextClassifierTask, loop_settings


def check_output_dir(output_dir: Path) -> None:
    """A new run may replace only the log and weights that an earlier zsseg run left there."""
    _check_output_dir(output_dir, (FCN_FILES.weights, FCN_FILES.config))


class FcnTask(TextClassifierTask):
    """The FCN as a `zsseg.training.loop.TrainingTask`: per-pixel cross-entropy over the training
    classes, scored against their frozen CLIP text embeddings."""

    output_names = (FCN_FILES.weights, FCN_FILES.config)
    postfix_terms = ("ce",)

    def __init__(self, dataset: SegmentationDataset, config: Recipe, clip: ClipModel, protocol: str,
                 backbone_weights: str | None, device: torch.device, text_cache: bool = True):
        super().__init__(dataset, config, clip, protocol, backbone_weights, device, text_cache,
                         training_classes(dataset, protocol))
        self.model_config = replace(config.model, embed_dim=clip.embed_dim)
        self.module = build_fcn(self.model_config, seed=config.train.seed)
        self.signature = {"kind": "fcn", **self.run_signature(self.model_config)}
        self.data = LabelledBatches(self.samples)

    def loss(self, module: nn.Module, batch: tuple, context: Distributed) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, labels = batch
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        embeddings = module(images)
        with torch.autocast(images.device.type, enabled=False):  # the logits and the loss in fp32 (bf16 autocast)
            logits = PerPixelFcn.class_logits(embeddings.float(), self.text)
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        # Mean over this process's labelled pixels, as the reference (DDP averages the processes).
        ce = F.cross_entropy(logits, labels, ignore_index=-1) if (labels >= 0).any() else logits.sum() * 0.0
        return ce, {"ce": ce.detach()}

    def save(self, output_dir: Path) -> Path:
        return save_network(output_dir, FCN_FILES, self.module, asdict(self.module.config), self.text, self.vocabulary.names,
                            self.run_info(), self.prompt)[0]


class LabelledBatches:
    """The FCN's batches: `[B, 3, S, S]` pixels and `[B, S, S]` labels of the training stream."""

    def __init__(self, samples):
        self.samples = samples

    def batch(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.samples.labelled_batch(positions)


def train_fcn(
    dataset: SegmentationDataset,
    config: Recipe,
    clip: ClipModel,
    output_dir: Path,
    protocol: str = "zero-shot",
    backbone_weights: str | None = None,
    context: Distributed = Distributed(),
    progress: bool = True,
    text_cache: bool = True,
    workers: int = 0,
    dtype: str = "fp32",
) -> TrainingResult:
    """Train (or resume training) the FCN; see the module docstring.

    Args:
        dataset: the training split.
        config: architecture and training settings (`zsseg.training.recipes.load_recipe("fcn", ...)`).
        clip: gives the frozen text embeddings of the training classes (with `config.train.prompt`).
        protocol: "zero-shot" learns the seen classes only; "cross-dataset" all.
        backbone_weights: ImageNet weights of the ResNet (hub id or folder), or None (random).
        workers, dtype: DataLoader processes, and "bf16" for autocast (`zsseg.training.loop.LoopSettings`).
    """
    task = FcnTask(dataset, config, clip, protocol, backbone_weights, torch.device(context.device), text_cache)
    return run_training(task, loop_settings(config.train, workers, dtype), output_dir, context, progress)


__all__ = ["FcnTask", "check_output_dir", "train_fcn"]
