"""Training samples: which image a step sees, its augmentation, and its set-loss target.

Images with no pixel of a training class are left out of the stream, as the reference's data
preparation leaves them out of its training sets (zero-shot: images with no seen pixel).

Everything random is a function of (seed, position), where position p = step x batch_size + j
counts samples over the whole run: sample p is image `perm_e[p mod N]` of epoch e = p // N
(a seeded permutation per epoch), augmented with a generator seeded by (seed, p). A resumed run
therefore sees exactly the samples an uninterrupted one would, whatever the number of processes.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..data.datasets import SegmentationDataset
from ..errors import ZssegError
from .augmentation import Augmentation
from ..networks.maskformer.criterion import Target


def seeded_generator(*keys: int) -> torch.Generator:
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


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


def images_with_classes(dataset: SegmentationDataset, classes: list[int], progress: bool = False) -> list[int]:
    """Indices of the images of `dataset` whose label map shows any of `classes`, in order.
    Reads every label map, several at a time (decoding a PNG releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..runs.progress import Progress

    wanted = np.zeros(dataset.num_classes + 1, dtype=bool)
    wanted[np.asarray(classes, dtype=np.int64) + 1] = True

    def shows(index: int) -> bool:
        return bool(wanted[dataset.load_label(index) + 1].any())

    found = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool, \
            Progress(len(dataset), "checking label maps for training classes", "image", enabled=progress) as bar:
        for present in pool.map(shows, range(len(dataset))):
            found.append(present)
            bar.update()
    return [index for index, present in enumerate(found) if present]


class TrainingSamples:
    """The training stream of a dataset split restricted to the training classes.

    Args:
        dataset: the split to train on.
        train_classes: dataset class indices the network learns; their position in this list
            is the training-class index. Pixels of every other class are ignored.
        augmentation: applied to every sample.
        seed: the run's seed.
        loss_pixels: which pixels the set loss sees (`semantic_target`).
        progress: show a bar while the label maps are checked.

    Attributes:
        kept: dataset indices of the images that have a pixel of a training class, the only
            ones the stream shows (every label map is read once, when the stream is made).
    """

    def __init__(self, dataset: SegmentationDataset, train_classes: list[int], augmentation: Augmentation, seed: int,
                 loss_pixels: str = "all", progress: bool = False):
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
        self.kept = images_with_classes(dataset, train_classes, progress)
        if not self.kept:
            raise ZssegError(f"no image of {dataset.name} {dataset.split} has a pixel of the classes to train")
        self._perms: dict[int, torch.Tensor] = {}

    def image_index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.kept))
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(len(self.kept), generator=seeded_generator(self.seed, epoch, 0))}
        return self.kept[int(self._perms[epoch][offset])]

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
