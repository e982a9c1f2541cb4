"""Eq. 2: score(i, q) = sum_k M_k(q) C_k(i) / sum_k M_k(q), arg-max per pixel."""

import torch
from torch.nn import functional as F

from zsseg import UNLABELED, assemble, assemble_labels
from zsseg.assembly import label_map


def test_eq2_by_hand():
    # Two proposals on a 1x3 image: pixel 0 only in mask A, pixel 1 in both (A 1.0, B 0.5),
    # pixel 2 in neither.
    masks = torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, 0.5, 0.0]]])
    probs = torch.tensor([[0.7, 0.3], [0.1, 0.9]])
    scores = assemble(masks, probs)
    assert torch.allclose(scores[:, 0, 0], torch.tensor([0.7, 0.3]))
    # Pixel 1: (1.0 * [0.7, 0.3] + 0.5 * [0.1, 0.9]) / 1.5 = [0.75, 0.75] / 1.5
    assert torch.allclose(scores[:, 0, 1], torch.tensor([0.5, 0.5]))
    assert torch.equal(scores[:, 0, 2], torch.zeros(2))
    labels = label_map(scores, masks)
    assert labels[0, 0] == 0 and labels[0, 2] == UNLABELED


def test_scores_sum_to_one_where_covered():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(5, 8, 9, generator=g) > 0.6).float()
    probs = torch.rand(5, 4, generator=g).softmax(1)
    scores = assemble(masks, probs)
    covered = masks.sum(0) > 0
    assert torch.allclose(scores.sum(0)[covered], torch.ones(int(covered.sum())), atol=1e-5)


def test_full_size_labels_equal_eq2_on_upsampled_masks():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(6, 13, 17, generator=g) * (torch.rand(6, 13, 17, generator=g) > 0.5)
    masks[:, :2, :3] = 0  # an uncovered corner
    probs = torch.rand(6, 11, generator=g).softmax(1)
    for size in [(13, 17), (40, 51), (97, 33), (7, 9)]:
        up = F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0]
        expected = label_map(assemble(up, probs), up)
        got = assemble_labels(masks, probs, size=size)
        assert torch.equal(got, expected), size


def test_banded_upsampling_matches_one_shot(monkeypatch):
    import zsseg.assembly as assembly

    monkeypatch.setattr(assembly, "_CHUNK_ELEMENTS", 200)  # forces bands of a few rows
    g = torch.Generator().manual_seed(2)
    masks = torch.rand(4, 10, 12, generator=g)
    probs = torch.rand(4, 5, generator=g).softmax(1)
    up = F.interpolate(masks[None], size=(63, 45), mode="bilinear", align_corners=False)[0]
    assert torch.equal(assemble_labels(masks, probs, size=(63, 45)), label_map(assemble(up, probs), up))


def test_no_masks_leaves_everything_unlabelled():
    labels = assemble_labels(torch.zeros(0, 4, 5), torch.zeros(0, 3), size=(8, 10))
    assert labels.shape == (8, 10) and (labels == UNLABELED).all()


def _full(numerator, coverage, size):
    from definitions import top_by_full_upsampling

    return top_by_full_upsampling(numerator, coverage, size)


def _same(numerator, coverage, size):
    from zsseg.assembly import upsampled_top

    labels, scores = upsampled_top(numerator, coverage, size)
    expected_labels, expected_scores = _full(numerator, coverage, size)
    return torch.equal(labels, expected_labels) and torch.equal(scores, expected_scores)


def test_cheap_upsampling_is_bit_identical_on_adversarial_scores():
    """Labels and winning scores equal full upsampling's to the bit, on scores built to break a
    shortcut: exact ties between classes, margins of one unit in the last place, uncovered
    pixels next to covered ones, one class, single rows and columns, shrinking and growing."""
    g = torch.Generator().manual_seed(3)
    eps = torch.finfo(torch.float32).eps
    cases = 0
    for trial in range(160):
        classes = int(torch.randint(1, 6, (1,), generator=g))
        h, w = (int(v) for v in torch.randint(1, 9, (2,), generator=g))
        kind = trial % 4
        if kind == 0:
            numerator = torch.rand(classes, h, w, generator=g)
        elif kind == 1:  # exact ties everywhere
            numerator = torch.randint(0, 3, (classes, h, w), generator=g).float()
        elif kind == 2:  # classes one unit in the last place apart
            base = torch.rand(1, h, w, generator=g)
            numerator = base + torch.randint(0, 2, (classes, h, w), generator=g).float() * eps * base
        else:  # uncovered patches
            numerator = torch.rand(classes, h, w, generator=g) * (torch.rand(1, h, w, generator=g) > 0.4)
        coverage = numerator.sum(0) if kind != 3 else (numerator.sum(0) > 0).float() * torch.rand(h, w, generator=g)
        sizes = [tuple(int(v) for v in torch.randint(1, 40, (2,), generator=g)), (h * 3, w * 7), (h, w + 1)]
        for size in sizes:
            assert _same(numerator, coverage, size), (trial, kind, classes, (h, w), size)
            cases += 1
    assert cases == 480
    from zsseg.assembly import assemble_top

    for trial in range(40):  # through masks and probabilities, with classes that tie exactly
        k, h, w = (int(v) for v in torch.randint(1, 9, (3,), generator=g))
        masks = (torch.rand(k, h, w, generator=g) > 0.5).float() * torch.rand(k, 1, 1, generator=g)
        probs = torch.rand(k, 3, generator=g).softmax(1)
        probs = probs[:, torch.randint(0, 3, (4,), generator=g)]  # repeated columns: exact ties
        size = tuple(int(v) for v in torch.randint(1, 30, (2,), generator=g))
        expected = _full(torch.einsum("kc,khw->chw", probs, masks), masks.sum(0), size)
        got = assemble_top(masks, probs, size=size)
        # The numerators are summed over masks in chunks here and by einsum there: the same sums
        # in another order on some CPUs' kernels (bit-equal on one machine, an ulp apart on
        # another), so the winning scores agree to rounding and the labels exactly.
        assert torch.equal(got[0], expected[0]) and torch.allclose(got[1], expected[1], rtol=1e-6, atol=1e-7), trial


def test_cheap_upsampling_on_real_proposals_and_the_segmenter_path(coco_val):
    """Selective Search proposals of a real photo with peaked class probabilities, upsampled
    3.7x as for a large photo: identical labels and scores; and `assemble_labels` and
    `dense_labels` (what `Segmenter.segment` calls) agree with the definition."""
    import numpy as np
    from PIL import Image

    from zsseg.assembly import assemble_top, dense_labels
    from zsseg.proposals import build_proposal_generator

    image = np.asarray(Image.open(coco_val[0][0]).convert("RGB"))[::2, ::2]
    masks = (build_proposal_generator("selective-search", max_proposals=60)(image).float() > 0.5).float()
    g = torch.Generator().manual_seed(4)
    cosines = F.normalize(torch.randn(masks.shape[0], 32, generator=g), dim=1) @ F.normalize(torch.randn(150, 32, generator=g), dim=1).T
    probs = (100 * cosines).softmax(dim=1)
    size = (round(masks.shape[1] * 3.7), round(masks.shape[2] * 3.7))
    numerator = torch.einsum("kc,khw->chw", probs, masks)
    expected, expected_scores = _full(numerator, masks.sum(0), size)
    labels, scores = assemble_top(masks, probs, size=size)
    assert torch.equal(labels, expected) and torch.equal(scores, expected_scores)
    assert torch.equal(assemble_labels(masks, probs, size=size), expected)
    assert len(expected.unique()) > 5
    dense = (20 * torch.randn(21, 40, 60, generator=g)).softmax(dim=0)
    assert torch.equal(dense_labels(dense, (333, 500)), _full(dense, torch.ones(40, 60), (333, 500))[0])
