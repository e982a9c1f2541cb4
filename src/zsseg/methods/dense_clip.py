"""The paper's training-free FCN baseline: every pixel classified from CLIP's own patch
features, with sliding windows (`zsseg.classification.dense`); `dense_mode="sclip"` makes them local."""

from __future__ import annotations

import numpy as np

from ..classification.dense import DenseClip, dense_logits
from ..data.images import SizeConfig
from ..data.vocabulary import Vocabulary
from ..prompts.encoding import VocabularyEmbedding
from ..runs.timing import lap
from .base import Method, MethodOutput, Parts


class DenseClipMethod(Method):
    name = "dense-clip"

    def __init__(self, parts: Parts):
        self.dense = DenseClip(parts.clip, parts.dense.mode, overlap=parts.dense.overlap)

    def processing_size(self, height: int, width: int, size: SizeConfig) -> tuple[int, int]:
        return self.dense.processing_size(height, width, size.max_size)

    def scores(self, image: np.ndarray, prepared: None, vocabulary: Vocabulary, text: VocabularyEmbedding) -> MethodOutput:
        probs = dense_logits(self.dense.features(image), text, self.dense.clip.temperature).softmax(dim=0).cpu()
        lap("image_encoding")
        return MethodOutput.per_pixel(probs)


__all__ = ["DenseClipMethod"]
