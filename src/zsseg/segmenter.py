"""The two-stage pipeline behind one object: proposals -> CLIP region classification -> assembly.

    segmenter = Segmenter(clip="openai/clip-vit-base-patch16", proposals="selective-search")
    result = segmenter.segment("photo.jpg", "cat; sofa, couch; wall")
    result.label_map  # [H, W] int32, index into result.class_names, -1 where no proposal
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .assembly import UNLABELED, assemble, assemble_labels
from .clip import DEFAULT_CLIP, ClipModel, load_clip
from .errors import ZssegError
from .images import ImageInput, as_rgb_array, image_tensor, resize_image
from .proposals import ProposalGenerator, build_proposal_generator
from .region_classification import RegionClassifier
from .vocabulary import Vocabulary, as_vocabulary

DEFAULT_PROPOSALS = "selective-search"
DEFAULT_MAX_SIZE = 1024


@dataclass
class SegmentationResult:
    """What `Segmenter.segment` returns.

    Attributes:
        label_map: `[H, W]` int32 at the input image's size; class index, or -1 (`UNLABELED`)
            where no proposal covers the pixel.
        class_names: the vocabulary, one name per class (synonyms joined by ", ").
        scores: `[C, h, w]` float32 Eq. 2 scores at the processing size (h, w), each pixel's
            scores summing to 1 where covered and 0 elsewhere.
        masks: `[K, h, w]` float32 proposals that were classified (non-empty after binarising).
        region_probs: `[K, C]` float32 class probabilities of each proposal (Eq. 1).
        timings: seconds spent in each stage.
    """

    label_map: np.ndarray
    class_names: list[str]
    scores: torch.Tensor
    masks: torch.Tensor
    region_probs: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.label_map.shape)

    def class_areas(self) -> dict[str, int]:
        """Pixel count of each class present in the label map, by name."""
        counts = np.bincount(self.label_map[self.label_map >= 0].ravel(), minlength=len(self.class_names))
        return {self.class_names[i]: int(n) for i, n in enumerate(counts) if n > 0}


class Segmenter:
    """Holds the loaded models; segments any number of images with any vocabulary.

    Args:
        clip: hub id, local folder, or an already loaded `ClipModel`.
        proposals: a generator name ("selective-search", "contour-hierarchy") or instance.
        templates: prompt template set ("imagenet", "vild", "single") or a list of templates.
        device, dtype: where and how CLIP runs ("cpu"/"cuda", "fp32"/"bf16").
        max_size: images are processed with their longer side at most this many pixels; the
            label map is returned at full size.
        max_proposals: K, when `proposals` is a name.
        batch_size: crops per CLIP forward pass.
    """

    def __init__(
        self,
        clip: str | ClipModel = DEFAULT_CLIP,
        proposals: str | ProposalGenerator = DEFAULT_PROPOSALS,
        templates: str | tuple[str, ...] = "imagenet",
        device: str = "cpu",
        dtype: str = "fp32",
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_proposals: int = 100,
        batch_size: int = 32,
    ):
        if max_size is not None and max_size < 32:
            raise ZssegError(f"max_size must be at least 32 pixels, got {max_size}")
        if isinstance(proposals, str):
            proposals = build_proposal_generator(proposals, max_proposals=max_proposals)
        self.clip = clip if isinstance(clip, ClipModel) else load_clip(clip, device=device, dtype=dtype)
        self.proposals = proposals
        self.classifier = RegionClassifier(self.clip, templates=templates, batch_size=batch_size)
        self.max_size = max_size

    def prepare(self, vocabulary: Vocabulary | str | list[str]) -> Vocabulary:
        """Validate a vocabulary and encode its names (cached), so errors surface before any image."""
        vocabulary = as_vocabulary(vocabulary)
        self.classifier.embed_vocabulary(vocabulary)
        return vocabulary

    def segment(
        self,
        image: ImageInput,
        vocabulary: Vocabulary | str | list[str],
        ground_truth: np.ndarray | None = None,
    ) -> SegmentationResult:
        """Label every pixel of `image` with a class of `vocabulary`.

        Args:
            image: a path, PIL image, or HWC uint8 array.
            vocabulary: a `Vocabulary`, a preset name, "a; b, c" text, or a list of names.
            ground_truth: `[H, W]` label map, only for proposals that need one (the
                "ground-truth" generator: CLIP then classifies the true segments). Such
                proposals are made at full size so that they match the label map exactly.
        """
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = timings.get(stage, 0.0) + now - clock
            clock = now

        vocabulary = as_vocabulary(vocabulary)
        text = self.classifier.embed_vocabulary(vocabulary)
        lap("text_encoding")
        full = as_rgb_array(image)
        if self.proposals.needs_ground_truth and ground_truth is None:
            raise ZssegError(f"the '{self.proposals.name}' proposals need the image's label map (ground_truth=)")
        small = resize_image(full, self.proposals.proposal_size(full.shape[0], full.shape[1], self.max_size))
        lap("image_loading")
        masks = self.proposals.generate(small, ground_truth)  # generators that need none ignore it
        lap("proposals")
        crops, keep = self.classifier.crops(image_tensor(small), masks)
        lap("crops")
        features = self.classifier.encode_crops(crops)
        lap("image_encoding")
        probs, _ = self.classifier.scores(features, text)
        masks = masks[keep]
        scores = assemble(masks, probs)
        labels = assemble_labels(masks, probs, size=full.shape[:2])
        lap("assembly")
        return SegmentationResult(
            label_map=labels.numpy().astype(np.int32),
            class_names=vocabulary.names,
            scores=scores,
            masks=masks,
            region_probs=probs,
            timings=timings,
        )


__all__ = ["Segmenter", "SegmentationResult", "UNLABELED"]
