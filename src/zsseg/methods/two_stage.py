"""The paper's method (the default): mask proposals, each classified by CLIP on its masked crop
(Eq. 1), then Eq. 2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..catalogue import PROPOSAL_OPTIONS
from ..errors import ZssegError
from ..data.images import image_tensor
from ..prompts.encoding import VocabularyEmbedding
from ..data.vocabulary import Vocabulary
from .base import Lap, Method, MethodOutput, Parts


@dataclass
class Regions:
    """An image's proposals and what Eq. 1 makes of them before CLIP.

    Attributes:
        masks: `[K, h, w]` float32 proposals at the processing size.
        crops: `[K', 3, s, s]` the masked crops CLIP encodes, of the masks non-empty at the
            threshold; None where the method makes its CLIP input itself (fast).
        keep: `[K]` bool, which masks those are (None with `crops`).
    """

    masks: torch.Tensor
    crops: torch.Tensor | None = None
    keep: torch.Tensor | None = None


class TwoStage(Method):
    name = "two-stage"

    def __init__(self, parts: Parts):
        self.parts = parts
        self.proposals = parts.proposals
        self.classifier = parts.classifier

    def processing_size(self, height: int, width: int, max_size: int | None, test_size: int | None) -> tuple[int, int]:
        return self.proposals.proposal_size(height, width, max_size, test_size)

    def prepare_image(self, image: np.ndarray, *, ground_truth: np.ndarray | None = None, lap: Lap) -> Regions | None:
        """Proposals and their crops, where the generator runs no model (a network's proposals
        are made in `scores`, on the thread that runs the models)."""
        if self.proposals.needs_ground_truth and ground_truth is None:
            raise ZssegError(f"the '{self.proposals.name}' proposals need the image's label map (ground_truth=)")
        if not (self.proposals.needs_no_model or self.proposals.needs_ground_truth):
            return None
        return self.regions(image, ground_truth, lap)

    def scores(self, image: np.ndarray, prepared: Regions | None, vocabulary: Vocabulary, text: VocabularyEmbedding, *, seen=None,
               lap: Lap) -> MethodOutput:
        regions = prepared if prepared is not None else self.regions(image, None, lap)
        probs, keep = self.classify(image, regions, text, lap)
        return MethodOutput(regions.masks[keep], probs)

    def regions(self, image: np.ndarray, ground_truth: np.ndarray | None, lap: Lap) -> Regions:
        masks = self.proposals.generate(image, ground_truth)  # generators that need none ignore it
        lap("proposals")
        return self.crop(image, masks, lap)

    def crop(self, image: np.ndarray, masks: torch.Tensor, lap: Lap) -> Regions:
        """Eq. 1 before CLIP: each mask binarised, its box cropped, resized to CLIP's input."""
        crops, keep = self.classifier.crops(image_tensor(image), masks)
        lap("crops")
        return Regions(masks, crops, keep)

    def classify(self, image: np.ndarray, regions: Regions, text: VocabularyEmbedding, lap: Lap) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1 with CLIP: `[K', C]` probabilities of the masks non-empty at the threshold, and `[K]` which."""
        features = self.classifier.encode_crops(regions.crops)
        lap("image_encoding")
        return self.classifier.scores(features, text)[0], regions.keep

    def region_probs(self, image: np.ndarray, masks: torch.Tensor, text: VocabularyEmbedding, lap: Lap) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1 on given masks (a network's): `[K', C]` probabilities and `[K]` which masks."""
        return self.classify(image, self.crop(image, masks, lap), text, lap)


__all__ = ["PROPOSAL_OPTIONS", "Regions", "TwoStage"]
