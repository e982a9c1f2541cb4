"""The definitions that zsseg's fast paths compute, written the plain way: the tests check the
fast paths against them, to the bit, and benchmarks/assembly_speed.py times both."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from zsseg.assembly import _CHUNK_ELEMENTS, UNLABELED, _taps


def blend_by_pixel(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """What `zsseg.outputs.writers._blend` computes faster: every labelled pixel blended in floating point."""
    blended = image.astype(np.float32)
    covered = labels >= 0
    blended[covered] = (1 - alpha) * blended[covered] + alpha * colours[labels[covered]]
    return np.clip(blended, 0, 255).astype(np.uint8)


def class_rles_by_mask(labels: np.ndarray) -> dict[int, tuple[int, str]]:
    """What `zsseg.outputs.writers._class_rles` computes faster: one full-size mask per class
    present, encoded by pycocotools."""
    rles = {}
    for i in np.unique(labels):
        if i >= 0:
            rle = mask_utils.encode(np.asfortranarray((labels == i).astype(np.uint8)))
            rles[int(i)] = (int(mask_utils.area(rle)), rle["counts"].decode("ascii"))
    return rles


def top_by_full_upsampling(numerator: torch.Tensor, coverage: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition that `zsseg.assembly.upsampled_top` computes faster: every class's
    numerator and the coverage upsampled bilinearly at every output pixel (in bands of rows, to
    bound memory), arg-max where covered."""
    stacked = torch.cat([numerator.float(), coverage.float()[None]])[None]
    out_h, out_w = size
    in_h = stacked.shape[2]
    rows = max(1, _CHUNK_ELEMENTS // (stacked.shape[1] * out_w))
    labels = torch.empty(out_h, out_w, dtype=torch.long)
    scores = torch.empty(out_h, out_w)
    scale = in_h / out_h
    for start in range(0, out_h, rows):
        stop = min(out_h, start + rows)
        # Source rows needed for this band (bilinear, align_corners=False), with a margin.
        src0 = max(0, int((start + 0.5) * scale - 0.5) - 1)
        src1 = min(in_h, int((stop - 0.5) * scale - 0.5) + 3)
        band = _resize_band(stacked[:, :, src0:src1], in_h, src0, (start, stop), out_h, out_w)
        value, best = band[:-1].max(dim=0)
        covered = band[-1] > 0
        labels[start:stop] = torch.where(covered, best, torch.full_like(best, UNLABELED))
        scores[start:stop] = torch.where(covered, value / band[-1].clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    return labels, scores


def _resize_band(band: torch.Tensor, in_h: int, src0: int, out_rows: tuple[int, int], out_h: int, out_w: int) -> torch.Tensor:
    """Rows `out_rows` of the bilinear resize (align_corners=False, no antialias) of a
    `[1, C, in_h, w]` map to `[C, out_h, out_w]`, given only its source rows `src0:`."""
    start, stop = out_rows
    ys = (torch.arange(start, stop, dtype=torch.float32) + 0.5) * (in_h / out_h) - 0.5
    ys = ys.clamp(0, in_h - 1) - src0
    y0 = ys.floor().long().clamp(0, band.shape[2] - 1)
    y1 = (y0 + 1).clamp(max=band.shape[2] - 1)
    wy = (ys - y0.float()).clamp(0, 1)
    rows = band[0, :, y0] * (1 - wy)[None, :, None] + band[0, :, y1] * wy[None, :, None]  # [C, r, w]
    return _resize_width(rows, out_w)


def _resize_width(rows: torch.Tensor, out_w: int) -> torch.Tensor:
    x0, x1, wx = _taps(rows.shape[2], out_w)
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx
