"""Assembly (Eq. 2): per-pixel class scores from mask proposals and their class probabilities.

    score(i, q) = sum_k M_k(q) C_k(i) / sum_k M_k(q)

and each pixel takes the arg-max class. Pixels that no proposal covers (sum_k M_k(q) = 0) have
score 0 for every class and get the label `UNLABELED` (-1).
"""

from __future__ import annotations

import torch

UNLABELED = -1
_CHUNK_ELEMENTS = 1 << 24  # bounds the [C, rows, W] block held at once when upsampling


def assemble(masks: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Eq. 2 scores.

    Args:
        masks: `[K, H, W]` float in [0, 1].
        probs: `[K, C]` class probabilities of each mask.

    Returns:
        `[C, H, W]` float32 scores; 0 where no mask covers the pixel.
    """
    masks, probs = masks.float(), probs.float().to(masks.device)
    numerator = torch.einsum("kc,khw->chw", probs, masks)
    coverage = masks.sum(dim=0)
    return numerator / coverage.clamp_min(torch.finfo(torch.float32).tiny)


def label_map(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`[H, W]` int64 arg-max labels, `UNLABELED` where no mask covers the pixel."""
    labels = scores.argmax(dim=0)
    covered = masks.sum(dim=0) > 0
    return torch.where(covered, labels, torch.full_like(labels, UNLABELED))


def assemble_labels(masks: torch.Tensor, probs: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Eq. 2 arg-max labels `[h, w]` int64 at `size`, masks upsampled bilinearly.

    Works in bands of rows so that memory stays bounded for large outputs and vocabularies.
    Upsampling is linear, so upsampling the numerator sum_k M_k C_k equals using upsampled
    masks; the positive denominator does not change the arg-max.
    """
    return assemble_top(masks, probs, size)[0]


def assemble_top(masks: torch.Tensor, probs: torch.Tensor, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 arg-max labels `[h, w]` int64 at `size` (as `assemble_labels`) and the winning
    class's score `[h, w]` float32 (the upsampled numerator over the upsampled coverage; 0
    where no mask covers the pixel)."""
    masks, probs = masks.float(), probs.float().to(masks.device)
    if masks.shape[0] == 0:
        shape = size or tuple(masks.shape[1:])
        return torch.full(shape, UNLABELED, dtype=torch.long), torch.zeros(shape)
    if size is None or tuple(size) == tuple(masks.shape[1:]):
        best, labels = assemble(masks, probs).max(dim=0)
        covered = masks.sum(dim=0) > 0
        return torch.where(covered, labels, torch.full_like(labels, UNLABELED)), torch.where(covered, best, 0.0)
    numerator = torch.einsum("kc,khw->chw", probs, masks)
    coverage = masks.sum(dim=0, keepdim=True)
    return _top_in_bands(torch.cat([numerator, coverage])[None], size)


def dense_labels(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Arg-max labels `[H, W]` int64 at `size` of per-pixel class scores `[C, h, w]` (such as a
    dense classifier's probabilities) that span the same image, upsampled bilinearly in bands."""
    scores = scores.float()
    return _top_in_bands(torch.cat([scores, torch.ones_like(scores[:1])])[None], size)[0]


def _top_in_bands(stacked: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and winning scores at `size` of `[1, C+1, h, w]` (class numerators, then the
    coverage), bilinearly upsampled band by band so that memory stays bounded."""
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
    in_w = rows.shape[2]
    xs = ((torch.arange(out_w, dtype=torch.float32) + 0.5) * (in_w / out_w) - 0.5).clamp(0, in_w - 1)
    x0 = xs.floor().long()
    x1 = (x0 + 1).clamp(max=in_w - 1)
    wx = xs - x0.float()
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx
