"""Region classification with CLIP (Eq. 1 of the paper).

For each mask proposal: binarise at 0.5 (empty masks are dropped), crop the bounding box of its
foreground, replace the background by CLIP's pixel mean, resize bicubically to CLIP's input
size (without antialiasing and without keeping the aspect ratio, as the reference code), encode;
class probabilities are softmax(100 * cos(image, text)) over the vocabulary. How a mask becomes
a crop is a `CropConfig`: the threshold (the reference uses 0.4 on ADE20K-150 and 0.3 on
ADE20K-847 and Cityscapes, `zsseg.evaluation.reference_settings`), and the reference's other crop settings, which
its configs leave at the paper's values (fill, box expansion, soft "matting", resizing).

Works with masks from any source: `RegionClassifier(clip).classify(image, masks, vocabulary)`,
or `classify_each(image, masks, vocabulary)` with masks given one at a time (large images).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch.nn import functional as F

from ..models.loading import ClipModel
from ..catalogue import DEFAULT_BATCH_SIZE, DEFAULT_MASK_THRESHOLD
from ..errors import SettingError, ZssegError
from ..data.images import ImageInput, image_tensor
from ..prompts.encoding import PromptEncoder, PromptLike, VocabularyEmbedding
from ..data.vocabulary import Vocabulary, as_vocabulary

MASK_FILLS = ("mean", "zero")


@dataclass(frozen=True)
class CropConfig:
    """How Eq. 1 turns a mask into CLIP's input: the arguments of the reference's
    `MaskFormerClipAdapter` (its config's `MODEL.CLIP_ADAPTER` names in brackets).

    Attributes:
        threshold: a mask's pixels above it are its foreground; a mask with none is dropped
            (MASK_THR, 0.5).
        fill: what the background becomes: "mean", CLIP's pixel mean (0 after normalising), or
            "zero", black (MASK_FILL).
        expand_ratio: the foreground's box is scaled about its centre by this much, then clipped
            to the image (MASK_EXPAND_RATIO, 1.0).
        matting: blend each pixel with the fill by the mask's own value instead of its binarised
            one; the box is still the binarised mask's (MASK_MATTING, False).
        resize: resize each crop to CLIP's input size; False encodes each crop alone at its own
            size, the position embeddings resized to its patch grid (REGION_RESIZED, True).
    """

    threshold: float = DEFAULT_MASK_THRESHOLD
    fill: str = "mean"
    expand_ratio: float = 1.0
    matting: bool = False
    resize: bool = True

    def __post_init__(self):
        if not 0.0 <= self.threshold < 1.0:
            raise SettingError("mask_threshold", f"{{setting}} must be in [0, 1), got {self.threshold}")
        if self.fill not in MASK_FILLS:
            raise SettingError("mask_fill", f"unknown {{setting}} '{self.fill}'; choose from {', '.join(MASK_FILLS)}")
        if not self.expand_ratio > 0:
            raise SettingError("mask_expand_ratio", f"{{setting}} must be above 0, got {self.expand_ratio}")


@dataclass(frozen=True)
class RegionConfig:
    """Eq. 1's settings: how masks become crops and crops class probabilities.

    Attributes:
        prompt: how class names are put to CLIP's text tower (anything `load_prompt` takes);
            None: the prompt a trained network came with, else CLIP's 80 ImageNet templates.
        temperature: of the softmax over 100 x cosine (None: the model's own, 100 for CLIP).
        batch_size: crops per CLIP forward pass.
        crop: how a mask becomes a crop (`CropConfig`).
        text_cache: keep text features in the disk cache (`zsseg.prompts.text_cache`).
    """

    prompt: object = None
    temperature: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    crop: CropConfig = CropConfig()
    text_cache: bool = True

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SettingError("batch_size", f"{{setting}} must be at least 1, got {self.batch_size}")
        if self.temperature is not None and not self.temperature > 0:
            raise SettingError("temperature", f"{{setting}} must be above 0, got {self.temperature}")


def mask_boxes(binary: torch.Tensor) -> torch.Tensor:
    """`[K, 4]` int64 boxes (x0, y0, x1, y1), end-exclusive, of non-empty binary masks `[K, H, W]`."""
    rows, cols = binary.any(dim=2), binary.any(dim=1)
    h, w = binary.shape[1:]
    y0 = rows.float().argmax(dim=1)
    y1 = h - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = w - cols.flip(1).float().argmax(dim=1)
    return torch.stack([x0, y0, x1, y1], dim=1)


def expand_boxes(boxes: torch.Tensor, ratio: float, height: int, width: int) -> torch.Tensor:
    """`[K, 4]` int64 boxes scaled by `ratio` about their centres and clipped to the image: the
    reference's `expand_box` (float32 arithmetic, `int()` truncation) and `crop_with_mask`'s clip."""
    if ratio == 1.0:
        return boxes
    x0, y0, x1, y1 = boxes.float().unbind(dim=1)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    w, h = (x1 - x0) * ratio, (y1 - y0) * ratio
    expanded = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1).trunc().long()
    low = torch.zeros(4, dtype=torch.long)
    high = torch.tensor([width, height, width, height])
    return torch.maximum(torch.minimum(expanded, high), low)


def crop_regions(
    image: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    threshold: float = 0.5,
    interpolation: str = "bicubic",
    config: CropConfig | None = None,
) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """Masked, normalised crops ready for CLIP's image tower.

    Args:
        image: `[3, H, W]` float, pixel values in [0, 255].
        masks: `[K, H, W]` float in [0, 1] (or bool).
        size: output side (CLIP's input size).
        mean, std: CLIP normalisation for pixels in [0, 1].
        threshold: masks are binarised with `mask > threshold` (where no `config` is given).
        interpolation: "bicubic" (CLIP's, the paper's) or "bilinear" (the model's own
            preprocessing, where it is that).
        config: how masks become crops (threshold, fill, box expansion, matting, resizing).

    Returns:
        crops `[K', 3, size, size]` float32 normalised, background = the fill (the mean: 0
        after normalising), or with `config.resize` False a list of K' `[1, 3, h, w]` crops;
        keep `[K]` bool, which masks were non-empty (K' = keep.sum()).
    """
    crops, keep, _ = _crops(image, masks, size, mean, std, interpolation, config or CropConfig(threshold=threshold), distinct=False)
    return crops, keep


@dataclass
class DistinctCrops:
    """Eq. 1's crops of an image's masks, each distinct one made once.

    Attributes:
        crops: `[D, 3, s, s]` the distinct crops (or a list of D `[1, 3, h, w]` crops where
            they are not resized).
        keep: `[K]` bool, which masks were non-empty after binarisation (K' of them).
        inverse: `[K']` long, the crop of each kept mask: masks whose binarised foreground (the
            soft mask, with matting) is the same give the very same crop, so their CLIP
            features are the same too.
    """

    crops: torch.Tensor | list[torch.Tensor]
    keep: torch.Tensor
    inverse: torch.Tensor


def distinct_masks(weights: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """The first index of each distinct mask of `weights` `[K, H, W]` (compared exactly), and
    `[K]` long, the position among those of each mask's twin."""
    firsts: list[int] = []
    inverse: list[int] = []
    by_digest: dict[bytes, list[int]] = {}
    for index, weight in enumerate(weights):
        data = np.packbits(weight.numpy()) if weight.dtype == torch.bool else weight.contiguous().numpy()
        same = by_digest.setdefault(hashlib.blake2b(data.tobytes(), digest_size=16).digest(), [])
        twin = next((slot for slot in same if torch.equal(weights[firsts[slot]], weight)), None)
        if twin is None:
            twin = len(firsts)
            firsts.append(index)
            same.append(twin)
        inverse.append(twin)
    return firsts, torch.tensor(inverse, dtype=torch.long)


def _crops(image: torch.Tensor, masks: torch.Tensor, size: int, mean: tuple, std: tuple, interpolation: str, config: CropConfig,
           distinct: bool) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """`crop_regions`, and with `distinct` only one crop of masks that give the same one: (crops,
    keep, inverse) as `DistinctCrops` holds them."""
    if masks.ndim != 3 or masks.shape[1:] != image.shape[1:]:
        raise ZssegError(f"masks must be [K, H, W] matching the image's {tuple(image.shape[1:])}, got {tuple(masks.shape)}")
    binary = masks > config.threshold
    keep = binary.flatten(1).any(dim=1)
    binary = binary[keep]
    weights = masks[keep].float() if config.matting else binary
    if distinct:
        firsts, inverse = distinct_masks(weights)
        binary, weights = binary[firsts], weights[firsts]
    else:
        inverse = torch.arange(len(weights))
    boxes = expand_boxes(mask_boxes(binary), config.expand_ratio, *image.shape[1:])
    cropper = _Cropper(size, mean, std, interpolation, config)
    normalised = cropper.normalise(image) if len(weights) else image
    crops = [cropper(normalised, weight, box) for weight, box in zip(weights, boxes.tolist())]
    if not config.resize:
        return crops, keep, inverse
    if not crops:
        return torch.empty(0, 3, size, size), keep, inverse
    return torch.cat(crops), keep, inverse


class _Cropper:
    """One mask's crop for Eq. 1: `(image, weight, box)` -> `[1, 3, s, s]` (or its own size)."""

    def __init__(self, size: int, mean: tuple, std: tuple, interpolation: str, config: CropConfig):
        self.size, self.interpolation, self.config = size, interpolation, config
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255
        # The reference blends pixels with the fill before normalising: m x + (1 - m) f. Normalised,
        # that is m x' + (1 - m) f', and f' = 0 for the mean fill.
        self.fill = None if config.fill == "mean" else -self.mean / self.std

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """`image` `[3, H, W]` in [0, 255], normalised as CLIP's input: once per image, for all
        its crops (each pixel's value is the one a crop's own normalisation gives)."""
        return (image.float() - self.mean) / self.std

    def __call__(self, normalised: torch.Tensor, weight: torch.Tensor, box: list[int]) -> torch.Tensor:
        """`normalised` `[3, H, W]` (`normalise`), `weight` `[H, W]` (binary, or the soft mask
        with matting), `box` (x0, y0, x1, y1) end-exclusive within them."""
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            raise ZssegError(f"the mask box expansion ratio {self.config.expand_ratio} shrinks a mask's box to nothing")
        m = weight[y0:y1, x0:x1]
        region = normalised[:, y0:y1, x0:x1] * m
        if self.fill is not None:
            region = region + (1 - m.float()) * self.fill
        if not self.config.resize:
            return region[None]
        # Plain bicubic (no antialiasing) of the normalised crop, as the reference code's
        # `F.interpolate(mode="bicubic")`: its crops are what the paper's numbers were made with.
        return F.interpolate(region[None], size=(self.size, self.size), mode=self.interpolation, align_corners=False)


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
    """CLIP classification of masked crops (Eq. 1), for masks from any source.

    Args:
        clip: the CLIP.
        prompt: anything `load_prompt` takes.
        temperature: of Eq. 1's softmax (default: the model's, 100 for CLIP).
        mask_threshold: shorthand for `crop=CropConfig(threshold=...)`.
        batch_size: crops per CLIP forward pass.
        text_cache: the disk cache of text features (see `PromptEncoder`).
        crop: how masks become crops (`CropConfig`).
    """

    def __init__(
        self,
        clip: ClipModel,
        prompt: PromptLike = "imagenet",
        temperature: float | None = None,
        mask_threshold: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        text_cache: bool = True,
        crop: CropConfig | None = None,
    ):
        if crop is not None and mask_threshold is not None and mask_threshold != crop.threshold:
            raise SettingError("mask_threshold", f"two mask thresholds: {{setting}}={mask_threshold} and crop.threshold={crop.threshold}")
        crop = crop or CropConfig(**({} if mask_threshold is None else {"threshold": mask_threshold}))
        self.config = RegionConfig(prompt, temperature, batch_size, crop, bool(text_cache))
        self.clip = clip
        self.prompts = PromptEncoder(clip, prompt, cache=text_cache)
        self.temperature = clip.temperature if temperature is None else temperature  # Eq. 1's 100 for CLIP
        self.crop = crop
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, clip: ClipModel, config: RegionConfig, prompt: PromptLike | None = None) -> "RegionClassifier":
        """The classifier of `config` on `clip`; `prompt` where the config names none."""
        return cls(clip, config.prompt if config.prompt is not None else prompt or "imagenet", config.temperature,
                   batch_size=config.batch_size, text_cache=config.text_cache, crop=config.crop)

    @property
    def mask_threshold(self) -> float:
        return self.crop.threshold

    def embed_vocabulary(self, vocabulary: Vocabulary | str | list[str]) -> VocabularyEmbedding:
        return self.prompts.encode_vocabulary(as_vocabulary(vocabulary))

    def crops(self, image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
        return crop_regions(image, masks, self.clip.image_size, self.clip.image_mean, self.clip.image_std,
                            interpolation=self.clip.interpolation, config=self.crop)

    def distinct_crops(self, image: torch.Tensor, masks: torch.Tensor) -> DistinctCrops:
        """`crops`, each distinct crop made once (`DistinctCrops`): what `encode_distinct` takes."""
        return DistinctCrops(*_crops(image, masks, self.clip.image_size, self.clip.image_mean, self.clip.image_std,
                                     self.clip.interpolation, self.crop, distinct=True))

    def encode_distinct(self, crops: DistinctCrops) -> torch.Tensor:
        """`[K', D]` image embeddings of every kept mask, each distinct crop encoded once."""
        return self.encode_crops(crops.crops)[crops.inverse]

    def encode_crops(self, crops: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """`[K', D]` normalised image embeddings, encoded in batches (crops of their own sizes,
        `CropConfig.resize` False: one at a time, as the reference does)."""
        if len(crops) == 0:
            return torch.empty(0, self.clip.embed_dim)
        if isinstance(crops, list):
            return torch.cat([self._encode_alone(crop) for crop in crops])
        return torch.cat([self.clip.encode_images(crops[i : i + self.batch_size]) for i in range(0, len(crops), self.batch_size)])

    def _encode_alone(self, crop: torch.Tensor) -> torch.Tensor:
        try:
            return self.clip.encode_images(crop)
        except RuntimeError as error:  # smaller than a patch: no grid for the position embeddings
            height, width = crop.shape[-2:]
            raise ZssegError(
                f"a {width}x{height} crop is too small for the image tower of '{self.clip.source}' unresized "
                f"({str(error).splitlines()[0][:120]}); resize the crops, as the paper does"
            ) from None

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
            vocabulary: class names (see `zsseg.data.vocabulary`) or an embedding made by `embed_vocabulary`.
        """
        text = vocabulary if isinstance(vocabulary, VocabularyEmbedding) else self.embed_vocabulary(vocabulary)
        crops = self.distinct_crops(image_tensor(image), torch.as_tensor(masks).float())
        probs, logits = self.scores(self.encode_distinct(crops), text)
        return RegionScores(probs=probs, keep=crops.keep, logits=logits)

    def classify_each(
        self,
        image: ImageInput | torch.Tensor,
        masks: Iterable[np.ndarray | torch.Tensor],
        vocabulary: Vocabulary | str | list[str] | VocabularyEmbedding,
    ) -> RegionScores:
        """`classify` for masks `[H, W]` given one at a time: the same crops, batches and
        probabilities as `classify` on their stack, without the float `[K, H, W]` stack (14 GB
        for 300 masks of a 12-megapixel photo)."""
        text = vocabulary if isinstance(vocabulary, VocabularyEmbedding) else self.embed_vocabulary(vocabulary)
        pixels = image_tensor(image)
        height, width = pixels.shape[1:]
        cropper = _Cropper(self.clip.image_size, self.clip.image_mean, self.clip.image_std, self.clip.interpolation, self.crop)
        normalised = cropper.normalise(pixels)
        keep, features, pending = [], [], []
        for mask in masks:
            mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
            if tuple(mask.shape) != (height, width):
                raise ZssegError(f"a mask must be [H, W] matching the image's {(height, width)}, got {tuple(mask.shape)}")
            binary = mask.float() > self.mask_threshold
            keep.append(bool(binary.any()))
            if not keep[-1]:
                continue
            box = expand_boxes(mask_boxes(binary[None]), self.crop.expand_ratio, height, width)[0].tolist()
            pending.append(cropper(normalised, mask.float() if self.crop.matting else binary, box))
            if len(pending) == self.batch_size or not self.crop.resize:
                features.append(self.encode_crops(torch.cat(pending) if self.crop.resize else pending))
                pending = []
        if pending:
            features.append(self.encode_crops(torch.cat(pending)))
        features = torch.cat(features) if features else torch.empty(0, self.clip.embed_dim)
        probs, logits = self.scores(features, text)
        return RegionScores(probs=probs, keep=torch.tensor(keep, dtype=torch.bool), logits=logits)
