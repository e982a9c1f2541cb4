"""Proposals from a pretrained MaskFormer, Mask2Former or OneFormer on the hub: its query masks,
class-agnostic, ranked by objectness.

    generator = QueryMaskProposals("facebook/mask2former-swin-large-coco-panoptic", max_proposals=100)
    masks = generator.generate(image)   # [K, H, W] mask probabilities, most object-like first

The image is resized as the checkpoint's image processor does (shorter side to `size.shortest_edge`,
800 by default, the longer at most `size.longest_edge`, 1333), normalised with its mean and
std, and zero-padded to a multiple of `size_divisor` (32). Each query's mask is the sigmoid of
its mask logits, sampled bilinearly at the image's pixels. Its objectness is 1 - p(no object)
from the query's class head; the classes themselves are ignored, so the checkpoint's
vocabulary (COCO panoptic, ADE20K, ...) does not limit what CLIP then names. OneFormer is run
with its "the task is panoptic" task token. Then the cap of every generator: masks empty at 0.5
and near-duplicates dropped, at most `max_proposals`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..catalogue import DEFAULT_DUPLICATE_IOU, DEFAULT_MAX_PROPOSALS
from ..errors import SettingError, ZssegError
from ..models.hub import ModelKind, quiet_transformers
from ..data.images import check_rgb_array, shorter_side_scale
from .base import ProposalConfig, select_masks
from .pretrained import PretrainedProposals, resized_pixels, sample_logits

QUERY_MASK_KIND = ModelKind("MaskFormer", ("maskformer", "mask2former", "oneformer"), "proposals", "mask2former:{}", "mask2former-model")
QUERY_MASK_CLASSES = {
    "maskformer": "MaskFormerForInstanceSegmentation",
    "mask2former": "Mask2FormerForUniversalSegmentation",
    "oneformer": "OneFormerForUniversalSegmentation",
}
ONEFORMER_TASK = "the task is panoptic"


@dataclass(frozen=True)
class QueryMaskConfig(ProposalConfig):
    """A pretrained MaskFormer-family network's settings (see `QueryMaskProposals`)."""

    name: ClassVar[str] = "mask2former"
    model: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if not self.model:
            raise SettingError("proposals", "the mask2former proposals need a pretrained model: mask2former:HUB_ID or "
                               "mask2former:FOLDER, for example mask2former:facebook/mask2former-swin-large-coco-panoptic")


class QueryMaskProposals(PretrainedProposals):
    """Query masks of a pretrained universal segmentation network (see the module docstring).

    Args:
        model: hub id or folder of a transformers MaskFormer, Mask2Former or OneFormer
            checkpoint (required: there is no default).
        max_proposals, duplicate_iou: the cap every generator applies.
        device: where the network runs.
    """

    name = "mask2former"
    kind, classes = QUERY_MASK_KIND, QUERY_MASK_CLASSES
    Config = QueryMaskConfig

    def __init__(self, model: str | None = None, max_proposals: int = DEFAULT_MAX_PROPOSALS, duplicate_iou: float = DEFAULT_DUPLICATE_IOU,
                 device: str = "cpu"):
        QueryMaskConfig(max_proposals, duplicate_iou, model)  # checks them before the model loads
        super().__init__(model, max_proposals=max_proposals, duplicate_iou=duplicate_iou, device=device)
        preprocessing = self.preprocessing
        size = preprocessing.get("size") or {}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        self.shortest = int(size.get("shortest_edge", 800))
        self.longest = int(size.get("longest_edge") or preprocessing.get("max_size") or 1333)
        self.divisor = int(preprocessing.get("size_divisor") or preprocessing.get("size_divisibility") or 32)
        self.task_inputs = None
        if self.model.config.model_type == "oneformer":
            self.task_inputs = self._task_tokens(model)

    def _task_tokens(self, name: str) -> torch.Tensor:
        """OneFormer's task input: the token ids of "the task is panoptic", padded as its processor does."""
        from transformers import AutoTokenizer

        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=self.local_only)
        except (OSError, ValueError) as error:
            raise ZssegError(f"OneFormer '{name}' has no usable tokenizer for its task token: {str(error).splitlines()[0]}") from None
        length = int(self.model.config.task_seq_len)
        ids = tokenizer([ONEFORMER_TASK], padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return ids["input_ids"].to(self.device)

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask probabilities `[Q, H, W]` float32 at the image's size and each query's
        objectness `[Q]`, 1 - p(no object)."""
        check_rgb_array(image)
        height, width = image.shape[:2]
        scale = shorter_side_scale(height, width, self.shortest, self.longest)
        resized = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
        padded = tuple(-(-side // self.divisor) * self.divisor for side in resized)
        pixels = resized_pixels(image, resized, self.mean, self.std, padded).to(self.device)
        inputs = {"pixel_values": pixels, "pixel_mask": torch.ones(1, *padded, dtype=torch.long, device=self.device)}
        if self.task_inputs is not None:
            inputs["task_inputs"] = self.task_inputs
        output = self.model(**inputs)
        logits = sample_logits(output.masks_queries_logits[0].float(), padded, resized, (height, width))
        objectness = 1.0 - output.class_queries_logits[0].float().softmax(dim=-1)[:, -1]
        return logits.sigmoid().cpu(), objectness.cpu()

    def generate(self, image: np.ndarray) -> torch.Tensor:
        masks, objectness = self.predict(image)
        order = objectness.argsort(descending=True, stable=True)
        masks = masks[order]
        binary = (masks >= 0.5).numpy()
        kept = select_masks(binary, self.max_proposals, self.duplicate_iou, return_indices=True)
        return masks[torch.from_numpy(kept)].contiguous()
