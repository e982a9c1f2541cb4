"""The outputs of `segment` at any size: the overlay's colours and the JSON's per-class RLE are
made by shortcuts (a lookup table, runs of the label map) that must give the same bytes as
the straightforward definitions."""

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from zsseg.outputs import writers
from definitions import blend_by_pixel, class_rles_by_mask
from zsseg.outputs.writers import palette, record


def _label_maps(rng):
    for trial in range(45):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        classes = int(rng.integers(1, 300))
        kind = trial % 3
        if kind == 0:  # every pixel its own run
            labels = rng.integers(-1, classes, (h, w))
        elif kind == 1:  # blocks, as segments are
            labels = np.kron(rng.integers(-1, classes, (3, 4)), np.ones((h, w), dtype=np.int64))
        else:  # one class, or nothing labelled
            labels = np.full((h, w), rng.integers(-1, classes))
        yield labels.astype(np.int32), classes


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode, in the check only
def test_overlay_and_rle_shortcuts_give_the_same_bytes(coco_val):
    rng = np.random.default_rng(0)
    real = np.asarray(Image.open(coco_val[0][1])).astype(np.int32)
    real = np.where(real == 255, -1, real)  # the ground truth's unlabelled pixels
    cases = [*_label_maps(rng), (real, 171)]
    for labels, classes in cases:
        image = rng.integers(0, 256, labels.shape + (3,), dtype=np.uint8)
        colours = palette(classes)
        assert np.array_equal(writers._blend(image, labels, colours, 0.55), blend_by_pixel(image, labels, colours))
        assert writers._class_rles(labels) == class_rles_by_mask(labels)
    entry = record(real, [f"class {i}" for i in range(171)], "real.png")
    for item in entry["classes"]:
        decoded = mask_utils.decode({"size": item["rle"]["size"], "counts": item["rle"]["counts"].encode("ascii")})
        assert np.array_equal(decoded.astype(bool), real == item["index"]) and decoded.sum() == item["area"]
