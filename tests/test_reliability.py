"""Issue 33: what a new user still broke. Every RLE is checked before pycocotools decodes it;
zsseg removes only files it can prove it wrote; an earlier output counts as done only when it
decodes whole; damaged model folders, tokenizers and device strings are one line; sizes are
read from headers before anything is decompressed."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from zsseg import read_masks
from zsseg.errors import ZssegError
from zsseg.writers import SOFTWARE

H, W = 30, 40


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _square():
    mask = np.zeros((H, W), dtype=bool)
    mask[5:15, 10:30] = True
    return mask


# The four JSON layouts that hold RLEs, each around one RLE object.
LAYOUTS = {
    "coco": lambda rle: {"images": [{"id": 1, "height": H, "width": W}], "annotations": [{"id": 7, "image_id": 1, "segmentation": rle}]},
    "sam": lambda rle: [{"segmentation": rle, "area": 1}],
    "zsseg": lambda rle: {"software": SOFTWARE, "height": H, "width": W, "classes": [{"index": 0, "name": "cat", "rle": rle}]},
    "zsseg-masks": lambda rle: {"software": SOFTWARE, "masks": [{"id": 3, "rle": rle}]},
}

GOOD = _rle(_square())["counts"]
BAD_RLES = {
    "one run": ("1", "its runs cover 1 pixels, not 30x40 = 1200"),
    "two runs": ("11", "its runs cover 2 pixels"),
    "empty string": ("", "its runs cover 0 pixels"),
    "zero": ("0", "its runs cover 0 pixels"),
    "one run too many": (GOOD + "1", "not 30x40 = 1200"),
    "cut short": (GOOD[:-1], "invalid RLE"),
    "ends mid-value": (GOOD + "`", "ends in the middle of a run length"),
    "character above 'o'": ("~" + GOOD, "outside COCO's characters"),
    "character below '0'": ("!" + GOOD, "outside COCO's characters"),
    "NUL character": (GOOD[:2] + "\x00" + GOOD[2:], "outside COCO's characters"),
    "value of 7 characters": ("oooooo0", "more than 6 characters"),
    "negative first run": ("O" + GOOD[1:], "negative run length"),
    "negative later run": (GOOD[:2] + "O" + GOOD[3:], "negative run length"),
    "not ASCII": ("é" + GOOD, "not ASCII"),
    "list short": ([10, 20], "its runs cover 30 pixels"),
    "list negative": ([-5, 1205], "\"counts\" must be a string, or a list"),
    "list of floats": ([600.0, 600.0], "\"counts\" must be a string, or a list"),
    "list of booleans": ([True, False], "\"counts\" must be a string, or a list"),
    "list all background": ([1200], "is empty"),
    "string all background": (_rle(np.zeros((H, W), bool))["counts"], "is empty"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("case", sorted(BAD_RLES))
def test_every_rle_is_checked_before_it_is_decoded(tmp_path, monkeypatch, layout, case):
    counts, message = BAD_RLES[case]
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(LAYOUTS[layout]({"size": [H, W], "counts": counts})))
    decoded = []
    real_decode = mask_utils.decode
    monkeypatch.setattr(mask_utils, "decode", lambda rle: decoded.append(rle) or real_decode(rle))
    with pytest.raises(ZssegError) as error:
        read_masks(path, H, W)
    assert message in str(error.value) and "\n" not in str(error.value) and str(path) in str(error.value)
    assert not decoded, "pycocotools decoded an RLE that zsseg had not checked"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_well_formed_rles_read_the_same_in_every_layout(tmp_path, layout):
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(LAYOUTS[layout](_rle(_square()))))
    masks = read_masks(path, H, W)
    assert len(masks) == 1 and np.array_equal(masks.mask(0), _square()) and masks.areas() == [200]


def test_compressed_runs_match_pycocotools_on_random_masks():
    from zsseg.mask_files import compressed_runs

    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = rng.integers(1, 120, 2)
        mask = rng.random((height, width)) < rng.random()
        runs = compressed_runs(mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))["counts"], "m")
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
        assert np.array_equal(flat, mask.ravel(order="F"))
