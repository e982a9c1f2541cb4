"""Vocabularies: the class names a user segments with, and the built-in benchmark presets.

A vocabulary is an ordered list of classes. Each class is one or more synonyms; the first is
its display name. Written as text, classes are separated by ";" (or one per line in a file)
and synonyms by ",":  "cat; sofa, couch; wall".

How synonyms combine: each synonym is embedded on its own (with the prompt templates), and a
region's logit for a class is the maximum of its synonyms' logits (cosine x temperature).
The softmax then runs over classes, so adding synonyms never splits a class's probability
mass, and a one-name class gives exactly Eq. 1 of the paper.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ZssegError

# Built-in vocabularies are data files in zsseg/vocabularies/, one class per line, in the
# benchmark's label order (index i = label i of the benchmark's evaluation encoding).
PRESETS: dict[str, str] = {
    "coco-stuff-171": "COCO-Stuff 164k, 80 things + 91 stuff (detectron2 names and order)",
    "ade20k-150": "ADE20K SceneParsing, objectInfo150 order",
    "ade20k-847": "ADE20K full, 847 classes (ADE20K_2021_17_01 order)",
    "pascal-context-59": "Pascal Context, 59 most frequent classes",
    "pascal-context-459": "Pascal Context, all 459 classes",
    "voc-20": "Pascal VOC 2012, 20 object classes (no background)",
    "voc-21": "Pascal VOC 2012, background + 20 object classes",
    "cityscapes-19": "Cityscapes, 19 trainId classes",
    "camvid-11": "CamVid, SegNet 11-class version",
}


# A comment in a vocabulary file: "#" at the start of a line or after white space, to its end.
_COMMENT = re.compile(r"(^|\s)#.*$")


def _canonical(name: str) -> str:
    """The form names are compared in: Unicode NFC ("café" composed or not), spaces, case."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", name).strip()).lower()


@dataclass(frozen=True)
class Vocabulary:
    """An ordered tuple of classes, each a tuple of synonyms (the first is the display name)."""

    classes: tuple[tuple[str, ...], ...]
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise ZssegError("the vocabulary is empty: give at least one class name")
        seen: dict[str, int] = {}  # each name (any synonym), compared case- and space-insensitively
        for index, synonyms in enumerate(self.classes):
            if not synonyms or any(not s.strip() for s in synonyms):
                raise ZssegError(f"class {index + 1} of the vocabulary has an empty name")
            for synonym in synonyms:
                try:
                    synonym.encode("utf-8")
                except UnicodeEncodeError:  # bytes of another encoding on the command line
                    raise ZssegError(f"class {index + 1} of the vocabulary is not valid UTF-8 text: {synonym!r}") from None
                control = [c for c in synonym if unicodedata.category(c) == "Cc"]
                if control:
                    raise ZssegError(f"class {index + 1} of the vocabulary holds a control character ({control[0]!r}): {synonym!r}")
                if not "".join(c for c in synonym if unicodedata.category(c) not in ("Cf", "Zs", "Zl", "Zp")).strip():
                    raise ZssegError(f"class {index + 1} of the vocabulary has an invisible name ({synonym!r}): only spaces or "
                                     "format characters such as a byte-order mark or a zero-width space")
            for synonym in synonyms:
                key = _canonical(synonym)
                if seen.get(key, index) != index:
                    raise ZssegError(
                        f"duplicate class name '{synonym}' (classes {seen[key] + 1} and {index + 1}): "
                        "each name may appear in one class only"
                    )
                seen[key] = index

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """One string per class: its synonyms joined by ", " (unique within the vocabulary)."""
        return [", ".join(synonyms) for synonyms in self.classes]

    @property
    def display_names(self) -> list[str]:
        """The first synonym of each class, for legends."""
        return [synonyms[0] for synonyms in self.classes]

    def shares_names(self, other: "Vocabulary") -> list[bool]:
        """For each class, whether any of its synonyms names a class of `other` (compared
        case-insensitively): which classes a network trained on `other` has seen."""
        known = {name.lower() for synonyms in other.classes for name in synonyms}
        return [any(name.lower() in known for name in synonyms) for synonyms in self.classes]

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], name: str | None = None) -> "Vocabulary":
        """One class per entry; an entry may hold comma-separated synonyms."""
        classes = []
        for entry in names:
            synonyms = _split_synonyms(entry)
            if synonyms:
                classes.append(synonyms)
        return cls(tuple(classes), name)

    @classmethod
    def from_classes(cls, classes, name: str | None = None) -> "Vocabulary":
        """The classes as `classes` (a list of synonym lists, as a record holds them) gives
        them; a class given as a string is one synonym."""
        try:
            return cls(tuple((c,) if isinstance(c, str) else tuple(str(s) for s in c) for c in classes), name)
        except TypeError:
            raise ZssegError("a vocabulary must be a list of classes, each a list of synonyms") from None

    @classmethod
    def verbatim(cls, names: list[str] | tuple[str, ...], name: str | None = None) -> "Vocabulary":
        """One class per entry, each entry whole (stripped), commas and all: how the reference
        code names a benchmark's classes ("road, route" is one prompt, "a photo of a road,
        route."), not split into synonyms."""
        return cls(tuple((entry.strip(),) for entry in names if entry.strip()), name)

    @classmethod
    def parse(cls, text: str) -> "Vocabulary":
        """Parse "cat; sofa, couch; wall". Empty entries (a trailing ";") are skipped."""
        return cls.from_names(text.split(";"))

    @classmethod
    def from_file(cls, path: str | Path) -> "Vocabulary":
        """One class per line, synonyms separated by commas. `;` separates classes too (so a
        line written as `--classes` takes it is read the same way). A `#` at the start of a line
        or after a space starts a comment (`# walls`, `wall  # brick too`); elsewhere it is part
        of the name (`C# code`). Blank lines are skipped. The text is UTF-8, with or without a
        byte-order mark, or UTF-16 with one (Windows Notepad's "Unicode")."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ZssegError(f"vocabulary file not found: {path}") from None
        except IsADirectoryError:
            raise ZssegError(f"vocabulary file is a folder: {path}") from None
        except OSError as error:
            raise ZssegError(f"cannot read vocabulary file {path}: {error.strerror}") from None
        encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            raise ZssegError(f"vocabulary file is not UTF-8 text (nor UTF-16 with a byte-order mark): {path}") from None
        # A byte-order mark can also start a line where files were concatenated: never a name's.
        entries = [entry for line in text.splitlines() for entry in _COMMENT.sub("", line.lstrip("\ufeff")).split(";")]
        return cls.from_names([entry for entry in entries if entry.strip()], name=path.stem)

    @classmethod
    def preset(cls, name: str) -> "Vocabulary":
        """A built-in benchmark vocabulary, by name (see PRESETS)."""
        if name not in PRESETS:
            raise ZssegError(f"unknown vocabulary '{name}'; built-in ones: {', '.join(PRESETS)}")
        text = resources.files("zsseg.data").joinpath("vocabularies", f"{name}.txt").read_text("utf-8")
        classes = [synonyms for synonyms in map(_split_synonyms, text.splitlines()) if synonyms]
        return cls(_without_shared_synonyms(classes), name)


def _without_shared_synonyms(classes: list[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    """Published benchmark vocabularies (ADE20K-847's WordNet synonyms) give some names to
    several classes ("machine" is a synonym of "car" and a class of its own). With the maximum
    over synonyms, such a class could never win, so a shared name stays only with its owner:
    the class it is the one name of, else the one class it is the first name of; where no
    class owns it, every class drops it. The benchmark's class order and count are kept."""
    holders: dict[str, list[int]] = {}
    for index, synonyms in enumerate(classes):
        for synonym in synonyms:
            holders.setdefault(_canonical(synonym), []).append(index)

    def owner(key: str) -> int | None:
        for rule in (lambda i: len(classes[i]) == 1, lambda i: _canonical(classes[i][0]) == key):
            candidates = [i for i in holders[key] if rule(i)]
            if candidates:
                return candidates[0] if len(candidates) == 1 else None
        return None

    resolved = []
    for index, synonyms in enumerate(classes):
        kept = tuple(s for s in synonyms if len(holders[_canonical(s)]) == 1 or owner(_canonical(s)) == index)
        resolved.append(kept or synonyms)
    return tuple(resolved)


def _split_synonyms(entry: str) -> tuple[str, ...]:
    synonyms: list[str] = []
    for part in entry.split(","):
        part = re.sub(r"\s+", " ", part.strip())
        if part and _canonical(part) not in {_canonical(s) for s in synonyms}:
            synonyms.append(part)
    return tuple(synonyms)


def as_vocabulary(vocabulary: "Vocabulary | str | list[str] | tuple[str, ...]") -> Vocabulary:
    """Accept a Vocabulary, a preset name, "a; b, c" text, or a list of class names."""
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    if isinstance(vocabulary, str):
        return Vocabulary.preset(vocabulary) if vocabulary in PRESETS else Vocabulary.parse(vocabulary)
    if isinstance(vocabulary, (list, tuple)):
        return Vocabulary.from_names(list(vocabulary))
    raise ZssegError(f"a vocabulary must be a Vocabulary, a string or a list of names, not {type(vocabulary).__name__}")
