"""The settings of `zsseg train prompts` (torch-free: `zsseg.training.recipes` reads them before
any model loads; `zsseg.training.prompt_learning` trains)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..catalogue import TEMPERATURE
from ..errors import ZssegError


@dataclass(frozen=True)
class PromptTrainConfig:
    """Settings of `zsseg train prompts`; the defaults are the paper's COCO-Stuff config.

    Attributes:
        context_length: n, the number of learned vectors before the class name.
        init_std: their initialisation, N(0, init_std^2).
        max_iters, batch_size: optimisation steps and crops per step (over all processes).
        samples_per_class: at most this many (image, class) samples per class (the reference's
            SAMPLE_PER_CLASS); 0 keeps them all.
        lr, momentum, weight_decay: SGD.
        warmup_iters, warmup_factor: lr x warmup_factor for the first warmup_iters steps.
        grad_clip: maximum L2 norm of the context vectors' gradient (0: none).
        min_crop_area: smallest area of the random resized crop, as a fraction of the box.
        crop_size: (height, width) of the training crops. The reference's is 244 x 224: its
            config gives MIN_SIZE_TRAIN (224, 244), which its `RandomResizedCrop` reads as
            (width, height); CLIP then sees 15 x 14 patches (ViT-B/16), with its position
            embeddings resized bicubically from 14 x 14.
        flip: random horizontal flip.
        temperature: the logit scale of the loss (Eq. 1's 100, which is also a trained CLIP's
            own scale; a CLIP trained here with a smaller scale may learn better at its own).
        checkpoint_every, log_every: steps between checkpoints and between log lines.
        seed: fixes initialisation, sample choice, order and augmentation.
    """

    context_length: int = 16
    init_std: float = 0.02
    max_iters: int = 16000
    batch_size: int = 32
    samples_per_class: int = 32
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.005
    grad_clip: float = 0.01
    min_crop_area: float = 0.08
    crop_size: tuple[int, int] = (244, 224)
    flip: bool = True
    temperature: float = TEMPERATURE
    checkpoint_every: int = 1000
    log_every: int = 20
    seed: int = 0

    def __post_init__(self):
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ZssegError(f"temperature must be a finite number above 0, got {self.temperature}")
        for name in ("context_length", "max_iters", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ZssegError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.samples_per_class < 0 or self.warmup_iters < 0:
            raise ZssegError("samples-per-class and warmup iterations must not be negative")
        if self.lr <= 0 or self.weight_decay < 0 or self.init_std < 0 or not 0 < self.warmup_factor <= 1:
            raise ZssegError("lr must be positive, weight decay and init std non-negative, warmup factor in (0, 1]")
        if not 0 <= self.seed < 2**32:
            raise ZssegError(f"seed must be in 0..{2**32 - 1}, got {self.seed}")
        if not 0 < self.min_crop_area <= 1:
            raise ZssegError(f"min crop area must be in (0, 1], got {self.min_crop_area}")
        object.__setattr__(self, "crop_size", tuple(int(side) for side in self.crop_size))
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ZssegError(f"crop size must be (height, width), got {self.crop_size}")


__all__ = ["PromptTrainConfig"]
