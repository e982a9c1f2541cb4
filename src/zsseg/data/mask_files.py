"""Reading masks that already exist (SAM's output, an annotation tool's export, zsseg's own
JSON) for `zsseg classify`: one function, `read_masks(path, height, width)`, for every format,
told from the path (and, for JSON, from its layout).

| format | path | one mask is | its id |
|---|---|---|---|
| `png-folder` | a folder | one binary PNG: two levels, 0 and 1 or 0 and 255 (or 0 and 65535 in 16 bits); greyscale, palette (its indices) or RGB with equal channels | the file's stem; files sorted by name |
| `instance-png` | one `.png` | each non-zero value of an 8- or 16-bit single-channel or palette PNG (0 is background) | the value |
| `coco` | `.json` with `annotations` | one annotation: compressed RLE, uncompressed RLE or polygons | the annotation's `id` |
| `sam` | `.json` holding a list | one record of `SamAutomaticMaskGenerator` (`coco_rle` mode, or `binary_mask` rows of 0/1) | its index in the list |
| `zsseg` | `.json` that `zsseg segment` wrote | one class region | the class's name |
| `zsseg-masks` | `STEM_masks.json` that `zsseg classify` wrote | one mask | its id there |
| `npy`, `npz` | `[K, H, W]` bool, or integers / floats holding only 0 and 1 | one slice | 0..K-1, or an `.npz`'s `ids` |

A single PNG is always an instance-id map: a binary {0, 1} PNG is one mask with id 1, a
{0, 255} one a mask with id 255. In a folder, files that are not PNGs, hidden files and
subfolders are passed over (`MaskSet.passed_over` counts them for the command's summary).

Every mask must match the image's size, be binary and have at least one pixel; masks may
overlap and need not cover the image. Every RLE is checked (`compressed_runs`, run total
height x width) before pycocotools decodes it. A COCO file holding several images needs `image_id`;
the `images` entry of that id, where it gives a size, must match the image. At most
`max_masks` masks are read (default 1000): each one is a CLIP crop to encode, and the bound
turns a wrong file (a 16-bit photo taken for an instance map) into one line instead of an
hour's work; an 8-bit photo's 255 levels are under it, and are refused for being speckled, not
solid regions (`_check_solid`). Memory is not what bounds it: masks are kept as COCO run-length encodings (a few
kilobytes each, where 300 masks of a 12-megapixel photo take 3.6 GB as a bool stack) and
decoded one at a time. Arrays are loaded with `allow_pickle=False`; an `.npz` is read
member by member, each array's header (dtype, shape, declared size) checked before any of its
data is decompressed, and its masks one slice at a time. Every problem is one
`ZssegError` line naming the file (and the mask). Torch-free.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..catalogue import DEFAULT_MAX_MASKS
from ..errors import SettingError, ZssegError, counted, one_line

FORMATS = ("png-folder", "instance-png", "coco", "sam", "zsseg", "zsseg-masks", "npy", "npz")
MaskId = Union[int, str]

_GREY_MODES = ("1", "L", "P", "I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass
class MaskSet:
    """Binary masks of one image, each with its id, kept as COCO compressed RLE.

    Attributes:
        source: the file or folder they were read from.
        format: one of `FORMATS` ("array" for `from_array`).
        height, width: the image's size, which every mask has.
        ids: one per mask (int or str: JSON values).
        rles: one COCO compressed RLE per mask (`{"size": [H, W], "counts": bytes}`): the
            file's own where it gave one, else `pycocotools.mask.encode` of the mask.
        image_id: the COCO image the annotations belong to (`coco` only).
        passed_over: entries of a `png-folder` that are not PNG masks (other files, hidden
            files, subfolders).
    """

    source: Path | str
    format: str
    height: int
    width: int
    ids: list[MaskId]
    rles: list[dict]
    image_id: int | str | None = None
    passed_over: int = 0

    def __len__(self) -> int:
        return len(self.rles)

    def mask(self, k: int) -> np.ndarray:
        """Mask `k`, `[H, W]` bool (column-major, as pycocotools decodes it)."""
        return mask_utils.decode(self.rles[k]).astype(bool)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The masks one at a time, each decoded when reached."""
        return (self.mask(k) for k in range(len(self)))

    @property
    def masks(self) -> np.ndarray:
        """All masks as one `[K, H, W]` bool array: K x H x W bytes, so iterate for large images."""
        stack = np.zeros((len(self), self.height, self.width), dtype=bool)
        for k, mask in enumerate(self):
            stack[k] = mask
        return stack

    def areas(self) -> list[int]:
        # One RLE per call: pycocotools 2.0.11's `area` of a list of more than 255 fails (uint8 overflow).
        return [int(mask_utils.area(rle)) for rle in self.rles]

    def boxes(self) -> list[list[int]]:
        """COCO boxes `[x, y, width, height]` in whole pixels, one per mask."""
        return [[int(v) for v in box] for box in mask_utils.toBbox(self.rles)] if self.rles else []

    def rle_json(self, k: int) -> dict:
        """Mask `k`'s RLE as JSON: `{"size": [H, W], "counts": str}`."""
        return {"size": [self.height, self.width], "counts": self.rles[k]["counts"].decode("ascii")}

    def describe(self) -> str:
        """"12 masks (coco, image 397133) from ann.json", for messages and summaries."""
        image = f", image {coco_id_text(self.image_id)}" if self.image_id is not None else ""
        return f"{counted(len(self), 'mask')} ({self.format}{image}) from {self.source}"

    @classmethod
    def from_array(cls, masks: np.ndarray, ids: list[MaskId] | None = None, source: str = "(array)",
                   max_masks: int | None = None) -> "MaskSet":
        """Masks given as an array `[K, H, W]` (bool, or numbers holding only 0 and 1), checked as
        a `.npy` file is."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ZssegError(f"{source}: masks must be one array [K, H, W], got shape {masks.shape}")
        return _from_stack(masks, source, "array", ids, masks.shape[1], masks.shape[2], max_masks)


def read_masks(path: str | Path, height: int, width: int, image_id: int | str | None = None,
               max_masks: int | None = DEFAULT_MAX_MASKS) -> MaskSet:
    """The masks in `path` (a file or folder in one of `FORMATS`) of an image of `height` x
    `width`, checked (see the module docstring). `image_id` chooses the image of a COCO
    annotation file that holds several; `max_masks` (None: no limit) bounds how many are read."""
    path = Path(path)
    if not path.exists():
        raise ZssegError(f"{path}: no such file or folder")
    suffix = "" if path.is_dir() else path.suffix.lower()
    readers = {"": _read_png_folder, ".png": _read_instance_png, ".npy": _read_npy, ".npz": _read_npz}
    if suffix == ".json":
        return _read_json(path, height, width, max_masks, image_id)
    if suffix not in readers:
        raise ZssegError(f"{path}: unknown mask format '{suffix or path.name}': give a folder of PNG masks, an instance-id "
                         "PNG, a COCO or SAM JSON, a JSON that zsseg wrote, or a .npy / .npz array")
    if image_id is not None:
        _not_coco(path, "a folder of PNG masks" if not suffix else f"a {suffix} file")
    return readers[suffix](path, height, width, max_masks)


def _not_coco(path: Path, what: str) -> None:
    raise SettingError("image_id", f"{path}: an image id ({{setting}}) chooses the annotations of a COCO file; this is {what}")


# --- helpers shared by the formats ---------------------------------------------------------------


def _size_error(where: str, mask_width: int, mask_height: int, width: int, height: int) -> ZssegError:
    return ZssegError(f"{where}: the masks are {mask_width}x{mask_height} but the image is {width}x{height} (width x height)")


def _check_count(count: int, where: Path | str, max_masks: int | None) -> None:
    if count == 0:
        raise ZssegError(f"{where}: holds no masks")
    if max_masks is not None and count > max_masks:
        raise SettingError("max_masks", f"{where}: holds {count} masks, more than the limit of {max_masks} (each is one CLIP crop "
                           "to encode); raise {setting} if this is the right file")


def _encoded(mask: np.ndarray, where: str) -> dict:
    """The COCO RLE of a binary mask `[H, W]`; an empty mask is an error naming it."""
    if not mask.any():
        raise _empty(where)
    return mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))


def _empty(where: str) -> ZssegError:
    return ZssegError(f"{where} is empty (no pixel set): remove it, zsseg cannot classify an empty mask")


def _levels(values: np.ndarray) -> np.ndarray:
    """The distinct values of an integer or bool array, fast for 8- and 16-bit images."""
    if values.dtype == bool:
        values = values.view(np.uint8)
    if values.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(values.ravel(), minlength=1))
    return np.unique(values)


def _shown(values, limit: int = 6) -> str:
    values = [v.item() if hasattr(v, "item") else v for v in values]
    return ", ".join(map(str, values[:limit])) + (", ..." if len(values) > limit else "")


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, read before Pillow decodes anything (None if the file
    does not start as a PNG): a mask of another size is refused from its 33 bytes, whatever its
    pixels would decompress to."""
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _open_png(path: Path, height: int, width: int) -> np.ndarray:
    """A PNG's pixels, after checking (from its header) that it is the image's size."""
    declared = _png_size(path)
    if declared is not None and declared != (width, height):
        raise _size_error(str(path), declared[0], declared[1], width, height)
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise ZssegError(f"{path}: not a PNG file (Pillow reads it as {image.format})")
            if image.size != (width, height):
                raise _size_error(str(path), image.width, image.height, width, height)
            if image.mode not in (*_GREY_MODES, "RGB"):
                raise ZssegError(f"{path}: a mask PNG must be greyscale, palette or single-channel 16-bit (RGB with equal "
                                 f"channels in a folder of masks); this one is {image.mode}")
            image.load()
            return np.asarray(image.convert("L") if image.mode == "1" else image)
    except ZssegError:
        raise
    except Image.DecompressionBombError:
        raise ZssegError(f"{path}: refused by Pillow's decompression-bomb guard") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ZssegError(f"{path}: not a PNG Pillow can read ({error})") from None


# --- PNG files ----------------------------------------------------------------------------------


def _read_png_folder(folder: Path, height: int, width: int, max_masks: int | None) -> MaskSet:
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise ZssegError(f"{folder}: cannot read the folder: {error.strerror or error}") from None
    pngs = [e for e in entries if e.suffix.lower() == ".png" and not e.name.startswith(".") and e.is_file()]
    if not pngs:
        raise ZssegError(f"{folder}: the folder holds no PNG masks")
    _check_count(len(pngs), folder, max_masks)
    rles = [_encoded(_binary_png(p, height, width), f"{p}: the mask") for p in pngs]
    return MaskSet(folder, "png-folder", height, width, [p.stem for p in pngs], rles, passed_over=len(entries) - len(pngs))


def _binary_png(path: Path, height: int, width: int) -> np.ndarray:
    """One mask PNG of a folder as `[H, W]` bool: exactly two levels, 0 and 1 or 0 and 255 (0
    and 65535 in 16 bits); a palette PNG's levels are its indices."""
    values = _open_png(path, height, width)
    if values.ndim == 3:
        if not (np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 0], values[..., 2])):
            raise ZssegError(f"{path}: not a binary mask: an RGB mask PNG needs equal channels (black and white)")
        values = values[..., 0]
    levels = set(_levels(values).tolist())
    if not (levels <= {0, 1} or levels <= {0, 255} or (values.dtype != np.uint8 and levels <= {0, 65535})):
        raise ZssegError(f"{path}: not a binary mask: it holds the values {_shown(sorted(levels))}; a mask PNG holds two "
                         "levels, 0 and 1 or 0 and 255")
    return values != 0


def _read_instance_png(path: Path, height: int, width: int, max_masks: int | None) -> MaskSet:
    """One PNG whose each non-zero value is one mask (id = the value)."""
    values = _open_png(path, height, width)
    if values.ndim == 3:
        raise ZssegError(f"{path}: an instance-id PNG must be single channel (8- or 16-bit) or palette; this one is RGB "
                         "(a folder of PNGs is read as one mask per file)")
    ids = [v for v in _levels(values).tolist() if v != 0]
    if not ids:
        raise ZssegError(f"{path}: every pixel is 0 (background): the instance-id PNG holds no masks")
    _check_count(len(ids), path, max_masks)
    _check_solid(values, len(ids), path)
    rles = [mask_utils.encode(np.asfortranarray(values == v, dtype=np.uint8)) for v in ids]
    return MaskSet(path, "instance-png", height, width, [int(v) for v in ids], rles)


# An id map's masks are solid regions: of the pairs of neighbouring pixels that touch a mask, few
# differ (0.4% to 7% in the real label maps of COCO-Stuff, ADE20K, Cityscapes, CamVid and VOC).
# In a photo read as one, neighbours differ everywhere (29% to 98% in their greyscale images).
FRAGMENTED = 0.25
FRAGMENTED_MIN_IDS = 16


def _check_solid(values: np.ndarray, count: int, path: Path) -> None:
    """Refuse an image of many ids whose regions are not solid: a greyscale photo (or a JPEG's
    noise) taken for an instance-id map would be read as hundreds of speckled masks."""
    if count < FRAGMENTED_MIN_IDS:
        return
    differ = touching = 0
    for a, b in ((values[:, 1:], values[:, :-1]), (values[1:], values[:-1])):
        near_mask = (a != 0) | (b != 0)
        touching += int(np.count_nonzero(near_mask))
        differ += int(np.count_nonzero((a != b) & near_mask))
    if touching and differ / touching > FRAGMENTED:
        raise ZssegError(f"{path}: does not look like an instance-id map but like a photo: its {count} values are speckled "
                         f"({100 * differ / touching:.0f}% of neighbouring pixels differ, where an id map's masks are solid "
                         "regions); give the masks, not the image, or save them as a .npy of [K, H, W]")


# --- JSON files ---------------------------------------------------------------------------------


def _read_json(path: Path, height: int, width: int, max_masks: int | None, image_id: int | str | None) -> MaskSet:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ZssegError(f"{path}: invalid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise ZssegError(f"{path}: invalid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise ZssegError(f"{path}: invalid JSON (nested too deeply)") from None
    except OSError as error:
        raise ZssegError(f"{path}: cannot read the file: {error.strerror or error}") from None
    if image_id is not None and not (isinstance(data, dict) and "annotations" in data):
        _not_coco(path, "a JSON file of another kind")
    if isinstance(data, list):
        return _read_sam(data, path, height, width, max_masks)
    if isinstance(data, dict) and "annotations" in data:
        return _read_coco(data, path, height, width, max_masks, image_id)
    if isinstance(data, dict) and str(data.get("software", "")).startswith("zsseg"):
        if isinstance(data.get("classes"), list):
            return _read_zsseg(data, path, height, width, max_masks)
        if isinstance(data.get("masks"), list):
            return _read_zsseg_masks(data, path, height, width, max_masks)
    raise ZssegError(f"{path}: not a mask file zsseg knows: expected a COCO annotation file (\"images\", \"annotations\"), "
                     "SAM's list of masks, or a JSON that `zsseg segment` or `zsseg classify` wrote")


def _rle(segmentation: dict, where: str, height: int, width: int) -> dict:
    """A COCO RLE given as JSON (compressed: counts a string; uncompressed: counts a list) as
    pycocotools' compressed RLE. Its runs are checked before pycocotools sees them: they must be
    well formed and cover exactly height x width pixels (pycocotools decodes runs that cover
    fewer into uninitialised memory: random labels); an empty mask is an error."""
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                               for v in size)):
        raise ZssegError(f"{where}: an RLE needs \"size\": [height, width], got {size!r:.40}")
    if size != [height, width]:
        raise _size_error(where, size[1], size[0], width, height)
    if isinstance(counts, str):
        if not counts.isascii():
            raise ZssegError(f"{where}: invalid RLE (its counts string is not ASCII)")
        rle = {"size": size, "counts": counts.encode("ascii")}
        runs = compressed_runs(rle["counts"], where).tolist()
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        rle, runs = None, counts
    else:
        raise ZssegError(f"{where}: invalid RLE (\"counts\" must be a string, or a list of run lengths)")
    if sum(runs) != height * width:
        raise ZssegError(f"{where}: invalid RLE (its runs cover {sum(runs)} pixels, not {height}x{width} = {height * width})")
    if not sum(runs[1::2]):
        raise _empty(where)
    return rle or mask_utils.frPyObjects({"size": size, "counts": runs}, height, width)


def compressed_runs(counts: bytes, where: str) -> np.ndarray:
    """The run lengths of COCO's compressed RLE string, decoded as pycocotools' `rleFrString`
    does, after checking that it is well formed: characters '0'..'o' (48..111), no value cut
    short at the end (pycocotools would read on past the string), at most 6 characters a value
    (30 bits, as far as its int arithmetic holds; 150-megapixel images need 28), and no negative
    run (pycocotools stores runs unsigned). Vectorised: microseconds for a 12-megapixel mask."""
    codes = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return codes
    outside = (codes < 0) | (codes > 63)
    if outside.any():
        bad = chr(counts[int(np.flatnonzero(outside)[0])])
        raise ZssegError(f"{where}: invalid RLE (its counts string holds {bad!r}, outside COCO's characters '0' to 'o')")
    more = (codes & 0x20) != 0
    if more[-1]:
        raise ZssegError(f"{where}: invalid RLE (its counts string ends in the middle of a run length)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 6:
        raise ZssegError(f"{where}: invalid RLE (a run length of more than 6 characters, too large for any image)")
    value_of = np.repeat(np.arange(ends.size), lengths)  # the value each character is part of
    shifts = 5 * (np.arange(codes.size) - starts[value_of])
    values = np.zeros(ends.size, dtype=np.int64)
    np.add.at(values, value_of, (codes & 0x1F) << shifts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs = values.copy()  # rleFrString: from the fourth value on, each adds the run two before
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if (runs < 0).any():
        raise ZssegError(f"{where}: invalid RLE (its counts string decodes to a negative run length)")
    return runs


def _polygon_rle(polygons: list, where: str, height: int, width: int) -> dict:
    """COCO polygons (lists of x, y coordinates) filled and merged, as a compressed RLE."""
    bound = 10 * max(height, width)
    for polygon in polygons:
        if not (isinstance(polygon, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon)):
            raise ZssegError(f"{where}: a polygon must be a list of numbers x1, y1, x2, y2, ...")
        if len(polygon) < 6 or len(polygon) % 2:
            raise ZssegError(f"{where}: a polygon needs at least 3 points as x, y pairs, got {len(polygon)} numbers")
        if not all(math.isfinite(v) and -bound <= v <= bound for v in polygon):
            raise ZssegError(f"{where}: a polygon's coordinates must be finite and near the {width}x{height} image")
    if not polygons:
        raise _empty(where)
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if not mask_utils.area(rle):
        raise _empty(where)
    return rle


def _rows_mask(rows: list, where: str, height: int, width: int) -> np.ndarray:
    """A mask as a list of rows of 0/1 (SAM's `binary_mask` mode written as JSON)."""
    try:
        values = np.array(rows)
    except ValueError:
        raise ZssegError(f"{where}: a mask given as rows needs {height} rows of {width} values 0 or 1") from None
    if values.ndim != 2 or values.dtype.kind not in "bi":
        raise ZssegError(f"{where}: a mask given as rows needs {height} rows of {width} values 0 or 1")
    if values.shape != (height, width):
        raise _size_error(where, values.shape[1], values.shape[0], width, height)
    if not set(_levels(values.astype(np.int64)).tolist()) <= {0, 1}:
        raise ZssegError(f"{where}: not a binary mask: its rows hold values other than 0 and 1")
    return values.astype(np.uint8)


def _records(items, path: Path, what: str) -> list[dict]:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ZssegError(f"{path}: {what} must be a list of JSON objects")
    return items


def _read_sam(items: list, path: Path, height: int, width: int, max_masks: int | None) -> MaskSet:
    """`SamAutomaticMaskGenerator`'s records: "segmentation" is an RLE or rows of 0/1; id = index."""
    _check_count(len(items), path, max_masks)
    rles = []
    for index, item in enumerate(items):
        where = f"{path}: mask {index}"
        segmentation = item.get("segmentation") if isinstance(item, dict) else None
        if isinstance(segmentation, dict):
            rles.append(_rle(segmentation, where, height, width))
        elif isinstance(segmentation, list):
            rles.append(_encoded(_rows_mask(segmentation, where, height, width), where))
        else:
            raise ZssegError(f"{where} is not a SAM mask record (an object with \"segmentation\": an RLE or rows of 0/1)")
    return MaskSet(path, "sam", height, width, list(range(len(items))), rles)


def _read_coco(data: dict, path: Path, height: int, width: int, max_masks: int | None, image_id) -> MaskSet:
    """A COCO annotation file: the annotations of one image; id = the annotation's id. Image
    ids are whole numbers or strings, told apart (1 and "1" are two images); an integer
    `image_id` also finds a string id of its digits where no image has the integer id."""
    annotations = _records(data["annotations"], path, "\"annotations\"")
    images = _records(data.get("images", []), path, "\"images\"")
    found = {_key(a.get("image_id")) for a in annotations} | {_key(i.get("id")) for i in images}
    found.discard(None)
    if image_id is None:
        if len(found) > 1:
            shown = sorted(found, key=lambda key: (key[0] is str, key[1] if key[0] is int else 0, str(key[1])))
            raise SettingError("image_id", f"{path}: holds annotations of {len(found)} images; choose one with {{setting}} "
                               f"(ids: {_shown([coco_id_text(value) for _, value in shown])})")
        if not found:
            raise ZssegError(f"{path}: holds no annotations")
        image_id = found.pop()[1]
    elif isinstance(image_id, int) and (int, image_id) not in found and (str, str(image_id)) in found:
        image_id = str(image_id)
    key = _key(image_id)
    entry = next((i for i in images if _key(i.get("id")) == key), None)
    if entry is not None and isinstance(entry.get("height"), int) and isinstance(entry.get("width"), int) \
            and (entry["height"], entry["width"]) != (height, width):
        raise ZssegError(f"{path}: image {coco_id_text(image_id)} is {entry['width']}x{entry['height']} in the file but the "
                         f"image is {width}x{height} (width x height)")
    mine = [a for a in annotations if _key(a.get("image_id")) == key]
    if not mine:
        known = "" if entry is not None else " (no image of the file has that id)"
        raise ZssegError(f"{path}: no annotations for image id {coco_id_text(image_id)}{known}")
    _check_count(len(mine), path, max_masks)
    ids, rles = [], []
    for position, annotation in enumerate(mine):
        mask_id = annotation.get("id", position)
        where = f"{path}: annotation {mask_id}"
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, dict):
            rles.append(_rle(segmentation, where, height, width))
        elif isinstance(segmentation, list):
            rles.append(_polygon_rle(segmentation, where, height, width))
        else:
            raise ZssegError(f"{where}: \"segmentation\" must be an RLE object or a list of polygons")
        ids.append(mask_id if isinstance(mask_id, (int, str)) else str(mask_id))
    return MaskSet(path, "coco", height, width, ids, rles, image_id=image_id)


def _key(value) -> tuple | None:
    """A COCO id as (type, value): 1 and "1" are different images (True is not 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return (type(value), value)


def coco_id_text(value) -> str:
    """An image id as messages show it: 1, or "1" for a string (JSON's spelling)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def _zsseg_records(records: list, path: Path, height: int, width: int, fmt: str, mask_id, what: str) -> MaskSet:
    """Masks from zsseg's own records, each with an "rle" object; `mask_id(record, position)` is its id."""
    ids, rles = [], []
    for position, record in enumerate(records):
        identifier = mask_id(record, position)
        where = f"{path}: {what} {identifier!r}"
        if not isinstance(record.get("rle"), dict):
            raise ZssegError(f"{where} has no \"rle\" object")
        ids.append(identifier if isinstance(identifier, (int, str)) else str(identifier))
        rles.append(_rle(record["rle"], where, height, width))
    return MaskSet(path, fmt, height, width, ids, rles)


def _read_zsseg(data: dict, path: Path, height: int, width: int, max_masks: int | None) -> MaskSet:
    """The JSON `zsseg segment` wrote: each class region is one mask; id = the class's name."""
    if (data.get("height"), data.get("width")) not in ((height, width), (None, None)):
        raise _size_error(str(path), data.get("width"), data.get("height"), width, height)
    regions = _records(data["classes"], path, "\"classes\"")
    _check_count(len(regions), path, max_masks)
    return _zsseg_records(regions, path, height, width, "zsseg",
                          lambda region, position: region.get("name", region.get("index", position)), "class region")


def _read_zsseg_masks(data: dict, path: Path, height: int, width: int, max_masks: int | None) -> MaskSet:
    """The STEM_masks.json `zsseg classify` wrote: its masks again, with their ids."""
    records = _records(data["masks"], path, "\"masks\"")
    _check_count(len(records), path, max_masks)
    return _zsseg_records(records, path, height, width, "zsseg-masks", lambda record, position: record.get("id", position), "mask")


# --- NumPy arrays -------------------------------------------------------------------------------


def _pickled(path: Path) -> ZssegError:
    return ZssegError(f"{path}: holds Python objects (pickled), which zsseg does not load; save the masks as a bool or "
                      "0/1 integer array")


def _check_magic(path: Path, magic: bytes, kind: str) -> None:
    """A NumPy file starts with its magic bytes; numpy calls anything else pickled, which a
    file of random bytes is not."""
    try:
        with path.open("rb") as f:
            start = f.read(len(magic))
    except OSError as error:
        raise ZssegError(f"{path}: cannot read the file: {error.strerror or error}") from None
    if start[:1] == b"\x80":  # a pickle's protocol opcode
        raise _pickled(path)
    if start != magic:
        raise ZssegError(f"{path}: not a NumPy {kind} file")


def _read_npy(path: Path, height: int, width: int, max_masks: int | None) -> MaskSet:
    _check_magic(path, b"\x93NUMPY", ".npy")
    try:
        masks = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as error:
        if "pickle" in str(error) or "object" in str(error).lower():
            raise _pickled(path) from None
        raise ZssegError(f"{path}: not a NumPy .npy file ({error})") from None
    except OSError as error:
        raise ZssegError(f"{path}: cannot read it as a NumPy .npy file: {error.strerror or error}") from None
    if not isinstance(masks, np.ndarray):
        raise ZssegError(f"{path}: not a NumPy .npy file")
    return _from_stack(masks, path, "npy", None, height, width, max_masks)


def _read_npz(path: Path, height: int, width: int, max_masks: int | None) -> MaskSet:
    """An `.npz`, read member by member with zipfile: each array's header (dtype, shape) is
    checked against the image, the limit and the member's declared size before any of its data
    is decompressed, and the masks are then read one slice at a time."""
    _check_magic(path, b"PK", ".npz (zip)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            names = [info.filename.removesuffix(".npy") for info in members]
            if "masks" in names:
                masks, ids = members[names.index("masks")], members[names.index("ids")] if "ids" in names else None
            elif len(members) == 1:
                masks, ids = members[0], None
            elif not members:
                raise ZssegError(f"{path}: holds no arrays")
            else:
                raise ZssegError(f"{path}: holds {len(names)} arrays ({_shown(names)}); name the masks array 'masks' "
                                 "(and their ids 'ids')")
            with archive.open(masks) as stream:
                shape, fortran, dtype = _npz_header(stream, masks, path)
                _check_stack(shape, dtype, path, height, width, max_masks)
                id_list = _npz_ids(archive, ids, path, shape[0]) if ids is not None else None
                if fortran:  # slices are not contiguous: the array whole (its size checked above)
                    slices = iter(np.frombuffer(stream.read(math.prod(shape) * dtype.itemsize), dtype).reshape(shape, order="F"))
                else:
                    slices = (_npz_slice(stream, dtype, height, width, path, masks) for _ in range(shape[0]))
                return _encode_stack(slices, path, "npz", id_list, height, width, shape[0])
    except ZssegError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as error:
        raise ZssegError(f"{path}: cannot read it as a NumPy .npz file ({one_line(error)})") from None


def _npz_header(stream, member: zipfile.ZipInfo, path: Path) -> tuple[tuple, bool, np.dtype]:
    """A `.npz` member's array header (shape, Fortran order, dtype), checked against the size
    the zip declares for the member, before its data is read."""
    name = member.filename
    start = stream.read(6)
    if start[:1] == b"\x80":
        raise _pickled(path)
    if not name.endswith(".npy") or start != b"\x93NUMPY":
        raise ZssegError(f"{path}: its member '{name}' is not a NumPy array (np.savez writes each array as NAME.npy)")
    version = tuple(stream.read(2))
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ZssegError(f"{path}: its member '{name}' is a NumPy array of format version {version}, which zsseg does not know")
    if dtype.hasobject:
        raise _pickled(path)
    data = math.prod(shape) * dtype.itemsize
    if member.file_size != stream.tell() + data:
        raise ZssegError(f"{path}: its member '{name}' declares a {dtype} array of shape {shape} ({data:,} bytes) but holds "
                         f"{member.file_size - stream.tell():,} bytes of data: the file is damaged")
    return shape, fortran, dtype


def _npz_slice(stream, dtype: np.dtype, height: int, width: int, path: Path, member: zipfile.ZipInfo) -> np.ndarray:
    """The next `[H, W]` mask of a C-order `.npz` member."""
    size = height * width * dtype.itemsize
    data = stream.read(size)
    if len(data) != size:
        raise ZssegError(f"{path}: its member '{member.filename}' ends before its last mask: the file is damaged")
    return np.frombuffer(data, dtype=dtype).reshape(height, width)


def _npz_ids(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path, count: int) -> list:
    """The `ids` array of a `.npz`: 1-D, whole numbers or strings of at most 256 characters, one per mask."""
    with archive.open(member) as stream:
        shape, fortran, dtype = _npz_header(stream, member, path)
        if len(shape) != 1 or dtype.kind not in "iuU" or (dtype.kind == "U" and dtype.itemsize > 4 * 256):
            raise ZssegError(f"{path}: 'ids' must be a 1-D array of whole numbers or strings, got {dtype} {shape}")
        if shape[0] != count:
            raise ZssegError(f"{path}: {shape[0]} ids for {count} masks")
        return np.frombuffer(stream.read(math.prod(shape) * dtype.itemsize), dtype=dtype).tolist()


def _from_stack(masks: np.ndarray, source: Path | str, format: str, ids: list | None, height: int, width: int,
                max_masks: int | None) -> MaskSet:
    """Masks `[K, H, W]` (bool, or integers / floats holding only 0 and 1), checked and encoded."""
    _check_stack(masks.shape, masks.dtype, source, height, width, max_masks)
    if ids is not None and len(ids) != masks.shape[0]:
        raise ZssegError(f"{source}: {len(ids)} ids for {masks.shape[0]} masks")
    return _encode_stack(iter(masks), source, format, ids, height, width, masks.shape[0])


def _check_stack(shape: tuple, dtype: np.dtype, source: Path | str, height: int, width: int, max_masks: int | None) -> None:
    """An array of masks' shape and dtype (from its header: before its data is read)."""
    if len(shape) != 3:
        hint = " (one mask: give it a first axis of length 1)" if len(shape) == 2 else ""
        raise ZssegError(f"{source}: masks must be one array [K, H, W], got shape {tuple(shape)}{hint}")
    if dtype.kind not in "biuf":
        raise ZssegError(f"{source}: masks must be bool, or integers or floats holding only 0 and 1, got {dtype}")
    if tuple(shape[1:]) != (height, width):
        raise _size_error(str(source), shape[2], shape[1], width, height)
    _check_count(shape[0], source, max_masks)


def _encode_stack(masks: Iterator[np.ndarray], source: Path | str, format: str, ids: list | None, height: int, width: int,
                  count: int) -> MaskSet:
    """The masks (each `[H, W]`, one at a time) checked binary and non-empty, and encoded."""
    ids = list(range(count)) if ids is None else ids
    rles = []
    for mask_id, mask in zip(ids, masks):
        mask = np.asarray(mask)
        if mask.dtype != bool:
            if not ((mask == 0) | (mask == 1)).all():
                odd = mask[(mask != 0) & (mask != 1)].ravel()[:3]
                raise ZssegError(f"{source}: mask {mask_id} is not binary: it holds values other than 0 and 1 ({_shown(odd)})")
            mask = mask != 0
        rles.append(_encoded(mask, f"{source}: mask {mask_id}"))
    return MaskSet(source, format, height, width, ids, rles)
