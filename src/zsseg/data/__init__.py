"""What zsseg reads: images, vocabularies (with the built-in presets), benchmark datasets in their
prepared layouts and the preparation of those from the official downloads, mask files that
already exist, and pseudo-label folders."""

from ..exports import lazy

EXPORTS = {"Vocabulary": "vocabulary", "read_image": "images", "load_dataset": "datasets", "read_masks": "mask_files", "MaskSet": "mask_files"}
__getattr__, __dir__ = lazy(__name__, EXPORTS)
__all__ = sorted(EXPORTS)
