"""What turns a benchmark image into a prediction: the segmenter (`ClipPredictor`), or the oracle
that scores proposals alone (`OraclePredictor`, the paper's Table 6).

A predictor maps (HWC uint8 image, [H, W] int ground truth) to an [H, W] int label map (-1 =
unlabelled); its `prepare` half runs no model where the method allows, so the evaluation runs it
for the next image on a worker thread while `finish` works on this one. Only the ground-truth
proposals read the ground truth: they are the label map's segments, given to the segmenter as
masks (`Segmenter.prepare_image`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..assembly import assemble_labels
from ..catalogue import DEFAULT_MAX_SIZE
from ..data.images import SizeConfig, resize_image, resize_labels
from ..data.vocabulary import Vocabulary
from ..proposals import GroundTruthProposals, ProposalGenerator
from ..segmenter import PreparedImage, Segmenter


class ClipPredictor:
    """The zsseg pipeline: proposals, CLIP region classification (Eq. 1), assembly (Eq. 2)."""

    def __init__(self, segmenter: Segmenter, vocabulary: Vocabulary):
        self.segmenter = segmenter
        self.vocabulary = segmenter.prepare(vocabulary)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> np.ndarray:
        return self.finish(self.prepare(image, label))

    def prepare(self, image: np.ndarray, label: np.ndarray) -> PreparedImage:
        """The half that runs no model (proposals, crops: `Segmenter.prepare_image`); the
        ground-truth proposals are the label map's segments, at full size."""
        proposals = self.segmenter.proposals
        masks = proposals.segments(label) if isinstance(proposals, GroundTruthProposals) else None
        return self.segmenter.prepare_image(image, masks)

    def finish(self, prepared: PreparedImage) -> np.ndarray:
        return self.segmenter.finish(prepared, self.vocabulary).label_map


class OraclePredictor:
    """The paper's oracle (Table 6): each proposal takes the ground-truth class it overlaps most.

    The score then measures the proposals alone: no CLIP is involved. Proposals are made at the
    processing size (`max_size`, `test_size`: `SizeConfig`), where the ground truth is resized by nearest neighbour; proposals
    that cover only ignored pixels are dropped; Eq. 2 assembles the one-hot classes and the
    labels are upsampled to full size. Ground-truth proposals are made at full size, so with them
    the oracle reproduces the ground truth exactly (100 mIoU).
    """

    def __init__(self, proposals: ProposalGenerator, num_classes: int, max_size: int | None = DEFAULT_MAX_SIZE, test_size: int | None = None):
        self.proposals = proposals
        self.num_classes = num_classes
        self.size = SizeConfig(max_size, test_size)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> np.ndarray:
        masks, small_label = self.propose(image, label)
        return oracle_labels(masks, small_label, self.num_classes, label.shape)

    def propose(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Proposals `[K, h, w]` at the working size, and the ground truth resized to it."""
        if isinstance(self.proposals, GroundTruthProposals):
            return self.proposals.segments(label), label
        size = self.proposals.proposal_size(label.shape[0], label.shape[1], self.size.max_size, self.size.test_size)
        return self.proposals.generate(resize_image(image, size)), resize_labels(label, size)


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


__all__ = ["ClipPredictor", "OraclePredictor", "oracle_classes", "oracle_labels"]
