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
