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


# --- .npz: members checked from their headers before their data is read --------------------------


def _zip(path, members, method=None):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if method is None else method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npy_bytes(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _one_mask():
    return _square()[None]


@pytest.mark.parametrize("members, message", [
    ({"masks.npy": __import__("pickle").dumps([1, 2])}, "holds Python objects (pickled)"),
    ({"masks": _npy_bytes(_square()[None])}, "its member 'masks' is not a NumPy array"),
    ({"masks": b"\x93NUMPY" + b"x" * 50}, "its member 'masks' is not a NumPy array"),
    ({"masks.npy": _npy_bytes(_square()[None])[:-7]}, "holds 1,193 bytes of data: the file is damaged"),
    ({"masks.npy": _npy_bytes(np.array([[[{}]]], dtype=object))}, "pickled"),
    ({"masks.npy": b"\x93NUMPY\x09\x00" + b"\x00" * 20}, "format version (9, 0)"),
    ({"masks.npy": _npy_bytes(_square()[None]), "ids.npy": _npy_bytes(np.array([1, 2]))}, "2 ids for 1 masks"),
    ({"masks.npy": _npy_bytes(_square()[None]), "ids.npy": _npy_bytes(np.array([[1]]))}, "'ids' must be a 1-D array"),
    ({"masks.npy": _npy_bytes(_square()[None]), "ids": b"1"}, "its member 'ids' is not a NumPy array"),
    ({}, "holds no arrays"),
    ({"a.npy": _npy_bytes(_square()[None]), "b.npy": _npy_bytes(_square()[None])}, "holds 2 arrays (a, b)"),
])
def test_npz_members_that_are_not_arrays_are_one_line(tmp_path, members, message):
    path = _zip(tmp_path / "m.npz", members)
    with pytest.raises(ZssegError) as error:
        read_masks(path, H, W)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_npz_bomb_is_refused_from_its_header(tmp_path):
    import tracemalloc

    np.savez_compressed(tmp_path / "bomb.npz", masks=np.zeros((200, 1000, 1000), dtype=bool))  # 200 MB in 200 KB
    tracemalloc.start()
    try:
        with pytest.raises(ZssegError, match="the masks are 1000x1000 but the image is 40x30"):
            read_masks(tmp_path / "bomb.npz", H, W)
        with pytest.raises(ZssegError, match="holds 200 masks, more than the limit of 10"):
            read_masks(tmp_path / "bomb.npz", 1000, 1000, max_masks=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"{peak:,} bytes allocated to refuse it"


def test_npz_masks_are_read_one_at_a_time_in_any_compression(tmp_path):
    import zipfile

    masks = np.stack([_square(), ~_square()])
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        path = _zip(tmp_path / f"m{method}.npz", {"masks.npy": _npy_bytes(masks), "ids.npy": _npy_bytes(np.array(["a", "b"]))}, method)
        read = read_masks(path, H, W)
        assert read.ids == ["a", "b"] and np.array_equal(read.masks, masks)
    np.savez(tmp_path / "fortran.npz", masks=np.asfortranarray(masks.astype(np.uint8)))
    assert np.array_equal(read_masks(tmp_path / "fortran.npz", H, W).masks, masks)


# --- a photo is not an instance-id map -------------------------------------------------------------


def test_a_greyscale_photo_is_not_read_as_an_instance_id_map(coco_val, tmp_path):
    from PIL import Image

    image, label = coco_val[0]
    grey = tmp_path / "grey.png"
    Image.open(image).convert("L").save(grey)
    width, height = Image.open(image).size
    with pytest.raises(ZssegError, match="does not look like an instance-id map but like a photo"):
        read_masks(grey, height, width)
    # A real label map cut into quadrants (ids = class x 4 + quadrant): over 16 solid regions.
    classes = np.asarray(Image.open(label)).astype(np.uint16)
    rows, cols = np.indices(classes.shape)
    values = np.where(classes == 255, 0, classes * 4 + 2 * (rows > height // 2) + (cols > width // 2) + 1).astype(np.uint16)
    assert len(np.unique(values)) > 16
    Image.fromarray(values).save(tmp_path / "ids.png")
    assert len(read_masks(tmp_path / "ids.png", height, width)) == len(np.unique(values[values > 0]))


def test_many_small_solid_instances_are_an_id_map(tmp_path):
    from PIL import Image

    ids = np.zeros((120, 160), dtype=np.uint16)
    for k in range(300):  # 300 squares of 4x4 to 8x8 pixels on a grid
        row, col = divmod(k, 20)
        size = 4 + k % 5
        ids[row * 8:row * 8 + size, col * 8:col * 8 + size] = k + 1
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert len(read_masks(tmp_path / "ids.png", 120, 160)) == 300
