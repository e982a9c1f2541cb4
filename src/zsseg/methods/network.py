"""The ensemble of a trained proposal network with CLIP (the paper's default pipeline with its
learned proposals): the network's own class probabilities for each query, combined with Eq. 1's
(`Method` two-stage or fast) as the reference code does."""

from __future__ import annotations

import numpy as np
import torch

from ..data.images import SizeConfig
from ..data.vocabulary import Vocabulary
from ..errors import ZssegError
from ..prompts.encoding import VocabularyEmbedding
from ..proposals import MaskFormerProposals
from ..runs.timing import lap
from .base import Method, MethodOutput, ensemble, network_text_encoder
from .two_stage import TwoStage


class NetworkEnsemble(Method):
    """Masks `[Q, h, w]` of a proposal network, with its class probabilities ensembled with
    CLIP's: a query whose binarised mask is empty keeps the network's (CLIP counts as 1). The
    classifier ablations follow the reference's own branches: "network" (its CLIP_ENSEMBLE off)
    takes the network's probabilities alone, for every query; "clip" (its CLIP_ENSEMBLE_WEIGHT
    at or below 0) takes Eq. 1's alone, for the queries whose binarised mask is not empty."""

    def __init__(self, region: TwoStage):
        parts = region.parts
        self.region = region
        self.name = region.name
        self.network: MaskFormerProposals = parts.proposals  # type: ignore[assignment]
        self.config = parts.ensemble
        self.weight, self.mode = parts.ensemble.weight, parts.ensemble.classifier
        if self.mode != "clip":
            self.network_prompts = network_text_encoder(self.network.trained, self.network.embed_dim, parts.clip,
                                                        parts.classifier.prompts, parts.ensemble.network_prompt)

    def processing_size(self, height: int, width: int, size: SizeConfig) -> tuple[int, int]:
        return self.region.processing_size(height, width, size)

    def prepare_image(self, image: np.ndarray, masks: torch.Tensor | None = None) -> None:
        if masks is not None:
            raise ZssegError("a proposal network classifies its own masks; classify given masks with training-free proposals")
        return None

    def scores(self, image: np.ndarray, prepared: None, vocabulary: Vocabulary, text: VocabularyEmbedding) -> MethodOutput:
        masks, embeddings = self.network.predict(image)
        if self.mode == "clip":  # every query, in the network's order, not its `generate` ranking
            lap("proposals")
            probs, keep = self.region.region_probs(image, masks, text)
            return MethodOutput.of_kept(masks, probs, keep)
        network = self.network.class_probs(embeddings, self.network_prompts.encode_vocabulary(vocabulary))
        lap("proposals")
        every = torch.ones(len(masks), dtype=torch.bool)
        if self.mode == "network":
            return MethodOutput(masks, network, every)
        clip = torch.ones_like(network)
        probs, keep = self.region.region_probs(image, masks, text)
        clip[keep] = probs
        return MethodOutput(masks, ensemble(network, clip, self.config.seen_flags(vocabulary, self.network)[None], self.weight), every)


__all__ = ["NetworkEnsemble"]
