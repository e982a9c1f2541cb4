"""The paper's retrained FCN baseline (`zsseg train fcn`), ensembled with dense CLIP as the
paper's code does (lambda 0.7, exponents swapped for unseen classes)."""

from __future__ import annotations

import numpy as np

from ..catalogue import FCN_ENSEMBLE_WEIGHT
from ..classification.dense import DenseClip, dense_logits
from ..prompts.encoding import VocabularyEmbedding
from ..data.vocabulary import Vocabulary
from .base import Lap, Method, MethodOutput, Parts, ensemble, network_text_encoder, seen_flags


class FcnMethod(Method):
    name = "fcn"
    default_ensemble_weight = FCN_ENSEMBLE_WEIGHT

    def __init__(self, parts: Parts):
        self.fcn = parts.fcn  # a loaded `zsseg.networks.fcn.TrainedFcn`
        self.dense = DenseClip(parts.clip, parts.dense_mode, overlap=parts.overlap)
        self.weight, self.mode = parts.ensemble_weight, parts.classifier_mode
        if self.mode != "clip":
            self.network_prompts = network_text_encoder(self.fcn, self.fcn.embed_dim, parts.clip, parts.classifier.prompts,
                                                        parts.network_prompt)

    def processing_size(self, height: int, width: int, max_size: int | None, test_size: int | None) -> tuple[int, int]:
        return self.fcn.processing_size(height, width, max_size)

    def scores(self, image: np.ndarray, prepared: None, vocabulary: Vocabulary, text: VocabularyEmbedding, *, seen=None,
               lap: Lap) -> MethodOutput:
        network = clip = None
        if self.mode != "clip":
            network = self.fcn.class_probs(self.fcn.predict(image), self.network_prompts.encode_vocabulary(vocabulary))
            lap("network")
        if self.mode != "network":
            clip = dense_logits(self.dense.features(image), text, self.dense.clip.temperature).softmax(dim=0).cpu()
            lap("image_encoding")
        if network is None:
            probs = clip
        elif clip is None:
            probs = network
        else:
            probs = ensemble(network, clip, seen_flags(seen, self.fcn, vocabulary)[:, None, None], self.weight)
        return MethodOutput(probs.new_zeros(0, *probs.shape[1:]), probs)


__all__ = ["FCN_ENSEMBLE_WEIGHT", "FcnMethod"]
