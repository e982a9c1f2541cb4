"""The label conversions of the community preparation scripts, file by file: bytes of the
official file in, bytes of the prepared file out, as each script computes and saves them (with
Pillow's default PNG, TIFF and JPEG encoders, so the same Pillow gives the same bytes).

| function | script it matches |
|---|---|
| `coco_stuff_map` | `datasets/prepare_coco_stuff_164k_sem_seg.py` of zsseg.baseline (the reference's): raw map value = COCO id - 1 -> 0..170 in id order, 255 otherwise; no file for a map with no labelled pixel |
| `ade20k_150_map` | detectron2's `datasets/prepare_ade20k_sem_seg.py`: 0..150 -> value - 1 in uint8 (0 -> 255) |
| `ade20k_full_pair` | MaskFormer's `datasets/prepare_ade20k_full_sem_seg.py`: shorter side to 512 (OpenCV bilinear / nearest), class = R / 10 * 256 + G of `*_seg.png` -> 847 train ids, uint16 TIFF, image re-saved as JPEG |
| `pascal_context_59`, `pascal_context_459` | ov-seg's `datasets/prepare_pascal_context.py` (the `pc59_val` / `pc459_val` layout) |
| `sbd_mat` | mmsegmentation's `tools/dataset_converters/voc_aug.py`: `GTcls.Segmentation` as an 8-bit PNG |
| `voc_class_indices` | DeepLab's `remove_gt_colormap.py`: VOC's palette PNG as its 8-bit indices (DrSleep's `SegmentationClassAug` holds VOC's own labels so) |
| `cityscapes_train_ids` | cityscapesScripts' `createTrainIdLabelImgs.py`: the trainId of every labelId (the same polygons drawn in the same order) |
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from ..datasets import CITYSCAPES_ID_TO_TRAIN_ID
from ...errors import ZssegError
from ..images import MAX_PIXELS
from .opencv_resize import resize_linear, resize_nearest

# COCO-Stuff-164k's 182 ids (1..182) of which COCO 2017 uses 171; raw map value = id - 1.
_COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
COCO_STUFF_RAW_VALUES = tuple(value for value in range(182) if value + 1 not in _COCO_UNUSED_IDS)

# Pascal Context's 59 classes, by their number in the dataset's labels.txt, in the 59-class order
# (Detail API, mmsegmentation and ov-seg alike).
PASCAL_CONTEXT_59_IDS = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115, 144, 158, 159, 162,
    187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416,
    420, 424, 427, 440, 445, 454, 458,
)  # fmt: skip

ADE20K_FULL_MAX_SIZE = 512  # MaskFormer's shorter side


def _lut(mapping: dict[int, int], size: int, fill: int, dtype) -> np.ndarray:
    table = np.full(size, fill, dtype=dtype)
    for raw, value in mapping.items():
        table[raw] = value
    return table


_COCO_LUT = _lut({raw: index for index, raw in enumerate(COCO_STUFF_RAW_VALUES)}, 256, 255, np.uint8)
_CITYSCAPES_LUT = _lut(CITYSCAPES_ID_TO_TRAIN_ID, 256, 255, np.uint8)


def decode(data: bytes, name: str) -> np.ndarray:
    """An image file's pixels as Pillow gives them to numpy (palette images as their indices)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            if image.width * image.height > MAX_PIXELS:
                raise ZssegError(f"{name} is {image.width}x{image.height}, above the limit of {MAX_PIXELS:,} pixels")
            return np.array(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ZssegError(f"{name} is not a readable image ({error}); is the archive damaged?") from None


def encode(array: np.ndarray, format: str) -> bytes:
    """`Image.fromarray(array).save(path)` for a path of that format, as bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


def _single_channel(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ZssegError(f"{name} is not an 8-bit single-channel label map (it has shape {array.shape}, {array.dtype})")
    return array


def coco_stuff_map(data: bytes, name: str) -> bytes | None:
    """A raw stuffthingmap (value = COCO id - 1, 255 unlabeled) -> the detectron2 map (0..170, 255);
    None, as the reference's script writes nothing, where no pixel is labelled."""
    raw = decode(data, name)
    if raw.ndim != 2 or raw.dtype.kind not in "ui":
        raise ZssegError(f"{name} is not a single-channel label map (it has shape {raw.shape}, {raw.dtype})")
    if raw.dtype == np.uint8:
        mapped = _COCO_LUT[raw]
    else:  # a 16-bit map: the script's table maps 0..181 and leaves every other value 255
        mapped = np.where((raw >= 0) & (raw <= 255), _COCO_LUT[np.clip(raw, 0, 255)], np.uint8(255))
    if (mapped == 255).all():
        return None
    return encode(mapped, "PNG")


def ade20k_150_map(data: bytes, name: str) -> bytes:
    """ADEChallengeData2016 annotation (0 other, 1..150) -> annotations_detectron2 (0..149, 255)."""
    return encode(_single_channel(decode(data, name), name) - np.uint8(1), "PNG")


def ade20k_full_classes(seg: np.ndarray, name: str) -> np.ndarray:
    """ADE20K's `*_seg.png` class encoding: R / 10 * 256 + G (int32)."""
    if seg.ndim != 3 or seg.shape[2] < 2:
        raise ZssegError(f"{name} is not an ADE20K class map (an RGB *_seg.png)")
    return (seg[:, :, 0] // 10).astype(np.int32) * 256 + seg[:, :, 1].astype(np.int32)


def ade20k_full_pair(image_data: bytes, seg_data: bytes, image_name: str, seg_name: str, lut: np.ndarray) -> tuple[bytes, bytes]:
    """An ADE20K image and its `*_seg.png` -> (images_detectron2 JPEG, annotations_detectron2 uint16 TIFF):
    the shorter side brought to 512 where it is longer, classes through `lut` (ADE id -> 847 train id, 65535 other)."""
    image = np.asarray(decode(image_data, image_name))
    classes = ade20k_full_classes(decode(seg_data, seg_name), seg_name)
    height, width = image.shape[:2]
    if width >= height > ADE20K_FULL_MAX_SIZE:
        size = (round(width / float(height) * ADE20K_FULL_MAX_SIZE), ADE20K_FULL_MAX_SIZE)
    elif height >= width > ADE20K_FULL_MAX_SIZE:
        size = (ADE20K_FULL_MAX_SIZE, round(height / float(width) * ADE20K_FULL_MAX_SIZE))
    else:
        size = None
    if size is not None:
        if image.dtype != np.uint8:
            raise ZssegError(f"{image_name} is not an 8-bit image")
        image = resize_linear(image, *size)
        classes = resize_nearest(classes, *size)
    try:
        jpeg = encode(image, "JPEG")
    except (OSError, ValueError, TypeError) as error:
        raise ZssegError(f"{image_name} cannot be saved as MaskFormer saves it ({error})") from None
    return jpeg, encode(lut[classes], "TIFF")


def ade20k_full_lut(class_ids: tuple[int, ...]) -> np.ndarray:
    """ADE class number -> train id (its position in `class_ids`), 65535 for every other class."""
    return _lut({class_id: index for index, class_id in enumerate(class_ids)}, 256 * 26, 65535, np.uint16)


def _label_map(data: bytes, name: str, defined: set[int] | None) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mat = loadmat(io.BytesIO(data))
    except Exception as error:  # scipy raises many types for a damaged file
        raise ZssegError(f"{name} is not a readable MATLAB file ({error})") from None
    if "LabelMap" not in mat:
        raise ZssegError(f"{name} has no LabelMap; is it a PASCAL-Context annotation (trainval/*.mat)?")
    labels = mat["LabelMap"]
    if labels.ndim != 2 or labels.dtype.kind not in "uif":
        raise ZssegError(f"{name}: LabelMap is {labels.dtype} of shape {labels.shape}; PASCAL-Context's are 2-D uint16 label maps")
    if labels.dtype != np.uint16:  # PASCAL-Context's are uint16; another MATLAB type holding the same numbers reads the same
        if labels.size and (labels.min() < 0 or labels.max() > 65535 or (labels.dtype.kind == "f" and (labels % 1).any())):
            raise ZssegError(f"{name}: LabelMap holds values that are not label numbers (0..65535)")
        labels = labels.astype(np.uint16)
    if defined is not None:
        unknown = sorted(set(np.unique(labels).tolist()) - defined - {0})
        if unknown:
            raise ZssegError(f"{name}: label {unknown[0]} is not in labels.txt")
    return labels


def pascal_context_59(data: bytes, name: str, defined: set[int] | None = None) -> bytes:
    """LabelMap -> pc59_val PNG: the 59 classes 0..58 in their order, 255 for the other classes and 0."""
    labels = _label_map(data, name, defined)
    out = np.full(labels.shape, 255, dtype=np.uint8)
    for index, class_id in enumerate(PASCAL_CONTEXT_59_IDS):
        out[labels == class_id] = index
    return encode(out, "PNG")


def pascal_context_459(data: bytes, name: str, defined: set[int] | None = None) -> bytes:
    """LabelMap -> pc459_val TIFF: label - 1 in uint16 (0 -> 65535)."""
    labels = _label_map(data, name, defined)
    return encode(labels - np.uint16(1), "TIFF")


def sbd_mat(data: bytes, name: str) -> bytes:
    """SBD's `cls/ID.mat` -> SegmentationClassAug PNG: `GTcls.Segmentation` as uint8."""
    from scipy.io import loadmat

    try:
        segmentation = loadmat(io.BytesIO(data))["GTcls"][0]["Segmentation"][0]
    except KeyError:
        raise ZssegError(f"{name} has no GTcls.Segmentation; is it one of SBD's cls/*.mat?") from None
    except Exception as error:
        raise ZssegError(f"{name} is not a readable MATLAB file ({error})") from None
    if segmentation.ndim != 2:
        raise ZssegError(f"{name}: GTcls.Segmentation is not a 2-D label map")
    return encode(segmentation.astype(np.uint8), "PNG")


def voc_class_indices(data: bytes, name: str) -> bytes:
    """VOC's palette `SegmentationClass/ID.png` -> its class indices as a plain 8-bit PNG."""
    return encode(_single_channel(decode(data, name), name), "PNG")


def cityscapes_train_ids(data: bytes, name: str) -> bytes:
    """`*_gtFine_labelIds.png` -> `*_gtFine_labelTrainIds.png`."""
    return encode(_CITYSCAPES_LUT[_single_channel(decode(data, name), name)], "PNG")
