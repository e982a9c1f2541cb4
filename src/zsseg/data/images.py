"""Reading images: any path, PIL image or array becomes an HWC uint8 RGB array.

Handles EXIF orientation, 16-bit and float images, grayscale, palette, RGBA (composited on
white) and CMYK. Refuses images above `MAX_PIXELS` (150 million pixels) before decoding them: this
guards against decompression bombs, and stays below Pillow's own guard (about 179 million
pixels), so that zsseg's limit is the one that applies and its message gives the size.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image, ImageOps

from ..catalogue import DEFAULT_MAX_SIZE
from ..errors import SettingError, ZssegError

if TYPE_CHECKING:
    import torch

ImageInput = Union[str, Path, Image.Image, np.ndarray]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".jp2"}
MAX_PIXELS = 150_000_000  # refuse larger images (a 12000x12500 photo); decoding one takes 450 MB


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) > 255):
            array = array / 257.0  # 16-bit range onto 8-bit
        elif mode == "F" and array.max(initial=0) <= 1.0:
            array = array * 255.0
        gray = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.array(image.convert("RGB"))


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to HWC uint8 RGB, upright (EXIF orientation applied)."""
    path = Path(path)
    if not path.exists():
        raise ZssegError(f"image not found: {path}")
    if path.is_dir():
        raise ZssegError(f"expected an image file, got a folder: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below applies
            with Image.open(path) as image:
                if image.width * image.height > max_pixels:
                    raise ZssegError(
                        f"{path}: image is {image.width}x{image.height} ({image.width * image.height:,} pixels), "
                        f"above the limit of {max_pixels:,} pixels"
                    )
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except ZssegError:
        raise
    except Image.DecompressionBombError as error:
        raise bomb_refusal(path, error, "image", max_pixels) from None
    except Image.UnidentifiedImageError:
        raise ZssegError(f"{path}: not an image file, or a format Pillow cannot read") from None
    except PermissionError:
        raise ZssegError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ZssegError(f"{path}: corrupt or truncated image ({error})") from None


def bomb_refusal(path: Path, error: Image.DecompressionBombError, what: str, max_pixels: int = MAX_PIXELS) -> ZssegError:
    """The one-line error for a file that Pillow's own decompression-bomb guard (about 179
    million pixels, unless a program lowered it) refused while opening it, before its size
    could be asked: zsseg's limit, with the pixel count its message gives."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    if found and int(found.group(1)) > max_pixels:
        return ZssegError(f"{path}: {what} has {int(found.group(1)):,} pixels, above the limit of {max_pixels:,} pixels")
    return ZssegError(f"{path}: refused by Pillow's decompression-bomb guard: {error}")


def as_rgb_array(image: ImageInput) -> np.ndarray:
    """A path, PIL image or array (HW, HWC with 1/3/4 channels) as HWC uint8 RGB."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) == 0:
            raise ZssegError(f"an image array must be HxW or HxWxC with C in 1, 3, 4, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ZssegError(f"an image array must be uint8, got {image.dtype}")
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        elif image.shape[2] == 4:
            return _to_rgb(Image.fromarray(image, "RGBA"))
        return np.ascontiguousarray(image)
    raise ZssegError(f"unsupported image type {type(image).__name__}: give a path, a PIL image or a uint8 array")


def check_rgb_array(image: np.ndarray) -> None:
    """A one-line error unless `image` is an HWC uint8 RGB array (what the networks take)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ZssegError(f"expected an HWC uint8 RGB image, got {image.dtype} array of shape {image.shape}")


def image_tensor(image: ImageInput | torch.Tensor) -> torch.Tensor:
    """`[3, H, W]` float32 pixel values in [0, 255]."""
    import torch  # here, so that reading images (and the datasets) needs no torch

    if isinstance(image, torch.Tensor):
        return image.float()
    return torch.from_numpy(as_rgb_array(image)).permute(2, 0, 1).float()


@dataclass(frozen=True)
class SizeConfig:
    """The size images are processed at; outputs are at the input's full size.

    Attributes:
        max_size: the longer side at most this many pixels (None: no bound).
        test_size: the shorter side at this many pixels, the longer at most `max_size`
            (detectron2's test-time resize); None: a proposal network's own test size, else
            the image's size. The proposal methods take it; the per-pixel ones size on their own.
    """

    max_size: int | None = DEFAULT_MAX_SIZE
    test_size: int | None = None

    def __post_init__(self):
        for setting in ("max_size", "test_size"):
            value = getattr(self, setting)
            if value is not None and (not isinstance(value, int) or value < 32):
                raise SettingError(setting, f"{{setting}} must be at least 32 pixels, got {value}")


def bounded_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """(h, w) scaled so that the longer side is at most `max_size`, aspect kept."""
    if max_size is None or max(height, width) <= max_size:
        return height, width
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def shortest_edge_size(height: int, width: int, shorter: int, longer: int | None) -> tuple[int, int]:
    """(h, w) with the shorter side `shorter` and the longer side at most `longer`, rounded as
    detectron2's `ResizeShortestEdge` (the reference code's test-time resize)."""
    scale = shorter / min(height, width)
    new_h, new_w = (shorter, scale * width) if height < width else (scale * height, shorter)
    if longer is not None and max(new_h, new_w) > longer:
        scale = longer / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def shorter_side_scale(height: int, width: int, shorter: int, max_size: int | None) -> float:
    """The scale that brings the shorter side to `shorter` (a trained network's test size),
    lowered so that the longer side stays at most `max_size`."""
    scale = shorter / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return scale


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HWC uint8 resized to (h, w) by Pillow's bilinear filter (antialiased when shrinking), as
    detectron2's `ResizeTransform` resizes uint8 images for the reference code."""
    if image.shape[:2] == tuple(size):
        return image
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
    return np.array(resized)  # a writable copy


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Label map (or stack of masks) `[..., H, W]` resized to (h, w) by nearest neighbour."""
    h, w = labels.shape[-2:]
    if (h, w) == tuple(size):
        return labels
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return labels[..., rows[:, None], cols[None, :]]
