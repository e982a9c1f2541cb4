"""OpenAI's ResNet CLIPs (RN50, RN101, RN50x4, RN50x16, RN50x64) as a zsseg `ClipModel`.

transformers has no CLIP ResNet, so the image tower is zsseg's own `ModifiedResNet`
(`zsseg.models.modified_resnet`, OpenAI's architecture and parameter names); the text tower, the same
transformer as in every OpenAI CLIP, is converted to transformers' `CLIPTextModelWithProjection`
(`zsseg.models.openai_clip`), so tokenisation, EOS pooling and learned prompts are those of the ViTs.

    clip = load_clip("RN50.safetensors")                # or an open_clip folder such as
    clip = load_clip("resnet50_clip.openai")            # `hf download timm/resnet50_clip.openai`

Dense features follow MaskCLIP (Zhou et al., "Extract Free Dense Labels from CLIP", ECCV 2022):
the attention pool's value and output projections applied to every position of the last
feature map, one cell per 32 pixels. SCLIP's mode rewrites a ViT's last attention layer and has
no counterpart here: it is refused in one line.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from .base import CLIP_MEAN, CLIP_STD, DTYPES, ClipModel, ClipTextTower
from ..errors import ZssegError
from .modified_resnet import STRIDE, ModifiedResNet, modified_resnet_from_state


class OpenAIResNetClip(nn.Module):
    """The weights of a ResNet CLIP: `visual` (OpenAI's names), `text_model` and
    `text_projection` (transformers' names), and the learned `logit_scale`."""

    def __init__(self, visual: ModifiedResNet, text_model: nn.Module, text_projection: nn.Linear, logit_scale: torch.Tensor):
        super().__init__()
        self.visual = visual
        self.text_model = text_model
        self.text_projection = text_projection
        self.logit_scale = nn.Parameter(logit_scale.detach().clone().float().reshape(()), requires_grad=False)


class ResNetClip(ClipTextTower, ClipModel):
    """A ResNet CLIP: crops through `ModifiedResNet`, text through CLIP's text tower."""

    family: ClassVar[str] = "openai-resnet"
    dense_modes: ClassVar[tuple[str, ...]] = ("plain",)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings `[N, D]` float32 from normalised pixels `[N, 3, H, W]`;
        other sizes than `image_size` resize the attention pool's position embedding bicubically."""
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        return F.normalize(self.model.visual(pixels).float(), dim=-1)

    def image_tower(self) -> nn.Module:
        return self.model.visual

    @property
    def dense_stride(self) -> int:
        return STRIDE

    @torch.no_grad()
    def dense_features(self, pixels: torch.Tensor, mode: str = "plain") -> torch.Tensor:
        """MaskCLIP's dense embeddings: the attention pool's value and output projections at every
        position of the last feature map (`ModifiedResNet.dense`), float32."""
        if mode not in self.dense_modes:
            raise ZssegError(f"dense mode '{mode}' needs a ViT image tower; this {self.family} model offers 'plain'")
        return self.model.visual.dense(pixels.to(device=self.device, dtype=self.dtype)).float()


def resnet_clip_from_parts(state: dict, prefix: str, text: nn.Module, tokenizer, source: str,
                           device: str | torch.device = "cpu", dtype: str = "fp32", image_mean: tuple = CLIP_MEAN,
                           image_std: tuple = CLIP_STD, interpolation: str = "bicubic") -> ResNetClip:
    """A `ResNetClip` from the image tower of an OpenAI-layout ResNet CLIP state dict under `prefix`
    and its text tower already converted (`zsseg.models.openai_clip.clip_from_openai_state` does both, and
    is the entry point). The input size is the one the attention pool was trained at (288 for
    RN50x4, 384 for RN50x16).

    Raises:
        ZssegError: one line naming a missing, unexpected or misshaped tensor, or embeddings of two sizes.
    """
    visual = modified_resnet_from_state(state, prefix + "visual.", DTYPES[dtype])
    if visual.config.output_dim != text.config.projection_dim:
        raise ZssegError(f"the ResNet CLIP's image embeddings are {visual.config.output_dim}-d but its text embeddings "
                         f"{text.config.projection_dim}-d")
    logit_scale = state.get(prefix + "logit_scale", torch.tensor(100.0).log())
    model = OpenAIResNetClip(visual, text.text_model, text.text_projection, logit_scale).to(device).eval()
    return ResNetClip(model=model, tokenizer=tokenizer, source=source, image_size=visual.config.image_size,
                      image_mean=tuple(image_mean), image_std=tuple(image_std),
                      context_length=int(text.config.max_position_embeddings), interpolation=interpolation)


__all__ = ["OpenAIResNetClip", "ResNetClip", "resnet_clip_from_parts"]
