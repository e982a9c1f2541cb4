"""Proposals from pretrained hub models: SAM's automatic mask generation and the query masks of
MaskFormer, Mask2Former and OneFormer. Tiny random checkpoints are saved to folders and loaded
through the public path (`build_proposal_generator("sam:FOLDER")`, `--proposals sam:FOLDER`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import DATA, run, run_here, save_tiny_query_model, save_tiny_sam, recorded
from zsseg.errors import ZssegError
from zsseg.data.images import read_image
from zsseg.proposals import build_proposal_generator, parse_generator, select_masks
from zsseg.proposals.pretrained import sample_logits
from zsseg.proposals.sam import box_nms, mask_boxes, remove_small_regions, stability_score

UNFILTERED = dict(pred_iou_thresh=-float("inf"), stability_score_thresh=0.0, box_nms_thresh=1.0, points_per_side=8)


@pytest.fixture(scope="module")
def images():
    paths = [DATA / "coco" / "val2017" / "000000010363.jpg", next((DATA / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))]
    return [read_image(p) for p in paths]


@pytest.fixture(scope="module")
def small_images(images):
    """The same photos at a quarter of their size, for SAM's generator: 1024 point prompts and
    full-resolution stability scores make a full-size photo cost tens of seconds, and size is not
    what those tests check."""
    from PIL import Image

    return [np.asarray(Image.fromarray(image).reduce(4)) for image in images]


@pytest.fixture(scope="module")
def query_dirs(tmp_path_factory):
    return {kind: save_tiny_query_model(tmp_path_factory.mktemp(kind), kind) for kind in ("mask2former", "maskformer", "oneformer")}


# --- SAM's automatic mask generation, piece by piece -------------------------------------------

def test_point_grid_is_segment_anythings():
    from zsseg.proposals.sam import SamProposals

    generator = SamProposals.__new__(SamProposals)
    generator.points_per_side = 4
    points = generator.point_grid(100, 200).numpy()
    ticks = np.linspace(1 / 8, 1 - 1 / 8, 4)  # segment-anything's build_point_grid
    assert np.allclose(points[:, 0], np.tile(ticks, 4) * 200) and np.allclose(points[:, 1], np.repeat(ticks, 4) * 100)


def test_stability_score_by_hand():
    logits = torch.tensor([[[2.0, 0.5, -0.5, -2.0]], [[-3.0, -3.0, -3.0, -3.0]]])
    assert torch.allclose(stability_score(logits, 1.0), torch.tensor([1 / 3, 0.0]))


def test_mask_boxes_are_inclusive_bounds():
    masks = torch.zeros(2, 6, 7, dtype=torch.bool)
    masks[0, 2:5, 1:4] = True
    assert mask_boxes(masks).tolist() == [[1, 2, 3, 4], [0, 0, 0, 0]]


def test_box_nms_is_greedy():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [9, 0, 19, 10], [30, 30, 40, 40]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 1 overlaps box 0 (IoU 0.82): dropped; box 2 overlaps only box 1, which is gone: kept
    assert box_nms(boxes, scores, 0.7).tolist() == [3, 0, 2]
    assert box_nms(boxes, scores, 1.0).tolist() == [3, 0, 1, 2]


def test_small_holes_and_islands_are_removed():
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:8, 1:8] = True
    mask[4, 4] = False  # a 1-pixel hole
    mask[10, 10:12] = True  # a 2-pixel island
    cleaned, changed = remove_small_regions(mask, 3)
    expected = np.zeros_like(mask)
    expected[1:8, 1:8] = True
    assert changed and np.array_equal(cleaned, expected)
    again, changed_again = remove_small_regions(expected, 3)
    assert not changed_again and np.array_equal(again, expected)
    islands = np.zeros((6, 6), dtype=bool)
    islands[0, 0] = islands[4, 4] = islands[4, 5] = True
    kept, _ = remove_small_regions(islands, 5)  # all small: the largest stays
    assert kept.sum() == 2 and kept[4, 4] and kept[4, 5]


def test_sampled_logits_match_bilinear_resizing():
    low = torch.randn(3, 8, 8)
    assert torch.allclose(sample_logits(low, (8, 8), (8, 8), (8, 8)), low, atol=1e-5)
    up = F.interpolate(low[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(sample_logits(low, (32, 32), (32, 32), (32, 32)), up, atol=1e-5)
    # the image fills the top half of the padded input: the padding is cropped away
    assert torch.allclose(sample_logits(low, (64, 64), (32, 64), (4, 8)), low[:, :4], atol=1e-5)


@pytest.mark.parametrize("padded, resized, size", [
    ((1024, 1024), (682, 1024), (426, 640)),    # a landscape COCO image in SAM's square
    ((1024, 1024), (1024, 683), (1200, 800)),   # portrait, larger than the input
    ((160, 288), (160, 284), (361, 640)),       # a Mask2Former input padded to 32
    ((1024, 1024), (1024, 1024), (500, 500)),
])
def test_sampled_logits_are_bilinear_at_pixel_centres(padded, resized, size):
    """Against an independent formulation: each output pixel's centre mapped into the padded
    input and sampled there with grid_sample (border values beyond the last row and column)."""
    low = torch.randn(3, 256, 256, dtype=torch.float64)

    def axis(out, used, whole):
        return ((torch.arange(out, dtype=torch.float64) + 0.5) * used / out) / whole * 2 - 1

    grid = torch.stack(torch.meshgrid(axis(size[1], resized[1], padded[1]), axis(size[0], resized[0], padded[0]), indexing="xy"), dim=-1)
    expected = F.grid_sample(low[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]
    assert torch.allclose(sample_logits(low, padded, resized, size), expected, atol=1e-9)


# --- SAM end to end -----------------------------------------------------------------------------

def test_sam_masks_are_ranked_by_predicted_iou_and_capped(sam_dir, images):
    generator = build_proposal_generator(f"sam:{sam_dir}", max_proposals=5, **UNFILTERED)
    for image in images:
        masks, scores, _ = generator.predict(image)
        assert masks.dtype == torch.bool and masks.shape == (3 * 64, *image.shape[:2])
        proposals = generator.generate(image)
        assert proposals.dtype == torch.float32 and proposals.shape[1:] == image.shape[:2] and 1 <= len(proposals) <= 5
        assert set(proposals.unique().tolist()) <= {0.0, 1.0}
        order = scores.argsort(descending=True, stable=True)
        expected = select_masks(masks[order].numpy(), 5, 0.95)
        assert np.array_equal(proposals.bool().numpy(), expected)
        assert set(generator.timings) == {"encoder", "decoder", "suppression"} and min(generator.timings.values()) >= 0


def test_sam_filters_suppress_and_default_to_segment_anythings(sam_dir, small_images, tmp_path):
    generator = build_proposal_generator(f"sam:{sam_dir}")
    assert (generator.points_per_side, generator.points_per_batch, generator.pred_iou_thresh, generator.stability_score_thresh,
            generator.box_nms_thresh, generator.min_region_area) == (32, 64, 0.88, 0.95, 0.7, 0)
    image = small_images[0]
    masks, scores, boxes = generator.predict(image)
    assert len(masks) and bool((scores > 0.88).all())
    kept = generator.generate(image)
    kept_boxes = mask_boxes(kept.bool())
    for i in range(len(kept_boxes)):  # no two kept boxes overlap above the NMS threshold
        for j in range(i):
            assert box_nms(kept_boxes[[j, i]], torch.tensor([1.0, 0.5]), 0.7).tolist() == [0]
    # a random SAM is not confident: nothing passes the predicted-IoU filter
    shy = build_proposal_generator(f"sam:{save_tiny_sam(tmp_path / 'shy', confident=False)}")
    assert shy.generate(image).shape == (0, *image.shape[:2])


def test_sam_small_region_removal_runs_and_keeps_masks_clean(sam_dir, small_images):
    generator = build_proposal_generator(f"sam:{sam_dir}", min_region_area=25, **UNFILTERED)
    for mask in generator.generate(small_images[1]).bool().numpy():
        assert not remove_small_regions(mask, 25)[1]


def test_sam_hq_loads_and_generates(tmp_path, small_images):
    generator = build_proposal_generator(f"sam:{save_tiny_sam(tmp_path / 'hq', hq=True)}", max_proposals=4, **UNFILTERED)
    assert generator.hq
    assert 1 <= len(generator.generate(small_images[0])) <= 4


# --- query masks of the MaskFormer family ----------------------------------------------------

@pytest.mark.parametrize("kind", ["mask2former", "maskformer", "oneformer"])
def test_query_masks_are_ranked_by_objectness(query_dirs, images, kind):
    generator = build_proposal_generator(f"mask2former:{query_dirs[kind]}", max_proposals=3)
    for image in images:
        masks, objectness = generator.predict(image)
        assert masks.shape == (12, *image.shape[:2]) and objectness.shape == (12,)
        assert float(masks.min()) >= 0 and float(masks.max()) <= 1
        proposals = generator.generate(image)
        assert 1 <= len(proposals) <= 3 and proposals.shape[1:] == image.shape[:2]
        order = objectness.argsort(descending=True, stable=True)
        kept = select_masks((masks[order] >= 0.5).numpy(), 3, 0.95, return_indices=True)
        assert torch.equal(proposals, masks[order][torch.from_numpy(kept)])


def test_query_masks_see_the_processor_size(query_dirs, images):
    generator = build_proposal_generator(f"mask2former:{query_dirs['mask2former']}")
    seen = []
    hook = generator.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["pixel_values"].shape), with_kwargs=True)
    try:
        generator.predict(images[0])  # 361 x 640: shorter side to 160, longer 284 -> padded to 160 x 288
    finally:
        hook.remove()
    assert seen == [(1, 3, 160, 288)]


# --- loading and bad input ---------------------------------------------------------------------

def test_a_folder_that_is_not_sam_is_one_line(clip_dir, sam_dir, tmp_path):
    with pytest.raises(ZssegError, match="holds a 'clip' model, not SAM"):
        build_proposal_generator(f"sam:{clip_dir}")
    with pytest.raises(ZssegError, match="holds a 'sam' model, not MaskFormer"):
        build_proposal_generator(f"mask2former:{sam_dir}")
    with pytest.raises(ZssegError, match="SAM folder not found"):
        build_proposal_generator(f"sam:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZssegError, match="no config.json"):
        build_proposal_generator(f"sam:{tmp_path / 'empty'}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((sam_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ZssegError, match="cannot load SAM from"):
        build_proposal_generator(f"sam:{broken}")


def test_offline_hub_ids_say_how_to_download(monkeypatch):
    from zsseg.models import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    # from Python, the setting to pass the folder by; `zsseg` names its flag (--proposals sam:sam-model)
    with pytest.raises(ZssegError, match=r"hf download facebook/sam-vit-base --local-dir sam-model.*\(proposals sam:sam-model\)"):
        build_proposal_generator("sam")
    with pytest.raises(ZssegError, match=r"\(proposals mask2former:mask2former-model\)"):
        build_proposal_generator("mask2former:facebook/mask2former-swin-tiny-coco-panoptic")


@pytest.mark.parametrize("spec, message", [
    ("mask2former", "need a pretrained model"),
    ("sam:", "names no model after the colon"),
    ("selective-search:foo", "load no pretrained model"),
    ("segment-everything", "unknown proposal generator"),
])
def test_bad_generator_names(spec, message):
    with pytest.raises(ZssegError, match=message):
        build_proposal_generator(spec)


def test_parse_generator():
    assert parse_generator("sam") == ("sam", None)
    assert parse_generator("sam:/models/sam-hq") == ("sam", "/models/sam-hq")
    assert parse_generator("mask2former:facebook/mask2former-swin-large-coco-panoptic") == (
        "mask2former", "facebook/mask2former-swin-large-coco-panoptic")


# --- the command line --------------------------------------------------------------------------

def test_cli_segments_with_sam_proposals(clip_dir, sam_dir, tmp_path):
    out = tmp_path / "out"
    image = DATA / "coco" / "val2017" / "000000010363.jpg"
    proc = run(["segment", str(image), "--classes", "cat; car; wall", "--proposals", f"sam:{sam_dir}", "--clip", str(clip_dir),
                "--max-size", "256", "--out", str(out)])  # small: see test_cli_oracle_scores_sam_proposals
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "000000010363.json").read_text())
    assert record["classes"], "a confident SAM labels the image"
    assert (out / "000000010363_overlay.png").is_file()


def test_cli_oracle_scores_sam_proposals(sam_dir, tmp_path):
    out = tmp_path / "scores.json"
    # At a small test size: 1024 point prompts on a full-size photo cost tens of seconds here.
    proc = run(["eval", "--dataset", "coco-stuff", "--data-root", str(DATA), "--oracle", "--proposals", f"sam:{sam_dir}",
                "--limit", "2", "--test-size", "128", "--max-size", "256", "--output", str(out), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    settings = recorded(report)
    assert report["num_images"] == 2 and settings["proposals"] == "sam" and report["config"]["proposals"]["model"] == str(sam_dir)
    assert 0 < report["mIoU"] <= 100


@pytest.mark.parametrize("args, message, fresh_process", [
    (["--proposals", "sam", "--proposal-weights", "x"], "--proposal-weights is for maskformer proposals, not sam", False),
    (["--proposals", "sam:"], "names no model after the colon", False),
    (["--proposals", "mask2former"], "need a pretrained model", False),
    # The empty hub cache: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported.
    (["--proposals", "sam"], "hf download facebook/sam-vit-base", True),
])
def test_cli_bad_sam_options_are_one_line(clip_dir, tmp_path, capsys, args, message, fresh_process):
    image = DATA / "coco" / "val2017" / "000000010363.jpg"
    command = ["segment", str(image), "--classes", "cat; wall", "--clip", str(clip_dir), "--out", str(tmp_path / "out"), *args]
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = run(command, env=env) if fresh_process else run_here(capsys, command, env=env)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()
