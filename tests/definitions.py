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


def selective_search_merges(regions, use: str) -> tuple[np.ndarray, np.ndarray]:
    """Selective Search's hierarchical grouping (Uijlings et al.), one pair at a time: the merges
    `[M, 2]` and their similarities `[M]` (float64). Similarity of regions a, b: the sum, in
    this order, of colour and texture histogram intersections, size 1 - (|a| + |b|) / |image|
    and fill 1 - (|box(a, b)| - |a| - |b|) / |image|, for the measures in `use` ("CTSF")."""
    import heapq

    from scipy import ndimage

    labels = regions.labels
    num = int(labels.max()) + 1
    area = float(labels.size)
    size = {i: float(n) for i, n in enumerate(np.bincount(labels.reshape(-1), minlength=num))}
    box = {i: (s[0].start, s[1].start, s[0].stop, s[1].stop) for i, s in enumerate(ndimage.find_objects(labels + 1))}
    colour = {i: regions.colour[i] for i in range(num)}
    texture = {i: regions.texture[i] for i in range(num)}

    def similarity(a: int, b: int) -> float:
        s = 0.0
        if "C" in use:
            s += np.minimum(colour[a], colour[b]).sum()
        if "T" in use:
            s += np.minimum(texture[a], texture[b]).sum()
        if "S" in use:
            s += 1.0 - (size[a] + size[b]) / area
        if "F" in use:
            y0, x0 = min(box[a][0], box[b][0]), min(box[a][1], box[b][1])
            y1, x1 = max(box[a][2], box[b][2]), max(box[a][3], box[b][3])
            s += 1.0 - ((y1 - y0) * (x1 - x0) - size[a] - size[b]) / area
        return float(s)

    neighbours = {i: set() for i in range(num)}
    heap = []
    for a, b in regions.pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
        heap.append((-similarity(a, b), a, b))
    heapq.heapify(heap)
    merged, merges, levels, t = set(), [], [], num
    while heap:
        negative, a, b = heapq.heappop(heap)
        if a in merged or b in merged:
            continue
        size[t] = size[a] + size[b]
        colour[t] = (size[a] * colour[a] + size[b] * colour[b]) / size[t]
        texture[t] = (size[a] * texture[a] + size[b] * texture[b]) / size[t]
        box[t] = (min(box[a][0], box[b][0]), min(box[a][1], box[b][1]), max(box[a][2], box[b][2]), max(box[a][3], box[b][3]))
        merged |= {a, b}
        merges.append((a, b))
        levels.append(-negative)
        neighbours[t] = (neighbours[a] | neighbours[b]) - {a, b}
        for c in neighbours[t]:
            neighbours[c] -= {a, b}
            neighbours[c].add(t)
            heapq.heappush(heap, (-similarity(t, c), t, c))
        t += 1
    return np.array(merges, dtype=np.int64).reshape(-1, 2), np.array(levels, dtype=np.float64)
