"""Selective Search masks (Uijlings et al., IJCV 2013).

Felzenszwalb's graph-based over-segmentation, then hierarchical grouping: the two most
similar neighbouring regions merge, repeatedly, until one region is left. Similarity is a sum
of colour (histogram intersection, 25 bins per channel), texture (Gaussian derivatives in 8
orientations, 10 bins), size (favours merging small regions first) and fill (how well two
regions fit into each other's bounding box). Diversification: several colour spaces, several
Felzenszwalb scales and two similarity sets, each giving one hierarchy. Every region of every
hierarchy is a candidate mask; they are ranked as in the paper (position in the hierarchy, 1
for the whole image, times a random number in [0, 1], seeded) and the best K kept.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy import ndimage
from skimage import color
from skimage.segmentation import felzenszwalb

from ..catalogue import DEFAULT_DUPLICATE_IOU, DEFAULT_MAX_PROPOSALS
from ..errors import SettingError
from .base import ProposalConfig, ProposalGenerator, select_masks, upsample_masks, working_image
from .hierarchy import MergeTree, adjacent_pairs, relabel

COLOUR_BINS = 25
TEXTURE_BINS = 10
TEXTURE_ORIENTATIONS = 8
SIMILARITIES = {"C": "colour", "T": "texture", "S": "size", "F": "fill"}


def to_colour_space(image: np.ndarray, space: str) -> np.ndarray:
    """HWC uint8 RGB -> HWC float64 in [0, 1] in the given colour space ('rgb', 'hsv', 'lab')."""
    rgb = image.astype(np.float64) / 255.0
    if space == "rgb":
        return rgb
    if space == "hsv":
        return color.rgb2hsv(rgb)
    if space == "lab":
        lab = color.rgb2lab(rgb)
        return np.clip(np.stack([lab[..., 0] / 100.0, (lab[..., 1] + 128) / 255.0, (lab[..., 2] + 128) / 255.0], -1), 0, 1)
    raise ValueError(f"unknown colour space {space!r}")


def texture_responses(image: np.ndarray) -> np.ndarray:
    """HWC -> H x W x (C * 8): rectified Gaussian derivatives (sigma 1) in 8 orientations, in [0, 1]."""
    out = []
    for c in range(image.shape[2]):
        gy = ndimage.gaussian_filter(image[..., c], sigma=1.0, order=(1, 0))
        gx = ndimage.gaussian_filter(image[..., c], sigma=1.0, order=(0, 1))
        for k in range(TEXTURE_ORIENTATIONS):
            theta = 2 * np.pi * k / TEXTURE_ORIENTATIONS
            out.append(np.maximum(np.cos(theta) * gx + np.sin(theta) * gy, 0))
    responses = np.stack(out, axis=-1)
    peak = responses.reshape(-1, responses.shape[-1]).max(axis=0)
    return responses / np.maximum(peak, 1e-12)


def region_histograms(values: np.ndarray, labels: np.ndarray, num_regions: int, bins: int) -> np.ndarray:
    """`[N, C * bins]` L1-normalised per-region histograms of HWC values in [0, 1]."""
    index = np.clip((values * bins).astype(np.int64), 0, bins - 1)
    flat_labels = labels.reshape(-1)
    hists = [
        np.bincount(flat_labels * bins + index[..., c].reshape(-1), minlength=num_regions * bins).reshape(num_regions, bins)
        for c in range(values.shape[2])
    ]
    hist = np.concatenate(hists, axis=1).astype(np.float64)
    return hist / np.maximum(hist.sum(axis=1, keepdims=True), 1e-12)


@dataclass
class _Grouping:
    """Region features during hierarchical grouping, indexed by node id."""

    size: np.ndarray
    box: np.ndarray  # y0, x0, y1, x1 (end-exclusive)
    colour: np.ndarray
    texture: np.ndarray
    image_area: float
    use: str

    def similarities(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity of each region pair (a[i], b[i]): the sum of the measures in `use`, each
        pair's terms added in the same order and float64 operations as for one pair alone."""
        s = np.zeros(len(a))
        if "C" in self.use:
            s = s + np.minimum(self.colour[a], self.colour[b]).sum(axis=1)
        if "T" in self.use:
            s = s + np.minimum(self.texture[a], self.texture[b]).sum(axis=1)
        if "S" in self.use:
            s = s + (1.0 - (self.size[a] + self.size[b]) / self.image_area)
        if "F" in self.use:
            y0, x0 = np.minimum(self.box[a, 0], self.box[b, 0]), np.minimum(self.box[a, 1], self.box[b, 1])
            y1, x1 = np.maximum(self.box[a, 2], self.box[b, 2]), np.maximum(self.box[a, 3], self.box[b, 3])
            s = s + (1.0 - ((y1 - y0) * (x1 - x0) - self.size[a] - self.size[b]) / self.image_area)
        return s

    def merge(self, a: int, b: int, t: int) -> None:
        sa, sb = self.size[a], self.size[b]
        self.size[t] = sa + sb
        self.colour[t] = (sa * self.colour[a] + sb * self.colour[b]) / (sa + sb)
        self.texture[t] = (sa * self.texture[a] + sb * self.texture[b]) / (sa + sb)
        self.box[t, :2] = np.minimum(self.box[a, :2], self.box[b, :2])
        self.box[t, 2:] = np.maximum(self.box[a, 2:], self.box[b, 2:])


@dataclass
class Superpixels:
    """An over-segmentation with the per-region features that grouping starts from."""

    labels: np.ndarray  # [H, W] int64, 0..L-1
    colour: np.ndarray  # [L, C * COLOUR_BINS]
    texture: np.ndarray  # [L, C * 8 * TEXTURE_BINS]
    pairs: np.ndarray  # [P, 2] adjacent region pairs

    @classmethod
    def build(cls, labels: np.ndarray, colour_image: np.ndarray, texture: np.ndarray) -> "Superpixels":
        num = int(labels.max()) + 1
        return cls(
            labels=labels,
            colour=region_histograms(colour_image, labels, num, COLOUR_BINS),
            texture=region_histograms(texture, labels, num, TEXTURE_BINS),
            pairs=adjacent_pairs(labels),
        )


def hierarchical_grouping(regions: Superpixels, use: str) -> MergeTree:
    """Greedy grouping of the superpixels into one region with similarity set `use`."""
    labels = regions.labels
    num = int(labels.max()) + 1
    total = 2 * num - 1
    feats = _Grouping(
        size=np.zeros(total),
        box=np.zeros((total, 4), dtype=np.int64),
        colour=np.zeros((total, regions.colour.shape[1])),
        texture=np.zeros((total, regions.texture.shape[1])),
        image_area=float(labels.size),
        use=use,
    )
    feats.size[:num] = np.bincount(labels.reshape(-1), minlength=num)
    for i, sl in enumerate(ndimage.find_objects(labels + 1)):
        feats.box[i] = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
    feats.colour[:num] = regions.colour
    feats.texture[:num] = regions.texture

    neighbours: list[set[int]] = [set() for _ in range(total)]
    first, second = regions.pairs[:, 0], regions.pairs[:, 1]
    for a, b in regions.pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    # Similarities are computed for all pairs at once, then for all of a new region's neighbours
    # at once; the heap orders (-similarity, a, b) tuples, so the merges do not depend on that.
    heap = list(zip((-feats.similarities(first, second)).tolist(), first.tolist(), second.tolist()))
    heapq.heapify(heap)
    alive = np.zeros(total, dtype=bool)
    alive[:num] = True
    merges, levels = [], []
    t = num
    while heap:
        negative, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        feats.merge(a, b, t)
        alive[a] = alive[b] = False
        alive[t] = True
        merges.append((a, b))
        levels.append(-negative)
        around = (neighbours[a] | neighbours[b]) - {a, b}
        neighbours[t] = around
        if around:
            others = np.fromiter(around, dtype=np.int64, count=len(around))
            for c in around:
                neighbours[c] -= {a, b}
                neighbours[c].add(t)
            for value, c in zip((-feats.similarities(np.full(len(others), t), others)).tolist(), others.tolist()):
                heapq.heappush(heap, (value, t, c))
        t += 1
    return MergeTree(labels, np.array(merges, dtype=np.int64).reshape(-1, 2), -np.array(levels, dtype=np.float64))


@dataclass(frozen=True)
class SelectiveSearchConfig(ProposalConfig):
    """Selective Search's settings (see `SelectiveSearch`)."""

    name: ClassVar[str] = "selective-search"
    colour_spaces: tuple[str, ...] = ("hsv", "lab")
    scales: tuple[int, ...] = (50, 100)
    similarities: tuple[str, ...] = ("CTSF", "TSF")
    working_size: int = 512
    min_area: float = 0.001
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        for space in self.colour_spaces:
            if space not in ("rgb", "hsv", "lab"):
                raise SettingError("colour_spaces", f"{{setting}}: unknown colour space {space!r}; use rgb, hsv or lab")
        for use in self.similarities:
            if not use or set(use) - set(SIMILARITIES):
                raise SettingError("similarities", f"{{setting}}: similarity set {use!r} must be letters of {''.join(SIMILARITIES)}")
        if not self.scales or min(self.scales) < 1:
            raise SettingError("scales", f"{{setting}} must be positive region sizes, got {self.scales}")
        if self.working_size < 32 or not 0 <= self.min_area < 1:
            raise SettingError("working_size", f"{{setting}} must be at least 32 and min_area in [0, 1), got {self.working_size}, "
                               f"{self.min_area}")


class SelectiveSearch(ProposalGenerator):
    """Selective Search regions as masks.

    Args:
        max_proposals: K, the number of masks kept.
        colour_spaces: colour spaces to diversify over ('rgb', 'hsv', 'lab').
        scales: Felzenszwalb's k (also its minimum region size), in pixels of the working image.
        similarities: similarity sets, letters of C(olour), T(exture), S(ize), F(ill).
        working_size: the longer side the image is scaled to before segmenting.
        min_area: masks smaller than this fraction of the image are dropped.
        seed: seed of the random ranking.
        duplicate_iou: masks overlapping a better one above this IoU are dropped.
    """

    name = "selective-search"
    needs_no_model = True
    Config = SelectiveSearchConfig

    def __init__(
        self,
        max_proposals: int = DEFAULT_MAX_PROPOSALS,
        colour_spaces: tuple[str, ...] = ("hsv", "lab"),
        scales: tuple[int, ...] = (50, 100),
        similarities: tuple[str, ...] = ("CTSF", "TSF"),
        working_size: int = 512,
        min_area: float = 0.001,
        seed: int = 0,
        duplicate_iou: float = DEFAULT_DUPLICATE_IOU,
    ):
        super().__init__(max_proposals, duplicate_iou)
        SelectiveSearchConfig(max_proposals, duplicate_iou, tuple(colour_spaces), tuple(scales), tuple(similarities), working_size,
                              min_area, seed)  # checks them
        self.colour_spaces = tuple(colour_spaces)
        self.scales = tuple(scales)
        self.similarities = tuple(similarities)
        self.working_size = working_size
        self.min_area = min_area
        self.seed = seed

    def hierarchies(self, image: np.ndarray) -> list[MergeTree]:
        """One merge tree per (colour space, scale, similarity set), on the working image."""
        trees = []
        for space in self.colour_spaces:
            converted = to_colour_space(image, space)
            texture = texture_responses(converted)
            for k in self.scales:
                labels = relabel(felzenszwalb(converted, scale=k, sigma=0.8, min_size=k, channel_axis=-1))
                regions = Superpixels.build(labels, converted, texture)
                for use in self.similarities:
                    trees.append(hierarchical_grouping(regions, use))
        return trees

    def generate(self, image: np.ndarray) -> torch.Tensor:
        small = working_image(image, self.working_size)
        rng = np.random.default_rng(self.seed)
        trees = self.hierarchies(small)
        ranked = []  # (priority, tree index, node)
        for index, tree in enumerate(trees):
            total = tree.num_nodes
            # Position 1 is the last region created (the whole image), as in the paper.
            priorities = (total - np.arange(total)) * rng.random(total)
            ranked.extend(zip(priorities.tolist(), [index] * total, range(total)))
        ranked.sort()
        min_pixels = self.min_area * small.shape[0] * small.shape[1]
        # Materialise masks in rank order, a few times K at a time, until K distinct are kept.
        kept = np.zeros((0,) + small.shape[:2], dtype=bool)
        chunk = 4 * self.max_proposals
        for start in range(0, len(ranked), chunk):
            block = [trees[i].cover[n][trees[i].leaves] for _, i, n in ranked[start : start + chunk]]
            block = [m for m in block if m.sum() >= min_pixels]
            if block:
                fresh = select_masks(np.stack(block), self.max_proposals - len(kept), self.duplicate_iou, previous=kept)
                kept = np.concatenate([kept, fresh])
            if len(kept) == self.max_proposals:
                break
        # `kept` is already capped and free of duplicates.
        return torch.from_numpy(upsample_masks(kept, image.shape[:2])).float()
