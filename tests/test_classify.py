"""`zsseg classify`: masks the user already has, in every format, labelled by Eq. 1 and Eq. 2;
each bad mask input is one line, status 2 and nothing written; the outputs follow segment's
safety rules; and a `zsseg segment` JSON read back labels each of its regions whole."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import run
from zsseg import MaskSet, RegionClassifier, classify_masks, read_masks
from zsseg.assembly import binary_mask_labels
from zsseg.cli import main
from zsseg.outputs.writers import SOFTWARE, record


@pytest.fixture(scope="module")
def photo(coco_val):
    """A real COCO image (640x426) and three overlapping masks of its size."""
    path = coco_val[0][0]
    width, height = Image.open(path).size
    truth = np.zeros((3, height, width), dtype=bool)
    truth[0, 10:200, 20:300] = True
    truth[1, 150:400, 250:600] = True
    yy, xx = np.mgrid[:height, :width]
    truth[2] = (yy - 300) ** 2 + (xx - 100) ** 2 < 80**2
    return path, truth


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask):
    """COCO's uncompressed RLE (iscrowd style): run lengths in column order, from a 0 run."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}


def _decoded(entry):
    return mask_utils.decode({"size": entry["size"], "counts": entry["counts"].encode("ascii")}).astype(bool)


# --- each format read correctly -----------------------------------------------------------------


def test_png_folder_reads_each_binary_png_and_passes_over_other_files(photo, tmp_path):
    _, truth = photo
    folder = tmp_path / "masks"
    folder.mkdir()
    Image.fromarray(truth[0].astype(np.uint8) * 255).save(folder / "b_grey.png")  # {0, 255}
    palette = Image.fromarray(truth[1].astype(np.uint8), mode="P")  # palette indices {0, 1}
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.save(folder / "a_palette.png")
    Image.fromarray(np.repeat(truth[2, :, :, None], 3, axis=2).astype(np.uint8) * 255).save(folder / "c_rgb.png")
    (folder / "notes.txt").write_text("not a mask")
    masks = read_masks(folder, *truth.shape[1:])
    assert masks.format == "png-folder" and masks.ids == ["a_palette", "b_grey", "c_rgb"] and masks.passed_over == 1
    assert np.array_equal(masks.masks, truth[[1, 0, 2]])
    assert masks.areas() == [int(truth[k].sum()) for k in (1, 0, 2)]
    assert masks.boxes()[1] == [20, 10, 280, 190]  # x, y, width, height of truth[0]


def test_instance_png_8_and_16_bit(photo, tmp_path):
    _, truth = photo
    instances = np.zeros(truth.shape[1:], dtype=np.uint16)
    instances[truth[0]] = 7
    instances[truth[2]] = 300  # needs 16 bits; drawn over 7 where they overlap
    Image.fromarray(instances).save(tmp_path / "ids16.png")
    masks = read_masks(tmp_path / "ids16.png", *truth.shape[1:])
    assert masks.format == "instance-png" and masks.ids == [7, 300]
    assert np.array_equal(masks.masks, np.stack([instances == 7, instances == 300]))
    Image.fromarray(truth[1].astype(np.uint8) * 255).save(tmp_path / "binary.png")  # one instance, id 255
    single = read_masks(tmp_path / "binary.png", *truth.shape[1:])
    assert single.ids == [255] and np.array_equal(single.masks[0], truth[1])


def test_coco_json_compressed_uncompressed_and_polygons(photo, tmp_path):
    _, truth = photo
    height, width = truth.shape[1:]
    polygon = [20.0, 10.0, 299.0, 10.0, 299.0, 199.0, 20.0, 199.0]
    data = {
        "images": [{"id": 5, "height": height, "width": width}, {"id": 6, "height": 10, "width": 10}],
        "annotations": [
            {"id": 11, "image_id": 5, "segmentation": _rle(truth[1]), "iscrowd": 0},
            {"id": 12, "image_id": 6, "segmentation": [[0, 0, 5, 0, 5, 5]]},
            {"id": 13, "image_id": 5, "segmentation": _uncompressed(truth[2]), "iscrowd": 1},
            {"id": 14, "image_id": 5, "segmentation": [polygon]},
        ],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    masks = read_masks(path, height, width, image_id=5)
    assert masks.format == "coco" and masks.ids == [11, 13, 14] and masks.image_id == 5
    expected_polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))).astype(bool)
    assert np.array_equal(masks.masks, np.stack([truth[1], truth[2], expected_polygon]))
    assert abs(int(expected_polygon.sum()) - int(truth[0].sum())) < 600  # the polygon is truth[0]'s box


def test_sam_json_rle_and_binary_rows(photo, tmp_path):
    _, truth = photo
    records = [{"segmentation": _rle(truth[k]), "area": int(truth[k].sum()), "bbox": [0, 0, 1, 1], "predicted_iou": 0.9,
                "stability_score": 0.95, "point_coords": [[10.0, 10.0]], "crop_box": [0, 0, 640, 426]} for k in (2, 0)]
    records.append({"segmentation": truth[1].astype(int).tolist(), "area": int(truth[1].sum())})  # binary_mask mode
    path = tmp_path / "sam.json"
    path.write_text(json.dumps(records))
    masks = read_masks(path, *truth.shape[1:])
    assert masks.format == "sam" and masks.ids == [0, 1, 2]
    assert np.array_equal(masks.masks, truth[[2, 0, 1]])


def test_zsseg_segment_json(photo, tmp_path):
    _, truth = photo
    labels = np.full(truth.shape[1:], -1)
    labels[truth[0]] = 2
    labels[truth[2]] = 0
    path = tmp_path / "photo.json"
    path.write_text(json.dumps(record(labels, ["cat", "dog", "wall"], "photo.jpg")))
    masks = read_masks(path, *truth.shape[1:])
    assert masks.format == "zsseg" and masks.ids == ["cat", "wall"]
    assert np.array_equal(masks.masks, np.stack([labels == 0, labels == 2]))


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.float32])
def test_npy_of_bool_integers_or_floats(photo, tmp_path, dtype):
    _, truth = photo
    np.save(tmp_path / "masks.npy", truth.astype(dtype))
    masks = read_masks(tmp_path / "masks.npy", *truth.shape[1:])
    assert masks.format == "npy" and masks.ids == [0, 1, 2] and np.array_equal(masks.masks, truth)


def test_npz_with_masks_and_ids_or_one_array(photo, tmp_path):
    _, truth = photo
    np.savez_compressed(tmp_path / "named.npz", masks=truth, ids=np.array(["sky", "road", "tree"]), other=np.zeros(3))
    named = read_masks(tmp_path / "named.npz", *truth.shape[1:])
    assert named.format == "npz" and named.ids == ["sky", "road", "tree"] and np.array_equal(named.masks, truth)
    np.savez(tmp_path / "one.npz", whatever=truth[:2])
    assert read_masks(tmp_path / "one.npz", *truth.shape[1:]).ids == [0, 1]


def test_more_than_255_masks_have_their_areas_and_boxes():
    """pycocotools' `area` of a list of over 255 RLEs overflows; MaskSet asks one at a time."""
    masks = np.zeros((300, 4, 5), dtype=bool)
    masks[:, 1:3, 2:5] = True
    masks[299, 0, 0] = True
    stack = MaskSet.from_array(masks)
    assert stack.areas() == [6] * 299 + [7] and stack.boxes()[0] == [2, 1, 3, 2] and stack.boxes()[299] == [0, 0, 5, 3]


# --- Eq. 1 and Eq. 2 on given masks -------------------------------------------------------------


def test_binary_mask_labels_is_the_mean_over_covering_masks():
    """Hand-computed: pixel 1 is covered by both masks, mean (0.55, 0.45) -> class 0; pixel 3 by none."""
    masks = np.array([[[1, 1, 0, 0]], [[0, 1, 1, 0]]], dtype=bool)
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert binary_mask_labels(iter(masks), probs, (1, 4)).tolist() == [[0, 0, 1, -1]]
    probs = np.array([[0.6, 0.4], [0.0, 1.0]])  # mean at pixel 1: (0.3, 0.7) -> class 1
    assert binary_mask_labels(iter(masks), probs, (1, 4)).tolist() == [[0, 1, 1, -1]]
    probs = np.array([[0.6, 0.4, 0.0], [0.3, 0.0, 0.7]])  # mean (0.45, 0.2, 0.35) -> 0, though 0.7 is the largest
    assert binary_mask_labels(iter(masks), probs, (1, 4)).tolist() == [[0, 0, 2, -1]]


def test_binary_mask_labels_match_the_dense_definition():
    rng = np.random.default_rng(3)
    masks = rng.random((12, 23, 31)) < 0.25
    probs = rng.dirichlet(np.ones(6), size=12)
    coverage = masks.sum(axis=0)
    scores = np.einsum("kc,khw->chw", probs, masks.astype(np.float64)) / np.maximum(coverage, 1)
    expected = np.where(coverage > 0, scores.argmax(axis=0), -1)
    assert np.array_equal(binary_mask_labels(iter(masks), probs, (23, 31)), expected)
    assert (expected == -1).any() and len(np.unique(expected)) > 3


def test_classify_masks_is_region_classification_on_the_given_masks(clip, photo):
    path, truth = photo
    classifier = RegionClassifier(clip, prompt="single", batch_size=2)  # batches of 2: a partial last batch too
    result = classify_masks(classifier, path, truth, "cat; car; wall")
    expected = classifier.classify(path, truth, "cat; car; wall").probs.numpy()
    assert np.array_equal(result.region_probs.numpy(), expected) and bool(result.keep.all())
    assert result.label_map.shape == truth.shape[1:] and result.mask_ids == [0, 1, 2]
    assert np.array_equal(result.label_map, binary_mask_labels(iter(truth), expected, truth.shape[1:]))
    assert (result.label_map[~truth.any(axis=0)] == -1).all() and (result.label_map[truth.any(axis=0)] >= 0).all()


# --- the command: outputs, and the judged round trip ----------------------------------------------


def test_segment_then_classify_labels_each_region_whole_and_keeps_its_pixels(clip_dir, coco_val, tmp_path):
    """A `zsseg segment` JSON read back as masks: each of its regions gets one label over all its
    pixels, and STEM_masks.json gives each region's pixels back exactly."""
    image = coco_val[0][0]
    vocabulary = ["--vocabulary", "ade20k-150", "--prompt", "single", "--clip", str(clip_dir)]
    segmented = run(["segment", str(image), *vocabulary, "--max-size", "160", "--out", str(tmp_path / "A")])
    assert segmented.returncode == 0, segmented.stderr
    a = json.loads((tmp_path / "A" / f"{image.stem}.json").read_text())
    assert len(a["classes"]) >= 2, a["classes"]  # with the tiny CLIP this image has 2 regions: a test with 1 would prove less
    classified = run(["classify", str(image), "--masks", str(tmp_path / "A" / f"{image.stem}.json"), *vocabulary,
                      "--out", str(tmp_path / "B")])
    assert classified.returncode == 0, classified.stderr
    assert f"{len(a['classes'])} masks (zsseg) from" in classified.stderr.splitlines()[-1]
    b_labels = np.array(Image.open(tmp_path / "B" / f"{image.stem}.png")).astype(np.int64)
    b_masks = json.loads((tmp_path / "B" / f"{image.stem}_masks.json").read_text())
    assert b_masks["software"] == SOFTWARE and b_masks["vocabulary"] == a["vocabulary"]
    assert [m["id"] for m in b_masks["masks"]] == [region["name"] for region in a["classes"]]
    covered = np.zeros(b_labels.shape, dtype=bool)
    for region, mask in zip(a["classes"], b_masks["masks"]):
        pixels = _decoded(region["rle"])
        assert np.array_equal(_decoded(mask["rle"]), pixels) and mask["area"] == region["area"]
        assert np.unique(b_labels[pixels]).tolist() == [mask["label_index"]]  # one label over the whole region
        assert len(mask["probs"]) == 150 and abs(sum(mask["probs"]) - 1) < 1e-4
        assert mask["label_index"] == int(np.argmax(mask["probs"])) and mask["label"] == a["vocabulary"][mask["label_index"]]
        covered |= pixels
    assert (b_labels[~covered] == 255).all()  # uncovered pixels stay unlabelled
    b = json.loads((tmp_path / "B" / f"{image.stem}.json").read_text())
    assert b["config"]["masks"]["format"] == "zsseg" and b["config"]["method"] == "two-stage"  # Eq. 1 on the given masks
    assert b["unlabeled_area"] == int((~covered).sum())


def _classify(clip_dir, image, masks, out, *extra, classes="cat; dog"):
    return main(["classify", str(image), "--masks", str(masks), "--classes", classes, "--clip", str(clip_dir),
                 "--prompt", "single", "--out", str(out), *map(str, extra)])


def test_overlapping_npz_masks_written_with_probabilities(clip_dir, photo, tmp_path, capsys):
    path, truth = photo
    np.savez(tmp_path / "m.npz", masks=truth, ids=np.array([10, 20, 30]))
    assert _classify(clip_dir, path, tmp_path / "m.npz", tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 masks (npz) from" in err and "outputs in" in err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{path.stem}{s}" for s in (".png", "_overlay.png", ".json", "_masks.json"))
    record_ = json.loads((tmp_path / "out" / f"{path.stem}_masks.json").read_text())
    assert [m["id"] for m in record_["masks"]] == [10, 20, 30]
    for k, mask in enumerate(record_["masks"]):
        assert np.array_equal(_decoded(mask["rle"]), truth[k]) and mask["area"] == int(truth[k].sum())
        assert mask["label"] in ("cat", "dog") and len(mask["probs"]) == 2


# --- bad mask input: one line, status 2, nothing written ------------------------------------------


def _npy(array):
    return lambda folder: np.save(folder / "m.npy", array) or folder / "m.npy"


def _file(name, content):
    def make(folder):
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return path
    return make


def _png_folder(*arrays):
    def make(folder):
        (folder / "pngs").mkdir()
        for k, array in enumerate(arrays):
            Image.fromarray(array).save(folder / "pngs" / f"{k}.png")
        return folder / "pngs"
    return make


H, W = 426, 640
_ONE = np.zeros((1, H, W), dtype=bool)
_ONE[0, :5, :5] = True
_COCO_TWO = json.dumps({"images": [{"id": 1}, {"id": 2}], "annotations": [
    {"id": 1, "image_id": 1, "segmentation": [[0, 0, 9, 0, 9, 9]]}, {"id": 2, "image_id": 2, "segmentation": [[0, 0, 9, 0, 9, 9]]}]})


@pytest.mark.parametrize("make, extra, message", [
    (_npy(np.ones((2, 10, 8), dtype=bool)), (), "the masks are 8x10 but the image is 640x426"),
    (_npy(np.concatenate([_ONE, np.zeros_like(_ONE)])), (), "mask 1 is empty"),
    (_npy(np.repeat(_ONE, 5, axis=0)), ("--max-masks", "3"), "holds 5 masks, more than the limit of 3"),
    (_npy(_ONE[0]), (), "got shape (426, 640) (one mask: give it a first axis"),
    (_npy(_ONE * np.float32(0.5)), (), "mask 0 is not binary"),
    (_npy(np.array([{"a": 1}], dtype=object)), (), "pickled"),
    (_file("m.json", "{\"annotations\": [1,"), (), "invalid JSON (Expecting value at line 1"),
    (_file("m.json", json.dumps({"foo": 1})), (), "not a mask file zsseg knows"),
    (_file("m.txt", "0 1 0"), (), "unknown mask format '.txt'"),
    (_file("m.json", _COCO_TWO), (), "holds annotations of 2 images; choose one with --image-id (ids: 1, 2)"),
    (_file("m.json", _COCO_TWO), ("--image-id", "9"), "no annotations for image id 9 (no image of the file has that id)"),
    (_file("m.json", json.dumps([{"segmentation": {"size": [H, W], "counts": "!!!garbage"}}])), (), "mask 0: invalid RLE"),
    (_file("m.json", json.dumps({"images": [{"id": 3, "height": 10, "width": 10}], "annotations": [
        {"id": 1, "image_id": 3, "segmentation": [[0, 0, 9, 0, 9, 9]]}]})), (), "image 3 is 10x10 in the file"),
    (_file("m.npz", pickle.dumps([1, 2])), (), "m.npz: holds Python objects (pickled), which zsseg does not load"),
    (_file("m.npy", b"random bytes, not an array"), (), "m.npy: not a NumPy .npy file"),
    (_file("m.npz", b"PK\x03\x04 a broken zip"), (), "cannot read it as a NumPy .npz file"),
    (_png_folder(np.full((H, W), 128, dtype=np.uint8)), (), "0.png: not a binary mask: it holds the values 128"),
    (_png_folder(np.zeros((H, W, 4), dtype=np.uint8)), (), "0.png: a mask PNG must be greyscale"),
    (_npy(np.repeat(_ONE, 2, axis=0)), ("--image-id", "1"), "an image id (--image-id) chooses the annotations of a COCO file"),
    (lambda folder: folder / "missing.json", (), "missing.json: no such file or folder"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_masks_are_one_line_status_2_and_nothing_written(clip_dir, photo, tmp_path, capsys, make, extra, message):
    image, _ = photo
    masks = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _classify(clip_dir, image, masks, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("zsseg: error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even --out


# --- outputs: segment's safety rules --------------------------------------------------------------


def test_a_file_zsseg_did_not_write_is_kept_unless_overwrite(clip_dir, photo, tmp_path, capsys):
    image, truth = photo
    np.save(tmp_path / "m.npy", truth)
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / f"{image.stem}_masks.json"
    theirs.write_text("{\"mine\": true}")
    assert _classify(clip_dir, image, tmp_path / "m.npy", out) == 2
    assert "was not written by zsseg, so it is left untouched" in capsys.readouterr().err
    assert theirs.read_text() == "{\"mine\": true}" and sorted(p.name for p in out.iterdir()) == [theirs.name]
    assert _classify(clip_dir, image, tmp_path / "m.npy", out, "--overwrite") == 0
    assert json.loads(theirs.read_text())["software"] == SOFTWARE
    assert _classify(clip_dir, image, tmp_path / "m.npy", out) == 0  # zsseg's own outputs are replaced


def test_inputs_are_never_outputs_even_with_overwrite(clip_dir, photo, tmp_path, capsys):
    image, truth = photo
    folder = tmp_path / "work"
    folder.mkdir()
    copy = folder / f"{image.stem}.png"  # the image as a PNG: its label map would replace it
    Image.open(image).save(copy)
    np.save(folder / "m.npy", truth)
    before = copy.read_bytes()
    assert _classify(clip_dir, copy, folder / "m.npy", folder, "--overwrite") == 2
    assert "is one of the inputs" in capsys.readouterr().err and copy.read_bytes() == before
    masks = folder / f"{image.stem}.json"  # a zsseg JSON as the masks, and its own folder as --out
    masks.write_text(json.dumps(record(np.where(truth[0], 0, -1), ["cat"], str(image))))
    assert _classify(clip_dir, image, masks, folder, "--overwrite") == 2
    assert f"{masks} is one of the inputs" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == sorted([copy.name, "m.npy", masks.name])


def test_a_failed_write_leaves_nothing(clip_dir, photo, tmp_path, capsys, monkeypatch):
    from zsseg.outputs import writers

    image, truth = photo
    np.save(tmp_path / "m.npy", truth)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers, "overlay_image", full_disk)  # the second of the four files fails
    assert _classify(clip_dir, image, tmp_path / "m.npy", tmp_path / "out") == 2
    assert "cannot write outputs to" in capsys.readouterr().err and not (tmp_path / "out").exists()
