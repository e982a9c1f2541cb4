"""The FCN baseline's named configs (torch-free: `zsseg configs` and the command line read
them; `zsseg.networks.fcn` builds and trains the network)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ZssegError
from ..networks.maskformer.backbones import RESNETS
from ..networks.maskformer.config import SolverConfig, shorter_sides


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


@dataclass(frozen=True)
class FcnConfig:
    """A named FCN config: its architecture, and the solver it shares with the proposal
    network (schedule, optimiser, augmentation, test size, prompt, loop settings)."""

    description: str
    model: FcnModelConfig
    train: SolverConfig


FCN_CONFIGS: dict[str, FcnConfig] = {
    "paper": FcnConfig(
        "the paper's FCN baseline: R101c (detectron2's DeepLab ResNet-101, R-103.pkl) + FPN, 640 crops, batch 32, 60k steps, AdamW 1e-4 (its MaskFormer recipe)",
        FcnModelConfig(),
        SolverConfig(),
    ),
    "cpu": FcnConfig(
        "a small random-init ResNet, 64-wide FPN, 128 crops, batch 4, 1500 steps at lr 1e-3 (CPU, tests)",
        FcnModelConfig(backbone="resnet-tiny", conv_dim=64, mask_dim=64),
        SolverConfig(max_iters=1500, batch_size=4, crop_size=128, train_min_sizes=shorter_sides(128), train_max_size=512,
                     test_size=192, lr=1e-3, backbone_lr_multiplier=1.0, checkpoint_every=250, log_every=10),
    ),
}


def fcn_config(name: str) -> FcnConfig:
    if name not in FCN_CONFIGS:
        raise ZssegError(f"unknown FCN config '{name}'; choose one of {', '.join(FCN_CONFIGS)}")
    return FCN_CONFIGS[name]
