"""Typed configuration of the MaskFormer proposal network (`ModelConfig`) and of its training
(`TrainConfig`, on the `SolverConfig` the FCN shares). The defaults are the paper's (MaskFormer's
COCO-Stuff recipe as used by the reference code); `zsseg.training.recipes` pairs them into the
named recipes, the paper's and smaller ones for CPU runs and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ...errors import ZssegError
from .backbones import RESNETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


BACKBONES = (*RESNETS, "clip")


def shorter_sides(base: int) -> tuple[int, ...]:
    """The reference's MIN_SIZE_TRAIN: 0.5 to 1.5 x `base` in steps of 0.1
    (`[int(x * 0.1 * base) for x in range(5, 16)]`; 320, 384, ..., 960 for 640)."""
    return tuple(int(x * 0.1 * base) for x in range(5, 16))



@dataclass(frozen=True)
class ModelConfig:
    """Architecture (Cheng et al. 2021): backbone, FPN pixel decoder, transformer decoder.

    Attributes:
        backbone: a name in `RESNETS` ("resnet-101c" is the paper's), or "clip" for CLIP's own
            image tower.
        hidden_dim: width of the transformer decoder (queries).
        num_queries: number of queries, i.e. of mask proposals per image.
        decoder_layers, heads, feedforward_dim, dropout: the transformer decoder (DETR's).
        conv_dim: width of the pixel decoder's feature pyramid.
        mask_dim: dimension of the per-pixel and per-query mask embeddings.
        embed_dim: CLIP's joint embedding dimension (set from the CLIP used in training).
        class_head_hidden, class_head_layers: the MLP that maps a query to CLIP's joint space
            (the reference's 256 -> 1024 -> 512: `EMBED_HIDDEN_DIM`, `EMBED_LAYERS`).
        clip_vision: for the "clip" backbone, the CLIP vision config (set in training).
    """

    backbone: str = "resnet-101c"
    hidden_dim: int = 256
    num_queries: int = 100
    decoder_layers: int = 6
    heads: int = 8
    feedforward_dim: int = 2048
    dropout: float = 0.1
    conv_dim: int = 256
    mask_dim: int = 256
    embed_dim: int = 512
    class_head_hidden: int = 1024
    class_head_layers: int = 2
    clip_vision: dict | None = None

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ZssegError(f"unknown backbone '{self.backbone}'; choose one of {', '.join(BACKBONES)}")
        for name in ("hidden_dim", "num_queries", "decoder_layers", "heads", "feedforward_dim", "conv_dim", "mask_dim", "embed_dim",
                     "class_head_hidden", "class_head_layers"):
            if getattr(self, name) < 1:
                raise ZssegError(f"model config {name} must be at least 1, got {getattr(self, name)}")
        if self.hidden_dim % self.heads:
            raise ZssegError(f"hidden_dim {self.hidden_dim} must be divisible by heads {self.heads}")
        if self.conv_dim % 32:
            raise ZssegError(f"conv_dim must be a multiple of 32 (GroupNorm with 32 groups), got {self.conv_dim}")


@dataclass(frozen=True)
class SolverConfig:
    """What every per-pixel network trains with (the proposal network's `TrainConfig` and the
    FCN's); the defaults are the paper's (MaskFormer's recipe).

    Attributes:
        max_iters, batch_size: optimisation steps and images per step (over all processes).
        crop_size: square training crop (`zsseg.training.augmentation`, the reference's
            recipe): images are resized so that their shorter side is one of
            `train_min_sizes` and their longer side at most `train_max_size`, cropped, colour
            jittered when `color_aug`, flipped with probability 0.5 when `flip`, and padded
            to `crop_size` (image 128, labels ignored).
        test_size: shorter side the trained network sees at inference (its longer side at
            most 4x that).
        lr, weight_decay, backbone_lr_multiplier, poly_power: AdamW with a poly schedule;
            norm layers and embeddings have no weight decay.
        grad_clip: maximum L2 norm of the whole model's gradient (MaskFormer: 0.01).
        prompt: the prompt of the frozen CLIP text embeddings of the classes: a template set, a
            template, or a prompt file (`zsseg.prompts.encoding.load_prompt`).
        checkpoint_every, log_every: steps between checkpoints and between log lines.
        seed: fixes initialisation, data order, augmentation and dropout.
    """

    max_iters: int = 60000
    batch_size: int = 32
    crop_size: int = 640
    train_min_sizes: tuple[int, ...] = shorter_sides(640)
    train_max_size: int = 2560
    color_aug: bool = True
    flip: bool = True
    test_size: int = 640
    lr: float = 1e-4
    weight_decay: float = 1e-4
    backbone_lr_multiplier: float = 0.1
    poly_power: float = 0.9
    grad_clip: float = 0.01
    prompt: str = "imagenet"
    checkpoint_every: int = 1000
    log_every: int = 20
    seed: int = 0

    def __post_init__(self):
        for name in ("max_iters", "batch_size", "crop_size", "test_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ZssegError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.crop_size % 32:
            raise ZssegError(f"crop-size must be a multiple of 32, got {self.crop_size}")
        object.__setattr__(self, "train_min_sizes", tuple(int(size) for size in self.train_min_sizes))
        if not self.train_min_sizes or min(self.train_min_sizes) < 1 or self.train_max_size < max(self.train_min_sizes):
            raise ZssegError(f"training sizes must be positive and at most the max size {self.train_max_size}, got {self.train_min_sizes}")
        if not 0 <= self.seed < 2**32:
            raise ZssegError(f"seed must be in 0..{2**32 - 1}, got {self.seed}")
        if self.lr <= 0 or self.weight_decay < 0 or self.backbone_lr_multiplier < 0:
            raise ZssegError("lr must be positive, weight decay and the backbone multiplier non-negative")


@dataclass(frozen=True)
class TrainConfig(SolverConfig):
    """The proposal network's training settings: `SolverConfig` and the set loss.

    Attributes:
        no_object_weight, class_weight, mask_weight, dice_weight: loss and matching weights
            (cross-entropy, sigmoid focal loss, dice loss).
        deep_supervision: also apply the loss to every intermediate decoder layer.
        loss_pixels: which pixels the mask losses and the matching see: "all" (the reference
            code's: unseen-class, void and padding pixels are negatives of every target mask)
            or "labelled" (zsseg's alternative: those pixels count nowhere).
    """

    no_object_weight: float = 0.1
    class_weight: float = 1.0
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    deep_supervision: bool = True
    loss_pixels: str = "all"

    def __post_init__(self):
        super().__post_init__()
        if self.loss_pixels not in ("all", "labelled"):
            raise ZssegError(f"unknown loss pixels '{self.loss_pixels}'; choose all (the reference's) or labelled")


def config_from_dict(config_class: type, data: dict, source: object = None):
    """A config dataclass (`ModelConfig`, the FCN's) from its saved fields (the network's
    JSON, named by `source` in the error); unknown fields are an error."""
    unknown = set(data) - {f.name for f in fields(config_class)}
    if unknown:
        where = f"{source}: " if source is not None else ""
        raise ZssegError(f"{where}unknown model config field(s): {', '.join(sorted(unknown))}")
    return config_class(**data)


def model_config_from_dict(data: dict, source: object = None) -> ModelConfig:
    """A `ModelConfig` from its saved fields (proposals.json); unknown fields are an error."""
    return config_from_dict(ModelConfig, data, source)


__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelConfig",
    "SolverConfig",
    "TrainConfig",
    "config_from_dict",
    "model_config_from_dict",
]
