"""Hierarchical contour segmentation, after gPb-owt-ucm (Arbelaez et al., TPAMI 2011).

1. Multiscale oriented gradients: for brightness (L*), colour (a*, b*) and texture (texton ids
   from k-means over a filter bank), each quantised into bins, the chi-square distance between
   the histograms of the two halves of a disc, for 8 orientations and 3 radii. Their mean is
   the boundary strength E(x, y, theta) (mPb; gPb's learned channel weights and its spectral
   term are not used: every channel and scale has the same weight).
2. Oriented watershed: the watershed of max_theta E gives fine regions. Each boundary pixel is
   re-weighted by E at the orientation of the boundary through it (from the structure tensor
   of the boundary map), which removes the watershed's bias towards axis-aligned arcs.
3. Ultrametric contour map: neighbouring regions merge greedily, the pair with the weakest
   mean boundary first; the merge levels (kept non-decreasing) form the UCM, a hierarchy in
   which thresholding at any level gives a segmentation.
4. Proposals: the regions of the segmentations that a few UCM thresholds give, chosen by
   number of regions (2, 4, 8, ... by default), coarse to fine.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy import ndimage
from skimage import color

from ..catalogue import DEFAULT_DUPLICATE_IOU, DEFAULT_MAX_PROPOSALS
from ..errors import SettingError
from .base import ProposalConfig, ProposalGenerator, upsample_masks, working_image
from .hierarchy import MergeTree, relabel

ORIENTATIONS = 8
BRIGHTNESS_RADII = (3, 5, 10)  # in pixels of a 481-pixel-wide image (BSDS), as gPb
TEXTURE_RADII = (5, 10, 20)  # colour and texture


def _half_disc_kernels(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """`[8, k, k]` difference kernels (one half minus the other) and the `[k, k]` disc."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    disc = (x**2 + y**2) <= radius**2
    diffs = []
    for k in range(ORIENTATIONS):
        theta = np.pi * k / ORIENTATIONS
        side = -np.sin(theta) * x + np.cos(theta) * y  # signed distance to the line at angle theta
        diffs.append((disc & (side > 1e-9)).astype(np.float64) - (disc & (side < -1e-9)))
    return np.stack(diffs), disc.astype(np.float64)


def oriented_gradient(index: np.ndarray, bins: int, radius: int) -> np.ndarray:
    """`[8, H, W]` chi-square distance between the half-disc histograms of an index map.

    Histograms are normalised by the half-disc area, so values lie in [0, 1]. The chi-square
    denominator uses the whole disc's counts (the dividing line included), which is cheaper
    than one count per orientation and lowers every value by the same small factor.
    Convolutions of the per-bin indicator images are done with FFTs.
    """
    h, w = index.shape
    padded = np.pad(index, radius, mode="reflect")
    planes = torch.from_numpy(np.eye(bins, dtype=np.float32)[padded]).permute(2, 0, 1)  # [B, H+2r, W+2r]
    size = planes.shape[1:]
    diffs, disc = _half_disc_kernels(radius)
    half_area = (disc.sum() - (2 * radius + 1)) / 2  # pixels on the dividing line belong to neither half
    kernels = torch.from_numpy(np.concatenate([diffs, disc[None]]).astype(np.float32))
    spectrum = torch.fft.rfft2(planes, s=size)
    kernel_spectra = torch.fft.rfft2(kernels, s=size)
    disc_sum = torch.fft.irfft2(spectrum * kernel_spectra[-1], s=size)
    # Circular convolution with a (2r+1)-kernel anchored at the origin: output (i, j) is
    # centred on padded pixel (i - r, j - r); the unpadded image starts at padded index r.
    crop = (slice(2 * radius, 2 * radius + h), slice(2 * radius, 2 * radius + w))
    denom = disc_sum[:, crop[0], crop[1]].clamp_min(1e-6)
    out = np.empty((ORIENTATIONS, h, w), dtype=np.float32)
    for k in range(ORIENTATIONS):
        diff = torch.fft.irfft2(spectrum * kernel_spectra[k], s=size)[:, crop[0], crop[1]]
        out[k] = (0.5 * (diff**2 / denom).sum(dim=0) / half_area).clamp(0, 1).numpy()
    return out


def textons(lightness: np.ndarray, count: int = 32, seed: int = 0) -> np.ndarray:
    """`[H, W]` texton ids: k-means over a filter bank (Gaussian derivatives, Laplacians)."""
    from scipy.cluster.vq import kmeans2, vq  # imported here: it pulls in scipy.spatial (0.14 s), which no other generator needs

    responses = []
    for sigma in (1.0, 2.0):
        for order in ((0, 1), (1, 0), (0, 2), (2, 0), (1, 1)):
            responses.append(ndimage.gaussian_filter(lightness, sigma, order=order))
    for sigma in (1.0, 2.0, 4.0):
        responses.append(ndimage.gaussian_laplace(lightness, sigma))
    features = np.stack(responses, axis=-1).reshape(-1, len(responses))
    features = features / np.maximum(features.std(axis=0), 1e-12)
    rng = np.random.default_rng(seed)
    sample = features[rng.choice(len(features), size=min(len(features), 20000), replace=False)]
    centroids, _ = kmeans2(sample, count, minit="++", seed=seed)
    ids, _ = vq(features, centroids)
    return ids.reshape(lightness.shape)


def boundary_strength(image: np.ndarray, bins: int = 25, texton_count: int = 32, seed: int = 0) -> np.ndarray:
    """`[8, H, W]` multiscale oriented gradient (mPb) of an HWC uint8 RGB image, in [0, 1]."""
    lab = color.rgb2lab(image.astype(np.float64) / 255.0)
    channels = [
        (np.clip(lab[..., 0] / 100.0, 0, 1), bins, BRIGHTNESS_RADII),
        (np.clip((lab[..., 1] + 100) / 200.0, 0, 1), bins, TEXTURE_RADII),
        (np.clip((lab[..., 2] + 100) / 200.0, 0, 1), bins, TEXTURE_RADII),
    ]
    scale = max(image.shape[:2]) / 481.0
    total = np.zeros((ORIENTATIONS,) + image.shape[:2], dtype=np.float32)
    terms = 0
    for values, count, radii in channels:
        index = np.minimum((values * count).astype(np.int64), count - 1)
        for r in radii:
            total += oriented_gradient(index, count, max(2, round(r * scale)))
            terms += 1
    ids = textons(lab[..., 0] / 100.0, texton_count, seed)
    for r in TEXTURE_RADII:
        total += oriented_gradient(ids, texton_count, max(2, round(r * scale)))
        terms += 1
    return total / terms


def boundary_orientation(labels: np.ndarray) -> np.ndarray:
    """`[H, W]` orientation index (0..7) of the region boundary near each pixel (structure tensor)."""
    edges = np.zeros(labels.shape, dtype=np.float64)
    edges[:, :-1] += labels[:, :-1] != labels[:, 1:]
    edges[:-1, :] += labels[:-1, :] != labels[1:, :]
    smooth = ndimage.gaussian_filter(np.minimum(edges, 1), 1.5)
    gy, gx = np.gradient(smooth)
    jxx = ndimage.gaussian_filter(gx * gx, 2.0)
    jxy = ndimage.gaussian_filter(gx * gy, 2.0)
    jyy = ndimage.gaussian_filter(gy * gy, 2.0)
    normal = 0.5 * np.arctan2(2 * jxy, jxx - jyy)  # direction across the boundary
    along = np.mod(normal + np.pi / 2, np.pi)
    return np.rint(along / (np.pi / ORIENTATIONS)).astype(np.int64) % ORIENTATIONS


def ultrametric_hierarchy(strength: np.ndarray, smoothing: float = 1.0) -> MergeTree:
    """Oriented watershed + greedy merging of an `[8, H, W]` boundary strength into a UCM tree."""
    from skimage.segmentation import watershed  # here: it imports skimage.morphology (0.07 s), which no other generator needs

    peak = ndimage.gaussian_filter(strength.max(axis=0), smoothing)
    leaves = relabel(watershed(peak))
    orient = boundary_orientation(leaves)
    oriented = np.take_along_axis(strength, orient[None], axis=0)[0]
    num = int(leaves.max()) + 1

    # Boundary pixel pairs -> per leaf-pair sums of the oriented strength.
    codes, weights = [], []
    for a, b, wa, wb in (
        (leaves[:, :-1], leaves[:, 1:], oriented[:, :-1], oriented[:, 1:]),
        (leaves[:-1, :], leaves[1:, :], oriented[:-1, :], oriented[1:, :]),
    ):
        differ = a != b
        low, high = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
        codes.append(low * num + high)
        weights.append(0.5 * (wa[differ] + wb[differ]))
    codes = np.concatenate(codes)
    weights = np.concatenate(weights).astype(np.float64)
    unique, inverse = np.unique(codes, return_inverse=True)
    sums = np.bincount(inverse, weights=weights)
    counts = np.bincount(inverse).astype(np.float64)

    arcs: list[dict[int, list[float]]] = [dict() for _ in range(2 * num - 1)]
    heap = []
    for code, s, c in zip(unique.tolist(), sums.tolist(), counts.tolist()):
        a, b = divmod(code, num)
        arcs[a][b] = arcs[b][a] = [s, c]
        heap.append((s / c, a, b))
    heapq.heapify(heap)
    alive = np.zeros(2 * num - 1, dtype=bool)
    alive[:num] = True
    merges, levels = [], []
    level, t = 0.0, num
    while heap:
        weight, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        level = max(level, weight)  # an ultrametric never decreases up the hierarchy
        merges.append((a, b))
        levels.append(level)
        alive[a] = alive[b] = False
        alive[t] = True
        merged: dict[int, list[float]] = {}
        for side in (a, b):
            for c, (s, n) in arcs[side].items():
                if c in (a, b):
                    continue
                entry = merged.setdefault(c, [0.0, 0.0])
                entry[0] += s
                entry[1] += n
                del arcs[c][side]
            arcs[side] = {}
        for c, (s, n) in merged.items():
            arcs[t][c] = arcs[c][t] = [s, n]
            heapq.heappush(heap, (s / n, t, c))
        t += 1
    return MergeTree(leaves, np.array(merges, dtype=np.int64).reshape(-1, 2), np.array(levels))


@dataclass(frozen=True)
class ContourHierarchyConfig(ProposalConfig):
    """The contour hierarchy's settings (see `ContourHierarchy`)."""

    name: ClassVar[str] = "contour-hierarchy"
    region_counts: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    working_size: int = 320
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not self.region_counts or min(self.region_counts) < 1:
            raise SettingError("region_counts", f"{{setting}} must be positive numbers of regions, got {self.region_counts}")
        if self.working_size < 32:
            raise SettingError("working_size", f"{{setting}} must be at least 32, got {self.working_size}")


class ContourHierarchy(ProposalGenerator):
    """Regions of an ultrametric contour map at several thresholds, as masks.

    Args:
        max_proposals: K, the number of masks kept.
        region_counts: the UCM thresholds, given as the number of regions each leaves.
        working_size: the longer side the image is scaled to before computing contours.
        seed: seed of the texton k-means.
        duplicate_iou: masks overlapping an earlier one above this IoU are dropped.
    """

    name = "contour-hierarchy"
    needs_no_model = True
    Config = ContourHierarchyConfig

    def __init__(
        self,
        max_proposals: int = DEFAULT_MAX_PROPOSALS,
        region_counts: tuple[int, ...] = (2, 4, 8, 16, 32, 64),
        working_size: int = 320,
        seed: int = 0,
        duplicate_iou: float = DEFAULT_DUPLICATE_IOU,
    ):
        super().__init__(max_proposals, duplicate_iou)
        ContourHierarchyConfig(max_proposals, duplicate_iou, tuple(region_counts), working_size, seed)  # checks them
        self.region_counts = tuple(sorted(set(region_counts)))
        self.working_size = working_size
        self.seed = seed

    def hierarchy(self, image: np.ndarray) -> MergeTree:
        """The UCM as a merge tree over watershed regions of the working-size image."""
        return ultrametric_hierarchy(boundary_strength(working_image(image, self.working_size), seed=self.seed))

    def generate(self, image: np.ndarray) -> torch.Tensor:
        tree = self.hierarchy(image)
        nodes: list[int] = []
        for count in self.region_counts:  # coarse to fine
            nodes.extend(n for n in tree.partition(count) if n not in nodes)
        masks = upsample_masks(tree.masks(nodes), image.shape[:2])
        return self.finalize(masks)
