"""The paper's retrained FCN baseline (`zsseg train fcn`), ensembled with dense CLIP as the
paper's code does (lambda 0.7, exponents swapped for unseen classes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..catalogue import FCN_ENSEMBLE_WEIGHT
from ..classification.dense import DenseClip, dense_logits
from ..data.images import SizeConfig
from ..data.vocabulary import Vocabulary
from ..errors import SettingError
from ..prompts.encoding import VocabularyEmbedding
from ..runs.timing import lap
from .base import Method, MethodOutput, Parts, ensemble, network_text_encoder


@dataclass(frozen=True)
class FcnConfig:
    """The trained FCN of the fcn method.

    Attributes:
        weights: the output folder of `zsseg train fcn`, or its fcn.safetensors.
    """

    weights: str

    def __post_init__(self):
        if not self.weights:
            raise SettingError("fcn", "the fcn method needs trained FCN weights: {setting} (the output folder of `zsseg train fcn`)")


class FcnMethod(Method):
    name = "fcn"
    default_ensemble_weight = FCN_ENSEMBLE_WEIGHT

    def __init__(self, parts: Parts):
        self.fcn = parts.fcn  # a loaded `zsseg.networks.fcn.TrainedFcn`
        self.dense = DenseClip(parts.clip, parts.dense.mode, overlap=parts.dense.overlap)
        self.config = parts.ensemble
        self.weight, self.mode = parts.ensemble.weight, parts.ensemble.classifier
        if self.mode != "clip":
            self.network_prompts = network_text_encoder(self.fcn, self.fcn.embed_dim, parts.clip, parts.classifier.prompts,
                                                        parts.ensemble.network_prompt)

    def processing_size(self, height: int, width: int, size: SizeConfig) -> tuple[int, int]:
        return self.fcn.processing_size(height, width, size.max_size)

    def scores(self, image: np.ndarray, prepared: None, vocabulary: Vocabulary, text: VocabularyEmbedding) -> MethodOutput:
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
            probs = ensemble(network, clip, self.config.seen_flags(vocabulary, self.fcn)[:, None, None], self.weight)
        return MethodOutput.per_pixel(probs)


__all__ = ["FCN_ENSEMBLE_WEIGHT", "FcnConfig", "FcnMethod"]
