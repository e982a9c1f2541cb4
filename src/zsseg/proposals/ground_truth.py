"""Ground-truth proposals: one mask per segment of a label map (for the oracle and for tests)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..errors import ZssegError
from .base import ProposalGenerator


class GroundTruthProposals(ProposalGenerator):
    """One mask per class present in the label map (or per connected segment).

    Args:
        ignore_index: label value that is not a segment (255 in detectron2 encodings);
            negative values are never segments (zsseg.data.datasets encodes ignore as -1).
        connected: split each class into its 4-connected components.
        max_proposals: K cap (large by default: an oracle should see every segment).
    """

    name = "ground-truth"
    needs_no_model = True

    def __init__(self, ignore_index: int = 255, connected: bool = False, max_proposals: int = 1000):
        super().__init__(max_proposals, duplicate_iou=1.0)
        self.ignore_index = ignore_index
        self.connected = connected

    def generate(self, image: np.ndarray, ground_truth: np.ndarray | None = None) -> torch.Tensor:
        if ground_truth is None:
            raise ZssegError("the ground-truth proposal generator needs the image's label map")
        ground_truth = np.asarray(ground_truth)
        if ground_truth.shape != image.shape[:2]:
            raise ZssegError(f"label map is {ground_truth.shape}, image is {image.shape[:2]}: they must match")
        masks = []
        for value in np.unique(ground_truth):
            if value == self.ignore_index or value < 0:
                continue
            segment = ground_truth == value
            if self.connected:
                components, count = ndimage.label(segment)
                masks.extend(components == i for i in range(1, count + 1))
            else:
                masks.append(segment)
        masks = masks[: self.max_proposals]
        if not masks:
            return torch.zeros((0,) + ground_truth.shape, dtype=torch.float32)
        return torch.from_numpy(np.stack(masks)).float()
