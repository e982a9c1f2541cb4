"""The ResNet backbones by name, as specifications (torch-free: the configs and the command
line read them; `zsseg.networks.maskformer.resnet` builds them)."""

from __future__ import annotations

from dataclasses import dataclass

#: Blocks per stage of the standard depths.
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@dataclass(frozen=True)
class ResNetSpec:
    """A ResNet as detectron2 builds it.

    Attributes:
        blocks: residual blocks in res2..res5.
        bottleneck: bottleneck blocks (1x1, 3x3, 1x1; ResNet-50 and deeper) or basic ones (two 3x3).
        stem: "basic" (7x7 conv) or "deeplab" (three 3x3 convs).
        stem_channels: output channels of the stem (64 basic, 128 deeplab).
        widths: output channels of res2..res5.
        res5_multi_grid: dilation of each res5 block (DeepLab's multi-grid); empty: none.
        norm: "FrozenBN" (statistics and affine fixed: pretrained backbones) or "BN" (trained).
        imagenet_weights: where the ImageNet weights are fetched from when none are given.
    """

    blocks: tuple[int, int, int, int]
    bottleneck: bool = True
    stem: str = "basic"
    stem_channels: int = 64
    widths: tuple[int, int, int, int] = (256, 512, 1024, 2048)
    res5_multi_grid: tuple[int, ...] = ()
    norm: str = "FrozenBN"
    imagenet_weights: str | None = None


_D2 = "https://dl.fbaipublicfiles.com/detectron2"
#: Backbones by name. "clip" (not listed) is the image tower of the CLIP given to training.
RESNETS = {
    # The paper's: detectron2's DeepLab ResNet-101 (MaskFormer's "R101c").
    "resnet-101c": ResNetSpec(DEPTHS[101], stem="deeplab", stem_channels=128, res5_multi_grid=(1, 2, 4),
                              imagenet_weights=f"{_D2}/DeepLab/R-103.pkl"),
    # The reference's R50 configs: torchvision's ResNet-50 weights in detectron2's layout.
    "resnet-50": ResNetSpec(DEPTHS[50], imagenet_weights=f"{_D2}/ImageNetPretrained/torchvision/R-50.pkl"),
    "resnet-101": ResNetSpec(DEPTHS[101], imagenet_weights=f"{_D2}/ImageNetPretrained/torchvision/R-101.pkl"),
    # Small and trained from scratch (batch norm that learns), for tests and CPU runs.
    "resnet-tiny": ResNetSpec((1, 1, 1, 1), bottleneck=False, stem_channels=32, widths=(32, 64, 128, 256), norm="BN"),
}
