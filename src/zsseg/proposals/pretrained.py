"""What the generators that load a pretrained hub model (SAM, Mask2Former, ...) share: loading
through `zsseg.models.hub`, like CLIP, the preprocessing constants, and sampling low-resolution logits
at an image's pixels.

    class SamProposals(PretrainedProposals):
        kind, classes = SAM_KIND, {"sam": "SamModel", ...}
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from ..models.loading import usable_device
from ..models.hub import ModelKind, check_model_type, check_weights_fit, load_pretrained, mean_std, optional_json
from ..catalogue import DEFAULT_DUPLICATE_IOU, DEFAULT_MAX_PROPOSALS
from .base import ProposalConfig, ProposalGenerator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_model(name_or_path: str, kind: ModelKind, classes: dict[str, str], device: str | torch.device) -> tuple[torch.nn.Module, str, dict, bool]:
    """A transformers model of `kind` from a hub id or folder, in eval mode on `device`.

    Args:
        classes: transformers class name for each accepted config `model_type`.
    Returns:
        (model, the source it was loaded from, its preprocessor_config.json or {}, whether it
        came from a folder or the local cache, where its other files are then to be read).
    """
    import transformers
    from transformers import AutoConfig

    device = usable_device(device)

    def load(source: str, local_only: bool):
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        check_model_type(config.model_type, str(name_or_path), kind)
        model_class = getattr(transformers, classes[config.model_type])
        if Path(source).is_dir():
            check_weights_fit(Path(source), lambda: model_class(config), kind.label)
        return model_class.from_pretrained(
            source, config=config, local_files_only=local_only, weights_only=True, output_loading_info=True
        )

    model, source, local_only = load_pretrained(name_or_path, kind, load)
    return model.to(device).eval(), source, optional_json(source, "preprocessor_config.json", local_only), local_only


class PretrainedProposals(ProposalGenerator):
    """A generator around a pretrained transformers model, named "NAME:MODEL" on the command line.

    Subclasses set `kind` (the checkpoint family, for messages and folder checks) and `classes`
    (the transformers class for each accepted `model_type`). After `__init__`: `model` (eval
    mode, on `device`), `source` (where it was loaded from), `preprocessing` (its
    preprocessor_config.json, or {}), `local_only` (whether its other files are to be read from
    the folder or the local cache), and `mean`, `std` for pixels in [0, 255].
    """

    kind: ModelKind
    classes: dict[str, str]

    def __init__(self, model: str, max_proposals: int = DEFAULT_MAX_PROPOSALS, duplicate_iou: float = DEFAULT_DUPLICATE_IOU,
                 device: str = "cpu"):
        super().__init__(max_proposals=max_proposals, duplicate_iou=duplicate_iou)
        self.model_name = str(model)  # as given: a hub id or folder (`config`'s model)
        self.model, self.source, self.preprocessing, self.local_only = load_model(model, self.kind, self.classes, device)
        self.mean, self.std = normalisation(self.preprocessing)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self) -> ProposalConfig:
        names = [field.name for field in dataclasses.fields(self.Config) if field.name != "model"]
        return self.Config(model=self.model_name, **{name: getattr(self, name) for name in names})

    @classmethod
    def from_config(cls, config: ProposalConfig, device: str = "cpu", **context) -> "PretrainedProposals":
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(config)}, device=device)


def normalisation(preprocessing: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std `[3, 1, 1]` for pixels in [0, 255], from a preprocessor config (ImageNet's
    if it gives none)."""
    mean, std = mean_std(preprocessing, "image_mean", "image_std", IMAGENET_MEAN, IMAGENET_STD, "preprocessor_config.json")
    return torch.tensor(mean, dtype=torch.float32)[:, None, None] * 255, torch.tensor(std, dtype=torch.float32)[:, None, None] * 255


def resized_pixels(image: np.ndarray, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor, pad_to: tuple[int, int]) -> torch.Tensor:
    """`[1, 3, *pad_to]` float32: the HWC uint8 image resized to `size` (h, w) bilinearly (PIL,
    as the models' own processors), normalised, and zero-padded at the bottom and right."""
    height, width = size
    resized = np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR)) if image.shape[:2] != size else image
    pixels = (torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float() - mean) / std
    return F.pad(pixels, (0, pad_to[1] - width, 0, pad_to[0] - height))[None]


def sample_logits(low: torch.Tensor, padded: tuple[int, int], resized: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """`[M, H, W]` logits at an image's pixels, sampled bilinearly from low-resolution ones at the
    centre of each pixel (one resize; the models' own processors resize to the padded input,
    crop the padding, then resize again).

    Args:
        low: `[M, h, w]` logits that cover the whole padded input, `padded` (h, w) pixels.
        resized: the part of the padded input that is the image (top left).
        size: (H, W), the image's size.
    """
    if len(low) == 0:
        return low.new_zeros(0, *size)
    # The image's extent in low-resolution pixels, and the rows and columns that sampling reads
    # (one more than that extent, where there is one, so that the last pixels interpolate as they
    # would within the whole padded map).
    extent = [used * side / whole for used, side, whole in zip(resized, low.shape[-2:], padded)]
    rows, cols = (min(side, math.ceil(e) + 1) for e, side in zip(extent, low.shape[-2:]))
    crop = low[None, :, :rows, :cols]
    if (rows, cols) == tuple(extent):  # the image covers the whole map: a plain resize
        return F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0]
    scale = [out / e for out, e in zip(size, extent)]
    sampled = F.interpolate(crop, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    return sampled[0, :, : size[0], : size[1]]
