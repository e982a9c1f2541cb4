"""The fast mode: the same proposals and Eq. 2, but each mask is classified by pooling dense
CLIP features inside it (one CLIP pass, at most two 224 windows, instead of one per proposal).
An approximation of Eq. 1, never the default."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..classification.dense import DenseClip, pool_masks
from ..data.images import resize_image
from ..prompts.encoding import VocabularyEmbedding
from ..runs.timing import lap
from .base import Parts
from .two_stage import Regions, TwoStage


class Fast(TwoStage):
    name = "fast"

    def __init__(self, parts: Parts):
        super().__init__(parts)
        self.dense = DenseClip(parts.clip, parts.dense.mode, overlap=0.0)

    def crop(self, image: np.ndarray, masks: torch.Tensor) -> Regions:
        """No crops: the masks are pooled over CLIP's features in `classify`."""
        return Regions(masks)

    def classify(self, image: np.ndarray, regions: Regions, text: VocabularyEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense CLIP features of the image at `DenseClip.fast_size`, each mask binarised (at
        the mask threshold) after resizing to that size and its cells' features averaged;
        softmax(100 x cos) as Eq. 1. A mask too small to cover any cell there is dropped, as an
        empty one is by Eq. 1."""
        size = self.dense.fast_size(image.shape[0], image.shape[1])
        dense = self.dense.features(resize_image(image, size))
        masks = regions.masks
        small = F.interpolate(masks.float()[None], size=size, mode="bilinear", align_corners=False)[0] if len(masks) else masks.new_zeros(0, *size)
        pooled, keep = pool_masks(dense, small, self.classifier.mask_threshold)
        lap("image_encoding")
        return self.classifier.scores(F.normalize(pooled.float(), dim=-1).cpu(), text)[0], keep.cpu()


__all__ = ["Fast"]
