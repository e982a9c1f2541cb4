"""The paper's method (the default): mask proposals, each classified by CLIP on its masked crop
(Eq. 1), then Eq. 2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..classification.regions import DistinctCrops
from ..data.images import SizeConfig, image_tensor
from ..data.vocabulary import Vocabulary
from ..prompts.encoding import VocabularyEmbedding
from ..runs.timing import lap
from .base import Method, MethodOutput, Parts


@dataclass
class Regions:
    """An image's proposals and what Eq. 1 makes of them before CLIP.

    Attributes:
        masks: `[K, h, w]` float32 proposals at the processing size.
        crops: the masked crops CLIP encodes, of the masks non-empty at the threshold, each
            distinct one once; None where the method makes its CLIP input itself (fast).
    """

    masks: torch.Tensor
    crops: DistinctCrops | None = None


class TwoStage(Method):
    name = "two-stage"

    def __init__(self, parts: Parts):
        self.parts = parts
        self.proposals = parts.proposals
        self.classifier = parts.classifier

    def processing_size(self, height: int, width: int, size: SizeConfig) -> tuple[int, int]:
        return self.proposals.proposal_size(height, width, size.max_size, size.test_size)

    def prepare_image(self, image: np.ndarray, masks: torch.Tensor | None = None) -> Regions | None:
        """Proposals and their crops, where the generator runs no model (a network's proposals
        are made in `scores`, on the thread that runs the models); the crops of `masks` where
        given."""
        if masks is not None:
            return self.crop(image, masks)
        if not self.proposals.needs_no_model:
            return None
        return self.regions(image)

    def scores(self, image: np.ndarray, prepared: Regions | None, vocabulary: Vocabulary, text: VocabularyEmbedding) -> MethodOutput:
        regions = prepared if prepared is not None else self.regions(image)
        probs, keep = self.classify(image, regions, text)
        return MethodOutput.of_kept(regions.masks, probs, keep)

    def regions(self, image: np.ndarray) -> Regions:
        masks = self.proposals.generate(image)
        lap("proposals")
        return self.crop(image, masks)

    def crop(self, image: np.ndarray, masks: torch.Tensor) -> Regions:
        """Eq. 1 before CLIP: each mask binarised, its box cropped, resized to CLIP's input."""
        crops = self.classifier.distinct_crops(image_tensor(image), masks)
        lap("crops")
        return Regions(masks, crops)

    def classify(self, image: np.ndarray, regions: Regions, text: VocabularyEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1 with CLIP: `[K', C]` probabilities of the masks non-empty at the threshold, and `[K]` which."""
        features = self.classifier.encode_distinct(regions.crops)
        lap("image_encoding")
        return self.classifier.scores(features, text)[0], regions.crops.keep

    def region_probs(self, image: np.ndarray, masks: torch.Tensor, text: VocabularyEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1 on given masks (a network's): `[K', C]` probabilities and `[K]` which masks."""
        return self.classify(image, self.crop(image, masks), text)


__all__ = ["Regions", "TwoStage"]
