"""Learned proposals: the MaskFormer trained by `zsseg train proposals` (the paper's default).

    generator = MaskFormerProposals("out/")          # folder or out/proposals.safetensors
    masks = generator.generate(image)                # [Q, H, W], class-agnostic, best first
    probs, embeddings = generator.predict(image)     # for the ensemble with CLIP (Segmenter)

The weights are what `zsseg train proposals` wrote, or a checkpoint of the authors' code
(detectron2's `model_final.pth`, see `zsseg.networks.maskformer.reference`), whose CLIP and learned prompt
come with it. The network sees the image with its shorter side at its `test_size` (the longer
side at most `max_size`); it normalises the image and pads it to a multiple of 32 with the mean
colour. Its masks are the queries' sigmoid mask probabilities. As class-agnostic proposals (`generate`, which the oracle uses) they are
ordered by objectness, 1 - p(no object) under the training classes, and the first
`max_proposals` are kept. In the ensemble (`Segmenter`) every query's mask takes part, weighted
by its class probabilities, which leave out p(no object), as in the reference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from ..catalogue import DEFAULT_MAX_PROPOSALS, MASKFORMER
from ..models.loading import usable_device
from ..errors import SettingError, ZssegError
from ..data.images import check_rgb_array
from ..prompts.encoding import VocabularyEmbedding
from ..data.vocabulary import Vocabulary
from .base import ProposalConfig, ProposalGenerator


@dataclass(frozen=True)
class MaskFormerConfig(ProposalConfig):
    """A trained proposal network's settings (see `MaskFormerProposals`).

    Attributes:
        weights: the output folder of `zsseg train proposals` (or its proposals.safetensors), or
            an authors' checkpoint (model_final.pth).
    """

    name: ClassVar[str] = MASKFORMER
    duplicate_iou: float = 1.0
    weights: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if not self.weights:
            raise SettingError("proposal_weights", "the maskformer proposals need trained weights: {setting} (the output folder "
                               "of `zsseg train proposals`, or an authors' model_final.pth)")


class MaskFormerProposals(ProposalGenerator):
    """Mask proposals, and class probabilities for any vocabulary, from a trained network."""

    name = MASKFORMER
    Config = MaskFormerConfig

    def __init__(self, weights: str | Path | None = None, max_proposals: int = DEFAULT_MAX_PROPOSALS, device: str = "cpu",
                 duplicate_iou: float = 1.0, clip=None, tokenizer: str | Path | None = None, dtype: str = "fp32",
                 clip_precision: str = "fp32"):
        """`clip`, `tokenizer` and `clip_precision` matter only for an authors' checkpoint: the
        CLIP to use where it holds none (a `ClipModel`, hub id or folder; default ViT-B/16), or
        a loaded one to use in place of the one it holds where their text towers are the same;
        CLIP's tokenizer for the CLIP it holds (a folder with vocab.json and merges.txt, or a hub
        id); the precision of the CLIP it holds ("auto", "fp32", "bf16", "fp16", "int8"). `dtype`
        "bf16" runs the network under bf16 autocast (its weights stay fp32; masks and class
        probabilities come out in fp32)."""
        super().__init__(max_proposals=max_proposals, duplicate_iou=duplicate_iou)
        MaskFormerConfig(max_proposals, duplicate_iou, None if weights is None else str(weights))  # checks them
        from ..networks.maskformer.reference import is_reference_checkpoint, load_reference_checkpoint
        from ..networks.maskformer.weights import load_proposals

        if dtype not in ("fp32", "bf16"):
            raise ZssegError(f"unknown dtype '{dtype}' for the maskformer network; choose fp32 or bf16")
        self.dtype = dtype
        self.device = usable_device(device)
        self.source = str(weights)  # what the weights were loaded from
        if is_reference_checkpoint(weights):
            self.trained = load_reference_checkpoint(weights, self.device, clip=clip, tokenizer=tokenizer, precision=clip_precision)
        else:
            self.trained = load_proposals(weights, self.device)
        self.model = self.trained.model
        self.test_size = self.default_shorter_side = self.trained.test_size
        self._seen = Vocabulary.from_names(self.trained.seen_class_names)

    @property
    def config(self) -> MaskFormerConfig:
        return MaskFormerConfig(self.max_proposals, self.duplicate_iou, self.source)

    @classmethod
    def from_config(cls, config: MaskFormerConfig, device: str = "cpu", clip=None, tokenizer=None, dtype: str = "fp32",
                    clip_precision: str = "fp32", **context) -> "MaskFormerProposals":
        """`clip`, `tokenizer`, `clip_precision`: for an authors' checkpoint, as the constructor's;
        `dtype` "bf16" runs the network under bf16 autocast."""
        return cls(config.weights, config.max_proposals, device, config.duplicate_iou, clip=clip, tokenizer=tokenizer, dtype=dtype,
                   clip_precision=clip_precision)

    @property
    def clip(self):
        """The CLIP that came with the weights (an authors' checkpoint holds one), or None."""
        return self.trained.clip

    @property
    def region_clip(self):
        """The CLIP for Eq. 1 that came with the weights: an authors' checkpoint's separate
        region adapter's where it has one, else its only CLIP; None for a zsseg network."""
        return self.trained.region_clip or self.trained.clip

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask probabilities `[Q, H, W]` float32 at the image's size and the queries' class
        embeddings `[Q, D]` (the image is used at the size given: see `proposal_size`)."""
        check_rgb_array(image)
        height, width = image.shape[:2]
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None].to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            output = self.model(pixels)[-1]
        # Upsampled to the padded size, then cropped: the reference's order (not a resize of
        # the padded grid to the image's size).
        padded = tuple(4 * side for side in output.mask_logits.shape[-2:])
        logits = F.interpolate(output.mask_logits.float(), size=padded, mode="bilinear", align_corners=False)
        masks = logits[0, :, :height, :width].sigmoid().float().cpu()
        return masks, output.class_embeddings[0].float()

    @torch.no_grad()
    def class_probs(self, class_embeddings: torch.Tensor, text: VocabularyEmbedding) -> torch.Tensor:
        """`[Q, C]` p(class | query) with the "no object" probability left out (rows sum to
        1 - p(no object)), as the reference code's semantic inference."""
        logits = self.model.class_logits(class_embeddings.to(self.device).float(), text)
        return logits.float().softmax(dim=-1)[:, :-1].cpu()

    def seen_classes(self, vocabulary: Vocabulary) -> torch.Tensor:
        """`[C]` bool: classes of `vocabulary` that the network was trained on (any synonym); for
        a self-trained network, those of its original seen classes (`seen_class_names`)."""
        return torch.tensor(vocabulary.shares_names(self._seen))

    def generate(self, image: np.ndarray) -> torch.Tensor:
        masks, embeddings = self.predict(image)
        objectness = self.class_probs(embeddings, self.trained.train_text).sum(dim=1)
        order = objectness.argsort(descending=True, stable=True)[: self.max_proposals]
        return masks[order].contiguous()
