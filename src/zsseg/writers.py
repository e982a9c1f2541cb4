"""Writing results: a palette label PNG, a colour overlay with a legend, and a JSON record.

Every file is written to a temporary name in the target folder and renamed into place, so an
interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import colorsys
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pycocotools import mask as mask_utils

UNLABELED_PNG_8 = 255  # label-PNG value of unlabelled pixels for vocabularies of <= 255 classes
UNLABELED_PNG_16 = 65535  # for larger vocabularies, written as 16-bit grayscale


def palette(num_classes: int) -> np.ndarray:
    """`[num_classes, 3]` uint8 distinct colours (golden-ratio hue steps, varied brightness)."""
    colours = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        saturation = 0.65 + 0.35 * ((i // 3) % 2)
        value = 0.95 - 0.25 * ((i // 2) % 2)
        colours.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)])
    return np.array(colours, dtype=np.uint8).reshape(num_classes, 3)


def label_image(labels: np.ndarray, num_classes: int) -> Image.Image:
    """Label map `[H, W]` (-1 = unlabelled) as a palette PNG image (or 16-bit if C > 255)."""
    if num_classes <= 255:
        data = np.where(labels < 0, UNLABELED_PNG_8, labels).astype(np.uint8)
        image = Image.fromarray(data, mode="P")
        colours = np.zeros((256, 3), dtype=np.uint8)
        colours[:num_classes] = palette(num_classes)
        image.putpalette(colours.ravel().tolist())
        return image
    data = np.where(labels < 0, UNLABELED_PNG_16, labels).astype(np.uint16)
    return Image.fromarray(data)


def overlay_image(image: np.ndarray, labels: np.ndarray, class_names: list[str], alpha: float = 0.55) -> Image.Image:
    """The image blended with class colours, with a legend of the classes present on the right."""
    colours = palette(len(class_names))
    blended = image.astype(np.float32)
    covered = labels >= 0
    blended[covered] = (1 - alpha) * blended[covered] + alpha * colours[labels[covered]]
    base = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))

    present = [int(i) for i in np.unique(labels) if i >= 0]
    font_size = max(12, min(28, image.shape[0] // 40))
    font = ImageFont.load_default(size=font_size)
    row, pad = font_size + 8, 8
    names = [(i, _short(class_names[i])) for i in present]
    draw = ImageDraw.Draw(base)
    text_width = max((draw.textlength(n, font=font) for _, n in names), default=0)
    width = int(text_width + row + 3 * pad)
    height = max(image.shape[0], pad * 2 + row * len(names))
    canvas = Image.new("RGB", (image.shape[1] + width, height), (255, 255, 255))
    canvas.paste(base, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = image.shape[1] + pad
    for k, (i, name) in enumerate(names):
        y = pad + k * row
        draw.rectangle([x, y, x + row - 6, y + row - 6], fill=tuple(int(c) for c in colours[i]), outline=(0, 0, 0))
        draw.text((x + row + pad // 2, y), name, fill=(0, 0, 0), font=font)
    return canvas


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def record(labels: np.ndarray, class_names: list[str], source: str) -> dict:
    """JSON-ready summary: vocabulary, image size, and per class present its area and COCO RLE."""
    height, width = labels.shape
    classes = []
    for i in np.unique(labels):
        if i < 0:
            continue
        mask = np.asfortranarray((labels == i).astype(np.uint8))
        rle = mask_utils.encode(mask)
        classes.append(
            {
                "index": int(i),
                "name": class_names[i],
                "area": int(mask_utils.area(rle)),
                "rle": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            }
        )
    return {
        "image": source,
        "height": int(height),
        "width": int(width),
        "vocabulary": list(class_names),
        "unlabeled_area": int((labels < 0).sum()),
        "classes": classes,
    }


def write_outputs(out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray, class_names: list[str], source: str) -> list[Path]:
    """Write STEM.png, STEM_overlay.png and STEM.json into `out_dir`, all or none."""
    targets = output_paths(out_dir, stem)
    write_atomically(
        targets,
        [
            lambda f: label_image(labels, len(class_names)).save(f, format="PNG"),
            lambda f: overlay_image(image, labels, class_names).save(f, format="PNG"),
            lambda f: f.write(json.dumps(record(labels, class_names, source), indent=1).encode("utf-8")),
        ],
    )
    return targets


def write_label_png(path: Path, labels: np.ndarray, num_classes: int) -> None:
    """One label PNG (see `label_image`), written atomically."""
    write_atomically([path], [lambda f: label_image(labels, num_classes).save(f, format="PNG")])


def write_json(path: Path, data: dict) -> None:
    """Indented JSON, written atomically."""
    write_atomically([path], [lambda f: f.write((json.dumps(data, indent=1) + "\n").encode("utf-8"))])


def write_atomically(targets: list[Path], makers: list[Callable[[BinaryIO], object]]) -> None:
    """Each maker writes one target's bytes to a temporary file beside it; once all succeeded,
    they are renamed into place. On any error no target is touched."""
    temporaries = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for target, make in zip(targets, makers):
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temporaries.append(Path(name))
            with os.fdopen(handle, "wb") as f:
                make(f)
            os.chmod(name, 0o666 & ~umask)  # mkstemp creates 0600; outputs are ordinary files
        for temporary, target in zip(temporaries, targets):
            os.replace(temporary, target)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def output_paths(out_dir: Path, stem: str) -> list[Path]:
    return [out_dir / f"{stem}.png", out_dir / f"{stem}_overlay.png", out_dir / f"{stem}.json"]
