"""Assembly (Eq. 2): per-pixel class scores from mask proposals and their class probabilities.

    score(i, q) = sum_k M_k(q) C_k(i) / sum_k M_k(q)

and each pixel takes the arg-max class. Pixels that no proposal covers (sum_k M_k(q) = 0) have
score 0 for every class and get the label `UNLABELED` (-1).

`binary_mask_labels` is the same at full size for binary masks given one at a time (the masks
`zsseg classify` reads), in memory that does not grow with K or C.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from .errors import ZssegError

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
    masks, probs = masks.cpu(), probs.cpu()
    return _upsampled_top(_MaskNumerators(masks, probs), masks.sum(dim=0), size)


def binary_mask_labels(masks: Iterable[np.ndarray], probs: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Eq. 2's arg-max labels `[H, W]` int32 of binary masks `[H, W]` at full size, given one at
    a time: at each pixel the class whose mean probability over the masks covering it is highest
    (the first on a tie), `UNLABELED` where no mask does.

    Never holds more than one int32 per pixel and a tree of the sets of masks that occur,
    whatever K and C (a float `[K, H, W]` or `[C, H, W]` of a 12-megapixel photo with 300 masks
    or classes is 14 GB): pixels covered by the same set of masks have the same scores, so each
    set is scored once. The masks refine the pixels' groups one at a time: the pixels of group g
    that mask k covers move to a new group, whose parent is g and whose added mask is k. Each
    group left at the end sums its masks' probabilities up its chain of parents, in float64;
    the arg-max of the sum is that of the mean.
    """
    probs = np.asarray(probs, dtype=np.float64)
    height, width = size
    group = np.zeros(height * width, dtype=np.int32)  # column-major pixel order, as RLE masks decode; 0: no mask
    parents, added, count = [np.zeros(1, np.int64)], [np.full(1, -1, np.int64)], 1
    for k, mask in enumerate(masks):
        covered = np.ravel(np.asarray(mask, dtype=bool), order="F")
        if covered.size != group.size:
            raise ZssegError(f"mask {k} is {np.shape(mask)}, not the image's {(height, width)}")
        old = group[covered]
        touched = np.flatnonzero(np.bincount(old, minlength=count))
        if count + len(touched) > np.iinfo(group.dtype).max:
            group = group.astype(np.int64)
        renumber = np.zeros(count, dtype=np.int64)
        renumber[touched] = count + np.arange(len(touched))
        group[covered] = renumber[old]
        parents.append(touched)
        added.append(np.full(len(touched), k, dtype=np.int64))
        count += len(touched)
    parent, mask_of = np.concatenate(parents), np.concatenate(added)
    live = np.flatnonzero(np.bincount(group, minlength=count))
    live = live[live > 0]
    label_of = np.full(count, UNLABELED, dtype=np.int32)
    step = max(1, _CHUNK_ELEMENTS // max(1, probs.shape[1]))
    for start in range(0, len(live), step):
        chunk = live[start:start + step]
        sums, node = np.zeros((len(chunk), probs.shape[1])), chunk.copy()
        while (on := node > 0).any():
            sums[on] += probs[mask_of[node[on]]]
            node[on] = parent[node[on]]
        label_of[chunk] = sums.argmax(axis=1)
    return np.ascontiguousarray(label_of[group].reshape(width, height).T)


def dense_labels(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Arg-max labels `[H, W]` int64 at `size` of per-pixel class scores `[C, h, w]` (such as a
    dense classifier's probabilities) that span the same image, upsampled bilinearly."""
    scores = scores.float().cpu()
    return upsampled_top(scores, torch.ones_like(scores[0]), size)[0]


def upsampled_top(numerator: torch.Tensor, coverage: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and winning scores at `size` of class numerators `[C, h, w]` over a coverage
    `[h, w]`, both upsampled bilinearly (align_corners=False, no antialias): exactly
    the result of upsampling every class's numerator and the coverage bilinearly at every pixel
    (tests/definitions.py), to the bit, without doing so.

    An upsampled value is a combination of its cell's 4 low-resolution corners with
    non-negative weights that are the same for every class. Where the 4 corners share their
    arg-max class by a margin that float32 rounding cannot close, that class wins every pixel
    of the cell, and only its numerator is upsampled there, with the same float operations as
    the full upsampling, so its score is the same to the bit. Cells with no covered corner
    stay unlabelled. Only the other cells (class boundaries, coverage edges, near-ties) get
    every class upsampled.
    """
    return _upsampled_top(_GivenNumerators(numerator.float()), coverage.float(), size)


class _GivenNumerators:
    """Class numerators `[C, h, w]` held in memory."""

    def __init__(self, numerator: torch.Tensor):
        self.numerator = numerator
        self.classes, self.height, self.width = numerator.shape

    def top(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per pixel: the arg-max class, its numerator, and its margin over the runner-up."""
        shape = (self.height, self.width)
        return tuple(t.reshape(shape) for t in _top_two(self.numerator.reshape(self.classes, -1).T.contiguous()))

    def at(self, pixels: torch.Tensor) -> torch.Tensor:
        """`[C, n]` numerators of flat pixel indices."""
        return self.numerator.reshape(self.classes, -1)[:, pixels]


class _MaskNumerators:
    """Eq. 2's numerators sum_k M_k C_k of masks `[K, h, w]` and probabilities `[K, C]`,
    computed in chunks of whole rows and never held whole (`[C, h, w]` is gigabytes for a
    large vocabulary). Chunks are pixel-major (`[pixels, C]`), so that the arg-max runs along
    contiguous memory; a value read again comes from the same chunk computed again, hence the
    same to the bit (BLAS may sum a product of another shape in another order)."""

    def __init__(self, masks: torch.Tensor, probs: torch.Tensor):
        self.flat = masks.reshape(masks.shape[0], -1)
        self.probs = probs
        self.classes = probs.shape[1]
        self.height, self.width = masks.shape[1:]
        self.chunk_rows = max(1, _CHUNK_ELEMENTS // (self.classes * self.width))
        self._last: tuple[int, torch.Tensor] | None = None

    def _chunk(self, number: int) -> torch.Tensor:
        if self._last is None or self._last[0] != number:
            first = number * self.chunk_rows * self.width
            columns = self.flat[:, first:first + self.chunk_rows * self.width]
            self._last = (number, torch.einsum("kc,kn->nc", self.probs, columns))
        return self._last[1]

    def top(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = [_top_two(self._chunk(number)) for number in range(-(-self.height // self.chunk_rows))]
        shape = (self.height, self.width)
        return tuple(torch.cat([part[i] for part in parts]).reshape(shape) for i in range(3))

    def at(self, pixels: torch.Tensor) -> torch.Tensor:
        values = torch.empty(self.classes, len(pixels))
        size = self.chunk_rows * self.width
        numbers = pixels // size
        for number in numbers.unique().tolist():
            where = (numbers == number).nonzero()[:, 0]
            values[:, where] = self._chunk(number)[pixels[where] - number * size].T
        return values


def _top_two(by_pixel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of pixel-major numerators `[n, C]`: the arg-max class (any of them on a tie), its value,
    and its margin over the runner-up (0 on a tie)."""
    if by_pixel.shape[1] == 1:
        return torch.zeros(len(by_pixel), dtype=torch.long), by_pixel[:, 0], torch.full((len(by_pixel),), float("inf"))
    values, index = by_pixel.topk(2, dim=1)
    return index[:, 0], values[:, 0], values[:, 0] - values[:, 1]


def _upsampled_top(numerators, coverage: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    in_h, in_w = numerators.height, numerators.width
    out_h, out_w = size
    y0, _, wy = _taps(in_h, out_h)  # a cell's other corners are `ny`, `nx` below
    x0, _, wx = _taps(in_w, out_w)
    winner, best, margin = numerators.top()
    # Float32 rounding moves an upsampled value by a few units in the last place of the
    # largest numerator; margins above 64 such units decide the pixel before upsampling.
    floor = 64 * torch.finfo(torch.float32).eps * float(best.abs().max())
    decided = (margin > floor) & (coverage > 0)
    ny, nx = (torch.arange(in_h) + 1).clamp(max=in_h - 1), (torch.arange(in_w) + 1).clamp(max=in_w - 1)

    def corners(t: torch.Tensor) -> tuple[torch.Tensor, ...]:  # per cell (i, j): (i, j), (i+1, j), (i, j+1), (i+1, j+1)
        return t, t[ny], t[:, nx], t[ny][:, nx]

    w00, w10, w01, w11 = corners(winner)
    d00, d10, d01, d11 = corners(decided)
    empty = coverage == 0
    safe = (d00 & d10 & d01 & d11 & (w00 == w10) & (w00 == w01) & (w00 == w11)) | (empty & empty[ny] & empty[:, nx] & empty[ny][:, nx])
    # In a safe, covered cell every corner's own winner is the cell's, so its numerator there is `best`.
    b00, b10, b01, b11 = corners(best)
    k00, k10, k01, k11 = corners(coverage)
    i00, i10, i01, i11 = corners(torch.arange(in_h * in_w).reshape(in_h, in_w))

    labels = torch.empty(out_h, out_w, dtype=torch.long)
    scores = torch.empty(out_h, out_w)
    tiny = torch.finfo(torch.float32).tiny
    rows = max(1, _CHUNK_ELEMENTS // (8 * out_w))
    for start in range(0, out_h, rows):
        ry, by = y0[start:start + rows], wy[start:start + rows][:, None]
        fy = 1 - by

        def up(a00, a10, a01, a11):  # the same float operations as upsampling every class (tests/definitions.py)
            left = a00[ry] * fy + a10[ry] * by
            right = a01[ry] * fy + a11[ry] * by
            return left[:, x0] * (1 - wx) + right[:, x0] * wx

        value, cover = up(b00, b10, b01, b11), up(k00, k10, k01, k11)
        covered = cover > 0
        band_labels = torch.where(covered, winner[ry][:, x0], UNLABELED)
        band_scores = torch.where(covered, value / cover.clamp_min(tiny), 0.0)
        unsafe = (~safe[ry][:, x0]).nonzero()
        if len(unsafe):
            r, c = unsafe[:, 0], unsafe[:, 1]
            band_labels[r, c], band_scores[r, c] = _top_at_boundaries(
                numerators, ry[r] * in_w + x0[c], (i00, i10, i01, i11), (k00, k10, k01, k11), wy[start + r], wx[c], floor)
        labels[start:start + rows], scores[start:start + rows] = band_labels, band_scores
    return labels, scores


def _top_at_boundaries(numerators, cells: torch.Tensor, corner_pixels: tuple, corner_coverage: tuple, wy: torch.Tensor,
                       wx: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and winning scores at a list of output pixels (given by their cells, as flat
    indices of the low-resolution grid, and their weights), upsampling only the classes that
    can win somewhere in the cell: those whose largest corner value reaches the largest of the
    classes' smallest corner values, less `floor` (which covers rounding). Any other class is
    below that one at every pixel of the cell. Candidates keep their class order, so that ties
    go to the first class, as an arg-max over every class does."""
    cells, pixel_cell = cells.unique(return_inverse=True)
    order_of_pixels = pixel_cell.argsort(stable=True)
    starts = torch.searchsorted(pixel_cell[order_of_pixels], torch.arange(0, len(cells) + 1))
    labels, scores = torch.empty(len(wy), dtype=torch.long), torch.empty(len(wy))
    group = max(1, _CHUNK_ELEMENTS // (4 * numerators.classes))
    tiny = torch.finfo(torch.float32).tiny
    for first in range(0, len(cells), group):
        last = min(len(cells), first + group)
        these = cells[first:last]
        corner_ids = torch.stack([c.reshape(-1)[these] for c in corner_pixels])  # [4, cells]
        pixels, where = corner_ids.unique(return_inverse=True)
        values = numerators.at(pixels)[:, where]  # [C, 4, cells]
        upper, lower = values.max(dim=1).values, values.min(dim=1).values.max(dim=0).values
        candidate = upper >= lower - floor  # [C, cells]
        count = candidate.sum(dim=0)
        most = int(count.max())
        # Each cell's candidate classes in class order, in its first `count` rows (others unused).
        slot = torch.where(candidate, candidate.cumsum(dim=0) - 1, most)
        order = torch.zeros(most + 1, len(these), dtype=torch.long)
        order.scatter_(0, slot, torch.arange(numerators.classes)[:, None].expand(-1, len(these)))
        order = order[:most]
        valid = torch.arange(most)[:, None] < count
        chosen = values.gather(0, order[:, None].expand(-1, 4, -1))  # [most, 4, cells]
        del values
        coverage = torch.stack([c.reshape(-1)[these] for c in corner_coverage])  # [4, cells]
        mine = order_of_pixels[starts[first]:starts[last]]
        step = max(1, _CHUNK_ELEMENTS // (8 * most))
        for start in range(0, len(mine), step):
            at = mine[start:start + step]
            u = pixel_cell[at] - first
            weights = 1 - wy[at], wy[at], wx[at]
            value = torch.where(valid[:, u], _bilinear(chosen[:, :, u].unbind(1), *weights), float("-inf"))
            cover = _bilinear(coverage[:, u].unbind(0), *weights)
            best, index = value.max(dim=0)
            covered = cover > 0
            labels[at] = torch.where(covered, order[:, u].gather(0, index[None])[0], UNLABELED)
            scores[at] = torch.where(covered, best / cover.clamp_min(tiny), 0.0)
    return labels, scores


def _bilinear(corners: tuple[torch.Tensor, ...], fy: torch.Tensor, by: torch.Tensor, bx: torch.Tensor) -> torch.Tensor:
    """Values at pixels from their cells' corners (y0, x0), (y1, x0), (y0, x1), (y1, x1) with the
    rows' weights `fy` = 1 - `by` and `by` and the columns' `bx`: the same float operations, in
    the same order as a resize of every class (rows first)."""
    a00, a10, a01, a11 = corners
    return (a00 * fy + a10 * by) * (1 - bx) + (a01 * fy + a11 * by) * bx


def _taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of a bilinear resize along one axis (align_corners=False)."""
    coords = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * (in_size / out_size) - 0.5).clamp(0, in_size - 1)
    low = coords.floor().long()
    return low, (low + 1).clamp(max=in_size - 1), coords - low.float()
