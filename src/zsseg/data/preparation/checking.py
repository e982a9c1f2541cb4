"""`zsseg datasets check`: whether a prepared benchmark tree is usable, and whether it is complete.

For each split present under the data root (or the one asked for) it checks, with the same
readers `zsseg eval` uses: every image has its label map and every label map its image, every
label value is one the benchmark defines, every label map is as large as its image, and the
number of images against the official split size. A tree with fewer images than the official
split is usable (the counts say how far short it is) unless `complete` is asked for.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ZssegError, counted
from ...runs.progress import Progress

# The official number of images of each split (what the community scripts produce from the
# complete downloads).
OFFICIAL_SIZES = {
    "coco-stuff": {"train": 118_287, "val": 5_000},
    "ade20k-150": {"train": 20_210, "val": 2_000},
    "ade20k-847": {"train": 25_574, "val": 2_000},
    "pascal-context-59": {"val": 5_105},
    "pascal-context-459": {"val": 5_105},
    "voc-20": {"train": 1_464, "val": 1_449, "trainval": 2_913, "train_aug": 10_582},
    "voc-21": {"train": 1_464, "val": 1_449, "trainval": 2_913, "train_aug": 10_582},
    "cityscapes": {"train": 2_975, "val": 500, "test": 1_525},
    "camvid": {"train": 367, "val": 101, "test": 233},
}
SHOWN_PROBLEMS = 20  # per split; the rest are counted


@dataclass
class SplitCheck:
    """One split: how many images it has, against how many the official split has, which of
    the benchmark's classes its label maps hold, and what is wrong with it."""

    split: str
    images: int
    expected: int | None
    classes_present: int = 0
    classes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def short(self) -> int:
        """How many images fewer than the official split (0 when complete or unknown)."""
        return max(0, self.expected - self.images) if self.expected else 0

    def describe(self) -> str:
        count = f"{self.images:,} of {self.expected:,} images" if self.expected else counted(self.images, "image")
        if self.short:
            count += f" ({self.short:,} short of the official split)"
        elif self.expected and self.images == self.expected:
            count += " (complete)"
        status = f"{counted(len(self.problems), 'problem')}" if self.problems else "ok"
        return f"{self.split}: {count}, {self.classes_present} of {self.classes} classes present, {status}"


@dataclass
class DatasetCheck:
    """The result of `check_dataset`: per split what was found; `usable` says whether `zsseg
    eval` can read the tree (at least one split, and no problem), `complete` whether every split
    checked has its official size."""

    name: str
    root: Path
    splits: list[SplitCheck]
    absent: list[str]  # splits of the benchmark with nothing under the root
    problems: list[str] = field(default_factory=list)  # not tied to a split
    require_complete: bool = False

    @property
    def complete(self) -> bool:
        return bool(self.splits) and all(s.expected is not None and s.images == s.expected for s in self.splits)

    @property
    def usable(self) -> bool:
        shortness = self.require_complete and not self.complete
        return bool(self.splits) and not self.problems and not any(s.problems for s in self.splits) and not shortness

    def all_problems(self) -> list[str]:
        problems = list(self.problems)
        for split in self.splits:
            shown = split.problems[:SHOWN_PROBLEMS]
            problems.extend(f"{split.split}: {problem}" for problem in shown)
            if len(split.problems) > len(shown):
                problems.append(f"{split.split}: ... and {len(split.problems) - len(shown):,} more")
            if self.require_complete and split.short:
                problems.append(f"{split.split}: {split.short:,} images short of the official {split.expected:,}")
        return problems

    def lines(self) -> list[str]:
        """One summary line, one line per split, then the problems and notes, for printing."""
        verdict = "usable" if self.usable else "NOT usable"
        if self.usable and not self.complete:
            verdict += ", but not the complete benchmark"
        lines = [f"{self.name} under {self.root}: {verdict}"]
        lines += [f"  {split.describe()}" for split in self.splits]
        if self.absent:
            lines.append(f"  not present: {', '.join(self.absent)}")
        problems = self.all_problems()
        if problems:
            lines.append("problems:")
            lines += [f"  {problem}" for problem in problems]
        notes = [f"{split.split}: {note}" for split in self.splits for note in split.notes]
        if notes:
            lines.append("notes:")
            lines += [f"  {note}" for note in notes]
        return lines


def check_dataset(name: str, data_root: str | Path | None = None, split: str | None = None, workers: int | None = None,
                  complete: bool = False, progress: bool = True) -> DatasetCheck:
    """Check the prepared tree of benchmark `name` under `data_root` (default: `$DETECTRON2_DATASETS`,
    else `./datasets`): `split`, or every split present, on `workers` threads (default: one per
    CPU). Reads every label map and every image's header. Raises `ZssegError` only for an unknown name or split, or a data root that is not a folder."""
    from ..datasets import DATASETS, default_data_root
    from .jobs import default_workers
    from .recipes import RECIPES
    from .targets import Record, record_path

    if name not in DATASETS:
        raise ZssegError(f"unknown dataset '{name}'; available: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if split is not None and split not in spec.splits:
        raise ZssegError(f"{name} has splits {', '.join(spec.splits)}; got '{split}'")
    root = Path(data_root) if data_root is not None else default_data_root()
    if not root.is_dir():
        raise ZssegError(f"data root {root} is not a folder")
    record_key = RECIPES[name].key
    omitted = Record(root, record_key).omitted() if record_path(root, record_key).is_file() else set()
    result = DatasetCheck(name, root, [], [], require_complete=complete)
    for candidate in [split] if split else spec.splits:
        try:
            samples = spec.samples(root, candidate)
        except FileNotFoundError:
            samples = []
        if not samples:
            if split:
                result.problems.append(f"{candidate}: nothing found; expected {spec.layout(root, candidate)}")
            else:
                result.absent.append(candidate)
            continue
        result.splits.append(_check_split(spec, root, candidate, samples, omitted, workers or default_workers(), progress))
    if not result.splits and not result.problems:
        result.problems.append(f"no split of {name} found under {root}; expected for example {spec.layout(root, spec.splits[-1])}")
    return result


def _check_split(spec, root: Path, split: str, samples, omitted: set[str], workers: int, progress: bool) -> SplitCheck:
    import numpy as np

    from ..datasets import SegmentationDataset

    dataset = SegmentationDataset(spec, root, split, samples)
    expected = OFFICIAL_SIZES.get(spec.name, {}).get(split)
    result = SplitCheck(split, sum(1 for s in samples if s.image.is_file()), expected, classes=dataset.num_classes)
    present = np.zeros(dataset.num_classes + 1, dtype=bool)
    left_out = 0

    def check(index: int) -> tuple[list[str], np.ndarray | None, bool]:
        sample, problems = samples[index], []
        if not sample.image.is_file():
            return [f"{sample.label.name} has no image (looked for {sample.image})"], None, False
        if not sample.label.is_file():
            relative = sample.label.relative_to(root).as_posix() if sample.label.is_relative_to(root) else None
            if relative in omitted:
                return [], None, True
            return [f"{sample.image.name} has no label map (looked for {sample.label})"], None, False
        size = _image_size(sample.image)
        if isinstance(size, str):
            problems.append(size)
        try:
            labels = dataset.load_label(index)
        except ZssegError as error:
            return problems + [str(error)], None, False
        if not isinstance(size, str) and size != (labels.shape[1], labels.shape[0]):
            problems.append(f"{sample.image.name} is {size[0]}x{size[1]} but its label map {sample.label.name} is "
                            f"{labels.shape[1]}x{labels.shape[0]}")
        return problems, np.unique(labels), False

    bar = Progress(total=len(samples), description=f"checking {spec.name} {split}", unit="image", enabled=progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for problems, values, was_omitted in pool.map(check, range(len(samples))):
            result.problems.extend(problems)
            if values is not None:
                present[values + 1] = True  # IGNORE (-1) at 0
            left_out += was_omitted
            bar.update()
    bar.close()
    result.classes_present = int(present[1:].sum())
    if left_out:
        result.notes.append(f"{counted(left_out, 'image')} {'has' if left_out == 1 else 'have'} no label map because no pixel of "
                            "its raw map is labelled (the community script writes none); an evaluation told to skip missing "
                            "labels leaves them out")
    return result


def _image_size(path: Path) -> tuple[int, int] | str:
    """An image's width and height from its header, or why it cannot be read."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{path.name}: cannot read the image ({error})"

