"""Region classification with CLIP (Eq. 1 of the paper).

For each mask proposal: binarise at 0.5 (empty masks are dropped), crop the bounding box of its
foreground, replace the background by CLIP's pixel mean, resize bicubically to CLIP's input
size (without antialiasing and without keeping the aspect ratio, as the reference code), encode;
class probabilities are softmax(100 * cos(image, text)) over the vocabulary. The threshold is a
setting: the reference uses 0.4 on ADE20K-150 and 0.3 on ADE20K-847 and Cityscapes
(`zsseg.benchmarks`).

Works with masks from any source: `RegionClassifier(clip).classify(image, masks, vocabulary)`,
or `classify_each(image, masks, vocabulary)` with masks given one at a time (large images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch.nn import functional as F

from .clip import ClipModel
from .errors import ZssegError
from .images import ImageInput, image_tensor
from .prompts import PromptEncoder, PromptLike, VocabularyEmbedding
from .vocabulary import Vocabulary, as_vocabulary



def mask_boxes(binary: torch.Tensor) -> torch.Tensor:
    """`[K, 4]` int64 boxes (x0, y0, x1, y1), end-exclusive, of non-empty binary masks `[K, H, W]`."""
    rows, cols = binary.any(dim=2), binary.any(dim=1)
    h, w = binary.shape[1:]
    y0 = rows.float().argmax(dim=1)
    y1 = h - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = w - cols.flip(1).float().argmax(dim=1)
    return torch.stack([x0, y0, x1, y1], dim=1)


def crop_regions(
    image: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    threshold: float = 0.5,
    interpolation: str = "bicubic",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked, normalised crops ready for CLIP's image tower.

    Args:
        image: `[3, H, W]` float, pixel values in [0, 255].
        masks: `[K, H, W]` float in [0, 1] (or bool).
        size: output side (CLIP's input size).
        mean, std: CLIP normalisation for pixels in [0, 1].
        threshold: masks are binarised with `mask > threshold`.
        interpolation: "bicubic" (CLIP's, the paper's) or "bilinear" (the model's own
            preprocessing, where it is that).

    Returns:
        crops `[K', 3, size, size]` float32 normalised, background = mean (0 after normalising);
        keep `[K]` bool, which masks were non-empty (K' = keep.sum()).
    """
    if masks.ndim != 3 or masks.shape[1:] != image.shape[1:]:
        raise ZssegError(f"masks must be [K, H, W] matching the image's {tuple(image.shape[1:])}, got {tuple(masks.shape)}")
    binary = masks > threshold
    keep = binary.flatten(1).any(dim=1)
    binary = binary[keep]
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255
    normalised = (image.float() - mean_t) / std_t
    crops = []
    for mask, (x0, y0, x1, y1) in zip(binary, mask_boxes(binary).tolist()):
        region = normalised[:, y0:y1, x0:x1] * mask[y0:y1, x0:x1]
        # Plain bicubic (no antialiasing) of the normalised crop, as the reference code's
        # `F.interpolate(mode="bicubic")`: its crops are what the paper's numbers were made with.
        crops.append(F.interpolate(region[None], size=(size, size), mode=interpolation, align_corners=False))
    if not crops:
        return torch.empty(0, 3, size, size), keep
    return torch.cat(crops), keep


@dataclass
class RegionScores:
    """Output of region classification.

    Attributes:
        probs: `[K', C]` class probabilities of the kept masks (rows sum to 1).
        keep: `[K]` bool, masks that were non-empty after binarisation.
        logits: `[K', C]` the logits before the softmax (temperature x cosine).
    """

    probs: torch.Tensor
    keep: torch.Tensor
    logits: torch.Tensor


class RegionClassifier:
    """CLIP classification of masked crops (Eq. 1), for masks from any source."""

    def __init__(
        self,
        clip: ClipModel,
        prompt: PromptLike = "imagenet",
        temperature: float | None = None,
        mask_threshold: float = 0.5,
        batch_size: int = 32,
        text_cache: bool = True,
    ):
        self.clip = clip
        self.prompts = PromptEncoder(clip, prompt, cache=text_cache)
        self.temperature = clip.temperature if temperature is None else temperature  # Eq. 1's 100 for CLIP
        self.mask_threshold = mask_threshold
        self.batch_size = batch_size

    def embed_vocabulary(self, vocabulary: Vocabulary | str | list[str]) -> VocabularyEmbedding:
        return self.prompts.encode_vocabulary(as_vocabulary(vocabulary))

    def crops(self, image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return crop_regions(
            image, masks, self.clip.image_size, self.clip.image_mean, self.clip.image_std, self.mask_threshold,
            self.clip.interpolation,
        )

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """`[K', D]` normalised image embeddings, encoded in batches."""
        if len(crops) == 0:
            return torch.empty(0, self.clip.embed_dim)
        return torch.cat([self.clip.encode_images(crops[i : i + self.batch_size]) for i in range(0, len(crops), self.batch_size)])

    def scores(self, image_features: torch.Tensor, text: VocabularyEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        logits = text.class_logits(image_features.to(text.features.device), self.temperature).float()
        return logits.softmax(dim=-1).cpu(), logits.cpu()

    def classify(
        self,
        image: ImageInput,
        masks: np.ndarray | torch.Tensor,
        vocabulary: Vocabulary | str | list[str] | VocabularyEmbedding,
    ) -> RegionScores:
        """Classify each mask of `image` into the vocabulary.

        Args:
            image: a path, PIL image, or HWC uint8 array.
            masks: `[K, H, W]` float in [0, 1] or bool, at the image's size.
            vocabulary: class names (see `zsseg.vocabulary`) or an embedding made by `embed_vocabulary`.
        """
        text = vocabulary if isinstance(vocabulary, VocabularyEmbedding) else self.embed_vocabulary(vocabulary)
        crops, keep = self.crops(image_tensor(image), torch.as_tensor(masks).float())
        probs, logits = self.scores(self.encode_crops(crops), text)
        return RegionScores(probs=probs, keep=keep, logits=logits)

    def classify_each(
        self,
        image: ImageInput | torch.Tensor,
        masks: Iterable[np.ndarray | torch.Tensor],
        vocabulary: Vocabulary | str | list[str] | VocabularyEmbedding,
    ) -> RegionScores:
        """`classify` for masks `[H, W]` given one at a time: the same crops, batches and
        probabilities as `classify` on their stack, without the float `[K, H, W]` stack (14 GB
        for 300 masks of a 12-megapixel photo). Each mask is cropped from the image's part
        within its bounding box, which is what `crop_regions` crops from the whole image."""
        text = vocabulary if isinstance(vocabulary, VocabularyEmbedding) else self.embed_vocabulary(vocabulary)
        pixels = image_tensor(image)
        keep, features, pending = [], [], []
        for mask in masks:
            mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
            if tuple(mask.shape) != tuple(pixels.shape[1:]):
                raise ZssegError(f"a mask must be [H, W] matching the image's {tuple(pixels.shape[1:])}, got {tuple(mask.shape)}")
            binary = mask.float() > self.mask_threshold
            keep.append(bool(binary.any()))
            if not keep[-1]:
                continue
            x0, y0, x1, y1 = mask_boxes(binary[None])[0].tolist()
            pending.append(self.crops(pixels[:, y0:y1, x0:x1], mask[y0:y1, x0:x1].float()[None])[0])
            if len(pending) == self.batch_size:
                features.append(self.encode_crops(torch.cat(pending)))
                pending = []
        if pending:
            features.append(self.encode_crops(torch.cat(pending)))
        features = torch.cat(features) if features else torch.empty(0, self.clip.embed_dim)
        probs, logits = self.scores(features, text)
        return RegionScores(probs=probs, keep=torch.tensor(keep, dtype=torch.bool), logits=logits)
