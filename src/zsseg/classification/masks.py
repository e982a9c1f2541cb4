"""Labelling masks that already exist (`zsseg classify`): Eq. 1 on each given mask, Eq. 2 over
all of them, at the image's full size.

    classifier = RegionClassifier(load_clip("openai/clip-vit-base-patch16"))
    masks = read_masks("sam.json", height, width)          # zsseg.data.mask_files: any format
    result = classify_masks(classifier, "photo.jpg", masks, "cat; sofa, couch; wall")
    result.region_probs  # [K, C] Eq. 1 class probabilities of each mask
    result.label_map     # [H, W] int32 Eq. 2 labels, -1 where no mask covers the pixel

(`Segmenter.classify` does the same with a segmenter's classifier.)

The masks are not proposals to be resized: each is classified at full resolution exactly as
`RegionClassifier` classifies a mask (binarised, its bounding box cropped, background set to
CLIP's mean), and Eq. 2 with binary masks is, at each pixel, the class whose mean probability
over the masks that cover it is highest. Masks may overlap and need not cover the image.
Memory stays bounded for large photos with many masks: masks are decoded one at a time
(`RegionClassifier.classify_each`, `zsseg.assembly.binary_mask_labels`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..assembly import binary_mask_labels
from ..errors import ZssegError
from ..data.images import ImageInput, as_rgb_array
from ..data.mask_files import MaskSet
from ..results import SegmentationResult
from ..runs.timing import lap, timed
from ..runs.progress import Progress
from .regions import RegionClassifier
from ..data.vocabulary import Vocabulary, as_vocabulary


def classify_masks(classifier: RegionClassifier, image: ImageInput, masks: MaskSet | np.ndarray,
                   vocabulary: Vocabulary | str | list[str], progress: bool = False) -> SegmentationResult:
    """Label each of `masks` (a `MaskSet`, or `[K, H, W]` bool / 0-1 array at the image's size)
    with a class of `vocabulary` by Eq. 1, and every pixel by Eq. 2 over the masks covering it.

    Args:
        classifier: the `RegionClassifier` (its CLIP, prompt, threshold and batch size).
        image: a path, PIL image, or HWC uint8 array.
        masks: binary, non-empty masks; they may overlap.
        vocabulary: a `Vocabulary`, a preset name, "a; b, c" text, or a list of names.
        progress: show how many masks were cropped and encoded (`zsseg.runs.progress.Progress`: a
            bar on a terminal, a line every 50 masks or 60 s elsewhere).
    """
    with timed() as timer:
        vocabulary = as_vocabulary(vocabulary)
        pixels = as_rgb_array(image)
        height, width = pixels.shape[:2]
        if not isinstance(masks, MaskSet):
            masks = MaskSet.from_array(np.asarray(masks))
        if (masks.height, masks.width) != (height, width):
            raise ZssegError(f"{masks.source}: the masks are {masks.width}x{masks.height} but the image is {width}x{height} "
                             "(width x height)")
        if len(masks) == 0:
            raise ZssegError(f"{masks.source}: holds no masks")
        lap("image_loading")
        with Progress(len(masks), "classifying", "mask", enabled=progress) as bar:
            scores = classifier.classify_each(pixels, _counted(iter(masks), bar), vocabulary)
        if not bool(scores.keep.all()):  # a MaskSet holds no empty mask; a float mask may be empty once binarised
            empty = masks.ids[int((~scores.keep).nonzero()[0, 0])]
            raise ZssegError(f"{masks.source}: mask {empty} is empty at the classifier's threshold")
        lap("image_encoding")
        probs = scores.probs.float()
        label_map = binary_mask_labels(iter(masks), probs.numpy(), (height, width))
        lap("assembly")
    return SegmentationResult(label_map=label_map, class_names=vocabulary.names, masks=masks, keep=scores.keep, region_probs=probs,
                              mask_ids=list(masks.ids), timings=timer.timings)


def _counted(masks: Iterator[np.ndarray], bar: Progress) -> Iterator[np.ndarray]:
    """The masks, counting each on `bar` when the next is asked for (this one is then cropped)."""
    for mask in masks:
        yield mask
        bar.update()
