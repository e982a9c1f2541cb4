"""Classifying regions with CLIP: Eq. 1 on each mask's crop (`regions`), dense CLIP features from
sliding windows (`dense`), and the labelling of masks that already exist (`masks`)."""

from ..exports import lazy

EXPORTS = {"RegionClassifier": "regions", "CropConfig": "regions", "crop_regions": "regions", "DenseClip": "dense", "classify_masks": "masks"}
__getattr__, __dir__ = lazy(__name__, EXPORTS)
__all__ = sorted(EXPORTS)
