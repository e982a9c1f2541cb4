"""Writing results: a palette label PNG, a colour overlay with a legend, and a JSON record.

Every file is written to a temporary name in the target folder, flushed to the disk (fsync)
and renamed into place, so that an interrupted run or a power loss leaves the old file or the
new one, never a half-written or empty output.

Every file zsseg writes says so, within its first 100 bytes: PNGs carry a "Software: zsseg
VERSION" text chunk right after their header and JSON files begin with a "software" field.
`written_by_zsseg` reads that mark (a file cut short keeps it), `whole` says whether such a file
is also complete to its end, and `check_target` uses both so that zsseg replaces only files it
wrote itself (or any file, if told to overwrite), and never one of its own inputs. An output
damaged so early that its mark is gone (an empty file, a PNG cut inside its header) is zsseg's
if the rest of its set vouches for it: STEM.json records the names and sizes of the image's
other outputs (`damaged_output_of_zsseg`). zsseg removes only files that carry its mark.
"""

from __future__ import annotations

import colorsys
import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin
from pycocotools import mask as mask_utils

from ..errors import SettingError, ZssegError
from .fonts import legend_font
from ..version import __version__

SOFTWARE = f"zsseg {__version__}"

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
    base = Image.fromarray(_blend(image, labels, colours, alpha))
    present = [int(i) for i in np.flatnonzero(np.bincount(labels.ravel() + 1, minlength=len(class_names) + 1)[1:])]
    font_size = max(12, min(28, image.shape[0] // 40))
    row, pad = font_size + 8, 8
    names = [(i, *legend_font(_short(class_names[i]), font_size)) for i in present]  # (index, font, text)
    draw = ImageDraw.Draw(base)
    text_width = max((draw.textlength(text, font=font) for _, font, text in names), default=0)
    width = int(text_width + row + 3 * pad)
    height = max(image.shape[0], pad * 2 + row * len(names))
    canvas = Image.new("RGB", (image.shape[1] + width, height), (255, 255, 255))
    canvas.paste(base, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = image.shape[1] + pad
    for k, (i, font, text) in enumerate(names):
        y = pad + k * row
        draw.rectangle([x, y, x + row - 6, y + row - 6], fill=tuple(int(c) for c in colours[i]), outline=(0, 0, 0))
        draw.text((x + row + pad // 2, y), text, fill=(0, 0, 0), font=font)
    return canvas


def _blend(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """`(1 - alpha) * pixel + alpha * colour` where labelled, in uint8. Each output byte depends
    only on the class, the channel and the input byte, so it is looked up in a table made by
    that arithmetic (float32 pixel, float64 sum, float32, clipped, truncated) over all 256
    bytes: the same bytes as blending every pixel, for a fraction of the time on large photos."""
    values = np.arange(256, dtype=np.float32)[None, None, :]
    blended = ((1 - alpha) * values + alpha * colours[:, :, None]).astype(np.float32)
    table = np.clip(blended, 0, 255).astype(np.uint8).reshape(-1)  # [class, channel, byte]
    out = image.copy()
    channel = np.arange(3) * 256
    rows = max(1, (1 << 22) // max(1, image.shape[1]))
    for start in range(0, image.shape[0], rows):
        band, where = labels[start:start + rows], slice(start, start + rows)
        index = band.clip(min=0).astype(np.int64)[..., None] * 768 + channel + image[where]
        out[where] = np.where((band >= 0)[..., None], table[index], image[where])
    return out


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _class_rles(labels: np.ndarray) -> dict[int, tuple[int, str]]:
    """Each class present: its area and its mask as COCO's compressed RLE, the same string as
    `pycocotools.mask.encode` of `labels == class`. Made from the runs of the label map read in
    column order, once, instead of one full-size mask per class."""
    height, width = labels.shape
    flat = labels.ravel(order="F")
    if flat.size == 0:
        return {}
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    lengths = np.diff(np.append(starts, flat.size))
    values = flat[starts]
    order = np.argsort(values, kind="stable")
    bounds = np.flatnonzero(np.diff(values[order])) + 1
    rles = {}
    for runs in np.split(order, bounds):
        value = int(values[runs[0]])
        if value < 0:
            continue
        begin, length = starts[runs], lengths[runs]
        gaps = begin - np.concatenate([[0], begin[:-1] + length[:-1]])
        counts = np.column_stack([gaps, length]).ravel()
        trailing = flat.size - int(begin[-1] + length[-1])
        counts = np.append(counts, trailing) if trailing else counts
        rle = mask_utils.frPyObjects({"counts": counts.tolist(), "size": [height, width]}, height, width)
        rles[value] = (int(length.sum()), rle["counts"].decode("ascii"))
    return rles


def record(labels: np.ndarray, class_names: list[str], source: str) -> dict:
    """JSON-ready summary: vocabulary, image size, and per class present its area and COCO RLE."""
    height, width = labels.shape
    classes = []
    for i, (area, rle) in _class_rles(labels).items():
        classes.append(
            {
                "index": i,
                "name": class_names[i],
                "area": area,
                "rle": {"size": [int(height), int(width)], "counts": rle},
            }
        )
    return {
        "software": SOFTWARE,
        "image": source,
        "height": int(height),
        "width": int(width),
        "vocabulary": list(class_names),
        "unlabeled_area": int((labels < 0).sum()),
        "classes": classes,
    }


def write_result(result, out_dir: str | Path, image, stem: str | None = None, config: dict | None = None,
                 source: str | None = None, extra_json: dict[str, dict] | None = None, overwrite: bool = False) -> list[Path]:
    """Write a `SegmentationResult`'s files into `out_dir`: STEM.png (the label map), STEM_overlay.png
    and STEM.json (the classes' areas and RLEs, and `config`, the record of what made the labels:
    `Segmenter.record(vocabulary)`), all or none. `image` is the image it labels: a path (STEM and
    `source` default to its stem and path) or an HWC uint8 array (then give `stem`). A file zsseg
    did not write is replaced only with `overwrite`; the image itself never is."""
    from ..data.images import as_rgb_array

    if stem is None:
        if not isinstance(image, (str, Path)):
            raise ZssegError("give a stem for the output files' names where the image is not a file")
        stem = Path(image).stem
    source = source if source is not None else str(image) if isinstance(image, (str, Path)) else stem
    out_dir = Path(out_dir)
    inputs = frozenset({Path(image).resolve()}) if isinstance(image, (str, Path)) else frozenset()
    for target in output_paths(out_dir, stem) + [out_dir / f"{stem}{suffix}.json" for suffix in extra_json or {}]:
        check_target(target, inputs, overwrite)
    return write_outputs(out_dir, stem, as_rgb_array(image), result.label_map, result.class_names, source, config, extra_json)


def write_outputs(out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray, class_names: list[str], source: str,
                  config: dict | None = None, extra_json: dict[str, dict] | None = None) -> list[Path]:
    """Write STEM.png, STEM_overlay.png and STEM.json into `out_dir` (created if missing), all
    or none. `config` (what made the labels, `Segmenter.record()`) goes into the JSON.
    `extra_json` adds JSON files to the same all-or-none set, by name suffix: {"_masks": data}
    writes STEM_masks.json with zsseg's mark (`zsseg classify`). STEM.json records the name and
    size of each other file of the set ("files"), which vouches for them if they are damaged."""
    extra = [(out_dir / f"{stem}{suffix}.json", data) for suffix, data in (extra_json or {}).items()]
    targets = output_paths(out_dir, stem) + [path for path, _ in extra]
    contents = [_png_bytes(label_image(labels, len(class_names))), _png_bytes(overlay_image(image, labels, class_names))]
    contents += [_json_bytes({"software": SOFTWARE, **data}) for _, data in extra]
    others = [target for target in targets if target != targets[2]]
    files = {target.name: len(content) for target, content in zip(others, contents)}
    record_ = {**record(labels, class_names, source), **({"config": config} if config else {}), "files": files}
    contents.insert(2, _json_bytes(record_))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(targets, [lambda f, content=content: f.write(content) for content in contents])
    return targets


def write_label_png(path: Path, labels: np.ndarray, num_classes: int) -> None:
    """One label PNG (see `label_image`), written atomically; its folder is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, label_image(labels, num_classes))


def write_png(path: Path, image: Image.Image) -> None:
    """An image as a PNG carrying zsseg's mark, written atomically."""
    write_atomically([path], [lambda f: _save_png(image, f)])


def write_json(path: Path, data: dict) -> None:
    """Indented UTF-8 JSON (names stay readable, not \\u escapes) with zsseg's mark, atomically;
    its folder is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically([path], [lambda f: f.write(_json_bytes({"software": SOFTWARE, **data}))])


def _json_bytes(data: dict) -> bytes:
    # A file name that is not valid UTF-8 reaches Python as lone surrogates: keep them as \u escapes.
    return (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


def _save_png(image: Image.Image, f: BinaryIO) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SOFTWARE)  # Pillow writes it right after the header
    image.save(f, format="PNG", pnginfo=info)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    _save_png(image, buffer)
    return buffer.getvalue()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MARK = b"tEXtSoftware\x00zsseg"  # the text chunk, right after the 25-byte header
_JSON_MARK = b'{\n "software": "zsseg'  # the first field of every JSON zsseg writes


def carries_mark(path: Path) -> bool:
    """Whether a file's first bytes carry zsseg's mark, as every PNG and JSON that zsseg writes
    does within its first 100: a file cut short after them keeps it."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError:
        return False
    return (head.startswith(_PNG_SIGNATURE) and _PNG_MARK in head) or head.startswith(_JSON_MARK)


def written_by_zsseg(path: Path) -> bool:
    """Whether `path` is a file that zsseg wrote: a PNG with zsseg's Software text chunk, a
    JSON object with zsseg's "software" field (both read from the first bytes, so a file cut
    short is still known), a training log whose lines carry that field, or proposal weights in
    zsseg's safetensors format. Only a PNG's header is read, not its pixels."""
    if not path.is_file():  # a folder, a FIFO, a device: nothing zsseg writes
        return False
    if path.suffix.lower() in (".png", ".json") and carries_mark(path):
        return True
    try:
        if path.suffix.lower() == ".png":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # before the open, which warns
                with Image.open(path) as image:  # the header only: no size limit applies
                    return str(image.info.get("Software", "")).startswith("zsseg")
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and str(data.get("software", "")).startswith("zsseg")
        if path.suffix.lower() == ".jsonl":  # a training log: JSON records, each with zsseg's mark
            with path.open(encoding="utf-8") as f:
                first = json.loads(f.readline() or "null")
            return isinstance(first, dict) and str(first.get("software", "")).startswith("zsseg")
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return str((f.metadata() or {}).get("format", "")).startswith("zsseg")
    except Exception:  # whatever reading it raises (safetensors' own error class too): not a file zsseg wrote
        return False
    return False


def decodes_whole(path: Path) -> bool:
    """Whether a PNG is whole (every chunk to IEND, each with its CRC right: Pillow's `verify`,
    which catches a file cut short or zeroed anywhere without decoding the pixels), or a
    JSON parses to its end."""
    if not path.is_file():
        return False
    try:
        if path.suffix.lower() == ".png":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    image.verify()
            return True
        if path.suffix.lower() == ".json":
            json.loads(path.read_bytes())
            return True
    except Exception:  # a damaged file raises what its decoder raises (struct.error, zlib.error, ...)
        return False
    return path.is_file()


def whole(path: Path) -> bool:
    """Whether `path` is an output that zsseg wrote and that is complete: its mark, and every
    byte of it decodes (an output cut short counts as not written)."""
    return path.is_file() and written_by_zsseg(path) and decodes_whole(path)


def _set_record(folder: Path, stem: str) -> dict | None:
    """STEM.json of an output set when it is zsseg's, complete, and records its set ("files")."""
    path = folder / f"{stem}.json"
    if not path.is_file() or not whole(path):
        return None
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def damaged_output_of_zsseg(path: Path) -> bool:
    """Whether `path`, which carries no zsseg mark and does not decode, is an output of an image
    that zsseg wrote and something damaged (emptied, cut inside its header): STEM.json, whole
    and zsseg's, records a file of that name at least as large; or, for STEM.json itself, the
    set's PNGs are whole and zsseg's. Such a file may be written again; a user's file never
    passes (its name unrecorded, or it decodes)."""
    if not path.is_file():
        return False
    return _vouched_for(path) and not written_by_zsseg(path) and not decodes_whole(path)


def _vouched_for(path: Path) -> bool:
    """Whether the rest of an output set zsseg wrote names `path` (see `damaged_output_of_zsseg`)."""
    name, folder, size = path.name, path.parent, path.stat().st_size
    for suffix in ("_overlay.png", ".png", "_masks.json"):
        if name.endswith(suffix):
            data = _set_record(folder, name[: -len(suffix)])
            recorded = data["files"].get(name) if data else None
            if isinstance(recorded, int) and size <= recorded:
                return True
    if name.endswith(".json"):
        stem = name[: -len(".json")]
        return all(whole(folder / f"{stem}{suffix}") for suffix in (".png", "_overlay.png"))
    return False


def check_target(path: Path, inputs: frozenset[Path] = frozenset(), overwrite: bool = False,
                 advice: str | SettingError | None = None) -> None:
    """Refuse to write `path` if it is one of `inputs` (resolved paths; never, even with
    `overwrite`), a folder, or an existing file that zsseg did not write (unless `overwrite`).
    `advice` ends the message: what the user can do instead (default: another output folder,
    or the `overwrite` setting); a `SettingError` for advice that names a setting."""

    def refused(problem: str) -> ZssegError:
        if isinstance(advice, SettingError):
            return SettingError(advice.setting, f"{problem}; {advice.template}", *advice.others)
        if advice is not None:
            return ZssegError(f"{problem}; {advice}")
        return SettingError("overwrite", f"{problem}; choose another output folder, or set {{setting}} to replace files zsseg did not write")

    if path.resolve() in inputs:
        raise ZssegError(f"{path} is one of the inputs and would be overwritten by an output; choose another output folder")
    if path.is_dir():
        raise refused(f"{path} is a folder where zsseg would write a file")
    if path.exists() and not path.is_file():  # a FIFO (reading it to look for zsseg's mark would wait forever), a device
        raise refused(f"{path} exists and is not a regular file, so it is left untouched")
    if path.is_symlink() and not overwrite:  # the rename would replace the link itself, which zsseg did not make
        raise refused(f"{path} is a symbolic link, which zsseg did not make, so it is left untouched")
    if path.exists() and not overwrite and not (written_by_zsseg(path) or damaged_output_of_zsseg(path)):
        raise refused(f"{path} exists and was not written by zsseg, so it is left untouched")


_TEMPORARY = re.compile(r"[a-z0-9_]{8}\.tmp")  # what mkstemp adds after the prefix


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
                f.flush()
                os.fsync(f.fileno())  # on the disk before the rename: a power loss leaves the old file or the new
            os.chmod(name, 0o666 & ~umask)  # mkstemp creates 0600; outputs are ordinary files
        for temporary, target in zip(temporaries, targets):
            os.replace(temporary, target)
        for folder in {target.parent for target in targets}:
            _sync_folder(folder)
    finally:
        for temporary in temporaries:  # this call's own temporaries (mkstemp made each name new)
            temporary.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make a folder's renames durable; where a folder cannot be opened for it, the rename stands."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_stale_temporaries(folder: Path, targets: list[Path]) -> int:
    """Remove the temporaries of `targets` (in `folder`) that a killed run (kill -9, a power loss)
    left behind, before a run that will write those targets starts; returns how many. Only files
    that zsseg can prove it wrote are touched: named as `write_atomically` names them (".TARGET_NAME."
    + 8 characters + ".tmp") and carrying zsseg's mark in their first bytes. A temporary killed
    before its first bytes were written proves nothing and is left (hidden, and empty)."""
    names = {target.name for target in targets}
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        parts = entry.name[1:].rsplit(".", 2) if entry.name.startswith(".") else []
        if len(parts) == 3 and parts[0] in names and _TEMPORARY.fullmatch(f"{parts[1]}.{parts[2]}") \
                and entry.is_file(follow_symlinks=False) and carries_mark(Path(entry.path)):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


def temporaries_of(target: Path) -> list[Path]:
    """The files beside `target` named as `write_atomically` names its temporaries (".NAME." + 8
    characters + ".tmp"): candidates only; a name proves nothing about who wrote the file."""
    prefix = f".{target.name}."
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    return [Path(entry.path) for entry in entries if entry.name.startswith(prefix)
            and _TEMPORARY.fullmatch(entry.name[len(prefix):]) and entry.is_file(follow_symlinks=False)]


def output_paths(out_dir: Path, stem: str) -> list[Path]:
    return [out_dir / f"{stem}.png", out_dir / f"{stem}_overlay.png", out_dir / f"{stem}.json"]
