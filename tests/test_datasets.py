"""Benchmark loaders on the real samples in their official layouts, and on generated label maps
for the benchmarks that have no public samples (ADE20K-847, Pascal Context)."""

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from zsseg.data.datasets import COCO_STUFF_UNSEEN, IGNORE, VOC_UNSEEN, default_data_root, load_dataset
from zsseg.errors import ZssegError


@pytest.mark.parametrize(
    "name, split, count, classes",
    [
        ("coco-stuff", "val", 100, 171),
        ("coco-stuff", "train", 100, 171),
        ("ade20k-150", "val", 30, 150),
        ("voc-20", "val", 14, 20),
        ("voc-21", "val", 14, 21),
        ("cityscapes", "train", 8, 19),
        ("camvid", "val", 101, 11),
        ("camvid", "train", 367, 11),
    ],
)
def test_real_samples_load(name, split, count, classes):
    dataset = load_dataset(name, DATA, split)
    assert len(dataset) == count and dataset.num_classes == classes
    assert [s.name for s in dataset.samples] == sorted(s.name for s in dataset.samples)
    for index in (0, len(dataset) - 1):
        image, label = dataset.load_image(index), dataset.load_label(index)
        assert image.shape[:2] == label.shape and label.dtype == np.int32
        assert label.min() >= IGNORE and label.max() < classes
        assert (label >= 0).any()


def test_ade20k_150_shifts_labels_and_ignores_zero():
    dataset = load_dataset("ade20k-150", DATA)
    raw = np.array(Image.open(dataset.samples[0].label)).astype(np.int64)
    label = dataset.load_label(0)
    assert np.array_equal(label, np.where(raw == 0, -1, raw - 1))
    assert dataset.class_names[0] == "wall"


def test_voc_20_and_21_agree():
    voc20, voc21 = load_dataset("voc-20", DATA), load_dataset("voc-21", DATA)
    for index in range(len(voc20)):
        a, b = voc20.load_label(index), voc21.load_label(index)
        assert np.array_equal(a[a >= 0] + 1, b[a >= 0])  # objects shift by the background class
        assert np.all(a[b == 0] == IGNORE)  # background is not scored in voc-20
    assert voc21.class_names[0] == "background"


def test_cityscapes_label_ids_convert_to_train_ids(tmp_path):
    """A copy of the layout with only *_labelIds.png gives exactly the *_labelTrainIds.png labels."""
    source = DATA / "cityscapes"
    for sub in ("leftImg8bit", "gtFine"):
        (tmp_path / "cityscapes" / sub / "train" / "aachen").mkdir(parents=True)
    for image in (source / "leftImg8bit" / "train" / "aachen").iterdir():
        (tmp_path / "cityscapes" / "leftImg8bit" / "train" / "aachen" / image.name).symlink_to(image)
    for label in (source / "gtFine" / "train" / "aachen").glob("*_labelIds.png"):
        (tmp_path / "cityscapes" / "gtFine" / "train" / "aachen" / label.name).symlink_to(label)
    converted = load_dataset("cityscapes", tmp_path, "train")
    official = load_dataset("cityscapes", DATA, "train")
    assert [s.name for s in converted.samples] == [s.name for s in official.samples]
    assert converted.samples[0].label.name.endswith("_labelIds.png")
    for index in range(2):
        assert np.array_equal(converted.load_label(index), official.load_label(index))


def make_pair(root, image_dir, label_dir, stem, label, suffix=".png"):
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / label_dir).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(label.shape[:2] + (3,), np.uint8)).save(root / image_dir / f"{stem}.jpg")
    Image.fromarray(label).save(root / label_dir / f"{stem}{suffix}")


def test_ade20k_847_reads_16_bit_tiff(tmp_path):
    label = np.array([[0, 846, 65535], [400, 65535, 5]], dtype=np.uint16)
    make_pair(tmp_path, "ADE20K_2021_17_01/images_detectron2/validation",
              "ADE20K_2021_17_01/annotations_detectron2/validation", "ADE_frame_1", label, ".tif")
    dataset = load_dataset("ade20k-847", tmp_path)
    assert dataset.num_classes == 847
    assert dataset.load_label(0).tolist() == [[0, 846, -1], [400, -1, 5]]


def test_pascal_context_59_and_459(tmp_path):
    pc = "VOCdevkit/VOC2010"
    make_pair(tmp_path, f"{pc}/JPEGImages", f"{pc}/annotations_detectron2/pc59_val", "2008_000002",
              np.array([[0, 58, 255]], np.uint8))
    make_pair(tmp_path, f"{pc}/JPEGImages", f"{pc}/annotations_detectron2/pc459_val", "2008_000002",
              np.array([[0, 458, 65535]], np.uint16), ".tif")
    pc59, pc459 = load_dataset("pascal-context-59", tmp_path), load_dataset("pascal-context-459", tmp_path)
    assert (pc59.num_classes, pc459.num_classes) == (59, 459)
    assert pc59.load_label(0).tolist() == [[0, 58, -1]]
    assert pc459.load_label(0).tolist() == [[0, 458, -1]]


def test_zero_shot_splits():
    coco = load_dataset("coco-stuff", DATA)
    assert len(coco.unseen) == 15 and len(coco.num_classes - np.array(coco.unseen)) == 15
    assert [coco.class_names[i] for i in coco.unseen] == sorted(COCO_STUFF_UNSEEN, key=coco.class_names.index)
    # The reference code's unseen COCO category ids (minus one), mapped to contiguous indices.
    assert sorted(coco.unseen) == [19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160]
    voc = load_dataset("voc-20", DATA)
    assert [voc.class_names[i] for i in voc.unseen] == list(VOC_UNSEEN) and voc.unseen == (15, 16, 17, 18, 19)
    assert load_dataset("ade20k-150", DATA).unseen == ()


def test_default_data_root(monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(DATA))
    assert default_data_root() == DATA
    assert len(load_dataset("voc-20")) == 14
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert str(default_data_root()) == "datasets"


def test_bad_layouts(tmp_path):
    with pytest.raises(ZssegError, match="unknown dataset 'coco'"):
        load_dataset("coco", DATA)
    with pytest.raises(ZssegError, match="has splits train, val; got 'test'"):
        load_dataset("coco-stuff", DATA, "test")
    with pytest.raises(ZssegError, match="is not a folder"):
        load_dataset("coco-stuff", tmp_path / "nowhere")
    with pytest.raises(ZssegError, match=r"stuffthingmaps_detectron2/val2017 is missing; expected images in .*coco/val2017"):
        load_dataset("coco-stuff", tmp_path)
    with pytest.raises(ZssegError, match=r"ImageSets/Segmentation/val.txt is missing"):
        load_dataset("voc-20", tmp_path)
    with pytest.raises(ZssegError, match="leftImg8bit/val is missing"):
        load_dataset("cityscapes", DATA, "val")
    # label maps whose images are missing
    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    (tmp_path / "coco" / "stuffthingmaps_detectron2" / "val2017").mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "coco/stuffthingmaps_detectron2/val2017/1.png")
    with pytest.raises(ZssegError, match="1 of 1 label map has no image, for example 1.png"):
        load_dataset("coco-stuff", tmp_path)
    # a listed id with neither file: named as such, not as "a label map with no image"
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n")
    with pytest.raises(ZssegError, match="1 of 1 image has no image file, for example '2007_000001', which has no label map either"):
        load_dataset("voc-20", tmp_path)


def test_label_values_of_another_encoding_are_refused(tmp_path):
    """Raw COCO-Stuff maps (ids up to 181) under the detectron2 folder name: a clear error."""
    make_pair(tmp_path, "coco/val2017", "coco/stuffthingmaps_detectron2/val2017", "1", np.array([[0, 181, 255]], np.uint8))
    dataset = load_dataset("coco-stuff", tmp_path)
    with pytest.raises(ZssegError, match="label values 181 are not defined by coco-stuff"):
        dataset.load_label(0)


def test_colour_label_maps_are_refused(tmp_path):
    make_pair(tmp_path, "coco/val2017", "coco/stuffthingmaps_detectron2/val2017", "1", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ZssegError, match="mode RGB; expected single-channel"):
        load_dataset("coco-stuff", tmp_path).load_label(0)
