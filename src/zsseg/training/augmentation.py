"""The training augmentation of the reference code (MaskFormer's semantic mapper), step by step.

For one image and its label map, with every random draw taken from one `torch.Generator`:

1. resize so that the shorter side is one of `min_sizes` (a uniform choice) and the longer
   side at most `max_size` (detectron2's `ResizeShortestEdge`, "choice"): the image with
   Pillow's bilinear filter, the labels with torch's "nearest", as detectron2's
   `ResizeTransform` does for uint8 images and for label maps;
2. a random `crop_size` square, or the whole side where the image is smaller (detectron2's
   `RandomCrop` "absolute"; `SINGLE_CATEGORY_MAX_AREA` 1.0 adds no constraint);
3. SSD's colour jitter (`ColorAugSSDTransform`): brightness, then contrast before or after
   saturation and hue, each applied with probability 1/2;
4. a horizontal flip with probability 1/2;
5. padding at the bottom and right to `crop_size` (`SIZE_DIVISIBILITY`): the image with 128,
   the labels with the ignore value.

Shapes: images `[H, W, 3]` uint8 RGB, label maps `[H, W]` int (-1 ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..data.images import resize_image, shortest_edge_size
from ..networks.maskformer.config import shorter_sides  # noqa: F401  (where it was defined)

PAD_VALUE = 128  # the reference mapper's image padding


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def randint(generator: torch.Generator, high: int, low: int = 0) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def coin(generator: torch.Generator) -> bool:
    """True with probability 1/2 (`random.randrange(2)`)."""
    return randint(generator, 1) == 1


def resize_label_map(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`[H, W]` labels resized to (h, w) by torch's "nearest" (source index floor(i x H / h)), as
    detectron2 resizes label maps."""
    if label.shape == tuple(size):
        return label
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(label)).double()[None, None], size=tuple(size), mode="nearest")
    return resized[0, 0].numpy().astype(label.dtype)


# --- OpenCV's 8-bit RGB <-> HSV (H in 0..179), which the reference's colour jitter uses ----------

_HSV_SHIFT = 12
_SDIV = np.array([0] + [round((255 << _HSV_SHIFT) / i) for i in range(1, 256)], dtype=np.int64)
_HDIV = np.array([0] + [round((180 << _HSV_SHIFT) / (6 * i)) for i in range(1, 256)], dtype=np.int64)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """`[H, W, 3]` uint8 RGB -> uint8 HSV with H in 0..179, S and V in 0..255, by OpenCV's
    fixed-point 8-bit formulas (`cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)`)."""
    r, g, b = (image[..., i].astype(np.int64) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    s = (diff * _SDIV[v] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


_SECTORS = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])  # (r, g, b) rows of the table


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """uint8 HSV (H in 0..179) -> `[H, W, 3]` uint8 RGB, in float32 as OpenCV's 8-bit
    conversion (`cv2.COLOR_HSV2BGR`), rounded to nearest."""
    h = hsv[..., 0].astype(np.float32) * np.float32(np.float32(6.0) / np.float32(180.0))
    s = hsv[..., 1].astype(np.float32) * np.float32(np.float32(1.0) / np.float32(255.0))
    v = hsv[..., 2].astype(np.float32) * np.float32(np.float32(1.0) / np.float32(255.0))
    h = np.fmod(h, np.float32(6.0))
    sector = np.floor(h).astype(np.int64)
    h = (h - sector).astype(np.float32)
    outside = (sector < 0) | (sector >= 6)
    sector, h = np.where(outside, 0, sector), np.where(outside, np.float32(0.0), h)
    one = np.float32(1.0)
    table = np.stack([v, v * (one - s), v * (one - s * h), v * (one - s * (one - h))], axis=-1)
    rgb = np.take_along_axis(table, _SECTORS[sector], axis=-1)
    rgb = np.where((s == 0)[..., None], v[..., None], rgb)
    return np.clip(np.rint(rgb * np.float32(255.0)), 0, 255).astype(np.uint8)


def _scaled(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """`values * alpha + beta` in float32, clipped to 0..255 and truncated to uint8 (SSD's
    `convert`)."""
    return np.clip(values.astype(np.float32) * np.float32(alpha) + np.float32(beta), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ColorJitter:
    """SSD's photometric distortion (Liu et al. 2016) as detectron2's `ColorAugSSDTransform`:
    brightness +-32, contrast and saturation x [0.5, 1.5], hue +-18 (of 180)."""

    brightness_delta: float = 32.0
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __call__(self, image: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if coin(generator):
            image = _scaled(image, beta=uniform(generator, -self.brightness_delta, self.brightness_delta))
        if coin(generator):
            return self._hue(self._saturation(self._contrast(image, generator), generator), generator)
        return self._contrast(self._hue(self._saturation(image, generator), generator), generator)

    def _contrast(self, image: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if coin(generator):
            return _scaled(image, alpha=uniform(generator, *self.contrast))
        return image

    def _saturation(self, image: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if coin(generator):
            hsv = rgb_to_hsv(image)
            hsv[..., 1] = _scaled(hsv[..., 1], alpha=uniform(generator, *self.saturation))
            return hsv_to_rgb(hsv)
        return image

    def _hue(self, image: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if coin(generator):
            hsv = rgb_to_hsv(image)
            shift = randint(generator, self.hue_delta, -self.hue_delta)
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
            return hsv_to_rgb(hsv)
        return image


@dataclass(frozen=True)
class Augmentation:
    """The reference's training augmentation (see the module docstring).

    Attributes:
        crop_size: side of the square crop, and of every output (padded).
        min_sizes: the shorter sides to choose from (`shorter_sides(640)` in the paper's).
        max_size: the longest the longer side may be after the resize.
        color: apply SSD's colour jitter.
        flip: flip horizontally with probability 1/2.
    """

    crop_size: int
    min_sizes: tuple[int, ...] = shorter_sides(640)
    max_size: int = 2560
    color: bool = True
    flip: bool = True

    def __call__(self, image: np.ndarray, label: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`image` HWC uint8 and `label` [H, W] int (-1 ignored) -> both crop_size x crop_size."""
        height, width = label.shape
        short = self.min_sizes[randint(generator, len(self.min_sizes) - 1)]
        size = shortest_edge_size(height, width, short, self.max_size)
        image, label = resize_image(image, size), resize_label_map(label, size)
        side = self.crop_size
        crop_h, crop_w = min(side, size[0]), min(side, size[1])
        y0 = randint(generator, size[0] - crop_h)
        x0 = randint(generator, size[1] - crop_w)
        image, label = image[y0 : y0 + crop_h, x0 : x0 + crop_w], label[y0 : y0 + crop_h, x0 : x0 + crop_w]
        if self.color:
            image = ColorJitter()(np.ascontiguousarray(image), generator)
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        out_image = np.full((side, side, 3), PAD_VALUE, dtype=np.uint8)
        out_label = np.full((side, side), -1, dtype=np.int32)
        out_image[:crop_h, :crop_w] = image
        out_label[:crop_h, :crop_w] = label
        return out_image, out_label


__all__ = ["PAD_VALUE", "Augmentation", "ColorJitter", "hsv_to_rgb", "resize_label_map", "rgb_to_hsv", "shorter_sides"]
