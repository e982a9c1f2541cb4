"""Proposal generators on real benchmark images: format, caps, duplicates, and quality."""

import numpy as np
import pytest
import torch
from PIL import Image

from zsseg import GENERATORS, ZssegError, build_proposal_generator
from zsseg.data.images import read_image
from zsseg.proposals import ContourHierarchy, GroundTruthProposals, SelectiveSearch, select_masks
from zsseg.proposals.contour_hierarchy import oriented_gradient

from conftest import DATA


def best_overlap(masks: torch.Tensor, gt: np.ndarray, ignore: int) -> float:
    """Mean over ground-truth segments (>= 1% of the image) of the best IoU with any mask."""
    m = masks.numpy() > 0.5
    best = []
    for value in np.unique(gt):
        segment = gt == value
        if value == ignore or segment.mean() < 0.01:
            continue
        inter = (m & segment).reshape(len(m), -1).sum(1)
        union = (m | segment).reshape(len(m), -1).sum(1)
        best.append((inter / union).max())
    return float(np.mean(best))


def grid_masks(h: int, w: int, n: int = 10) -> torch.Tensor:
    masks = torch.zeros(n * n, h, w)
    for i in range(n):
        for j in range(n):
            masks[i * n + j, i * h // n : (i + 1) * h // n, j * w // n : (j + 1) * w // n] = 1
    return masks


REAL = [
    ("coco/val2017/000000010363.jpg", "coco/stuffthingmaps_detectron2/val2017/000000010363.png", 255),
    ("ADEChallengeData2016/images/validation/ADE_val_00000125.jpg", "ADEChallengeData2016/annotations/validation/ADE_val_00000125.png", 0),
]


@pytest.mark.parametrize("generator", [SelectiveSearch(max_proposals=60), ContourHierarchy(max_proposals=60)], ids=lambda g: g.name)
@pytest.mark.parametrize("image_path,label_path,ignore", REAL, ids=["coco", "ade20k"])
def test_generator_on_real_images(generator, image_path, label_path, ignore):
    image = read_image(DATA / image_path)
    gt = np.array(Image.open(DATA / label_path))
    masks = generator.generate(image)
    assert masks.dtype == torch.float32 and masks.shape[1:] == image.shape[:2]
    assert 10 <= len(masks) <= 60
    assert masks.min() >= 0 and masks.max() <= 1
    binary = masks.numpy() > 0.5
    assert binary.reshape(len(binary), -1).any(1).all()  # no empty masks
    # No near-duplicates: every pair overlaps below the duplicate threshold.
    flat = binary.reshape(len(binary), -1).astype(np.float32)
    inter = flat @ flat.T
    iou = inter / (flat.sum(1)[:, None] + flat.sum(1)[None] - inter)
    np.fill_diagonal(iou, 0)
    assert iou.max() < generator.duplicate_iou + 0.01
    # Quality: the masks find the real segments far better than a 10x10 grid does.
    quality = best_overlap(masks, gt, ignore)
    baseline = best_overlap(grid_masks(*image.shape[:2]), gt, ignore)
    assert quality > 0.3 and quality > 1.5 * baseline, (quality, baseline)


def test_selective_search_is_deterministic_for_a_seed():
    image = read_image(DATA / REAL[0][0])[::2, ::2].copy()
    a = SelectiveSearch(max_proposals=20, seed=3).generate(image)
    b = SelectiveSearch(max_proposals=20, seed=3).generate(image)
    assert torch.equal(a, b)


@pytest.mark.parametrize("image_path", [r[0] for r in REAL], ids=["coco", "ade20k"])
def test_selective_search_grouping_is_the_pairwise_definition_to_the_bit(image_path):
    """The grouping computes similarities for many pairs at once; the merges and their levels
    are those of the one-pair-at-a-time definition, exactly."""
    from definitions import selective_search_merges
    from zsseg.proposals.base import working_image
    from zsseg.proposals.hierarchy import relabel
    from zsseg.proposals.selective_search import Superpixels, felzenszwalb, hierarchical_grouping, texture_responses, to_colour_space

    image = working_image(read_image(DATA / image_path), 256)
    for space, scale in (("hsv", 50), ("lab", 100)):
        converted = to_colour_space(image, space)
        labels = relabel(felzenszwalb(converted, scale=scale, sigma=0.8, min_size=scale, channel_axis=-1))
        regions = Superpixels.build(labels, converted, texture_responses(converted))
        for use in ("CTSF", "TSF", "C", "F"):
            tree = hierarchical_grouping(regions, use)
            merges, levels = selective_search_merges(regions, use)
            assert len(merges) == labels.max() and np.array_equal(tree.merges, merges)
            assert np.array_equal(tree.levels, -levels)  # the tree keeps dissimilarities


def test_contour_hierarchy_partitions_cover_the_image():
    image = read_image(DATA / REAL[0][0])
    generator = ContourHierarchy(region_counts=(4, 16))
    tree = generator.hierarchy(image)
    for count in (4, 16):
        masks = tree.masks(tree.partition(count))
        assert len(masks) == count
        assert (masks.sum(0) == 1).all()  # a partition: each pixel in exactly one region
    assert np.all(np.diff(tree.levels) >= 0)  # ultrametric: merge levels never decrease


def test_oriented_gradient_finds_edge_orientation_and_position():
    index = np.zeros((40, 60), np.int64)
    index[:, 30:] = 1  # a vertical edge between columns 29 and 30
    g = oriented_gradient(index, bins=2, radius=5)
    assert g[:, 20].max(axis=1).argmax() == 4  # theta = pi/2 is the vertical line
    assert g[4, 20].argmax() in (29, 30)
    assert g[0, 20].max() < 1e-6  # a horizontal split sees no difference


def test_ground_truth_proposals_match_the_segments(coco_val):
    image_path, label_path = coco_val[0]
    image, gt = read_image(image_path), np.array(Image.open(label_path))
    masks = GroundTruthProposals().segments(gt)
    values = [v for v in np.unique(gt) if v != 255]
    assert len(masks) == len(values)
    for mask, value in zip(masks, values):
        assert torch.equal(mask.bool(), torch.from_numpy(gt == value))
    connected = GroundTruthProposals(connected=True).segments(gt)
    assert len(connected) >= len(masks)
    with pytest.raises(ZssegError, match="made from an image's label map, not the image"):
        GroundTruthProposals().generate(image)


def test_select_masks_drops_empty_and_duplicates_and_caps():
    masks = np.zeros((5, 10, 10), bool)
    masks[0, :5] = True
    masks[1, :5] = True  # duplicate of 0
    masks[2, 5:] = True
    masks[4, :, :3] = True  # masks[3] is empty
    kept = select_masks(masks, max_keep=10, duplicate_iou=0.95)
    assert len(kept) == 3 and (kept[0] == masks[0]).all() and (kept[2] == masks[4]).all()
    assert len(select_masks(masks, max_keep=2, duplicate_iou=0.95)) == 2


def test_select_masks_equals_comparing_with_every_kept_mask():
    """Only kept masks of a close size are compared (a size ratio below the IoU rules a
    duplicate out); the decisions must be those of comparing with every kept mask, including
    near-duplicates whose size ratio is right at the threshold."""
    def every_kept(masks, max_keep, iou):
        kept = []
        for i, mask in enumerate(masks):
            if mask.any() and not any((mask & masks[k]).sum() >= iou * max((mask | masks[k]).sum(), 1e-9) for k in kept):
                kept.append(i)
                if len(kept) == max_keep:
                    break
        return kept

    rng = np.random.default_rng(1)
    for trial in range(30):
        blocks = []
        for _ in range(40):  # rectangles, many grown or shrunk by a row from another
            mask = np.zeros((20, 20), bool)
            y, x, h, w = rng.integers(0, 10, 4)
            mask[y:y + h + 1 + rng.integers(0, 10), x:x + w + 1] = True
            blocks.append(mask)
            if rng.random() < 0.5:
                grown = mask.copy()
                grown[min(19, y + h + 1)] |= mask[y]
                blocks.append(grown)
        masks = np.stack(blocks)
        for iou in (0.9, 0.95, 0.5):
            assert select_masks(masks, 30, iou, return_indices=True).tolist() == every_kept(masks, 30, iou), (trial, iou)


def test_registry():
    assert set(GENERATORS) == {"selective-search", "contour-hierarchy", "ground-truth", "maskformer", "sam", "mask2former"}
    assert {name for name, cls in GENERATORS.items() if cls.pretrained} == {"sam", "mask2former"}
    assert build_proposal_generator("selective-search", max_proposals=7).max_proposals == 7
    with pytest.raises(ZssegError, match="unknown proposal generator 'segment-everything'"):
        build_proposal_generator("segment-everything")
    with pytest.raises(ZssegError, match="at least 1"):
        SelectiveSearch(max_proposals=0)


def test_selecting_in_chunks_equals_one_pass():
    """Selective Search feeds candidates in chunks with `previous=`: the result must not change."""
    rng = np.random.default_rng(0)
    base = rng.random((60, 24, 32)) > 0.5
    masks = np.concatenate([base, base[:20], np.zeros((5, 24, 32), bool), base[10:30]])
    masks = masks[rng.permutation(len(masks))]
    whole = select_masks(masks, 50, 0.9)
    kept = masks[:0]
    for start in range(0, len(masks), 16):
        kept = np.concatenate([kept, select_masks(masks[start : start + 16], 50 - len(kept), 0.9, previous=kept)])
    assert len(whole) == 50 and np.array_equal(kept, whole)
