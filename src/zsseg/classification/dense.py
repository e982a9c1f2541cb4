"""Dense CLIP: per-pixel CLIP features from sliding windows, training-free.

The paper's first FCN baseline classifies every pixel with CLIP's own image tower: CLIP's ViT
runs on overlapping windows of its input size (224, overlap 2/3, as the paper's code), the last
layer's patch tokens (not the CLS token) go through the tower's final layer norm and projection,
and each patch then has an embedding in the space of the text embeddings. Overlapping windows
are averaged on a grid at 1/4 of the processing size.

Two modes:

- "plain": the tower as trained, as the paper's baseline.
- "sclip": SCLIP's correlative self-attention (Wang et al., "SCLIP: Rethinking Self-Attention
  for Dense Vision-Language Inference", ECCV 2024): in the last encoder layer only, the
  attention is softmax(Q Q^T * scale) + softmax(K K^T * scale) per head, with that layer's own
  weights, and its feed-forward block is dropped; patch tokens then describe their own
  surroundings instead of the whole image.

Masks can be classified from these features by pooling (`pool_masks`, a fast approximation of
Eq. 1), or every cell directly (`dense_logits`):

    clip = load_clip()
    dense = DenseClip(clip, mode="sclip")
    image = read_image("photo.jpg")
    image = resize_image(image, dense.processing_size(*image.shape[:2], max_size=640))
    features = dense.features(image)
    text = PromptEncoder(clip).encode_vocabulary(Vocabulary.parse("cat; sofa, couch; wall"))
    labels = dense_logits(features, text).argmax(dim=0)  # [H/4, W/4]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..catalogue import DEFAULT_OVERLAP, DENSE_MODES
from ..models.base import dense_tower
from ..models.loading import ClipModel
from ..errors import SettingError, ZssegError
from ..prompts.encoding import VocabularyEmbedding

FEATURE_STRIDE = 4  # features are kept at 1/4 of the processing size
_CHUNK_ELEMENTS = 1 << 22  # bounds the [cells, synonyms] block of `dense_logits`


def sliding_windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of `window` x `window` tiles covering a `height` x `width` image.

    Along each axis the corners are min(i * stride, side - window) for i < ceil((side - window)
    / stride) + 1: the last tile ends at the border and every pixel is covered. Row-major order.

    Raises:
        ZssegError: a side is smaller than the window, or the stride is not positive.
    """
    if height < window or width < window:
        raise ZssegError(f"the image ({height}x{width}) must be at least the window ({window}) on each side")
    if stride < 1:
        raise ZssegError(f"the window stride must be positive, got {stride}")

    def corners(side: int) -> list[int]:
        return [min(i * stride, side - window) for i in range(math.ceil((side - window) / stride) + 1)]

    return [(y, x) for y in corners(height) for x in corners(width)]


def window_stride(window: int, overlap: float, feature_stride: int = FEATURE_STRIDE) -> int:
    """Pixels between windows: window * (1 - overlap) rounded to a multiple of `feature_stride`,
    at least `feature_stride`.

    Raises:
        ZssegError: `overlap` is outside [0, 1).
    """
    if not 0 <= overlap < 1:
        raise ZssegError(f"the window overlap must be in [0, 1), got {overlap}")
    return max(feature_stride, round(window * (1 - overlap) / feature_stride) * feature_stride)


def _multiple(value: float, limit: int | None = None) -> int:
    """`value` rounded to a multiple of FEATURE_STRIDE, at least FEATURE_STRIDE, at most `limit`
    (rounded down to a multiple) when given."""
    out = max(FEATURE_STRIDE, round(value / FEATURE_STRIDE) * FEATURE_STRIDE)
    if limit is not None:
        out = min(out, max(FEATURE_STRIDE, limit // FEATURE_STRIDE * FEATURE_STRIDE))
    return out


@dataclass
class DenseFeatures:
    """CLIP embeddings on a grid over the processing image.

    Attributes:
        features: `[D, h, w]` float32 projected patch embeddings (not normalised), averaged over
            the windows covering each cell; cell (i, j) covers the processing image's pixels
            [i*s, (i+1)*s) x [j*s, (j+1)*s), s = `stride`. On the CLIP's device.
        stride: pixels of the processing image per cell (FEATURE_STRIDE).
        windows: CLIP forward passes (one per window) used.
    """

    features: torch.Tensor
    stride: int
    windows: int


@dataclass(frozen=True)
class DenseConfig:
    """Dense CLIP's settings (the fast, dense-clip and fcn methods).

    Attributes:
        mode: "plain", the image tower's patch features as trained (the paper's), or "sclip",
            SCLIP's correlative self-attention in the last layer, which makes them local.
        overlap: of the sliding windows, in [0, 1) (dense-clip and fcn; the paper's code: 2/3).
    """

    mode: str = "plain"
    overlap: float = DEFAULT_OVERLAP

    def __post_init__(self):
        if self.mode not in DENSE_MODES:
            raise SettingError("dense_mode", f"unknown {{setting}} '{self.mode}'; choose one of {', '.join(DENSE_MODES)}")
        if not 0.0 <= self.overlap < 1.0:
            raise SettingError("overlap", f"{{setting}} must be in [0, 1), got {self.overlap}")


class DenseClip:
    """Per-pixel CLIP features by sliding windows over an image.

    Args:
        clip: the CLIP whose image tower is used.
        mode: "plain" (the tower as trained) or "sclip" (correlative self-attention in the last
            layer, SCLIP).
        window: side of the square windows, a multiple of FEATURE_STRIDE (default: CLIP's
            input size). Other sizes than CLIP's interpolate its position embeddings.
        overlap: fraction of a window shared with the next one, in [0, 1).
        batch_size: windows per forward pass of the tower.
    """

    def __init__(
        self,
        clip: ClipModel,
        mode: str = "plain",
        window: int | None = None,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int = 8,
    ):
        if mode not in DENSE_MODES:
            raise ZssegError(f"unknown dense CLIP mode '{mode}'; choose one of {', '.join(DENSE_MODES)}")
        dense_tower(clip, mode)
        window = clip.image_size if window is None else window
        patch = clip.dense_stride
        if not isinstance(window, int) or window % FEATURE_STRIDE or window < patch:
            raise ZssegError(
                f"the window must be a multiple of {FEATURE_STRIDE} and at least CLIP's patch size ({patch}), got {window}"
            )
        if batch_size < 1:
            raise ZssegError(f"the batch size must be at least 1, got {batch_size}")
        self.clip = clip
        self.mode = mode
        self.window = window
        self.overlap = overlap
        self.stride = window_stride(window, overlap)
        self.batch_size = batch_size
        self.forwards = 0

    def processing_size(self, height: int, width: int, max_size: int | None) -> tuple[int, int]:
        """(h, w) an image is resized to before `features`: the longer side at most `max_size`
        (None: unchanged), aspect kept, both sides rounded to multiples of FEATURE_STRIDE."""
        scale = 1.0 if max_size is None or max(height, width) <= max_size else max_size / max(height, width)
        return _multiple(height * scale, max_size), _multiple(width * scale, max_size)

    def fast_size(self, height: int, width: int) -> tuple[int, int]:
        """Processing size of the fast mode: scaled (up or down) so that the shorter side is at
        most `window` and the longer at most 2 * `window`, sides multiples of FEATURE_STRIDE.
        With overlap 0 such an image takes at most 2 windows."""
        scale = min(self.window / min(height, width), 2 * self.window / max(height, width))
        return _multiple(height * scale), _multiple(width * scale)

    @torch.no_grad()
    def window_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[B, 3, window, window]` CLIP-normalised pixels -> `[B, D, g, g]` float32 projected
        patch embeddings (g = window // patch size), on the CLIP's device (`ClipModel.dense_features`)."""
        features = self.clip.dense_features(pixels, self.mode)
        self.forwards += len(pixels)
        return features

    @torch.no_grad()
    def features(self, image: np.ndarray) -> DenseFeatures:
        """Dense features of an HWC uint8 RGB image whose sides are multiples of FEATURE_STRIDE
        (as `processing_size` and `fast_size` make them).

        The image is normalised as CLIP's input, padded at the bottom and right with zeros (CLIP's
        mean colour) to at least a window on each side, and cut into the windows of
        `sliding_windows`; each window's patch grid is upsampled bilinearly to the cells it
        covers, and every cell averages the windows covering it.

        Raises:
            ZssegError: the image is not HWC uint8 RGB with sides multiples of FEATURE_STRIDE.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            shape = getattr(image, "shape", None)
            raise ZssegError(f"dense CLIP needs an HWC uint8 RGB array, got {type(image).__name__} of shape {shape}")
        height, width = image.shape[:2]
        s = FEATURE_STRIDE
        if height % s or width % s or not height or not width:
            raise ZssegError(
                f"the image's sides must be positive multiples of {s} (resize it to DenseClip.processing_size), got {height}x{width}"
            )
        device = self.clip.device
        mean = torch.tensor(self.clip.image_mean, device=device).view(3, 1, 1)
        std = torch.tensor(self.clip.image_std, device=device).view(3, 1, 1)
        pixels = (torch.from_numpy(image).to(device).permute(2, 0, 1).float() / 255 - mean) / std
        padded_h, padded_w = max(height, self.window), max(width, self.window)
        pixels = F.pad(pixels, (0, padded_w - width, 0, padded_h - height))

        corners = sliding_windows(padded_h, padded_w, self.window, self.stride)
        cells = self.window // s
        total = torch.zeros(self.clip.embed_dim, padded_h // s, padded_w // s, device=device)
        count = torch.zeros(padded_h // s, padded_w // s, device=device)
        for start in range(0, len(corners), self.batch_size):
            batch = corners[start : start + self.batch_size]
            crops = torch.stack([pixels[:, y : y + self.window, x : x + self.window] for y, x in batch])
            grids = F.interpolate(self.window_features(crops).to(device), size=(cells, cells), mode="bilinear", align_corners=False)
            for grid, (y, x) in zip(grids, batch):
                total[:, y // s : y // s + cells, x // s : x // s + cells] += grid
                count[y // s : y // s + cells, x // s : x // s + cells] += 1
        features = (total / count)[:, : height // s, : width // s]
        return DenseFeatures(features=features.contiguous(), stride=s, windows=len(corners))


def pool_masks(dense: DenseFeatures, masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask pooling, the fast approximation of Eq. 1: each mask's feature is the average of the
    cell features under it.

    Args:
        dense: features from `DenseClip.features`.
        masks: `[K, H, W]` float in [0, 1] or bool, at the processing size (H = h*s, W = w*s).
        threshold: masks are binarised with `mask > threshold`; each cell then weighs by the
            fraction of its pixels inside the mask.

    Returns:
        `[K', D]` float32 pooled features (not normalised) of the masks with any weight, and
        keep `[K]` bool, which masks those are (K' = keep.sum()). On the features' device.
    """
    features, s = dense.features, dense.stride
    shape = (features.shape[1] * s, features.shape[2] * s)
    if masks.ndim != 3 or tuple(masks.shape[1:]) != shape:
        raise ZssegError(f"masks must be [K, H, W] at the processing size {shape}, got {tuple(masks.shape)}")
    binary = (masks.to(features.device).float() > threshold).float()
    weights = F.avg_pool2d(binary[:, None], kernel_size=s)[:, 0]  # [K, h, w]
    mass = weights.sum(dim=(1, 2))
    keep = mass > 0
    pooled = torch.einsum("khw,dhw->kd", weights[keep], features) / mass[keep, None]
    return pooled, keep


def dense_logits(dense: DenseFeatures, text: VocabularyEmbedding, temperature: float = 100.0) -> torch.Tensor:
    """`[C, h, w]` float32 logits of every cell: temperature x cosine with the class embeddings,
    the maximum over each class's synonyms (`VocabularyEmbedding.class_logits`). Computed in
    chunks of cells to bound memory; on the features' device."""
    features = dense.features
    dim, height, width = features.shape
    cells = F.normalize(features.reshape(dim, -1).T, dim=-1)
    logits = torch.empty(cells.shape[0], text.num_classes, device=features.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, text.features.shape[0]))
    for start in range(0, cells.shape[0], chunk):
        part = cells[start : start + chunk].to(device=text.features.device, dtype=text.features.dtype)
        logits[start : start + chunk] = text.class_logits(part, temperature).float().to(features.device)
    return logits.T.reshape(text.num_classes, height, width)


__all__ = [
    "DEFAULT_OVERLAP",
    "DENSE_MODES",
    "DenseConfig",
    "FEATURE_STRIDE",
    "DenseClip",
    "DenseFeatures",
    "dense_logits",
    "pool_masks",
    "sliding_windows",
    "window_stride",
]
