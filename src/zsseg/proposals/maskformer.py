"""Learned proposals: the MaskFormer trained by `zsseg train proposals` (the paper's default).

    generator = MaskFormerProposals("out/")          # folder or out/proposals.safetensors
    masks = generator.generate(image)                # [Q, H, W], class-agnostic, best first
    probs, embeddings = generator.predict(image)     # for the ensemble with CLIP (Segmenter)

The network sees the image with its shorter side at the training config's `test_size` (the
longer side at most `max_size`), padded to a multiple of 32. Its masks are the queries' sigmoid
mask probabilities. As class-agnostic proposals (`generate`, which the oracle uses) they are
ordered by objectness, 1 - p(no object) under the training classes, and the first
`max_proposals` are kept. In the ensemble (`Segmenter`) every query's mask takes part, weighted
by its class probabilities, which leave out p(no object), as in the reference code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..clip import usable_device
from ..errors import ZssegError
from ..images import check_rgb_array, shorter_side_scale
from ..prompts import VocabularyEmbedding
from ..vocabulary import Vocabulary
from .base import ProposalGenerator


class MaskFormerProposals(ProposalGenerator):
    """Mask proposals, and class probabilities for any vocabulary, from a trained network."""

    name = "maskformer"

    def __init__(self, weights: str | Path | None = None, max_proposals: int = 100, device: str = "cpu", duplicate_iou: float = 1.0):
        super().__init__(max_proposals=max_proposals, duplicate_iou=duplicate_iou)
        if weights is None:
            raise ZssegError("the maskformer proposals need trained weights (--proposal-weights OUT from `zsseg train proposals`)")
        from ..maskformer.weights import load_proposals

        self.device = usable_device(device)
        self.trained = load_proposals(weights, self.device)
        self.model = self.trained.model
        self.test_size = self.trained.test_size
        self._seen = Vocabulary.from_names(self.trained.seen_class_names)

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    def proposal_size(self, height: int, width: int, max_size: int | None) -> tuple[int, int]:
        scale = shorter_side_scale(height, width, self.test_size, max_size)
        return max(1, round(height * scale)), max(1, round(width * scale))

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask probabilities `[Q, H, W]` float32 at the image's size and the queries' class
        embeddings `[Q, D]` (the image is used at the size given: see `proposal_size`)."""
        check_rgb_array(image)
        height, width = image.shape[:2]
        pad_h, pad_w = -height % 32, -width % 32
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h))[None].to(self.device)
        output = self.model(pixels)[-1]
        logits = F.interpolate(output.mask_logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
        masks = logits[0, :, :height, :width].sigmoid().float().cpu()
        return masks, output.class_embeddings[0].float()

    @torch.no_grad()
    def class_probs(self, class_embeddings: torch.Tensor, text: VocabularyEmbedding) -> torch.Tensor:
        """`[Q, C]` p(class | query) with the "no object" probability left out (rows sum to
        1 - p(no object)), as the reference code's semantic inference."""
        logits = self.model.class_logits(class_embeddings.to(self.device), text)
        return logits.float().softmax(dim=-1)[:, :-1].cpu()

    def seen_classes(self, vocabulary: Vocabulary) -> torch.Tensor:
        """`[C]` bool: classes of `vocabulary` that the network was trained on (any synonym); for
        a self-trained network, those of its original seen classes (`seen_class_names`)."""
        return torch.tensor(vocabulary.shares_names(self._seen))

    def generate(self, image: np.ndarray, ground_truth: np.ndarray | None = None) -> torch.Tensor:
        masks, embeddings = self.predict(image)
        objectness = self.class_probs(embeddings, self.trained.train_text).sum(dim=1)
        order = objectness.argsort(descending=True, stable=True)[: self.max_proposals]
        return masks[order].contiguous()
