"""What every method shares: the interface, the parts it is built from, the ensemble's settings.

A method labels the pixels of one image (already at its processing size) with a vocabulary,
in two steps:

    prepared = method.prepare_image(image)                 # no CLIP: proposals, crops
    output = method.scores(image, prepared, vocabulary, text)
    output.masks, output.region_probs, output.keep   # [K, h, w] proposals, [K, C], [K] (Eq. 2 follows)
    output.pixel_probs                               # or, for a per-pixel method, [C, h', w']

The first step needs neither CLIP nor the vocabulary, so a folder run does it for the next image
on a worker thread while CLIP works on this one (`zsseg.runs.read_ahead`). A method whose every
step needs a model (a proposal network, dense CLIP) keeps the default: nothing prepared ahead.
Masks that already exist can be given to the first step instead of the method's proposals
(`Segmenter.classify`). Stages record their time with `zsseg.runs.timing.lap`.

`Segmenter` builds one from `Parts` (what it loaded: CLIP, Eq. 1's classifier, the proposals,
a trained network) and the `zsseg.config.SegmenterConfig` that says which, and assembles its
output into the label map.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from ..catalogue import CLASSIFIERS, ENSEMBLE_WEIGHT, METHODS as DECLARATIONS
from ..classification.regions import RegionClassifier
from ..data.images import SizeConfig
from ..data.vocabulary import Vocabulary
from ..errors import SettingError, ZssegError
from ..models.loading import ClipModel
from ..prompts.encoding import PromptEncoder, PromptLike, VocabularyEmbedding, load_prompt
from ..proposals import ProposalGenerator


@dataclass(frozen=True)
class EnsembleConfig:
    """The ensemble of a trained network's own classifier with CLIP's (a proposal network's, or
    the FCN's), as the reference code computes it.

    Attributes:
        weight: lambda: p = p_net^lambda * p_clip^(1 - lambda) for a seen class, the exponents
            swapped for an unseen one, so that CLIP decides the unseen classes. None: the
            method's default (0.8 with a proposal network, 0.7 for the FCN). With a proposal
            network, 0 is CLIP alone (`classifier="clip"`), as the reference's weight at or below 0.
        classifier: "ensemble", or one part alone (the paper's Table 7): "clip" (Eq. 1 on each
            non-empty mask, or dense CLIP) or "network".
        network_prompt: the prompt of the network's classifier (None: the one it was trained with).
        seen: the names of the classes taken as seen; None: those the network was trained on
            (by name). A benchmark's evaluation gives its zero-shot split (`zsseg.evaluation`).
    """

    weight: float | None = None
    classifier: str = "ensemble"
    network_prompt: object = None
    seen: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.weight is not None and not 0.0 <= self.weight <= 1.0:
            raise SettingError("ensemble_weight", f"{{setting}} must be in [0, 1], got {self.weight}")
        if self.classifier not in CLASSIFIERS:
            raise SettingError("classifier", f"unknown {{setting}} '{self.classifier}'; choose from {', '.join(CLASSIFIERS)}")
        if self.seen is not None:
            object.__setattr__(self, "seen", tuple(str(name) for name in self.seen))

    def seen_flags(self, vocabulary: Vocabulary, network) -> torch.Tensor:
        """`[C]` bool: the classes of `vocabulary` taken as seen."""
        if self.seen is None:
            return network.seen_classes(vocabulary)
        names = set(self.seen)
        return torch.tensor([name in names for name in vocabulary.names])


@dataclass
class MethodOutput:
    """What a method gives for one image.

    Attributes:
        masks: `[K, h, w]` float32 proposals at the processing size (K = 0 for a per-pixel
            method).
        region_probs: `[K, C]` each proposal's class probabilities (rows of masks not kept: 0).
        keep: `[K]` bool, the proposals that take part in Eq. 2 (a mask empty at Eq. 1's
            threshold does not).
        pixel_probs: `[C, h', w']` class probabilities of a per-pixel method's cells (h' x w'
            spans the processing size), else None.
    """

    masks: torch.Tensor
    region_probs: torch.Tensor
    keep: torch.Tensor
    pixel_probs: torch.Tensor | None = None

    @classmethod
    def of_kept(cls, masks: torch.Tensor, probs: torch.Tensor, keep: torch.Tensor) -> "MethodOutput":
        """The output for `[K']` probabilities of the kept masks only."""
        full = probs.new_zeros(len(masks), probs.shape[1])
        full[keep] = probs
        return cls(masks, full, keep)

    @classmethod
    def per_pixel(cls, probs: torch.Tensor) -> "MethodOutput":
        return cls(probs.new_zeros(0, *probs.shape[1:]), probs.new_zeros(0, probs.shape[0]), torch.zeros(0, dtype=torch.bool), probs)


@dataclass
class Parts:
    """What a `Segmenter` loaded, which its method draws on.

    Attributes:
        clip: the CLIP.
        classifier: Eq. 1's region classifier (its prompt, crops and mask threshold).
        proposals: the proposal generator (None for a per-pixel method).
        fcn: a trained FCN (`zsseg.networks.fcn.TrainedFcn`), for the fcn method.
        dense: dense CLIP's settings (`zsseg.classification.dense.DenseConfig`), where used.
        ensemble: the ensemble's settings, where a trained network takes part.
    """

    clip: ClipModel
    classifier: RegionClassifier
    proposals: ProposalGenerator | None
    fcn: object | None
    dense: object | None
    ensemble: EnsembleConfig | None


class Method(ABC):
    """One way of labelling pixels; see the module docstring."""

    #: The name `SegmenterConfig.method` takes; its declaration in `zsseg.catalogue.METHODS` gives:
    name: str = ""
    #: whether it labels pixels directly (no proposals, no Eq. 2),
    per_pixel: bool = False

    #: lambda of its ensemble with a trained network, when none is given.
    default_ensemble_weight: float = ENSEMBLE_WEIGHT
    #: The prompt encoder of the method's trained network's own classifier, where it has one.
    network_prompts: PromptEncoder | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declaration = DECLARATIONS.get(cls.__dict__.get("name"))
        if declaration is not None:  # a method of its own, declared in the catalogue
            cls.per_pixel = declaration.per_pixel

    @abstractmethod
    def processing_size(self, height: int, width: int, size: SizeConfig) -> tuple[int, int]:
        """The size an image of `height` x `width` is processed at."""

    def prepare_image(self, image: np.ndarray, masks: torch.Tensor | None = None) -> object:
        """The work on `image` (HWC uint8 at `processing_size`) that needs no model on the
        accelerator and no vocabulary: it may run on another thread, concurrently with `scores`
        of another image, so it must not touch CLIP. What it returns is `scores`' `prepared`.
        `masks`, `[K, h, w]` at the image's size, stand in for the method's proposals (a method
        that makes none refuses them). Default: nothing ahead."""
        if masks is not None:
            raise ZssegError(f"the {self.name} method labels pixels without masks: it cannot classify given masks")
        return None

    @abstractmethod
    def scores(self, image: np.ndarray, prepared: object, vocabulary: Vocabulary, text: VocabularyEmbedding) -> MethodOutput:
        """Proposals and their class probabilities, or per-pixel probabilities, for `image`
        (HWC uint8 at `processing_size`), given what `prepare_image` made of it. `text` is
        Eq. 1's embedding of `vocabulary`."""

    def prepare(self, vocabulary: Vocabulary) -> None:
        """Encode what the method's own text classifier needs (errors before any image)."""
        if self.network_prompts is not None:
            self.network_prompts.encode_vocabulary(vocabulary)


def ensemble(network: torch.Tensor, clip: torch.Tensor, seen: torch.Tensor, weight: float) -> torch.Tensor:
    """The reference code's ensemble of a trained network's probabilities with CLIP's:
    p_net^l * p_clip^(1 - l) for the seen classes, the exponents swapped for the others, so
    CLIP decides the unseen classes. `seen` broadcasts against both."""
    return torch.where(seen, network.pow(weight) * clip.pow(1 - weight), network.pow(1 - weight) * clip.pow(weight))


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
        raise SettingError("clip", f"the network was trained against {embed_dim}-d CLIP text embeddings ('{trained.info.get('clip')}'), "
                           f"but this CLIP's are {clip.embed_dim}-d; give that CLIP as {{setting}}")
    training = trained.training_prompt
    encoder = _encoder(training, clip, default)
    if own is None:  # a network that came with its CLIP needs no check
        _check_training_text(trained, encoder, clip)
    return encoder if prompt is None else _encoder(load_prompt(prompt), clip, default)


def _check_training_text(trained, encoder: PromptEncoder, clip: ClipModel) -> None:
    """Refuse a CLIP whose text embeddings of a few training classes are not those stored."""
    stored = trained.train_text
    probe = min(4, stored.num_classes)
    rows = [int(i) for i in range(stored.features.shape[0]) if int(stored.synonym_class[0, i]) < probe]
    names = [name for synonyms in trained.vocabulary.classes[:probe] for name in synonyms]
    if len(names) == len(rows):
        fresh = encoder.encode_names(names)
        similarity = float((fresh * stored.features[rows].to(fresh)).sum(dim=1).min())
        if similarity < 0.99:
            raise SettingError("clip", f"this CLIP ('{clip.source}') does not give the text embeddings the network was trained "
                               f"against ('{trained.info.get('clip')}'; cosine {similarity:.3f}); give that CLIP as {{setting}}")


def _encoder(prompt, clip: ClipModel, default: PromptEncoder) -> PromptEncoder:
    """`default` where it encodes with `prompt` on `clip`, else a new encoder sharing its disk cache."""
    if prompt.identity == default.prompt.identity and default.clip is clip:
        return default
    return PromptEncoder(clip, prompt, cache=default.disk or False)


__all__ = ["ENSEMBLE_WEIGHT", "EnsembleConfig", "Method", "MethodOutput", "Parts", "ensemble", "network_text_encoder"]
