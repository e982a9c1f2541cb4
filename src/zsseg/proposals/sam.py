"""Proposals from Segment Anything (SAM): automatic mask generation with a pretrained checkpoint.

    generator = SamProposals("facebook/sam-vit-base", max_proposals=100)
    masks = generator.generate(image)   # [K, H, W] binary float32, best predicted IoU first

It follows segment-anything's `SamAutomaticMaskGenerator` (Kirillov et al., ICCV 2023) with one
crop (the whole image), and its defaults:

1. the image, its longer side resized to the encoder's input (1024) and zero-padded to a
   square, is encoded once;
2. a regular grid of `points_per_side`^2 (32 x 32) single-point prompts, in batches of
   `points_per_batch` (64), each giving SAM's 3 masks and their predicted IoU;
3. masks whose predicted IoU is below `pred_iou_thresh` (0.88) are dropped, then those whose
   stability score (the IoU of the mask thresholded at logits +1 and -1,
   `stability_score_offset`) is below `stability_score_thresh` (0.95); masks are the logits
   above 0;
4. non-maximum suppression on the masks' boxes at IoU `box_nms_thresh` (0.7), by predicted IoU;
5. if `min_region_area` > 0 (0 by default, as segment-anything's `min_mask_region_area`),
   holes and islands smaller than it are removed from each mask (8-connectivity, the largest
   island kept), and the boxes are suppressed again, unchanged masks preferred;
6. ordered by predicted IoU, then the cap of every generator: empty masks and near-duplicates
   dropped, at most `max_proposals`.

Where it differs: the 256 x 256 low-resolution logits are sampled once, bilinearly, at the
output size (segment-anything resizes them to 1024, crops the padding, then resizes again);
multi-crop generation (`crop_n_layers` > 0) is not offered. Any SAM, SlimSAM or SAM-HQ
checkpoint that transformers loads works; SAM-HQ gives its HQ masks with SAM's
(`hq_token_only=False`, as its automatic mask generator).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy import ndimage

from ..catalogue import DEFAULT_DUPLICATE_IOU, DEFAULT_MAX_PROPOSALS, DEFAULT_SAM
from ..errors import SettingError
from ..data.images import check_rgb_array
from ..models.hub import ModelKind
from .base import ProposalConfig
from .pretrained import PretrainedProposals, resized_pixels, sample_logits

SAM_KIND = ModelKind("SAM", ("sam", "sam_hq"), "proposals", "sam:{}", "sam-model")
SAM_CLASSES = {"sam": "SamModel", "sam_hq": "SamHQModel"}


@dataclass(frozen=True)
class SamConfig(ProposalConfig):
    """SAM's settings (see `SamProposals`): segment-anything's automatic mask generator's."""

    name: ClassVar[str] = "sam"
    model: str = DEFAULT_SAM
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_region_area: int = 0

    def __post_init__(self):
        super().__post_init__()
        for setting in ("points_per_side", "points_per_batch"):
            if getattr(self, setting) < 1:
                raise SettingError(setting, f"{{setting}} must be at least 1, got {getattr(self, setting)}")
        for setting in ("box_nms_thresh", "stability_score_thresh"):
            if not 0.0 <= getattr(self, setting) <= 1.0:
                raise SettingError(setting, f"{{setting}} must be in [0, 1], got {getattr(self, setting)}")
        for setting in ("min_region_area", "stability_score_offset"):
            if getattr(self, setting) < 0:
                raise SettingError(setting, f"{{setting}} must not be negative, got {getattr(self, setting)}")


class SamProposals(PretrainedProposals):
    """Class-agnostic masks from SAM prompted with a grid of points (see the module docstring).

    Args:
        model: hub id or folder of a transformers SAM, SlimSAM or SAM-HQ checkpoint.
        max_proposals, duplicate_iou: the cap every generator applies.
        device: where SAM runs.
        points_per_side ... min_region_area: segment-anything's automatic mask generator's
            settings, with its defaults.
    """

    name = "sam"
    kind, classes = SAM_KIND, SAM_CLASSES
    Config = SamConfig

    def __init__(
        self,
        model: str = DEFAULT_SAM,
        max_proposals: int = DEFAULT_MAX_PROPOSALS,
        duplicate_iou: float = DEFAULT_DUPLICATE_IOU,
        device: str = "cpu",
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        min_region_area: int = 0,
    ):
        SamConfig(max_proposals, duplicate_iou, str(model), points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                  stability_score_offset, box_nms_thresh, min_region_area)  # checks them before the model loads
        self.points_per_side, self.points_per_batch = points_per_side, points_per_batch
        self.pred_iou_thresh, self.box_nms_thresh = pred_iou_thresh, box_nms_thresh
        self.stability_score_thresh, self.stability_score_offset = stability_score_thresh, stability_score_offset
        self.min_region_area = min_region_area
        super().__init__(model, max_proposals=max_proposals, duplicate_iou=duplicate_iou, device=device)
        self.hq = self.model.config.model_type == "sam_hq"
        self.input_size = int(self.model.config.vision_config.image_size)
        #: Seconds of each stage of the last `generate` (encoder, decoder, suppression).
        self.timings: dict[str, float] = {}

    def point_grid(self, height: int, width: int) -> torch.Tensor:
        """`[N, 2]` (x, y) prompt points in image pixels: cell centres of an n x n grid."""
        n = self.points_per_side
        ticks = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        ys, xs = torch.meshgrid(ticks * height, ticks * width, indexing="ij")
        return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every mask that passes the predicted-IoU and stability filters, before suppression.

        Returns:
            masks `[M, H, W]` bool at the image's size, their predicted IoU `[M]`, and their
            boxes `[M, 4]` (x0, y0, x1, y1, inclusive pixel bounds).
        """
        check_rgb_array(image)
        height, width = image.shape[:2]
        scale = self.input_size / max(height, width)
        resized = (int(height * scale + 0.5), int(width * scale + 0.5))
        start = time.perf_counter()
        pixels = resized_pixels(image, resized, self.mean, self.std, (self.input_size, self.input_size)).to(self.device)
        embedded = self.model.get_image_embeddings(pixels)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings = {"encoder": time.perf_counter() - start}
        start = time.perf_counter()
        extra = {}
        if self.hq:
            embedded, intermediate = embedded
            extra = {"intermediate_embeddings": intermediate, "hq_token_only": False}
        points = self.point_grid(height, width)
        frame = points * torch.tensor([resized[1] / width, resized[0] / height], dtype=torch.float64)  # in the encoder's input
        masks, scores = [], []
        for first in range(0, len(points), self.points_per_batch):
            batch = frame[first : first + self.points_per_batch].float().to(self.device)
            output = self.model(
                image_embeddings=embedded,
                input_points=batch[None, :, None, :],
                input_labels=torch.ones(1, len(batch), 1, dtype=torch.long, device=self.device),
                multimask_output=True,
                **extra,
            )
            low = output.pred_masks[0].flatten(0, 1).float()  # [P * 3, 256, 256] logits
            iou = output.iou_scores[0].flatten().float()
            keep = iou > self.pred_iou_thresh
            logits = sample_logits(low[keep], (self.input_size, self.input_size), resized, (height, width))
            stability = stability_score(logits, self.stability_score_offset)
            stable = stability >= self.stability_score_thresh
            masks.append((logits[stable] > 0).cpu())
            scores.append(iou[keep][stable].cpu())
        masks = torch.cat(masks) if masks else torch.zeros(0, height, width, dtype=torch.bool)
        self.timings["decoder"] = time.perf_counter() - start
        return masks, torch.cat(scores), mask_boxes(masks)

    def generate(self, image: np.ndarray) -> torch.Tensor:
        masks, scores, boxes = self.predict(image)
        start = time.perf_counter()
        keep = box_nms(boxes, scores, self.box_nms_thresh)
        masks, scores = masks[keep], scores[keep]
        if self.min_region_area > 0 and len(masks):
            cleaned = [remove_small_regions(m.numpy(), self.min_region_area) for m in masks]
            masks = torch.from_numpy(np.stack([m for m, _ in cleaned]))
            unchanged = torch.tensor([not changed for _, changed in cleaned], dtype=torch.float32)
            keep = box_nms(mask_boxes(masks), unchanged, self.box_nms_thresh)
            masks, scores = masks[keep], scores[keep]
        order = scores.argsort(descending=True, stable=True)
        kept = self.finalize(masks[order].numpy())
        self.timings["suppression"] = time.perf_counter() - start
        return kept


def stability_score(logits: torch.Tensor, offset: float, threshold: float = 0.0) -> torch.Tensor:
    """`[M]` IoU between each mask thresholded at `threshold + offset` and at `threshold - offset`."""
    inner = torch.count_nonzero((logits > threshold + offset).flatten(1), dim=1)
    outer = torch.count_nonzero((logits > threshold - offset).flatten(1), dim=1)
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.zeros_like(inner, dtype=torch.float32))


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """`[M, 4]` float (x0, y0, x1, y1) inclusive bounds of each bool mask `[M, H, W]`; zeros for
    an empty mask."""
    if len(masks) == 0:
        return torch.zeros(0, 4)
    rows, cols = masks.any(dim=2), masks.any(dim=1)

    def bounds(present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(present.shape[1])
        low = torch.where(present, index, present.shape[1]).min(dim=1).values
        high = torch.where(present, index, -1).max(dim=1).values
        return low, high

    (y0, y1), (x0, x1) = bounds(rows), bounds(cols)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[~rows.any(dim=1)] = 0
    return boxes


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, by descending score (a box is
    dropped when its IoU with a kept, higher-scoring one exceeds `iou_thresh`). Areas are
    (x1 - x0) * (y1 - y0), as torchvision's."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long)
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes[order].double()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    iou = (inter / (area[:, None] + area[None, :] - inter)).nan_to_num(0.0).numpy()
    suppressed = np.zeros(len(boxes), dtype=bool)
    kept = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= iou[i] > iou_thresh
    return order[torch.tensor(kept, dtype=torch.long)]


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def remove_small_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    """A bool mask with holes, then islands, smaller than `min_area` pixels removed (the
    largest island is kept even if small), and whether anything changed."""
    changed = False
    for holes in (True, False):
        working = mask ^ holes  # holes: the background's components; islands: the mask's
        regions, count = ndimage.label(working, structure=_EIGHT_CONNECTED)
        sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
        small = np.flatnonzero(sizes < min_area) + 1
        if len(small) == 0:
            continue
        changed = True
        if holes:
            mask = mask | np.isin(regions, small)
        else:
            large = np.setdiff1d(np.arange(1, count + 1), small)
            mask = np.isin(regions, large if len(large) else [int(np.argmax(sizes)) + 1])
    return mask, changed
