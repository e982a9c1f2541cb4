"""Training samples: which image a step sees, its augmentation, and its set-loss target.

Everything random is a function of (seed, position), where position p = step x batch_size + j
counts samples over the whole run: sample p is image `perm_e[p mod N]` of epoch e = p // N
(a seeded permutation per epoch), augmented with a generator seeded by (seed, p). A resumed run
therefore sees exactly the samples an uninterrupted one would, whatever the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..datasets import SegmentationDataset
from ..errors import ZssegError
from ..images import resize_image, resize_labels
from .criterion import Target


def seeded_generator(*keys: int) -> torch.Generator:
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def randint(generator: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(0, high + 1, (), generator=generator))


@dataclass
class Augmentation:
    """MaskFormer's training augmentation: random shorter-side resize, square crop, flip."""

    crop_size: int
    min_scale: float = 0.5
    max_scale: float = 2.0
    flip: bool = True

    def __call__(self, image: np.ndarray, label: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`image` HWC uint8 and `label` [H, W] int (-1 ignored) -> both crop_size x crop_size;
        padding is black in the image and -1 in the label."""
        height, width = label.shape
        short = self.crop_size * uniform(generator, self.min_scale, self.max_scale)
        scale = short / min(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image, label = resize_image(image, size), resize_labels(label, size)
        side = self.crop_size
        y0 = randint(generator, max(0, size[0] - side))
        x0 = randint(generator, max(0, size[1] - side))
        image, label = image[y0 : y0 + side, x0 : x0 + side], label[y0 : y0 + side, x0 : x0 + side]
        out_image = np.zeros((side, side, 3), dtype=np.uint8)
        out_label = np.full((side, side), -1, dtype=np.int32)
        out_image[: image.shape[0], : image.shape[1]] = image
        out_label[: label.shape[0], : label.shape[1]] = label
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            out_image, out_label = out_image[:, ::-1], out_label[:, ::-1]
        return np.ascontiguousarray(out_image), np.ascontiguousarray(out_label)


LOSS_PIXELS = ("all", "labelled")


def semantic_target(label: np.ndarray, loss_pixels: str = "all") -> Target:
    """One mask per class present in `label` ([H, W], training-class indices, -1 ignored), in
    ascending class order, as the reference's dataset mapper. With `loss_pixels` "all" (the
    reference's) every pixel counts in the mask losses, ignored ones as negatives of every
    mask; with "labelled" the ignored pixels count nowhere."""
    if loss_pixels not in LOSS_PIXELS:
        raise ZssegError(f"unknown loss pixels '{loss_pixels}'; choose from {', '.join(LOSS_PIXELS)}")
    labels = torch.from_numpy(np.ascontiguousarray(label)).long()
    classes = torch.unique(labels[labels >= 0])
    valid = labels >= 0 if loss_pixels == "labelled" else torch.ones_like(labels, dtype=torch.bool)
    return Target(classes=classes, masks=labels[None] == classes[:, None, None], valid=valid)


class TrainingSamples:
    """The training stream of a dataset split restricted to the training classes.

    Args:
        dataset: the split to train on.
        train_classes: dataset class indices the network learns; their position in this list
            is the training-class index. Pixels of every other class are ignored.
        augmentation: applied to every sample.
        seed: the run's seed.
        loss_pixels: which pixels the set loss sees (`semantic_target`).
    """

    def __init__(self, dataset: SegmentationDataset, train_classes: list[int], augmentation: Augmentation, seed: int,
                 loss_pixels: str = "all"):
        if len(dataset) == 0:
            raise ZssegError(f"{dataset.name} {dataset.split} has no images")
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed
        self.loss_pixels = loss_pixels
        # Dataset label (-1..C-1, shifted by one) -> training index or -1.
        self._lut = np.full(dataset.num_classes + 1, -1, dtype=np.int32)
        for train_index, dataset_index in enumerate(train_classes):
            self._lut[dataset_index + 1] = train_index
        self._perms: dict[int, torch.Tensor] = {}

    def image_index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(len(self.dataset), generator=seeded_generator(self.seed, epoch, 0))}
        return int(self._perms[epoch][offset])

    def labelled(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample `position` of the run: `[3, S, S]` float pixels in [0, 255] and `[S, S]` int64
        training-class labels (-1 ignored)."""
        index = self.image_index(position)
        image = self.dataset.load_image(index)
        label = self._lut[self.dataset.load_label(index) + 1]
        image, label = self.augmentation(image, label, seeded_generator(self.seed, position, 1))
        return torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(label).long()

    def __getitem__(self, position: int) -> tuple[torch.Tensor, Target]:
        """Sample `position` of the run: its pixels and its set-loss target."""
        image, label = self.labelled(position)
        return image, semantic_target(label.numpy(), self.loss_pixels)

    def batch(self, positions: list[int]) -> tuple[torch.Tensor, list[Target]]:
        samples = [self[p] for p in positions]
        return torch.stack([s[0] for s in samples]), [s[1] for s in samples]

    def labelled_batch(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`[B, 3, S, S]` pixels and `[B, S, S]` labels (the per-pixel losses' input)."""
        samples = [self.labelled(p) for p in positions]
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])
