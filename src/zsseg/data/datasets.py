"""Benchmark datasets read from their official (detectron2 / dataset toolkit) layouts.

    dataset = load_dataset("ade20k-150", root="datasets", split="val")
    image, label = dataset.load_image(0), dataset.load_label(0)

Every dataset converts its label files to one evaluation encoding: int32 class indices
0..C-1 in the order of its built-in vocabulary, and -1 (`IGNORE`) for pixels that are not
scored. A label value that the benchmark does not define is an error, which catches label
maps in another encoding (for example raw COCO-Stuff maps instead of the detectron2 ones).
The layouts are listed in docs/datasets.md and in each error message.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..catalogue import PROTOCOLS
from ..errors import SettingError, ZssegError, counted
from .images import IMAGE_EXTENSIONS, MAX_PIXELS, bomb_refusal, read_image
from .vocabulary import Vocabulary

IGNORE = -1
_UNDEFINED = -2  # lookup-table value of label values the benchmark does not define
_LUT_SIZE = 1 << 16

# The paper's zero-shot splits (as in the reference code): unseen class names per dataset.
COCO_STUFF_UNSEEN_THINGS = ("cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors")
COCO_STUFF_UNSEEN_STUFF = ("cardboard", "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete")
COCO_STUFF_UNSEEN = COCO_STUFF_UNSEEN_THINGS + COCO_STUFF_UNSEEN_STUFF
VOC_UNSEEN = ("potted plant", "sheep", "sofa", "train", "tv monitor")

# Cityscapes labelIds -> trainIds (cityscapesScripts' labels.py); other ids are ignored.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def default_data_root() -> Path:
    """`$DETECTRON2_DATASETS`, else `./datasets` (detectron2's convention)."""
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets"))


@dataclass(frozen=True)
class Sample:
    """One image and its label map; `name` (the image's file stem) names its prediction."""

    name: str
    image: Path
    label: Path


def _lut(mapping: dict[int, int], ignore: tuple[int, ...] = (), ignore_all_others: bool = False) -> np.ndarray:
    table = np.full(_LUT_SIZE, IGNORE if ignore_all_others else _UNDEFINED, dtype=np.int32)
    for raw, label in mapping.items():
        table[raw] = label
    for raw in ignore:
        table[raw] = IGNORE
    return table


def _shifted(num_classes: int, first: int, ignore: tuple[int, ...]) -> np.ndarray:
    """Raw values first..first+C-1 -> 0..C-1; `ignore` values -> IGNORE; others undefined."""
    return _lut({first + i: i for i in range(num_classes)}, ignore)


class DatasetSpec(ABC):
    """How one benchmark is laid out on disk and how its labels convert."""

    name: str = ""
    vocabulary: str = ""  # built-in vocabulary preset, in label order
    splits: tuple[str, ...] = ("val",)
    unseen: tuple[str, ...] = ()  # zero-shot unseen class names; empty: no zero-shot protocol
    # Further zero-shot evaluation sets beside "base" (the seen classes), as the reference's.
    unseen_sets: dict[str, tuple[str, ...]] = {}
    description: str = ""
    table: np.ndarray  # raw label value -> evaluation label (see `lookup`)

    @abstractmethod
    def layout(self, root: Path, split: str) -> str:
        """Human description of where the files are expected."""

    @abstractmethod
    def samples(self, root: Path, split: str) -> list[Sample]:
        """The split's samples; raises FileNotFoundError naming a missing folder or list."""

    def lookup(self, sample: Sample) -> np.ndarray:
        """Raw label value -> evaluation label table for this sample's label file."""
        return self.table

    @property
    def unseen_indices(self) -> tuple[int, ...]:
        """Indices of the zero-shot unseen classes in the benchmark's label order."""
        vocabulary = Vocabulary.preset(self.vocabulary)
        return tuple(_class_index(vocabulary, name) for name in self.unseen)


class _FolderPairs(DatasetSpec):
    """Images in one folder and label maps in another, paired by file stem. The split is every
    image of the image folder (a missing label map is then noticed), or, where that folder
    holds other splits too, every label map of the label folder (`split_by_labels`)."""

    image_dirs: dict[str, str] = {}
    label_dirs: dict[str, str] = {}
    label_suffix = ".png"
    image_suffix = ".jpg"
    split_by_labels = False

    def layout(self, root: Path, split: str) -> str:
        return (
            f"images in {root / self.image_dirs[split]}/*{self.image_suffix} and label maps in "
            f"{root / self.label_dirs[split]}/*{self.label_suffix}"
        )

    def samples(self, root: Path, split: str) -> list[Sample]:
        image_dir, label_dir = root / self.image_dirs[split], root / self.label_dirs[split]
        labels = {p.stem: p for p in _files(label_dir, {self.label_suffix})}
        if self.split_by_labels:
            if not image_dir.is_dir():
                raise FileNotFoundError(image_dir)
            images = {stem: _image_for(image_dir, stem, self.image_suffix) or image_dir / f"{stem}{self.image_suffix}" for stem in labels}
        else:
            images = {p.stem: p for p in _files(image_dir, IMAGE_EXTENSIONS)}
        return [
            Sample(stem, images.get(stem, image_dir / f"{stem}{self.image_suffix}"), labels.get(stem, label_dir / f"{stem}{self.label_suffix}"))
            for stem in sorted(images.keys() | labels.keys())
        ]


class CocoStuff(_FolderPairs):
    name, vocabulary, splits, unseen = "coco-stuff", "coco-stuff-171", ("train", "val"), COCO_STUFF_UNSEEN
    unseen_sets = {"novel_thing": COCO_STUFF_UNSEEN_THINGS, "novel_stuff": COCO_STUFF_UNSEEN_STUFF}
    description = "COCO-Stuff 164k, 171 classes (detectron2 stuffthingmaps)"
    image_dirs = {"train": "coco/train2017", "val": "coco/val2017"}
    label_dirs = {"train": "coco/stuffthingmaps_detectron2/train2017", "val": "coco/stuffthingmaps_detectron2/val2017"}
    table = _shifted(171, 0, ignore=(255,))


class Ade20k150(_FolderPairs):
    name, vocabulary, splits = "ade20k-150", "ade20k-150", ("train", "val")
    description = "ADE20K SceneParsing (ADEChallengeData2016), 150 classes"
    image_dirs = {"train": "ADEChallengeData2016/images/training", "val": "ADEChallengeData2016/images/validation"}
    label_dirs = {"train": "ADEChallengeData2016/annotations/training", "val": "ADEChallengeData2016/annotations/validation"}
    table = _shifted(150, 1, ignore=(0,))


class Ade20k847(_FolderPairs):
    name, vocabulary, splits = "ade20k-847", "ade20k-847", ("train", "val")
    description = "ADE20K full (ADE20K_2021_17_01, prepared by prepare_ade20k_full_sem_seg.py), 847 classes"
    image_dirs = {s: f"ADE20K_2021_17_01/images_detectron2/{d}" for s, d in (("train", "training"), ("val", "validation"))}
    label_dirs = {s: f"ADE20K_2021_17_01/annotations_detectron2/{d}" for s, d in (("train", "training"), ("val", "validation"))}
    label_suffix = ".tif"
    table = _shifted(847, 0, ignore=(65535,))


class PascalContext59(_FolderPairs):
    name, vocabulary = "pascal-context-59", "pascal-context-59"
    description = "Pascal Context (VOC2010), 59 classes, background ignored"
    image_dirs = {"val": "VOCdevkit/VOC2010/JPEGImages"}
    label_dirs = {"val": "VOCdevkit/VOC2010/annotations_detectron2/pc59_val"}
    split_by_labels = True  # JPEGImages holds all of VOC2010
    table = _shifted(59, 0, ignore=(255,))


class PascalContext459(_FolderPairs):
    name, vocabulary = "pascal-context-459", "pascal-context-459"
    description = "Pascal Context (VOC2010), all 459 classes"
    image_dirs = {"val": "VOCdevkit/VOC2010/JPEGImages"}
    label_dirs = {"val": "VOCdevkit/VOC2010/annotations_detectron2/pc459_val"}
    label_suffix = ".tif"
    split_by_labels = True  # JPEGImages holds all of VOC2010
    table = _shifted(459, 0, ignore=(65535,))


class _Voc(DatasetSpec):
    """VOC2012's own splits (label maps in `SegmentationClass/`), or the 10,582-image
    SBD-augmented training set `train_aug` (ids in `ImageSets/Segmentation/train_aug.txt`,
    label maps in `SegmentationClassAug/`, plain 8-bit 0..20 with 255), which the paper's VOC
    networks are trained on."""

    splits, unseen = ("train", "val", "trainval", "train_aug"), VOC_UNSEEN
    base = "VOCdevkit/VOC2012"

    @staticmethod
    def label_folder(split: str) -> str:
        return "SegmentationClassAug" if split == "train_aug" else "SegmentationClass"

    def layout(self, root: Path, split: str) -> str:
        voc = root / self.base
        kind = "8-bit label maps (0..20, 255)" if split == "train_aug" else "palette label maps"
        return (
            f"image ids in {voc}/ImageSets/Segmentation/{split}.txt, images in {voc}/JPEGImages "
            f"and {kind} in {voc}/{self.label_folder(split)}/*.png"
        )

    def samples(self, root: Path, split: str) -> list[Sample]:
        voc = root / self.base
        ids = _read_ids(voc / "ImageSets" / "Segmentation" / f"{split}.txt")
        labels = voc / self.label_folder(split)
        samples = []
        for stem in ids:
            image = _image_for(voc / "JPEGImages", stem, ".jpg") or voc / "JPEGImages" / f"{stem}.jpg"
            samples.append(Sample(stem, image, labels / f"{stem}.png"))
        return samples


class Voc20(_Voc):
    name, vocabulary = "voc-20", "voc-20"
    description = "Pascal VOC 2012, 20 classes (background ignored)"
    table = _shifted(20, 1, ignore=(0, 255))


class Voc21(_Voc):
    name, vocabulary = "voc-21", "voc-21"
    description = "Pascal VOC 2012, background + 20 classes"
    table = _shifted(21, 0, ignore=(255,))


class Cityscapes(DatasetSpec):
    """Uses `*_gtFine_labelTrainIds.png`; where a split has none, converts `*_gtFine_labelIds.png`."""

    name, vocabulary, splits = "cityscapes", "cityscapes-19", ("train", "val", "test")
    description = "Cityscapes, 19 trainId classes"
    train_ids = _shifted(19, 0, ignore=(255,))
    label_ids = _lut(CITYSCAPES_ID_TO_TRAIN_ID, ignore_all_others=True)

    def layout(self, root: Path, split: str) -> str:
        city = root / "cityscapes"
        return (
            f"images in {city}/leftImg8bit/{split}/<city>/*_leftImg8bit.png and label maps in "
            f"{city}/gtFine/{split}/<city>/*_gtFine_labelTrainIds.png (or *_gtFine_labelIds.png)"
        )

    def samples(self, root: Path, split: str) -> list[Sample]:
        city = root / "cityscapes"
        image_dir, gt_dir = city / "leftImg8bit" / split, city / "gtFine" / split
        for folder in (image_dir, gt_dir):
            if not folder.is_dir():
                raise FileNotFoundError(folder)
        kind = "labelTrainIds" if any(gt_dir.glob("*/*_gtFine_labelTrainIds.png")) else "labelIds"
        images = {p.parent.name + "/" + p.name.rsplit("_leftImg8bit", 1)[0]: p for p in image_dir.glob("*/*_leftImg8bit.png")}
        labels = {p.parent.name + "/" + p.name.rsplit("_gtFine_", 1)[0]: p for p in gt_dir.glob(f"*/*_gtFine_{kind}.png")}
        samples = []
        for key in sorted(images.keys() | labels.keys()):
            town, stem = key.split("/")
            image = images.get(key, image_dir / town / f"{stem}_leftImg8bit.png")
            samples.append(Sample(image.stem, image, labels.get(key, gt_dir / town / f"{stem}_gtFine_{kind}.png")))
        return samples

    def lookup(self, sample: Sample) -> np.ndarray:
        return self.train_ids if sample.label.name.endswith("_labelTrainIds.png") else self.label_ids


class CamVid(_FolderPairs):
    """SegNet's CamVid: `CamVid/{split}/*.png` images, `CamVid/{split}annot/*.png` labels."""

    name, vocabulary, splits = "camvid", "camvid-11", ("train", "val", "test")
    description = "CamVid (SegNet 11-class version), 11 = void"
    image_dirs = {s: f"CamVid/{s}" for s in splits}
    label_dirs = {s: f"CamVid/{s}annot" for s in splits}
    image_suffix = ".png"
    table = _shifted(11, 0, ignore=(11,))


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (CocoStuff(), Ade20k150(), Ade20k847(), PascalContext59(), PascalContext459(), Voc20(), Voc21(), Cityscapes(), CamVid())
}


class SegmentationDataset:
    """The samples of one benchmark split, with labels in the evaluation encoding.

    Attributes:
        name, split, root: what was loaded, from where.
        vocabulary: the benchmark's classes, index i = label i.
        unseen: indices of the zero-shot unseen classes (empty if the benchmark has no split).
        samples: sorted by name.
    """

    def __init__(self, spec: DatasetSpec, root: Path, split: str, samples: list[Sample]):
        self.spec = spec
        self.name = spec.name
        self.root = root
        self.split = split
        self.samples = samples
        self.vocabulary = Vocabulary.preset(spec.vocabulary)
        self.unseen = spec.unseen_indices
        #: Zero-shot evaluation sets besides "base" (class indices), as the reference's.
        self.unseen_sets = {key: tuple(_class_index(self.vocabulary, n) for n in names) for key, names in spec.unseen_sets.items()}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)

    @property
    def class_names(self) -> list[str]:
        return self.vocabulary.names

    @property
    def folders(self) -> list[Path]:
        """The top folders under `root` that hold this dataset's files (such as `root/coco`)."""
        tops = set()
        for parent in {p.parent for s in self.samples for p in (s.image, s.label)}:
            inside = parent.is_relative_to(self.root) and parent != self.root
            tops.add(self.root / parent.relative_to(self.root).parts[0] if inside else parent)
        return sorted(tops)

    def check_outside(self, path: Path, setting: str) -> None:
        """Refuse an output `path` (given as `setting`) inside the dataset's folders, where it
        could replace or mix with the images and ground truth."""
        resolved = Path(path).resolve()
        for folder in self.folders:
            if resolved.is_relative_to(folder.resolve()):
                raise SettingError(setting, f"{{setting}} {path} is inside the {self.name} dataset's folder {folder}; write outputs "
                                   "outside the dataset")

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self.samples[index].image)

    def check_sizes(self, index: int, image: np.ndarray, label: np.ndarray) -> None:
        """Refuse sample `index` when its image and label map (as read) differ in size."""
        if image.shape[:2] != label.shape:
            sample = self.samples[index]
            raise ZssegError(f"{sample.image} is {image.shape[1]}x{image.shape[0]} but its label map {sample.label} is "
                             f"{label.shape[1]}x{label.shape[0]}")

    def load_label(self, index: int) -> np.ndarray:
        """`[H, W]` int32 labels 0..C-1, `IGNORE` (-1) where not scored."""
        sample = self.samples[index]
        raw = read_label_file(sample.label)
        labels = self.spec.lookup(sample)[raw]
        if (labels == _UNDEFINED).any():
            bad = np.unique(raw[labels == _UNDEFINED])
            shown = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
            raise ZssegError(
                f"{sample.label}: label values {shown} are not defined by {self.name} "
                f"(is this a label map of another encoding? expected layout: {self.spec.layout(self.root, self.split)})"
            )
        return labels


class UnreadableLabel(ZssegError):
    """An image's label map cannot be read (or holds values its benchmark does not define)."""


class SampleReader:
    """`(image, label)` of sample `index` of `dataset`, the one reader of every run over a
    dataset (evaluation, pseudo-labelling), picklable for DataLoader workers. Where the label
    map cannot be read, an `UnreadableLabel` stands in its place: the run decides whether that
    image is an error or is left out."""

    def __init__(self, dataset: "SegmentationDataset"):
        self.dataset = dataset

    def __call__(self, index: int) -> tuple:
        image = self.dataset.load_image(index)
        try:
            label = self.dataset.load_label(index)
        except ZssegError as error:
            label = UnreadableLabel(str(error))
        return image, label


def read_label_file(path: Path) -> np.ndarray:
    """A single-channel label map (palette, 8- or 16-bit PNG/TIFF) as its raw integer values."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # zsseg's own limit applies below
            image = Image.open(path)
        with image:
            if image.width * image.height > MAX_PIXELS:
                raise ZssegError(f"{path}: label map is {image.width}x{image.height}, above the limit of {MAX_PIXELS:,} pixels")
            if image.mode not in ("P", "L", "I;16", "I;16L", "I;16B", "I;16N", "I"):
                raise ZssegError(f"{path}: label map has mode {image.mode}; expected single-channel label indices")
            raw = np.array(image)
    except FileNotFoundError:
        raise ZssegError(f"label map not found: {path}") from None
    except Image.DecompressionBombError as error:
        raise bomb_refusal(path, error, "label map") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ZssegError(f"{path}: cannot read label map ({error})") from None
    if raw.ndim != 2:
        raise ZssegError(f"{path}: label map is not single-channel")
    if raw.min(initial=0) < 0 or raw.max(initial=0) >= _LUT_SIZE:
        raise ZssegError(f"{path}: label values must be in 0..65535")
    return raw.astype(np.int64)


def load_dataset(name: str, root: str | Path | None = None, split: str = "val", skip_missing_labels: bool = False) -> SegmentationDataset:
    """A benchmark split from its official layout under `root` (default: `default_data_root()`).

    Every image of the split must have its label map: a missing one is an error naming it,
    unless `skip_missing_labels`. The samples are then still every image, so that a `limit`
    takes the same images either way; `evaluate(skip_unreadable_labels=True)` leaves out and
    counts those whose label map is missing or unreadable.
    """
    if name not in DATASETS:
        raise ZssegError(f"unknown dataset '{name}'; available: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if split not in spec.splits:
        raise ZssegError(f"{name} has splits {', '.join(spec.splits)}; got '{split}'")
    root = Path(root) if root is not None else default_data_root()
    hint = f"expected {spec.layout(root, split)}; set {{setting}} or $DETECTRON2_DATASETS (see docs/datasets.md)"
    if not root.is_dir():
        raise SettingError("data_root", f"data root {root} is not a folder; {hint}")
    try:
        samples = spec.samples(root, split)
    except FileNotFoundError as error:
        raise SettingError("data_root", f"{name} ({split}) not found: {error.filename or error} is missing; {hint}") from None
    if not samples:
        raise SettingError("data_root", f"{name} ({split}): no label maps found; {hint}")
    missing = [s for s in samples if not s.image.is_file()]
    if missing:
        sample = missing[0]
        if not sample.label.is_file():  # a listed id (VOC) with neither file
            raise SettingError(
                "data_root",
                f"{name} ({split}): {len(missing)} of {counted(len(samples), 'image')} {'has' if len(missing) == 1 else 'have'} no "
                f"image file, for example '{sample.name}', which has no label map either (looked for {sample.image} and "
                f"{sample.label}); {hint}"
            )
        raise SettingError(
            "data_root",
            f"{name} ({split}): {len(missing)} of {counted(len(samples), 'label map')} {'has' if len(missing) == 1 else 'have'} no "
            f"image, for example {sample.label.name} (looked for {sample.image}); {hint}"
        )
    unlabeled = [s for s in samples if not s.label.is_file()]
    if unlabeled and not skip_missing_labels:
        raise SettingError(
            "skip_missing_labels",
            f"{name} ({split}): {len(unlabeled)} of {counted(len(samples), 'image')} {'has' if len(unlabeled) == 1 else 'have'} no label map, "
            f"for example {unlabeled[0].image.name} (looked for {unlabeled[0].label}); "
            "set {setting} to leave them out",
        )
    if len(unlabeled) == len(samples):
        raise SettingError("data_root", f"{name} ({split}): none of the images has a label map; {hint}")
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        raise ZssegError(f"{name} ({split}): two samples share a file name; predictions could not be told apart")
    return SegmentationDataset(spec, root, split, sorted(samples, key=lambda s: s.name))


# --- the paper's protocols and zero-shot splits -------------------------------------------------



def unseen_classes(dataset: SegmentationDataset, protocol: str) -> tuple[int, ...] | None:
    """The unseen class indices under `protocol` (None for cross-dataset)."""
    if protocol not in PROTOCOLS:
        raise ZssegError(f"unknown protocol '{protocol}'; choose from {', '.join(PROTOCOLS)}")
    if protocol == "cross-dataset":
        return None
    if not dataset.unseen:
        raise ZssegError(f"the zero-shot protocol has seen/unseen splits for coco-stuff, voc-20 and voc-21, not {dataset.name}")
    return dataset.unseen


def training_classes(dataset: SegmentationDataset, protocol: str) -> list[int]:
    """Dataset class indices learned under `protocol`: the seen classes (zero-shot) or all."""
    unseen = set(unseen_classes(dataset, protocol) or ())
    return [i for i in range(dataset.num_classes) if i not in unseen]


def _files(folder: Path, suffixes: set[str]) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())


def _image_for(folder: Path, stem: str, preferred: str) -> Path | None:
    """The image named `stem` in `folder`: `stem + preferred`, else any image extension."""
    candidate = folder / f"{stem}{preferred}"
    if candidate.is_file():
        return candidate
    for suffix in sorted(IMAGE_EXTENSIONS):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_ids(path: Path) -> list[str]:
    """Image ids from a split list: one per line, or a path whose stem is the id (SegNet lists)."""
    if not path.is_file():
        raise FileNotFoundError(path)
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ids.append(Path(line.split()[0]).stem)
    return ids


def _class_index(vocabulary: Vocabulary, name: str) -> int:
    for index, synonyms in enumerate(vocabulary.classes):
        if name in synonyms:
            return index
    raise ZssegError(f"class '{name}' is not in the {vocabulary.name} vocabulary")
