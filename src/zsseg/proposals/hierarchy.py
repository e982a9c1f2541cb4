"""A binary merge tree over superpixels: the structure shared by Selective Search and the UCM.

Leaves are the regions of an initial over-segmentation (a label map). Each merge joins two
nodes into a new one; node `L + i` is the result of the i-th merge. A node's mask is the union
of its leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass
class MergeTree:
    """Attributes:
    leaves: `[H, W]` int64 label map with labels 0..L-1.
    merges: `[M, 2]` int64, the two nodes joined by each merge (node L + i is merge i).
    levels: `[M]` float64, the dissimilarity at which each merge happened.
    """

    leaves: np.ndarray
    merges: np.ndarray
    levels: np.ndarray

    @property
    def num_leaves(self) -> int:
        return int(self.leaves.max()) + 1

    @property
    def num_nodes(self) -> int:
        return self.num_leaves + len(self.merges)

    @cached_property
    def cover(self) -> np.ndarray:
        """`[L + M, L]` bool: the leaves under every node, built bottom-up once."""
        num_leaves = self.num_leaves
        cover = np.zeros((self.num_nodes, num_leaves), dtype=bool)
        cover[np.arange(num_leaves), np.arange(num_leaves)] = True
        for i, (a, b) in enumerate(self.merges):
            cover[num_leaves + i] = cover[a] | cover[b]
        return cover

    def masks(self, nodes: list[int] | np.ndarray) -> np.ndarray:
        """`[len(nodes), H, W]` bool masks of the given nodes."""
        return self.cover[np.asarray(nodes, dtype=np.int64)][:, self.leaves]

    def partition(self, num_regions: int) -> list[int]:
        """Nodes of the partition left after merging down to `num_regions` regions."""
        num_leaves = self.num_leaves
        steps = max(0, min(len(self.merges), num_leaves - num_regions))
        alive = set(range(num_leaves))
        for i in range(steps):
            a, b = self.merges[i]
            alive.discard(int(a))
            alive.discard(int(b))
            alive.add(num_leaves + i)
        return sorted(alive)


def adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """`[P, 2]` unique pairs (a < b) of labels that touch horizontally or vertically."""
    num = np.int64(labels.max()) + 1
    codes = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        low, high = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
        codes.append(low.astype(np.int64) * num + high)
    codes = np.unique(np.concatenate(codes))
    return np.stack([codes // num, codes % num], axis=1)


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered to 0..L-1 (int64)."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int64)
