"""`--config paper`'s training data against the reference's settings (Base-COCOStuff164K-171.yaml,
MaskFormer's semantic mapper), on real COCO-Stuff images."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA
from zsseg.data.datasets import load_dataset, training_classes
from zsseg.training import augmentation
from zsseg.training.augmentation import Augmentation, ColorJitter, hsv_to_rgb, resize_label_map, rgb_to_hsv, shorter_sides
from zsseg.training.recipes import load_recipe
from zsseg.training.proposal_data import TrainingSamples

PAPER = load_recipe("proposals", "paper").train
SAMPLES = 10


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """8 real COCO-Stuff train images; in two of them every seen pixel is made void, so they
    show unseen classes only (as images the reference's base split leaves out)."""
    root = tmp_path_factory.mktemp("coco")
    images, labels = root / "coco/train2017", root / "coco/stuffthingmaps_detectron2/train2017"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    real = load_dataset("coco-stuff", DATA, "train")
    unseen = np.array(real.unseen)
    chosen = [i for i in range(len(real)) if np.isin(real.load_label(i), unseen).any()][:2]
    chosen += [i for i in range(len(real)) if i not in chosen][:6]
    for index in chosen:
        sample = real.samples[index]
        shutil.copy(sample.image, images / sample.image.name)
        raw = np.array(Image.open(sample.label))
        if index in chosen[:2]:
            raw = np.where(np.isin(raw, unseen), raw, 255).astype(np.uint8)
        Image.fromarray(raw).save(labels / sample.label.name)
    dataset = load_dataset("coco-stuff", root, "train")
    return dataset, {real.samples[i].name for i in chosen[:2]}


@pytest.fixture(scope="module")
def stream(coco):
    """The first SAMPLES samples of `--config paper`'s zero-shot stream, with what the
    augmentation did to each: the resized size, whether the colour jitter changed pixels."""
    dataset, _ = coco
    samples = TrainingSamples(dataset, training_classes(dataset, "zero-shot"), Augmentation(
        PAPER.crop_size, PAPER.train_min_sizes, PAPER.train_max_size, PAPER.color_aug, PAPER.flip), seed=0)
    sizes, jittered = [], []
    real_resize, real_jitter = augmentation.resize_image, ColorJitter.__call__
    mp = pytest.MonkeyPatch()
    mp.setattr(augmentation, "resize_image", lambda image, size: sizes.append(tuple(size)) or real_resize(image, size))
    mp.setattr(ColorJitter, "__call__", lambda self, image, g: jittered.append(image.copy()) or jittered.append(real_jitter(self, image, g)) or jittered[-1])
    try:
        drawn = [(samples.image_index(p), *samples.labelled(p)) for p in range(SAMPLES)]
    finally:
        mp.undo()
    return samples, drawn, sizes, list(zip(jittered[::2], jittered[1::2]))


def test_paper_config_is_the_reference_recipe():
    assert PAPER.train_min_sizes == (320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960)
    assert PAPER.train_max_size == 2560 and PAPER.crop_size == 640 and PAPER.color_aug and PAPER.flip
    assert PAPER.loss_pixels == "all"


def test_no_training_image_without_a_seen_pixel(coco, stream):
    dataset, unseen_only = coco
    samples, drawn, _, _ = stream
    assert len(dataset) == 8 and len(samples.kept) == 6
    assert not {dataset.samples[i].name for i in samples.kept} & unseen_only
    seen_positions = {samples.image_index(p) for p in range(60)}
    assert seen_positions == set(samples.kept)
    for _, _, label in drawn:
        assert (label >= 0).any()


def test_shorter_side_is_a_choice_of_320_to_960_and_longer_side_at_most_2560(stream):
    _, drawn, sizes, _ = stream
    assert len(sizes) == SAMPLES
    for size in sizes:
        assert min(size) in PAPER.train_min_sizes and max(size) <= 2560
    assert len({min(s) for s in sizes}) > 3, "the shorter side is drawn, not fixed"
    # The cap: a long panorama's shorter side gives way to the 2560 longer side.
    aug = Augmentation(640, (960,), 2560, color=False, flip=False)
    recorded = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(augmentation, "resize_image", lambda image, size: recorded.append(tuple(size)) or np.zeros((*size, 3), np.uint8))
        aug(np.zeros((100, 400, 3), np.uint8), np.zeros((100, 400), np.int32), torch.Generator().manual_seed(0))
    assert recorded == [(640, 2560)]


def test_crops_are_padded_with_128_and_ignored_labels(stream):
    _, drawn, sizes, _ = stream
    padded = 0
    for (_, image, label), size in zip(drawn, sizes):
        assert image.shape == (3, 640, 640) and label.shape == (640, 640)
        h, w = min(size[0], 640), min(size[1], 640)
        # Flips mirror the crop, never the padding: it stays at the bottom and right.
        assert (image[:, h:] == 128).all() and (image[:, :, w:] == 128).all()
        assert (label[h:] == -1).all() and (label[:, w:] == -1).all()
        padded += (h < 640) or (w < 640)
    assert padded, "some resized image is smaller than the crop"


def test_colour_jitter_is_applied(stream):
    _, _, _, jitter = stream
    assert len(jitter) == SAMPLES
    changed = [not np.array_equal(before, after) for before, after in jitter]
    # Four steps each with probability 1/2: a sample is left as it is with probability 1/16.
    assert sum(changed) >= SAMPLES // 2
    # The photometric change is more than rounding: mean shifts of several levels.
    assert max(abs(float(a.astype(float).mean() - b.astype(float).mean())) for b, a in jitter) > 3


def test_the_stream_is_a_function_of_seed_and_position(coco, stream):
    dataset, _ = coco
    samples, drawn, _, _ = stream
    index, image, label = drawn[3]
    again = TrainingSamples(dataset, training_classes(dataset, "zero-shot"), samples.augmentation, seed=0)
    assert again.image_index(3) == index
    image2, label2 = again.labelled(3)
    assert torch.equal(image, image2) and torch.equal(label, label2)


def test_label_maps_are_resized_as_detectron2_does():
    """torch's "nearest": source index floor(i x in / out), not the pixel centres."""
    label = np.arange(10, dtype=np.int32)[None].repeat(2, 0)
    assert resize_label_map(label, (2, 4)).tolist()[0] == [0, 2, 5, 7]
    assert resize_label_map(label, (2, 15))[0].tolist() == [int(np.floor(i * 10 / 15)) for i in range(15)]


def test_hsv_conversions_are_opencvs():
    """The colour jitter's saturation and hue steps go through OpenCV's 8-bit HSV (H 0..179):
    RGB -> HSV is its fixed-point formula exactly; HSV -> RGB its float32 formula, which
    OpenCV's own scalar and vector code paths round differently at .5 (at most 1 level)."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the test extra) compares with OpenCV itself")
    image = np.array(Image.open(next(iter(sorted((DATA / "coco" / "train2017").glob("*.jpg"))))).convert("RGB"))
    every = np.stack(np.meshgrid(np.arange(256), np.arange(256), np.arange(0, 256, 5), indexing="ij"), -1).astype(np.uint8).reshape(-1, 52, 3)
    for rgb in (image, every):
        expected = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2HSV)
        assert np.array_equal(rgb_to_hsv(rgb), expected)
        back = cv2.cvtColor(expected, cv2.COLOR_HSV2BGR)[..., ::-1]
        assert np.abs(hsv_to_rgb(expected).astype(int) - back).max() <= 1
    hsv = np.stack(np.meshgrid(np.arange(180), np.arange(256), np.arange(0, 256, 3), indexing="ij"), -1).astype(np.uint8).reshape(-1, 1, 3)
    scalar = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[..., ::-1]  # one pixel a row: OpenCV's scalar code
    differ = (hsv_to_rgb(hsv) != scalar).any(-1)
    assert np.abs(hsv_to_rgb(hsv).astype(int) - scalar).max() <= 1 and differ.mean() < 0.002


def test_shorter_sides_are_the_reference_list():
    assert shorter_sides(640) == tuple(int(x * 0.1 * 640) for x in range(5, 16))
    assert shorter_sides(128)[0] == 64 and shorter_sides(128)[-1] == 192


# --- VOC's SBD-augmented training set and the paper-voc config -----------------------------------


@pytest.fixture(scope="module")
def voc_aug(tmp_path_factory):
    """A `SegmentationClassAug` layout (plain 8-bit labels 0..20, 255; `train_aug.txt`) made
    from the 14 real VOC samples."""
    root = tmp_path_factory.mktemp("voc-aug")
    source, voc = DATA / "VOCdevkit/VOC2012", root / "VOCdevkit/VOC2012"
    (voc / "SegmentationClassAug").mkdir(parents=True)
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    shutil.copytree(source / "JPEGImages", voc / "JPEGImages")
    stems = sorted(p.stem for p in (source / "SegmentationClass").glob("*.png"))
    for stem in stems:
        with Image.open(source / "SegmentationClass" / f"{stem}.png") as palette:
            Image.fromarray(np.array(palette).astype(np.uint8), mode="L").save(voc / "SegmentationClassAug" / f"{stem}.png")
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text("".join(f"{s}\n" for s in stems))
    return root, stems


def test_voc_train_aug_is_read_from_segmentation_class_aug(voc_aug):
    root, stems = voc_aug
    aug = load_dataset("voc-20", root, "train_aug")
    official = load_dataset("voc-20", DATA, "val")
    assert [s.name for s in aug.samples] == stems and all(s.label.parent.name == "SegmentationClassAug" for s in aug.samples)
    for index in (0, 5):
        assert np.array_equal(aug.load_label(index), official.load_label(index))
    with pytest.raises(Exception, match="train_aug.txt"):
        load_dataset("voc-20", DATA, "train_aug")


def test_paper_voc_config_trains_on_train_aug(voc_aug, clip_dir, tmp_path):
    from conftest import run

    root, stems = voc_aug
    voc = load_recipe("proposals", "paper-voc")
    assert (voc.train.crop_size, voc.train.batch_size, voc.train.max_iters, voc.train.test_size) == (512, 16, 20000, 512)
    assert voc.train.train_min_sizes == PAPER.train_min_sizes and voc.train.train_max_size == 2048
    assert voc.train.prompt == "a sculpture of a {}." and voc.model.backbone == "resnet-101c"
    out = tmp_path / "out"
    result = run(["train", "proposals", "--dataset", "voc-20", "--data-root", str(root), "--config", "paper-voc",
                  "--clip", str(clip_dir), "--backbone-weights", "none", "--max-iters", "1", "--batch-size", "1",
                  "--crop-size", "64", "--output-dir", str(out)])
    assert result.returncode == 0, result.stderr
    import json

    record = json.loads((out / "proposals.json").read_text())
    assert record["split"] == "train_aug" and record["train"]["train_max_size"] == 2048
    assert record["train"]["prompt"] == "a sculpture of a {}."
    assert len(record["class_names"]) == 15
    checkpoint = torch.load(next(out.glob("checkpoint-*.pt")), weights_only=True)
    signature = json.loads(checkpoint["signature"])
    dataset = load_dataset("voc-20", root, "train_aug")
    seen = [i for i in range(20) if i not in dataset.unseen]
    expected = sum(bool(np.isin(dataset.load_label(i), seen).any()) for i in range(len(dataset)))
    assert signature["num_images"] == len(stems) and signature["trained_images"] == expected
