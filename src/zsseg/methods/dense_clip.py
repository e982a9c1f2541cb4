"""The paper's training-free FCN baseline: every pixel classified from CLIP's own patch
features, with sliding windows (`zsseg.classification.dense`); `dense_mode="sclip"` makes them local."""

from __future__ import annotations

import numpy as np

from ..classification.dense import DenseClip, dense_logits
from ..prompts.encoding import VocabularyEmbedding
from ..data.vocabulary import Vocabulary
from .base import Lap, Method, MethodOutput, Parts


class DenseClipMethod(Method):
    name = "dense-clip"

    def __init__(self, parts: Parts):
        self.dense = DenseClip(parts.clip, parts.dense_mode, overlap=parts.overlap)

    def processing_size(self, height: int, width: int, max_size: int | None, test_size: int | None) -> tuple[int, int]:
        return self.dense.processing_size(height, width, max_size)

    def scores(self, image: np.ndarray, prepared: None, vocabulary: Vocabulary, text: VocabularyEmbedding, *, seen=None,
               lap: Lap) -> MethodOutput:
        probs = dense_logits(self.dense.features(image), text, self.dense.clip.temperature).softmax(dim=0).cpu()
        lap("image_encoding")
        return MethodOutput(probs.new_zeros(0, *probs.shape[1:]), probs)


__all__ = ["DenseClipMethod"]
