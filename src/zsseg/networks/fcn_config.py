"""The FCN baseline's architecture (torch-free: `zsseg.training.recipes` reads it before any
model loads; `zsseg.networks.fcn` builds the network)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ZssegError
from .maskformer.backbones import RESNETS


@dataclass(frozen=True)
class FcnModelConfig:
    """Architecture: a ResNet (a name in `RESNETS`), the FPN pixel decoder (`conv_dim` wide,
    `mask_dim` output channels), and the 1x1 projection to CLIP's `embed_dim` (set from the CLIP
    used in training)."""

    backbone: str = "resnet-101c"
    conv_dim: int = 256
    mask_dim: int = 256
    embed_dim: int = 512

    def __post_init__(self):
        if self.backbone not in RESNETS:
            raise ZssegError(f"unknown FCN backbone '{self.backbone}'; choose one of {', '.join(RESNETS)}")
        for name in ("conv_dim", "mask_dim", "embed_dim"):
            if getattr(self, name) < 1:
                raise ZssegError(f"FCN config {name} must be at least 1, got {getattr(self, name)}")
        if self.conv_dim % 32:
            raise ZssegError(f"conv_dim must be a multiple of 32 (GroupNorm with 32 groups), got {self.conv_dim}")


__all__ = ["FcnModelConfig"]
