"""What segmenting an image gives: one result type, for proposals, given masks and per-pixel methods."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .assembly import assemble


@dataclass
class SegmentationResult:
    """What `Segmenter.segment` and `Segmenter.classify` return.

    Attributes:
        label_map: `[H, W]` int32 at the input image's size; class index, or -1 (`UNLABELED`)
            where no mask covers the pixel.
        class_names: the vocabulary, one name per class (synonyms joined by ", ").
        masks: `[K, h, w]` float32 masks at the processing size (the proposals, or the masks
            given to `classify`, which may be a `zsseg.data.mask_files.MaskSet` read one at a
            time); K = 0 for the per-pixel methods.
        keep: `[K]` bool, the masks that took part in Eq. 2 (a mask empty at Eq. 1's threshold
            does not).
        region_probs: `[K, C]` float32 class probabilities of each mask (Eq. 1, the ensemble,
            or mask pooling in the fast mode); rows of masks not kept are 0.
        pixel_probs: `[C, h', w']` the per-pixel methods' class probabilities at 1/4 of the
            processing size (else None).
        mask_ids: the masks' own ids, where they were given with ids (`classify` of a mask file).
        timings: seconds spent in each stage.
    """

    label_map: np.ndarray
    class_names: list[str]
    masks: object
    keep: torch.Tensor
    region_probs: torch.Tensor
    pixel_probs: torch.Tensor | None = field(default=None, repr=False)
    mask_ids: list | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def scores(self) -> torch.Tensor:
        """`[C, h, w]` float32 Eq. 2 scores at the processing size, each pixel's scores summing
        to 1 where covered and 0 elsewhere; for the per-pixel methods, their probabilities."""
        if self.pixel_probs is not None:
            return self.pixel_probs
        return assemble(torch.as_tensor(self.masks)[self.keep], self.region_probs[self.keep])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.label_map.shape)

    def class_areas(self) -> dict[str, int]:
        """Pixel count of each class present in the label map, by name."""
        counts = np.bincount(self.label_map[self.label_map >= 0].ravel(), minlength=len(self.class_names))
        return {self.class_names[i]: int(n) for i, n in enumerate(counts) if n > 0}


__all__ = ["SegmentationResult"]
