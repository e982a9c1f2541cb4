"""Every method behind one object; the default is the paper's two-stage pipeline.

    segmenter = Segmenter(clip="openai/clip-vit-base-patch16", proposals="selective-search")
    result = segmenter.segment("photo.jpg", "cat; sofa, couch; wall")
    result.label_map  # [H, W] int32, index into result.class_names, -1 where no proposal

Methods (`method=`):

- "two-stage" (default): proposals -> CLIP region classification of each (Eq. 1) -> Eq. 2.
- "fast": the same proposals and Eq. 2, but each mask is classified by pooling dense CLIP
  features inside it (`zsseg.dense_clip.pool_masks`), one CLIP pass over the image (at most
  two 224 windows) instead of one per proposal. An approximation of Eq. 1, never the default.
- "dense-clip": the paper's first FCN baseline, training-free: every pixel classified from
  CLIP's own patch features, sliding windows (`zsseg.dense_clip`); `dense_mode="sclip"` makes
  the patch tokens local.
- "fcn": the paper's retrained FCN (`zsseg train fcn`), ensembled with dense CLIP as the
  paper's code does (lambda 0.7, exponents swapped for unseen classes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pathlib import Path

from torch.nn import functional as F

from .assembly import UNLABELED, assemble, assemble_labels, dense_labels
from .clip import DEFAULT_CLIP, ClipModel, load_clip
from .dense_clip import DEFAULT_OVERLAP, DENSE_MODES, DenseClip, dense_logits, pool_masks
from .errors import ZssegError
from .images import ImageInput, as_rgb_array, image_tensor, resize_image
from .prompts import PromptEncoder, PromptLike, VocabularyEmbedding, load_prompt
from .proposals import GENERATORS, MaskFormerProposals, ProposalGenerator, build_proposal_generator, parse_generator
from .region_classification import RegionClassifier
from .vocabulary import Vocabulary, as_vocabulary

DEFAULT_PROPOSALS = "selective-search"
DEFAULT_MAX_SIZE = 1024
DEFAULT_PROMPT = "imagenet"
ENSEMBLE_WEIGHT = 0.8  # lambda of the ensemble with a proposal network's classifier (the paper's)
FCN_ENSEMBLE_WEIGHT = 0.7  # lambda of the FCN + dense CLIP ensemble (the reference's per-pixel configs)
# Who labels: the ensemble, CLIP alone (Eq. 1 / dense CLIP), or the trained network alone.
CLASSIFIERS = ("ensemble", "clip", "network")
METHODS = ("two-stage", "fast", "dense-clip", "fcn")
PER_PIXEL_METHODS = ("dense-clip", "fcn")  # the methods that label pixels, with no proposals


@dataclass
class SegmentationResult:
    """What `Segmenter.segment` returns.

    Attributes:
        label_map: `[H, W]` int32 at the input image's size; class index, or -1 (`UNLABELED`)
            where no proposal covers the pixel.
        class_names: the vocabulary, one name per class (synonyms joined by ", ").
        scores: `[C, h, w]` float32 Eq. 2 scores at the processing size (h, w), each pixel's
            scores summing to 1 where covered and 0 elsewhere; for the per-pixel methods
            ("dense-clip", "fcn") the class probabilities at 1/4 of the processing size.
        masks: `[K, h, w]` float32 proposals that were classified (non-empty after binarising);
            empty (K = 0) for the per-pixel methods.
        region_probs: `[K, C]` float32 class probabilities of each proposal (Eq. 1, or mask
            pooling in the fast mode).
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
        clip: hub id, local folder, or an already loaded `ClipModel`. Default: the CLIP that
            came with the proposal network (an authors' checkpoint holds one), else ViT-B/16.
        proposals: a generator name ("selective-search", "contour-hierarchy", "sam",
            "sam:MODEL", "mask2former:MODEL") or instance (such as `MaskFormerProposals(weights)`).
        prompt: how class names are put to CLIP's text tower: a template set ("imagenet",
            "vild", "single"), one template ("a sculpture of a {}."), a list of templates, or a
            prompt file (`zsseg prompts select`, `zsseg train prompts`); see `zsseg.prompts`.
            Default: the prompt a proposal network was trained with, else "imagenet".
        network_prompt: the prompt of a trained network's own text classifier (default: the one
            it was trained with). The reference code tests its cross-dataset rows with ViLD's
            templates on both sides (`zsseg.benchmarks`).
        device, dtype: where and how CLIP runs ("cpu"/"cuda", "fp32"/"bf16").
        max_size: images are processed with their longer side at most this many pixels; the
            label map is returned at full size.
        test_size: the shorter side images are processed at (detectron2's test-time resize,
            longer side at most `max_size`); default: a proposal network's own test size, else
            the image's size bounded by `max_size`.
        mask_threshold: Eq. 1 binarises each mask at this value before cropping (0.5, the
            paper's; the reference uses lower ones on some benchmarks).
        max_proposals: K, when `proposals` is a name.
        batch_size: crops per CLIP forward pass.
        ensemble_weight: lambda of the ensemble with a proposal network's own classifier
            ("maskformer" proposals, loaded with `MaskFormerProposals(weights)`): for classes it
            was trained on, p = p_net^lambda * p_clip^(1 - lambda); for the others the exponents
            are swapped, so CLIP decides unseen classes. Unused with training-free proposals.
        classifier: with a proposal network or an FCN, "ensemble" (default), or one part
            alone for ablations (the paper's Table 7): "clip" labels every non-empty mask by Eq. 1
            (or every pixel by dense CLIP) for every class, "network" uses the network's
            probabilities for every class.
        text_cache: keep text features in the disk cache (`zsseg.text_cache`); False encodes
            every vocabulary afresh.
        method: "two-stage" (default), "fast", "dense-clip" or "fcn" (see the module docstring).
        dense_mode: dense CLIP's patch features, "plain" (the paper's) or "sclip" (local).
        overlap: of dense CLIP's sliding 224 windows (default 2/3, the paper's code).
        fcn: for method "fcn", its weights (the --output-dir of `zsseg train fcn`) or a loaded
            `TrainedFcn`. The FCN's lambda defaults to 0.7 (`FCN_ENSEMBLE_WEIGHT`).
    """

    def __init__(
        self,
        clip: str | ClipModel | None = None,
        proposals: str | ProposalGenerator = DEFAULT_PROPOSALS,
        prompt: PromptLike | None = None,
        device: str = "cpu",
        dtype: str = "fp32",
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_proposals: int = 100,
        batch_size: int = 32,
        ensemble_weight: float | None = None,
        classifier: str = "ensemble",
        text_cache: bool = True,
        method: str = "two-stage",
        dense_mode: str = "plain",
        overlap: float = DEFAULT_OVERLAP,
        fcn=None,
        mask_threshold: float = 0.5,
        test_size: int | None = None,
        network_prompt: PromptLike | None = None,
    ):
        if max_size is not None and max_size < 32:
            raise ZssegError(f"max_size must be at least 32 pixels, got {max_size}")
        if test_size is not None and test_size < 32:
            raise ZssegError(f"test_size must be at least 32 pixels, got {test_size}")
        if not 0.0 <= mask_threshold < 1.0:
            raise ZssegError(f"the mask threshold must be in [0, 1), got {mask_threshold}")
        if method not in METHODS:
            raise ZssegError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
        if ensemble_weight is None:
            ensemble_weight = FCN_ENSEMBLE_WEIGHT if method == "fcn" else ENSEMBLE_WEIGHT
        if not 0.0 <= ensemble_weight <= 1.0:
            raise ZssegError(f"ensemble weight must be in [0, 1], got {ensemble_weight}")
        if classifier not in CLASSIFIERS:
            raise ZssegError(f"unknown classifier '{classifier}'; choose from {', '.join(CLASSIFIERS)}")
        if dense_mode not in DENSE_MODES:
            raise ZssegError(f"unknown dense CLIP mode '{dense_mode}'; choose from {', '.join(DENSE_MODES)}")
        if (method == "fcn") != (fcn is not None):
            raise ZssegError("the 'fcn' method needs trained FCN weights (fcn=, --fcn-weights)" if method == "fcn"
                             else f"FCN weights are for the 'fcn' method, not '{method}'")
        if isinstance(proposals, str):
            options = {"device": device} if GENERATORS[parse_generator(proposals)[0]].pretrained else {}
            proposals = build_proposal_generator(proposals, max_proposals=max_proposals, **options)
        per_pixel = method in PER_PIXEL_METHODS
        if method == "dense-clip" and classifier != "ensemble":
            raise ZssegError("the 'dense-clip' method is CLIP alone; --classifier is for maskformer proposals or the fcn method")
        if classifier == "network" and not (isinstance(proposals, MaskFormerProposals) or method == "fcn"):
            raise ZssegError(f"the '{proposals.name}' proposals have no classifier of their own; 'network' needs maskformer "
                             "proposals or the fcn method")
        if clip is None:
            clip = getattr(proposals, "clip", None) or DEFAULT_CLIP
        self.clip = clip if isinstance(clip, ClipModel) else load_clip(clip, device=device, dtype=dtype)
        self.method = method
        self.proposals = proposals
        self.fcn = None
        if method == "fcn":
            from .fcn import TrainedFcn, load_fcn

            self.fcn = fcn if isinstance(fcn, TrainedFcn) else load_fcn(Path(fcn), device=self.clip.device)
        if prompt is None:
            network = self.fcn if self.fcn is not None else getattr(proposals, "trained", None) if not per_pixel else None
            prompt = network.training_prompt if network is not None else DEFAULT_PROMPT
        self.classifier = RegionClassifier(self.clip, prompt=prompt, batch_size=batch_size, text_cache=text_cache,
                                           mask_threshold=mask_threshold)
        self.max_size = max_size
        self.test_size = test_size
        self.ensemble_weight = ensemble_weight
        self.classifier_mode = classifier
        self.dense_mode, self.overlap = dense_mode, overlap
        # Dense CLIP: sliding windows at the processing size, or (fast mode) at most two 224 windows.
        self.dense = DenseClip(self.clip, dense_mode, overlap=0.0 if method == "fast" else overlap)
        # The prompt encoder of a trained network's own text classifier (proposal network or FCN).
        self.network_prompts: PromptEncoder | None = None
        if self.fcn is not None and classifier != "clip":
            self.network_prompts = network_text_encoder(self.fcn, self.fcn.embed_dim, self.clip, self.classifier.prompts,
                                                        network_prompt)
        elif isinstance(proposals, MaskFormerProposals) and classifier != "clip" and not per_pixel:
            self.network_prompts = network_text_encoder(proposals.trained, proposals.embed_dim, self.clip, self.classifier.prompts,
                                                        network_prompt)

    def prepare(self, vocabulary: Vocabulary | str | list[str]) -> Vocabulary:
        """Validate a vocabulary and encode its names (cached), so errors surface before any image."""
        vocabulary = as_vocabulary(vocabulary)
        self.classifier.embed_vocabulary(vocabulary)
        if self.network_prompts is not None:
            self.network_prompts.encode_vocabulary(vocabulary)
        return vocabulary

    def segment(
        self,
        image: ImageInput,
        vocabulary: Vocabulary | str | list[str],
        ground_truth: np.ndarray | None = None,
        seen: list[bool] | np.ndarray | torch.Tensor | None = None,
    ) -> SegmentationResult:
        """Label every pixel of `image` with a class of `vocabulary`.

        Args:
            image: a path, PIL image, or HWC uint8 array.
            vocabulary: a `Vocabulary`, a preset name, "a; b, c" text, or a list of names.
            ground_truth: `[H, W]` label map, only for proposals that need one (the
                "ground-truth" generator: CLIP then classifies the true segments). Such
                proposals are made at full size so that they match the label map exactly.
            seen: `[C]` bool, for the ensemble with a trained network: the classes it takes as
                seen (p_net^lambda * p_clip^(1 - lambda)), the others unseen (exponents
                swapped). Default: the classes whose names it was trained on. A benchmark's
                evaluation passes the benchmark's own split (`zsseg.benchmarks`).
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
        if self.method in PER_PIXEL_METHODS:
            return self._per_pixel(full, vocabulary, text, lap, timings, seen)
        if self.proposals.needs_ground_truth and ground_truth is None:
            raise ZssegError(f"the '{self.proposals.name}' proposals need the image's label map (ground_truth=)")
        small = resize_image(full, self.proposals.proposal_size(full.shape[0], full.shape[1], self.max_size, self.test_size))
        lap("image_loading")
        if self.network_prompts is not None:
            masks, probs = self._ensemble(small, vocabulary, text, lap, seen)
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

    def _per_pixel(self, full: np.ndarray, vocabulary: Vocabulary, text: VocabularyEmbedding, lap, timings: dict,
                   seen=None) -> SegmentationResult:
        """The per-pixel methods: dense CLIP, the FCN, or their ensemble, at 1/4 of the
        processing size, upsampled to the image's size."""
        sizer = self.fcn if self.fcn is not None else self.dense
        small = resize_image(full, sizer.processing_size(full.shape[0], full.shape[1], self.max_size))
        lap("image_loading")
        network = clip_probs = None
        if self.fcn is not None and self.classifier_mode != "clip":
            network = self.fcn.class_probs(self.fcn.predict(small), self.network_prompts.encode_vocabulary(vocabulary))
            lap("network")
        if network is None or self.classifier_mode == "ensemble":
            clip_probs = dense_logits(self.dense.features(small), text).softmax(dim=0).cpu()
            lap("image_encoding")
        if network is None:
            probs = clip_probs
        elif clip_probs is None:
            probs = network
        else:
            probs = self._combine(network, clip_probs, self._seen(seen, self.fcn, vocabulary)[:, None, None])
        labels = dense_labels(probs, full.shape[:2])
        lap("assembly")
        return SegmentationResult(
            label_map=labels.numpy().astype(np.int32),
            class_names=vocabulary.names,
            scores=probs,
            masks=torch.empty(0, *probs.shape[1:]),
            region_probs=torch.empty(0, len(vocabulary)),
            timings=timings,
        )

    @staticmethod
    def _seen(seen, network, vocabulary: Vocabulary) -> torch.Tensor:
        """`[C]` bool: the given split, else the classes `network` was trained on, by name."""
        if seen is None:
            return network.seen_classes(vocabulary)
        seen = torch.as_tensor(np.asarray(seen, dtype=bool))
        if seen.shape != (len(vocabulary),):
            raise ZssegError(f"seen must be one flag per class ({len(vocabulary)}), got shape {tuple(seen.shape)}")
        return seen

    def _combine(self, network: torch.Tensor, clip_probs: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """The ensemble of a trained network's probabilities with CLIP's (the reference code's):
        p_net^lambda * p_clip^(1 - lambda) for the classes it was trained on (`seen`), the
        exponents swapped for the others, so CLIP decides the unseen classes."""
        lam = self.ensemble_weight
        return torch.where(seen, network.pow(lam) * clip_probs.pow(1 - lam), network.pow(1 - lam) * clip_probs.pow(lam))

    def _clip_probs(self, image: np.ndarray, masks: torch.Tensor, text: VocabularyEmbedding, lap) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1: `[K', C]` CLIP probabilities of the masks non-empty at 0.5, and `[K]` which.
        In the fast mode, mask pooling of dense CLIP features stands in for Eq. 1's crops."""
        if self.method == "fast":
            return self._pooled_probs(image, masks, text, lap)
        crops, keep = self.classifier.crops(image_tensor(image), masks)
        lap("crops")
        features = self.classifier.encode_crops(crops)
        lap("image_encoding")
        return self.classifier.scores(features, text)[0], keep

    def _pooled_probs(self, image: np.ndarray, masks: torch.Tensor, text: VocabularyEmbedding, lap) -> tuple[torch.Tensor, torch.Tensor]:
        """The fast mode's approximation of Eq. 1: dense CLIP features of the image at
        `DenseClip.fast_size` (at most two 224 windows), each mask binarised at 0.5 after
        resizing to that size (at the mask threshold) and its cells' features averaged;
        softmax(100 x cos) as Eq. 1.
        A mask too small to cover any cell there is dropped, as an empty one is by Eq. 1."""
        size = self.dense.fast_size(image.shape[0], image.shape[1])
        dense = self.dense.features(resize_image(image, size))
        small = F.interpolate(masks.float()[None], size=size, mode="bilinear", align_corners=False)[0] if len(masks) else masks.new_zeros(0, *size)
        pooled, keep = pool_masks(dense, small, self.classifier.mask_threshold)
        lap("image_encoding")
        return self.classifier.scores(F.normalize(pooled.float(), dim=-1).cpu(), text)[0], keep.cpu()

    def _ensemble(self, image: np.ndarray, vocabulary: Vocabulary, text: VocabularyEmbedding, lap, seen=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks `[Q, h, w]` of a proposal network and the ensemble of its class probabilities
        with CLIP's (the reference code's): a query whose binarised mask is empty keeps the
        network's probabilities only. With `classifier="network"`, the network's alone."""
        proposals: MaskFormerProposals = self.proposals  # type: ignore[assignment]
        masks, embeddings = proposals.predict(image)
        network = proposals.class_probs(embeddings, self.network_prompts.encode_vocabulary(vocabulary))
        lap("proposals")
        if self.classifier_mode == "network":
            return masks, network
        clip_probs = torch.ones_like(network)
        probs, keep = self._clip_probs(image, masks, text, lap)
        clip_probs[keep] = probs
        return masks, self._combine(network, clip_probs, self._seen(seen, proposals, vocabulary)[None])


def network_text_encoder(trained, embed_dim: int, clip: ClipModel, default: PromptEncoder, prompt: PromptLike | None = None) -> PromptEncoder:
    """The prompt encoder for a trained network's text classifier (a proposal network or an
    FCN): `prompt`, else the prompt it was trained with (a learned one is stored in its
    weights), on a CLIP whose text embeddings match those it was trained against (checked with
    the training prompt on a few of its training classes, so that a different CLIP is an error
    rather than silent noise).

    `trained` has `training_prompt`, `train_text`, `vocabulary` and `info` (its JSON)."""
    if clip.embed_dim != embed_dim:
        raise ZssegError(
            f"the network was trained against {embed_dim}-d CLIP text embeddings "
            f"('{trained.info.get('clip')}'), but this CLIP's are {clip.embed_dim}-d; pass that CLIP (--clip)"
        )
    training = trained.training_prompt
    encoder = _encoder(training, clip, default)
    if getattr(trained, "clip", None) is clip:  # the network came with this very CLIP: nothing to check
        return encoder if prompt is None else _encoder(load_prompt(prompt), clip, default)
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
    """`default` where it encodes with `prompt`, else a new encoder sharing its disk cache."""
    return default if prompt.identity == default.prompt.identity else PromptEncoder(clip, prompt, cache=default.disk or False)


__all__ = ["Segmenter", "SegmentationResult", "UNLABELED", "ENSEMBLE_WEIGHT", "FCN_ENSEMBLE_WEIGHT", "CLASSIFIERS", "METHODS", "PER_PIXEL_METHODS"]
