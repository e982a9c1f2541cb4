"""The two-stage pipeline behind one object: proposals -> CLIP region classification -> assembly.

    segmenter = Segmenter(clip="openai/clip-vit-base-patch16", proposals="selective-search")
    result = segmenter.segment("photo.jpg", "cat; sofa, couch; wall")
    result.label_map  # [H, W] int32, index into result.class_names, -1 where no proposal
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .assembly import UNLABELED, assemble, assemble_labels
from .clip import DEFAULT_CLIP, ClipModel, load_clip
from .errors import ZssegError
from .images import ImageInput, as_rgb_array, image_tensor, resize_image
from .prompts import PromptEncoder, PromptLike, VocabularyEmbedding
from .proposals import MaskFormerProposals, ProposalGenerator, build_proposal_generator
from .region_classification import RegionClassifier
from .vocabulary import Vocabulary, as_vocabulary

DEFAULT_PROPOSALS = "selective-search"
DEFAULT_MAX_SIZE = 1024
DEFAULT_PROMPT = "imagenet"
ENSEMBLE_WEIGHT = 0.8  # lambda of the ensemble with a proposal network's classifier (the paper's)
# Who labels a proposal network's masks: the ensemble, CLIP alone (Eq. 1), or the network's head alone.
CLASSIFIERS = ("ensemble", "clip", "network")


@dataclass
class SegmentationResult:
    """What `Segmenter.segment` returns.

    Attributes:
        label_map: `[H, W]` int32 at the input image's size; class index, or -1 (`UNLABELED`)
            where no proposal covers the pixel.
        class_names: the vocabulary, one name per class (synonyms joined by ", ").
        scores: `[C, h, w]` float32 Eq. 2 scores at the processing size (h, w), each pixel's
            scores summing to 1 where covered and 0 elsewhere.
        masks: `[K, h, w]` float32 proposals that were classified (non-empty after binarising).
        region_probs: `[K, C]` float32 class probabilities of each proposal (Eq. 1).
        timings: seconds spent in each stage.
    """

    label_map: np.ndarray
    class_names: list[str]
    scores: torch.Tensor
    masks: torch.Tensor
    region_probs: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.label_map.shape)

    def class_areas(self) -> dict[str, int]:
        """Pixel count of each class present in the label map, by name."""
        counts = np.bincount(self.label_map[self.label_map >= 0].ravel(), minlength=len(self.class_names))
        return {self.class_names[i]: int(n) for i, n in enumerate(counts) if n > 0}


class Segmenter:
    """Holds the loaded models; segments any number of images with any vocabulary.

    Args:
        clip: hub id, local folder, or an already loaded `ClipModel`.
        proposals: a generator name ("selective-search", "contour-hierarchy") or instance
            (such as `MaskFormerProposals(weights)`).
        prompt: how class names are put to CLIP's text tower: a template set ("imagenet",
            "vild", "single"), one template ("a sculpture of a {}."), a list of templates, or a
            prompt file (`zsseg prompts select`, `zsseg train prompts`); see `zsseg.prompts`.
            Default: the prompt a proposal network was trained with, else "imagenet".
        device, dtype: where and how CLIP runs ("cpu"/"cuda", "fp32"/"bf16").
        max_size: images are processed with their longer side at most this many pixels; the
            label map is returned at full size.
        max_proposals: K, when `proposals` is a name.
        batch_size: crops per CLIP forward pass.
        ensemble_weight: lambda of the ensemble with a proposal network's own classifier
            ("maskformer" proposals, loaded with `MaskFormerProposals(weights)`): for classes it
            was trained on, p = p_net^lambda * p_clip^(1 - lambda); for the others the exponents
            are swapped, so CLIP decides unseen classes. Unused with training-free proposals.
        classifier: with a proposal network, "ensemble" (default), or one part alone for
            ablations (the paper's Table 7): "clip" labels every non-empty mask by Eq. 1 for
            every class, "network" uses the network's probabilities for every class.
        text_cache: keep text features in the disk cache (`zsseg.text_cache`); False encodes
            every vocabulary afresh.
    """

    def __init__(
        self,
        clip: str | ClipModel = DEFAULT_CLIP,
        proposals: str | ProposalGenerator = DEFAULT_PROPOSALS,
        prompt: PromptLike | None = None,
        device: str = "cpu",
        dtype: str = "fp32",
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_proposals: int = 100,
        batch_size: int = 32,
        ensemble_weight: float = ENSEMBLE_WEIGHT,
        classifier: str = "ensemble",
        text_cache: bool = True,
    ):
        if max_size is not None and max_size < 32:
            raise ZssegError(f"max_size must be at least 32 pixels, got {max_size}")
        if not 0.0 <= ensemble_weight <= 1.0:
            raise ZssegError(f"ensemble weight must be in [0, 1], got {ensemble_weight}")
        if classifier not in CLASSIFIERS:
            raise ZssegError(f"unknown classifier '{classifier}'; choose from {', '.join(CLASSIFIERS)}")
        if isinstance(proposals, str):
            proposals = build_proposal_generator(proposals, max_proposals=max_proposals)
        if classifier == "network" and not isinstance(proposals, MaskFormerProposals):
            raise ZssegError(f"the '{proposals.name}' proposals have no classifier of their own; 'network' needs maskformer proposals")
        self.clip = clip if isinstance(clip, ClipModel) else load_clip(clip, device=device, dtype=dtype)
        self.proposals = proposals
        if prompt is None:
            prompt = proposals.trained.training_prompt if isinstance(proposals, MaskFormerProposals) else DEFAULT_PROMPT
        self.classifier = RegionClassifier(self.clip, prompt=prompt, batch_size=batch_size, text_cache=text_cache)
        self.max_size = max_size
        self.ensemble_weight = ensemble_weight
        self.classifier_mode = classifier
        self.proposal_prompts: PromptEncoder | None = None
        if isinstance(proposals, MaskFormerProposals) and classifier != "clip":
            self.proposal_prompts = proposal_text_encoder(proposals, self.clip, self.classifier.prompts)

    def prepare(self, vocabulary: Vocabulary | str | list[str]) -> Vocabulary:
        """Validate a vocabulary and encode its names (cached), so errors surface before any image."""
        vocabulary = as_vocabulary(vocabulary)
        self.classifier.embed_vocabulary(vocabulary)
        if self.proposal_prompts is not None:
            self.proposal_prompts.encode_vocabulary(vocabulary)
        return vocabulary

    def segment(
        self,
        image: ImageInput,
        vocabulary: Vocabulary | str | list[str],
        ground_truth: np.ndarray | None = None,
    ) -> SegmentationResult:
        """Label every pixel of `image` with a class of `vocabulary`.

        Args:
            image: a path, PIL image, or HWC uint8 array.
            vocabulary: a `Vocabulary`, a preset name, "a; b, c" text, or a list of names.
            ground_truth: `[H, W]` label map, only for proposals that need one (the
                "ground-truth" generator: CLIP then classifies the true segments). Such
                proposals are made at full size so that they match the label map exactly.
        """
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = timings.get(stage, 0.0) + now - clock
            clock = now

        vocabulary = as_vocabulary(vocabulary)
        text = self.classifier.embed_vocabulary(vocabulary)
        lap("text_encoding")
        full = as_rgb_array(image)
        if self.proposals.needs_ground_truth and ground_truth is None:
            raise ZssegError(f"the '{self.proposals.name}' proposals need the image's label map (ground_truth=)")
        small = resize_image(full, self.proposals.proposal_size(full.shape[0], full.shape[1], self.max_size))
        lap("image_loading")
        if self.proposal_prompts is not None:
            masks, probs = self._ensemble(small, vocabulary, text, lap)
        else:
            masks = self.proposals.generate(small, ground_truth)  # generators that need none ignore it
            lap("proposals")
            probs, keep = self._clip_probs(small, masks, text, lap)
            masks = masks[keep]
        scores = assemble(masks, probs)
        labels = assemble_labels(masks, probs, size=full.shape[:2])
        lap("assembly")
        return SegmentationResult(
            label_map=labels.numpy().astype(np.int32),
            class_names=vocabulary.names,
            scores=scores,
            masks=masks,
            region_probs=probs,
            timings=timings,
        )

    def _clip_probs(self, image: np.ndarray, masks: torch.Tensor, text: VocabularyEmbedding, lap) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1: `[K', C]` CLIP probabilities of the masks non-empty at 0.5, and `[K]` which."""
        crops, keep = self.classifier.crops(image_tensor(image), masks)
        lap("crops")
        features = self.classifier.encode_crops(crops)
        lap("image_encoding")
        return self.classifier.scores(features, text)[0], keep

    def _ensemble(self, image: np.ndarray, vocabulary: Vocabulary, text: VocabularyEmbedding, lap) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks `[Q, h, w]` of a proposal network and the ensemble of its class probabilities
        with CLIP's (the reference code's): a query whose binarised mask is empty keeps the
        network's probabilities only. With `classifier="network"`, the network's alone."""
        proposals: MaskFormerProposals = self.proposals  # type: ignore[assignment]
        masks, embeddings = proposals.predict(image)
        network = proposals.class_probs(embeddings, self.proposal_prompts.encode_vocabulary(vocabulary))
        lap("proposals")
        if self.classifier_mode == "network":
            return masks, network
        clip_probs = torch.ones_like(network)
        probs, keep = self._clip_probs(image, masks, text, lap)
        clip_probs[keep] = probs
        seen = proposals.seen_classes(vocabulary)[None]
        lam = self.ensemble_weight
        probs = torch.where(
            seen,
            network.pow(lam) * clip_probs.pow(1 - lam),
            network.pow(1 - lam) * clip_probs.pow(lam),
        )
        return masks, probs


def proposal_text_encoder(proposals: MaskFormerProposals, clip: ClipModel, default: PromptEncoder) -> PromptEncoder:
    """The prompt encoder for a proposal network's classifier: the prompt it was trained with
    (a learned one is stored in its weights), on a CLIP whose text embeddings match those it was trained against (checked on a few of its
    training classes, so that a different CLIP is an error rather than silent noise)."""
    if clip.embed_dim != proposals.embed_dim:
        raise ZssegError(
            f"the proposal network was trained against {proposals.embed_dim}-d CLIP text embeddings "
            f"('{proposals.trained.info.get('clip')}'), but this CLIP's are {clip.embed_dim}-d; pass that CLIP (--clip)"
        )
    prompt = proposals.trained.training_prompt
    same = prompt.identity == default.prompt.identity
    encoder = default if same else PromptEncoder(clip, prompt, cache=default.disk or False)
    stored = proposals.trained.train_text
    probe = min(4, stored.num_classes)
    rows = [int(i) for i in range(stored.features.shape[0]) if int(stored.synonym_class[0, i]) < probe]
    names = [name for synonyms in proposals.trained.vocabulary.classes[:probe] for name in synonyms]
    if len(names) == len(rows):
        fresh = encoder.encode_names(names)
        similarity = float((fresh * stored.features[rows].to(fresh)).sum(dim=1).min())
        if similarity < 0.99:
            raise ZssegError(
                f"this CLIP ('{clip.source}') does not give the text embeddings the proposal network was trained "
                f"against ('{proposals.trained.info.get('clip')}'; cosine {similarity:.3f}); pass that CLIP (--clip)"
            )
    return encoder


__all__ = ["Segmenter", "SegmentationResult", "UNLABELED", "ENSEMBLE_WEIGHT", "CLASSIFIERS"]
