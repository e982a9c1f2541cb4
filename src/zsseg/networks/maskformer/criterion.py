"""MaskFormer's set prediction loss: Hungarian matching of queries to ground-truth segments, then
cross-entropy on classes (the "no object" class weighted 0.1) and sigmoid focal + dice losses on
the masks of the matched queries.

Which pixels the mask losses and matching costs see is a setting of the target
(`semantic_target`, `TrainConfig.loss_pixels`): "all", as the reference code (unseen-class,
void and padding pixels are negatives in every target mask: its criterion's "TODO use valid"),
or "labelled", zsseg's alternative, which leaves those pixels out so that the network is neither
rewarded nor punished for what it does there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


@dataclass
class Target:
    """One image's ground truth for the set loss.

    Attributes:
        classes: `[N]` int64 training-class index of each segment.
        masks: `[N, H, W]` bool, one per class present (semantic segments).
        valid: `[H, W]` bool, pixels that count (not ignored, not padding).
    """

    classes: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor

    def to(self, device: torch.device) -> "Target":
        return Target(*(t.to(device, non_blocking=True) for t in (self.classes, self.masks, self.valid)))

    def pin_memory(self) -> "Target":
        """In page-locked memory (DataLoader's `pin_memory` calls this)."""
        return Target(self.classes.pin_memory(), self.masks.pin_memory(), self.valid.pin_memory())


def focal_cost(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`[Q, N]` mean sigmoid focal loss of each prediction `[Q, P]` against each target `[N, P]`,
    over the pixels with weight 1 (`weights` `[P]` in {0, 1})."""
    prob = logits.sigmoid()
    pos = FOCAL_ALPHA * (1 - prob) ** FOCAL_GAMMA * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = (1 - FOCAL_ALPHA) * prob**FOCAL_GAMMA * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    pos, neg = pos * weights, neg * weights
    count = weights.sum().clamp_min(1)
    return (pos @ targets.T + neg @ (1 - targets).T) / count


def dice_cost(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`[Q, N]` dice loss of each prediction `[Q, P]` against each target `[N, P]` (weighted pixels)."""
    prob = logits.sigmoid() * weights
    numerator = 2 * prob @ targets.T
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def matching_cost(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target: Target,
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
) -> torch.Tensor:
    """`[Q, N]` cost of assigning each query to each of the target's segments: minus the class
    probability (not its log), plus the weighted focal and dice costs of the masks.

    Args:
        class_logits: `[Q, C + 1]` one image's class logits.
        mask_logits: `[Q, h, w]` its mask logits at prediction resolution; the target masks
            are resized to it (nearest) for the cost, as MaskFormer does.
    """
    size = mask_logits.shape[-2:]
    masks = F.interpolate(target.masks[None].float(), size=size, mode="nearest")[0].flatten(1)
    valid = F.interpolate(target.valid[None, None].float(), size=size, mode="nearest").flatten()
    logits = mask_logits.flatten(1).float()
    return (
        -class_weight * class_logits.float().softmax(-1)[:, target.classes]
        + mask_weight * focal_cost(logits, masks, valid)
        + dice_weight * dice_cost(logits, masks, valid)
    )


@torch.no_grad()
def hungarian_match(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target: Target,
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment of queries to the target's segments (scipy) under
    `matching_cost`. Returns (query indices, target indices), each of length min(Q, N)."""
    if len(target.classes) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    cost = matching_cost(class_logits, mask_logits, target, class_weight, mask_weight, dice_weight)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return rows.astype(np.int64), cols.astype(np.int64)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum over masks of the mean sigmoid focal loss over valid pixels; inputs `[M, P]`, valid `[M, P]`."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    loss = alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA * valid
    return (loss.sum(-1) / valid.sum(-1).clamp_min(1)).sum()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum over masks of 1 - dice, over valid pixels; inputs `[M, P]`."""
    prob = logits.sigmoid() * valid
    targets = targets * valid
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum()


def set_loss(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    targets: list[Target],
    num_masks: float,
    no_object_weight: float,
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
) -> dict[str, torch.Tensor]:
    """The loss terms of one decoder layer's predictions for a batch.

    Args:
        class_logits: `[B, Q, C + 1]`; the last class is "no object".
        mask_logits: `[B, Q, h, w]`; upsampled (bilinear) to the targets' size for the loss.
        num_masks: target segments in the whole batch (over all processes), the normaliser.
    Returns:
        {"ce", "focal", "dice"}, unweighted.
    """
    batch, queries, num_logits = class_logits.shape
    no_object = num_logits - 1
    matches = [
        hungarian_match(class_logits[b], mask_logits[b], t, class_weight, mask_weight, dice_weight)
        for b, t in enumerate(targets)
    ]
    target_classes = torch.full((batch, queries), no_object, dtype=torch.long, device=class_logits.device)
    for b, ((rows, cols), t) in enumerate(zip(matches, targets)):
        target_classes[b, torch.from_numpy(rows)] = t.classes[torch.from_numpy(cols)].to(class_logits.device)
    weight = torch.ones(num_logits, device=class_logits.device)
    weight[no_object] = no_object_weight
    ce = F.cross_entropy(class_logits.transpose(1, 2).float(), target_classes, weight=weight)

    predicted, wanted, valid = [], [], []
    for b, ((rows, cols), t) in enumerate(zip(matches, targets)):
        if len(rows):
            predicted.append(mask_logits[b, torch.from_numpy(rows)])
            wanted.append(t.masks[torch.from_numpy(cols)])
            valid.append(t.valid[None].expand(len(rows), -1, -1))
    if not predicted:
        zero = mask_logits.sum() * 0.0  # keeps the graph connected for DDP
        return {"ce": ce, "focal": zero, "dice": zero}
    size = targets[0].valid.shape
    logits = F.interpolate(torch.cat(predicted)[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].flatten(1)
    wanted_t = torch.cat(wanted).flatten(1).float().to(logits.device)
    valid_t = torch.cat(valid).flatten(1).float().to(logits.device)
    return {
        "ce": ce,
        "focal": focal_loss(logits, wanted_t, valid_t) / num_masks,
        "dice": dice_loss(logits, wanted_t, valid_t) / num_masks,
    }
