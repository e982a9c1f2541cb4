"""Fonts for the overlay legend: for each class name, the first font that draws all of it.

Class names can be in any script ("猫; 犬", "кошка", "قطة"). A font is used for a name only if
its character map covers every character of the name (read with fontTools). Candidates, in
order:

1. the font file in `$ZSSEG_FONT`, if set;
2. the system's fonts that cover the name, as fontconfig ranks them (`fc-match -s`); on
   Debian and Ubuntu, `apt install fonts-noto-cjk` adds Chinese, Japanese and Korean;
3. well-known fonts of wide coverage on macOS and Windows;
4. Pillow's built-in font. It covers Latin-1 only, so a name that no font covers is drawn
   with "?" for the characters it lacks, never as empty boxes. The JSON output always keeps
   the exact names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONT_ENV = "ZSSEG_FONT"
# Wide-coverage fonts at their usual places where fontconfig is absent (path, index in the collection).
_WELL_KNOWN = (
    ("/System/Library/Fonts/PingFang.ttc", 0),
    ("/Library/Fonts/Arial Unicode.ttf", 0),
    ("/System/Library/Fonts/Supplemental/Arial Unicode.ttf", 0),
    ("C:/Windows/Fonts/msyh.ttc", 0),
    ("C:/Windows/Fonts/seguisym.ttf", 0),
    ("C:/Windows/Fonts/arial.ttf", 0),
)
_BUILTIN_COVERAGE = frozenset(range(0x20, 0x7F)) | frozenset(range(0xA0, 0x100))  # Pillow's default font


def legend_font(text: str, size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, str]:
    """(font, text to draw): a font covering every character of `text`, or Pillow's built-in
    font with the characters it cannot draw replaced by "?"."""
    found = _font_file(_needed(text))
    if found is not None:
        return _load(found[0], found[1], size), text
    shown = "".join(c if ord(c) in _BUILTIN_COVERAGE or c.isspace() else "?" for c in text)
    return ImageFont.load_default(size=size), shown


def _needed(text: str) -> frozenset[int]:
    return frozenset(ord(c) for c in text if not c.isspace())


@lru_cache(maxsize=1024)
def _font_file(needed: frozenset[int]) -> tuple[str, int] | None:
    if needed <= _BUILTIN_COVERAGE:
        return None
    for path, index in _candidates(needed):
        if needed <= _coverage(path, index):
            return path, index
    return None


def _candidates(needed: frozenset[int]) -> list[tuple[str, int]]:
    candidates = []
    if os.environ.get(FONT_ENV):
        candidates.append((os.environ[FONT_ENV], 0))
    candidates.extend(_fontconfig(needed))
    candidates.extend(_WELL_KNOWN)
    return candidates


def _fontconfig(needed: frozenset[int], limit: int = 8) -> list[tuple[str, int]]:
    """The first `limit` fonts fontconfig ranks for a sans-serif face covering `needed`."""
    if shutil.which("fc-match") is None:
        return []
    charset = " ".join(f"{c:x}" for c in sorted(needed))
    try:
        listing = subprocess.run(
            ["fc-match", "-s", "-f", "%{file}\t%{index}\n", f"sans-serif:charset={charset}"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    fonts = []
    for line in listing.splitlines()[:limit]:
        path, _, index = line.partition("\t")
        if path:
            fonts.append((path, int(index) if index.isdigit() else 0))
    return fonts


@lru_cache(maxsize=64)
def _coverage(path: str, index: int) -> frozenset[int]:
    """The code points a font file's character map covers (empty if it cannot be read)."""
    if not Path(path).is_file():
        return frozenset()
    try:
        from fontTools.ttLib import TTFont

        with TTFont(path, fontNumber=index, lazy=True) as font:
            cmap = font.getBestCmap() or {}
        return frozenset(cmap)
    except Exception:  # a broken or unsupported font file is simply not a candidate
        return frozenset()


@lru_cache(maxsize=64)
def _load(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size=size, index=index)
