"""What every method shares: the interface, the parts it is built from, the flags it takes.

A method labels the pixels of one image (already at its processing size) with a vocabulary,
in two steps:

    prepared = method.prepare_image(image, ground_truth=..., lap=...)  # no CLIP: proposals, crops
    output = method.scores(image, prepared, vocabulary, text, seen=..., lap=...)
    output.masks, output.probs   # [K, h, w] proposals and their [K, C] probabilities (Eq. 2 follows)
    output.probs                 # or, for a per-pixel method, [C, h', w'] class probabilities

The first step needs neither CLIP nor the vocabulary, so a folder run does it for the next image
on a worker thread while CLIP works on this one (`zsseg.runs.read_ahead`). A method whose every step
needs a model (a proposal network, dense CLIP) keeps the default: nothing prepared ahead.

`Segmenter` builds one from `Parts` (what it loaded: CLIP, Eq. 1's classifier, the proposals,
a trained network) and assembles its output into the label map. Each method declares the
options it takes (`options`, names of `Segmenter` arguments); `check_options` refuses the rest
in one place, for the command line and the Python API alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..catalogue import ENSEMBLE_WEIGHT, METHODS as DECLARATIONS, OPTIONS, check_options  # noqa: F401  (re-exported)
from ..models.loading import ClipModel
from ..errors import ZssegError
from ..prompts.encoding import PromptEncoder, PromptLike, VocabularyEmbedding, load_prompt
from ..proposals import ProposalGenerator
from ..classification.regions import RegionClassifier
from ..data.vocabulary import Vocabulary

Lap = Callable[[str], None]  # records the time since the last call under a stage's name


@dataclass
class MethodOutput:
    """What a method gives for one image.

    Attributes:
        masks: `[K, h, w]` float32 proposals at the processing size (K = 0 for a per-pixel
            method).
        probs: `[K, C]` each proposal's class probabilities, or for a per-pixel method
            `[C, h', w']` each cell's (h' x w' spans the processing size).
    """

    masks: torch.Tensor
    probs: torch.Tensor


@dataclass
class Parts:
    """What a `Segmenter` loaded, which its method draws on.

    Attributes:
        clip: the CLIP.
        classifier: Eq. 1's region classifier (its prompt, crops and mask threshold).
        proposals: the proposal generator.
        fcn: a trained FCN (`zsseg.networks.fcn.TrainedFcn`), for the fcn method.
        dense_mode, overlap: dense CLIP's features and sliding-window overlap.
        ensemble_weight: lambda of the ensemble with a trained network.
        classifier_mode: "ensemble", or "clip" / "network" alone (ablations).
        network_prompt: the prompt of a trained network's classifier (None: its own).
    """

    clip: ClipModel
    classifier: RegionClassifier
    proposals: ProposalGenerator
    fcn: object | None
    dense_mode: str
    overlap: float
    ensemble_weight: float
    classifier_mode: str
    network_prompt: PromptLike | None


class Method(ABC):
    """One way of labelling pixels; see the module docstring."""

    #: The name `--method` takes; its declaration in `zsseg.catalogue.METHODS` gives:
    name: str = ""
    #: whether it labels pixels directly (no proposals, no Eq. 2),
    per_pixel: bool = False
    #: and the `Segmenter` options it takes (keys of `OPTIONS`).
    options: frozenset[str] = frozenset()

    #: lambda of its ensemble with a trained network, when none is given.
    default_ensemble_weight: float = ENSEMBLE_WEIGHT
    #: The prompt encoder of the method's trained network's own classifier, where it has one.
    network_prompts: PromptEncoder | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declaration = DECLARATIONS.get(cls.__dict__.get("name"))
        if declaration is not None:  # a method of its own, declared in the catalogue
            cls.per_pixel, cls.options = declaration.per_pixel, declaration.options

    @abstractmethod
    def processing_size(self, height: int, width: int, max_size: int | None, test_size: int | None) -> tuple[int, int]:
        """The size an image of `height` x `width` is processed at."""

    def prepare_image(self, image: np.ndarray, *, ground_truth: np.ndarray | None = None, lap: Lap) -> object:
        """The work on `image` (HWC uint8 at `processing_size`) that needs no model on the
        accelerator and no vocabulary: it may run on another thread, concurrently with `scores`
        of another image, so it must not touch CLIP. What it returns is `scores`' `prepared`.
        `ground_truth`: the label map, for proposals that need one. Default: nothing ahead."""
        return None

    @abstractmethod
    def scores(self, image: np.ndarray, prepared: object, vocabulary: Vocabulary, text: VocabularyEmbedding, *, seen=None,
               lap: Lap) -> MethodOutput:
        """Proposals and their class probabilities, or per-pixel probabilities, for `image`
        (HWC uint8 at `processing_size`), given what `prepare_image` made of it. `text` is
        Eq. 1's embedding of `vocabulary`; `seen` the classes a trained network takes as seen
        (None: by its training names)."""

    def prepare(self, vocabulary: Vocabulary) -> None:
        """Encode what the method's own text classifier needs (errors before any image)."""
        if self.network_prompts is not None:
            self.network_prompts.encode_vocabulary(vocabulary)


def ensemble(network: torch.Tensor, clip: torch.Tensor, seen: torch.Tensor, weight: float) -> torch.Tensor:
    """The reference code's ensemble of a trained network's probabilities with CLIP's:
    p_net^l * p_clip^(1 - l) for the seen classes, the exponents swapped for the others, so
    CLIP decides the unseen classes. `seen` broadcasts against both."""
    return torch.where(seen, network.pow(weight) * clip.pow(1 - weight), network.pow(1 - weight) * clip.pow(weight))


def seen_flags(seen, network, vocabulary: Vocabulary) -> torch.Tensor:
    """`[C]` bool: the given split, else the classes `network` was trained on, by name."""
    if seen is None:
        return network.seen_classes(vocabulary)
    seen = torch.as_tensor(np.asarray(seen, dtype=bool))
    if seen.shape != (len(vocabulary),):
        raise ZssegError(f"seen must be one flag per class ({len(vocabulary)}), got shape {tuple(seen.shape)}")
    return seen


def network_text_encoder(trained, embed_dim: int, clip: ClipModel, default: PromptEncoder, prompt: PromptLike | None = None) -> PromptEncoder:
    """The prompt encoder for a trained network's text classifier (a proposal network or an
    FCN): `prompt`, else the prompt it was trained with (a learned one is stored in its
    weights), on the CLIP that came with the network (an authors' checkpoint holds one, which
    its classifier keeps whatever CLIP Eq. 1 uses, as the reference's), else on `clip`, whose
    text embeddings must match those it was trained against (checked with the training prompt on
    a few of its training classes, so that a different CLIP is an error rather than silent noise).

    `trained` has `training_prompt`, `train_text`, `vocabulary`, `info` (its JSON) and `clip`."""
    own = getattr(trained, "clip", None)
    clip = own if own is not None else clip
    if clip.embed_dim != embed_dim:
        raise ZssegError(
            f"the network was trained against {embed_dim}-d CLIP text embeddings "
            f"('{trained.info.get('clip')}'), but this CLIP's are {clip.embed_dim}-d; pass that CLIP (--clip)"
        )
    training = trained.training_prompt
    encoder = _encoder(training, clip, default)
    if own is None:  # a network that came with its CLIP needs no check
        stored = trained.train_text
        probe = min(4, stored.num_classes)
        rows = [int(i) for i in range(stored.features.shape[0]) if int(stored.synonym_class[0, i]) < probe]
        names = [name for synonyms in trained.vocabulary.classes[:probe] for name in synonyms]
        if len(names) == len(rows):
            fresh = encoder.encode_names(names)
            similarity = float((fresh * stored.features[rows].to(fresh)).sum(dim=1).min())
            if similarity < 0.99:
                raise ZssegError(
                    f"this CLIP ('{clip.source}') does not give the text embeddings the network was trained "
                    f"against ('{trained.info.get('clip')}'; cosine {similarity:.3f}); pass that CLIP (--clip)"
                )
    return encoder if prompt is None else _encoder(load_prompt(prompt), clip, default)


def _encoder(prompt, clip: ClipModel, default: PromptEncoder) -> PromptEncoder:
    """`default` where it encodes with `prompt` on `clip`, else a new encoder sharing its disk cache."""
    if prompt.identity == default.prompt.identity and default.clip is clip:
        return default
    return PromptEncoder(clip, prompt, cache=default.disk or False)


__all__ = ["ENSEMBLE_WEIGHT", "Lap", "Method", "MethodOutput", "OPTIONS", "Parts", "check_options", "ensemble", "network_text_encoder", "seen_flags"]
