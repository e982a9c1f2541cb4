"""Ground-truth proposals: one mask per segment of a label map (for the oracle and for tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy import ndimage

from ..errors import ZssegError
from .base import ProposalConfig, ProposalGenerator


@dataclass(frozen=True)
class GroundTruthConfig(ProposalConfig):
    """The ground-truth segments' settings (see `GroundTruthProposals`)."""

    name: ClassVar[str] = "ground-truth"
    max_proposals: int = 1000
    duplicate_iou: float = 1.0
    ignore_index: int = 255
    connected: bool = False


class GroundTruthProposals(ProposalGenerator):
    """One mask per class present in a label map (or per connected segment): the segments the
    oracle scores against, and a classification-only upper bound when CLIP labels them. They are
    made from the label map, not the image: `segments(label)`; the evaluation gives them to the
    segmenter as masks (`Segmenter.classify`).

    Args:
        ignore_index: label value that is not a segment (255 in detectron2 encodings);
            negative values are never segments (zsseg.data.datasets encodes ignore as -1).
        connected: split each class into its 4-connected components.
        max_proposals: K cap (large by default: an oracle should see every segment).
    """

    name = "ground-truth"
    needs_no_model = True
    Config = GroundTruthConfig

    def __init__(self, ignore_index: int = 255, connected: bool = False, max_proposals: int = 1000, duplicate_iou: float = 1.0):
        super().__init__(max_proposals, duplicate_iou)
        self.ignore_index = ignore_index
        self.connected = connected

    def generate(self, image: np.ndarray) -> torch.Tensor:
        raise ZssegError("the ground-truth proposals are made from an image's label map, not the image: evaluate with them "
                         "(`zsseg.evaluate`), or give the segments to `Segmenter.classify`")

    def segments(self, label: np.ndarray) -> torch.Tensor:
        """`[K, H, W]` float32 masks of the segments of `label` (`[H, W]` int), in label order."""
        label = np.asarray(label)
        masks = []
        for value in np.unique(label):
            if value == self.ignore_index or value < 0:
                continue
            segment = label == value
            if self.connected:
                components, count = ndimage.label(segment)
                masks.extend(components == i for i in range(1, count + 1))
            else:
                masks.append(segment)
        masks = masks[: self.max_proposals]
        if not masks:
            return torch.zeros((0,) + label.shape, dtype=torch.float32)
        return torch.from_numpy(np.stack(masks)).float()
