"""The interface every mask-proposal generator implements, and the shared post-processing.

A generator takes an HWC uint8 RGB image and returns class-agnostic masks `[K, H, W]` float32
in [0, 1] at the image's size, best first, with at most `max_proposals` masks and no
near-duplicates (IoU above `duplicate_iou`).
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..catalogue import DEFAULT_DUPLICATE_IOU, DEFAULT_MAX_PROPOSALS, GENERATORS as DECLARATIONS
from ..errors import SettingError, ZssegError
from ..data.images import bounded_size, resize_image, resize_labels, shortest_edge_size

_IOU_SAMPLES = 1 << 16  # pixels sampled to measure mask overlap when removing duplicates


@dataclass(frozen=True)
class ProposalConfig:
    """What every generator is configured with; each generator's `Config` adds its own settings,
    with the same names as its constructor's arguments.

    Attributes:
        max_proposals: K, the most masks kept per image, best first.
        duplicate_iou: a mask overlapping a kept one above this IoU is dropped.
    """

    name: ClassVar[str] = ""
    #: The generator these settings build (set by the generator class that owns them).
    generator: ClassVar[type | None] = None
    max_proposals: int = DEFAULT_MAX_PROPOSALS
    duplicate_iou: float = DEFAULT_DUPLICATE_IOU

    def __post_init__(self):
        if not isinstance(self.max_proposals, int) or self.max_proposals < 1:
            raise SettingError("max_proposals", f"{{setting}} must be a whole number of at least 1, got {self.max_proposals}")
        if not 0.0 < self.duplicate_iou <= 1.0:
            raise SettingError("duplicate_iou", f"{{setting}} must be in (0, 1], got {self.duplicate_iou}")

    def build(self, device: str = "cpu", **context) -> "ProposalGenerator":
        """The generator these settings describe (`context`: what a generator that loads a
        network takes besides, such as the CLIP for an authors' checkpoint)."""
        if self.generator is None:
            raise ZssegError(f"{type(self).__name__} belongs to no proposal generator; use a generator's own Config")
        return self.generator.from_config(self, device, **context)


class ProposalGenerator(ABC):
    """Produces class-agnostic mask proposals for an image."""

    #: Its settings' dataclass: the constructor's arguments (`config` reads them back).
    Config: ClassVar[type[ProposalConfig]] = ProposalConfig

    #: Name in the registry (`zsseg.proposals.GENERATORS`); its declaration in
    #: `zsseg.catalogue.GENERATORS` gives:
    name: str = ""
    #: whether `generate` needs the ground-truth label map (only the oracle generator does),
    needs_ground_truth: bool = False
    #: and whether it loads a pretrained hub model, named as "NAME:MODEL" (`parse_generator`).
    pretrained: bool = False
    #: Whether `generate` runs no model (plain CPU code such as Selective Search): then a folder
    #: run may call it on a worker thread while CLIP works on the previous image. False for
    #: the networks, and for any generator that does not say so.
    needs_no_model: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "Config" in cls.__dict__:
            cls.Config.generator = cls
        declaration = DECLARATIONS.get(cls.__dict__.get("name"))
        if declaration is not None:  # a generator of its own, declared in the catalogue
            cls.needs_ground_truth, cls.pretrained = declaration.needs_ground_truth, declaration.pretrained

    def __init__(self, max_proposals: int = DEFAULT_MAX_PROPOSALS, duplicate_iou: float = DEFAULT_DUPLICATE_IOU):
        ProposalConfig(max_proposals, duplicate_iou)  # checks them
        self.max_proposals = max_proposals
        self.duplicate_iou = duplicate_iou

    @property
    def config(self) -> ProposalConfig:
        """This generator's settings (its `Config`), as it was built."""
        return self.Config(**{field.name: getattr(self, field.name) for field in dataclasses.fields(self.Config)})

    @classmethod
    def from_config(cls, config: ProposalConfig, device: str = "cpu", **context) -> "ProposalGenerator":
        """The generator of `config`; `device` and `context` go to those that load a network."""
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(config)})

    def with_settings(self, **changes) -> "ProposalGenerator":
        """A copy with some settings changed (sharing any network it loaded), checked as its
        `Config` checks them."""
        dataclasses.replace(self.config, **changes)
        changed = copy.copy(self)
        for name, value in changes.items():
            setattr(changed, name, value)
        return changed

    @abstractmethod
    def generate(self, image: np.ndarray) -> torch.Tensor:
        """Masks `[K, H, W]` float32 in [0, 1] for an HWC uint8 RGB image, best first."""

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.generate(image)

    #: The shorter side the generator works at when a pipeline names none (a trained network's
    #: test size); None: the image's own size, bounded by `max_size`.
    default_shorter_side: int | None = None

    def proposal_size(self, height: int, width: int, max_size: int | None, shorter: int | None = None) -> tuple[int, int]:
        """The size a pipeline should make proposals at: the shorter side `shorter` (else the
        generator's default, else as it is) with the longer side at most `max_size`, rounded as
        detectron2's test-time resize; generators that read the ground truth work at full size
        so that their masks match the label map exactly."""
        if self.needs_ground_truth:
            return height, width
        shorter = shorter or self.default_shorter_side
        return shortest_edge_size(height, width, shorter, max_size) if shorter else bounded_size(height, width, max_size)

    def finalize(self, masks: np.ndarray) -> torch.Tensor:
        """Drop empty masks and near-duplicates (keeping the earlier), cap K; bool -> float32."""
        return torch.from_numpy(select_masks(masks, self.max_proposals, self.duplicate_iou)).float()


def select_masks(masks: np.ndarray, max_keep: int, duplicate_iou: float, previous: np.ndarray | None = None,
                 return_indices: bool = False) -> np.ndarray:
    """Greedy, in order: keep a mask unless it is empty or overlaps a kept one above the IoU.

    Args:
        masks: `[K, H, W]` bool candidates, best first.
        previous: `[P, H, W]` bool masks kept earlier, which candidates must not duplicate
            (lets a caller feed candidates in chunks without re-checking what it kept).
        return_indices: return the kept candidates' indices `[K']` instead.
    Returns:
        `[K', H, W]` bool, the newly kept candidates, K' <= max_keep.
    """
    if len(masks) == 0 or max_keep < 1:
        return np.zeros(0, dtype=np.int64) if return_indices else masks[:0].astype(bool)
    previous = masks[:0] if previous is None else previous
    flat = masks.reshape(len(masks), -1)
    stride = max(1, flat.shape[1] // _IOU_SAMPLES)
    # Sampled pixels of every mask kept so far, in a preallocated block so that each check is
    # one matrix-vector product on a view (no copy of the kept set per candidate).
    width = flat[:, ::stride].shape[1]
    kept_samples = np.empty((len(previous) + min(max_keep, len(masks)), width), dtype=np.float32)
    kept_samples[: len(previous)] = previous.reshape(len(previous), flat.shape[1])[:, ::stride]
    kept_areas = np.empty(len(kept_samples))
    kept_areas[: len(previous)] = kept_samples[: len(previous)].sum(axis=1)
    count = len(previous)
    kept: list[int] = []
    for i in range(len(masks)):
        if not flat[i].any():
            continue
        sample = flat[i, ::stride].astype(np.float32)
        area = float(sample.sum())
        if count:
            # IoU >= t needs t * larger area <= smaller area (intersection <= the smaller,
            # union >= the larger; both sides rounded alike), so only masks of a close size can
            # be duplicates: the same decisions, fewer products.
            areas = kept_areas[:count]
            near = np.flatnonzero((duplicate_iou * area <= areas) & (duplicate_iou * areas <= area))
            if len(near):
                inter = kept_samples[near] @ sample
                union = areas[near] + area - inter
                if np.any(inter >= duplicate_iou * np.maximum(union, 1e-9)):
                    continue
        kept_samples[count] = sample
        kept_areas[count] = area
        count += 1
        kept.append(i)
        if len(kept) == max_keep:
            break
    return np.asarray(kept, dtype=np.int64) if return_indices else masks[kept].astype(bool)


def working_image(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """The image scaled down so that its longer side is at most `max_side`."""
    size = bounded_size(image.shape[0], image.shape[1], max_side)
    return resize_image(image, size)


def upsample_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of bool masks `[K, h, w]` to `size`."""
    if masks.shape[1:] == tuple(size):
        return masks
    return resize_labels(masks, size)
