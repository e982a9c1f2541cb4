"""The paper's method (the default): mask proposals, each classified by CLIP on its masked crop
(Eq. 1), then Eq. 2."""

from __future__ import annotations

import numpy as np
import torch

from ..catalogue import PROPOSAL_OPTIONS
from ..errors import ZssegError
from ..images import image_tensor
from ..prompts import VocabularyEmbedding
from ..vocabulary import Vocabulary
from .base import Lap, Method, MethodOutput, Parts


class TwoStage(Method):
    name = "two-stage"

    def __init__(self, parts: Parts):
        self.parts = parts
        self.proposals = parts.proposals
        self.classifier = parts.classifier

    def processing_size(self, height: int, width: int, max_size: int | None, test_size: int | None) -> tuple[int, int]:
        return self.proposals.proposal_size(height, width, max_size, test_size)

    def scores(self, image: np.ndarray, vocabulary: Vocabulary, text: VocabularyEmbedding, *, seen=None,
               ground_truth: np.ndarray | None = None, lap: Lap) -> MethodOutput:
        if self.proposals.needs_ground_truth and ground_truth is None:
            raise ZssegError(f"the '{self.proposals.name}' proposals need the image's label map (ground_truth=)")
        masks = self.proposals.generate(image, ground_truth)  # generators that need none ignore it
        lap("proposals")
        probs, keep = self.region_probs(image, masks, text, lap)
        return MethodOutput(masks[keep], probs)

    def region_probs(self, image: np.ndarray, masks: torch.Tensor, text: VocabularyEmbedding, lap: Lap) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1: `[K', C]` CLIP probabilities of the masks non-empty at the threshold, and `[K]` which."""
        crops, keep = self.classifier.crops(image_tensor(image), masks)
        lap("crops")
        features = self.classifier.encode_crops(crops)
        lap("image_encoding")
        return self.classifier.scores(features, text)[0], keep


__all__ = ["PROPOSAL_OPTIONS", "TwoStage"]
