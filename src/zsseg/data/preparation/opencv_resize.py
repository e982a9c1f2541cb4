"""OpenCV's `cv2.resize` for the two cases MaskFormer's ADE20K-full preparation uses, in numpy,
to the bit: INTER_LINEAR on 8-bit images and INTER_NEAREST on label maps. zsseg does not
depend on OpenCV; tests/test_dataset_preparation.py compares these with cv2 where it is installed.

INTER_LINEAR on 8-bit data is fixed-point arithmetic (`resizeGeneric_` in imgproc/src/resize.cpp):
- for each output column, the source position `(dx + 0.5) * scale - 0.5` is computed in double
  and rounded to float; its integer part picks the two source columns, and its fraction gives
  the two weights, rounded to multiples of 1/2048 (columns beyond the border take the border
  pixel, weight 2048);
- the horizontal pass keeps `S = a0 * p0 + a1 * p1` as integers (up to 255 * 2048);
- the vertical pass combines two such rows with weights b0, b1 (rows clamped at the borders,
  weights not) as OpenCV's SIMD code does: `((((S0 >> 4) * b0) >> 16) + (((S1 >> 4) * b1) >> 16) + 2) >> 2`,
  which differs from the exact rounding in the last bit for some pixels; OpenCV 5.1 applies it to
  every pixel of the row.
A resize to exactly half the size in both directions is INTER_AREA's: the rounded mean of each
2x2 block. Checked against opencv-python-headless 5.1.0.95 on x86-64.
"""

from __future__ import annotations

import numpy as np

_COEF_SCALE = 2048  # INTER_RESIZE_COEF_SCALE: 11 fractional bits


def _taps(source: int, target: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each target index: the two source indices and their fixed-point weights."""
    scale = source / target
    position = ((np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    if clamp_weights:  # columns: outside the image, the border pixel alone
        outside = (first < 0) | (first >= source - 1)
        fraction[outside] = 0
        first = np.where(first < 0, 0, np.where(first >= source - 1, source - 1, first))
    second = np.clip(first + 1, 0, source - 1)
    first = np.clip(first, 0, source - 1)
    weight1 = np.rint(fraction * np.float32(_COEF_SCALE)).astype(np.int64)
    weight0 = np.rint((np.float32(1) - fraction) * np.float32(_COEF_SCALE)).astype(np.int64)
    return first, second, weight0, weight1


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)` for uint8 HxW or HxWxC."""
    if image.dtype != np.uint8:
        raise TypeError("resize_linear takes uint8 images")
    rows, columns = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    source = image.reshape(rows, columns, channels)
    if (rows, columns) == (2 * height, 2 * width):
        blocks = source.reshape(height, 2, width, 2, channels).astype(np.int32)
        total = blocks[:, 0, :, 0] + blocks[:, 0, :, 1] + blocks[:, 1, :, 0] + blocks[:, 1, :, 1]
        return ((total + 2) >> 2).astype(np.uint8).reshape((height, width, *image.shape[2:]))
    x0, x1, a0, a1 = _taps(columns, width, clamp_weights=True)
    y0, y1, b0, b1 = _taps(rows, height, clamp_weights=False)
    out = np.empty((height, width, channels), dtype=np.uint8)
    band = max(1, (1 << 22) // max(1, width * channels))  # output rows per step: bounded memory
    for start in range(0, height, band):
        stop = min(height, start + band)
        needed = np.unique(np.concatenate([y0[start:stop], y1[start:stop]]))
        picked = source[needed].astype(np.int64)
        horizontal = picked[:, x0] * a0[None, :, None] + picked[:, x1] * a1[None, :, None]  # [rows, width, C]
        where = np.searchsorted(needed, y0[start:stop]), np.searchsorted(needed, y1[start:stop])
        upper, lower = horizontal[where[0]] >> 4, horizontal[where[1]] >> 4
        weight0, weight1 = b0[start:stop, None, None], b1[start:stop, None, None]
        value = (((upper * weight0) >> 16) + ((lower * weight1) >> 16) + 2) >> 2
        out[start:stop] = np.clip(value, 0, 255)
    return out.reshape((height, width, *image.shape[2:]))


def resize_nearest(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST)`: source index
    floor(i * (1 / (target / source))), in double, clamped to the last one."""
    rows, columns = array.shape[:2]
    xs = np.minimum(np.floor(np.arange(width) * (1.0 / (width / columns))).astype(np.int64), columns - 1)
    ys = np.minimum(np.floor(np.arange(height) * (1.0 / (height / rows))).astype(np.int64), rows - 1)
    return array[ys[:, None], xs[None, :]]
