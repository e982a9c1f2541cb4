import numpy as np
import pytest
import torch
from PIL import Image

from zsseg import Segmenter, ZssegError
from zsseg.data.images import read_image


@pytest.fixture(scope="module")
def segmenter(clip):
    return Segmenter(clip=clip, proposals="contour-hierarchy", max_size=256, max_proposals=40)


def test_segment_accepts_path_pil_and_array(segmenter, coco_val):
    path = coco_val[0][0]
    array = read_image(path)
    results = [segmenter.segment(x, "person; dog; grass, lawn; sky") for x in (path, Image.open(path), array)]
    for result in results:
        assert result.label_map.shape == array.shape[:2] and result.label_map.dtype == np.int32
        assert result.class_names == ["person", "dog", "grass, lawn", "sky"]
        assert result.label_map.min() >= -1 and result.label_map.max() < 4
        c, h, w = result.scores.shape
        assert c == 4 and max(h, w) == 256
        assert result.region_probs.shape == (len(result.masks), 4)
        assert set(result.timings) >= {"proposals", "crops", "image_encoding", "assembly"}
    assert np.array_equal(results[0].label_map, results[2].label_map)


def test_label_map_is_eq2_argmax_at_processing_size(segmenter, coco_val):
    result = segmenter.segment(coco_val[1][0], "voc-20")
    # Re-derive the processing-size labels from the returned scores and compare after
    # nearest downsampling of the full-size label map: they agree almost everywhere.
    small = result.scores.argmax(0)
    small[result.masks.sum(0) == 0] = -1
    full = torch.from_numpy(result.label_map.astype(np.int64))[None, None].float()
    down = torch.nn.functional.interpolate(full, size=small.shape, mode="nearest")[0, 0].long()
    assert (down == small).float().mean() > 0.95


def test_large_image_is_processed_at_bounded_size(segmenter):
    image = np.random.default_rng(0).integers(0, 255, (900, 1300, 3), dtype=np.uint8)
    result = segmenter.segment(image, "a; b")
    assert result.label_map.shape == (900, 1300) and max(result.scores.shape[1:]) == 256


def test_ground_truth_proposals_need_the_label_map(clip, coco_val):
    segmenter = Segmenter(clip=clip, proposals="ground-truth")
    with pytest.raises(ZssegError, match="made from an image's label map, not the image"):
        segmenter.segment(coco_val[0][0], "a; b")


def test_ground_truth_proposals_are_classified_whole(clip, coco_val):
    from PIL import Image

    image_path, label_path = coco_val[0]
    label = np.array(Image.open(label_path))
    segmenter = Segmenter(clip=clip, proposals="ground-truth")
    prepared = segmenter.prepare_image(image_path, masks=segmenter.proposals.segments(label))
    result = segmenter.finish(prepared, "person; grass; sky; wall")
    assert result.label_map.shape == label.shape
    for value in np.unique(label):
        predicted = np.unique(result.label_map[label == value])
        if value == 255:
            assert set(predicted) == {-1}  # ignore pixels are no segment: no proposal covers them
        else:
            assert len(predicted) == 1 and predicted[0] >= 0  # one segment, one class
