"""Every method behind one object; the default is the paper's two-stage pipeline.

    segmenter = Segmenter(clip="openai/clip-vit-base-patch16", proposals="selective-search")
    result = segmenter.segment("photo.jpg", "cat; sofa, couch; wall")
    result.label_map  # [H, W] int32, index into result.class_names, -1 where no proposal

`Segmenter` loads the models, checks the settings, resizes each image to its method's
processing size, asks the method (`zsseg.methods`: two-stage, fast, dense-clip, fcn, and the
ensemble with a trained proposal network) for proposals and their class probabilities, or for
per-pixel probabilities, and assembles them into the label map at full size (Eq. 2).

`segment` is two halves, `finish(prepare_image(image))`: the first runs no model where the
method allows (resizing, Selective Search, the crops for CLIP), so a folder run prepares the
next image on a worker thread while CLIP works on this one (`zsseg.runs.read_ahead`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .assembly import UNLABELED, assemble, assemble_labels, dense_labels
from .catalogue import CLASSIFIERS, DEFAULT_MAX_SIZE, DEFAULT_PROPOSALS, METHODS as DECLARATIONS, PER_PIXEL_METHODS
from .models.loading import DEFAULT_CLIP, ClipModel, load_clip
from .classification.dense import DEFAULT_OVERLAP, DENSE_MODES
from .errors import ZssegError
from .data.images import ImageInput, as_rgb_array, resize_image
from .methods import ENSEMBLE_WEIGHT, FCN_ENSEMBLE_WEIGHT, METHODS as _METHODS, Method, Parts, build_method, check_options
from .prompts.encoding import PromptEncoder, PromptLike
from .proposals import GENERATORS, MaskFormerProposals, ProposalGenerator, build_proposal_generator, parse_generator
from .classification.regions import CropConfig, RegionClassifier
from .data.vocabulary import Vocabulary, as_vocabulary
from .outputs.writers import SOFTWARE

DEFAULT_PROMPT = "imagenet"
METHODS = tuple(DECLARATIONS)  # the names `method` takes


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
            Computed when first read (the label map does not need them).
        masks: `[K, h, w]` float32 proposals that were classified (non-empty after binarising);
            empty (K = 0) for the per-pixel methods.
        region_probs: `[K, C]` float32 class probabilities of each proposal (Eq. 1, or mask
            pooling in the fast mode).
        timings: seconds spent in each stage.
    """

    label_map: np.ndarray
    class_names: list[str]
    masks: torch.Tensor
    region_probs: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)
    pixel_probs: torch.Tensor | None = field(default=None, repr=False)  # the per-pixel methods' scores
    _scores: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def scores(self) -> torch.Tensor:
        if self._scores is None:
            self._scores = self.pixel_probs if self.pixel_probs is not None else assemble(self.masks, self.region_probs)
        return self._scores

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
        clip: anything `load_clip` takes (hub id, folder, OpenAI-layout file: CLIP ViTs and
            ResNets, SigLIP), or an already loaded `ClipModel`: Eq. 1's CLIP. Default: the CLIP
            that came with the proposal network (an authors' checkpoint holds one; Eq. 1 takes
            its separate region adapter's where it has one), else ViT-B/16. A network that came
            with a CLIP keeps it for its own classifier, as the reference does.
        proposals: a generator name ("selective-search", "contour-hierarchy", "sam",
            "sam:MODEL", "mask2former:MODEL") or instance (such as `MaskFormerProposals(weights)`).
        prompt: how class names are put to CLIP's text tower: a template set ("imagenet",
            "vild", "single"), one template ("a sculpture of a {}."), a list of templates, or a
            prompt file (`zsseg prompts select`, `zsseg train prompts`); see `zsseg.prompts.encoding`.
            Default: the prompt a proposal network was trained with (an authors' checkpoint with
            a separate region adapter: that adapter's), else "imagenet".
        network_prompt: the prompt of a trained network's own text classifier (default: the one
            it was trained with). The reference code tests its cross-dataset rows with ViLD's
            templates on both sides (`zsseg.evaluation.reference_settings`).
        device, dtype: where and how CLIP runs ("cpu"/"cuda"; "fp32", "bf16", "fp16", "int8", or
            "auto": see `zsseg.models.precision.resolve_precision`).
        max_size: images are processed with their longer side at most this many pixels; the
            label map is returned at full size.
        test_size: the shorter side images are processed at (detectron2's test-time resize,
            longer side at most `max_size`); default: a proposal network's own test size, else
            the image's size bounded by `max_size`.
        mask_threshold: Eq. 1 binarises each mask at this value before cropping (0.5, the
            paper's; the reference uses lower ones on some benchmarks).
        crop: the rest of how Eq. 1 crops a mask (`CropConfig`: fill, box expansion, matting,
            resizing), for the reference's ablations; two-stage only.
        max_proposals: K, when `proposals` is a name.
        batch_size: crops per CLIP forward pass.
        ensemble_weight: lambda of the ensemble with a proposal network's own classifier
            ("maskformer" proposals, loaded with `MaskFormerProposals(weights)`): for classes it
            was trained on, p = p_net^lambda * p_clip^(1 - lambda); for the others the exponents
            are swapped, so CLIP decides unseen classes. 0 is CLIP alone (`classifier="clip"`),
            as the reference's weight at or below 0. Unused with training-free proposals.
        classifier: with a proposal network or an FCN, "ensemble" (default), or one part
            alone for ablations (the paper's Table 7): "clip" labels every non-empty mask by Eq. 1
            (or every pixel by dense CLIP) for every class, "network" uses the network's
            probabilities for every class.
        text_cache: keep text features in the disk cache (`zsseg.prompts.text_cache`); False encodes
            every vocabulary afresh.
        method: "two-stage" (default), "fast", "dense-clip" or "fcn" (see the module docstring).
        dense_mode: dense CLIP's patch features, "plain" (the paper's) or "sclip" (local).
        overlap: of dense CLIP's sliding 224 windows (default 2/3, the paper's code).
        tokenizer: CLIP's tokenizer for a `clip` checkpoint that carries none (OpenAI's and
            open_clip's formats; see `load_clip`).
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
        mask_threshold: float | None = None,
        test_size: int | None = None,
        network_prompt: PromptLike | None = None,
        tokenizer: str | None = None,
        crop: CropConfig | None = None,
    ):
        if max_size is not None and max_size < 32:
            raise ZssegError(f"max_size must be at least 32 pixels, got {max_size}")
        if test_size is not None and test_size < 32:
            raise ZssegError(f"test_size must be at least 32 pixels, got {test_size}")
        if crop is not None and mask_threshold is not None and crop.threshold != mask_threshold:
            raise ZssegError(f"two mask thresholds: mask_threshold={mask_threshold} and crop.threshold={crop.threshold}")
        crop = CropConfig(**({} if mask_threshold is None else {"threshold": mask_threshold})) if crop is None else crop
        if method not in METHODS:
            raise ZssegError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
        kind = _METHODS[method]
        if ensemble_weight is not None and not 0.0 <= ensemble_weight <= 1.0:
            raise ZssegError(f"ensemble weight must be in [0, 1], got {ensemble_weight}")
        if classifier not in CLASSIFIERS:
            raise ZssegError(f"unknown classifier '{classifier}'; choose from {', '.join(CLASSIFIERS)}")
        if dense_mode not in DENSE_MODES:
            raise ZssegError(f"unknown dense CLIP mode '{dense_mode}'; choose from {', '.join(DENSE_MODES)}")
        if method == "fcn" and fcn is None:
            raise ZssegError("the 'fcn' method needs trained FCN weights (fcn=, --fcn-weights)")
        check_options(kind, {"fcn": fcn is not None, "dense_mode": dense_mode != "plain", "overlap": overlap != DEFAULT_OVERLAP,
                             "mask_threshold": crop.threshold != CropConfig.threshold, "test_size": test_size is not None,
                             "crop": crop != CropConfig(threshold=crop.threshold),
                             "classifier": classifier != "ensemble", "ensemble_weight": ensemble_weight is not None})
        if isinstance(proposals, str):
            options = {"device": device} if GENERATORS[parse_generator(proposals)[0]].pretrained else {}
            proposals = build_proposal_generator(proposals, max_proposals=max_proposals, **options)
        trained = isinstance(proposals, MaskFormerProposals) and not kind.per_pixel
        if trained and ensemble_weight == 0 and classifier == "ensemble":
            classifier = "clip"  # the reference's CLIP_ENSEMBLE_WEIGHT <= 0 is its CLIP-only branch, not the formula at 0
        if classifier == "network" and not (trained or method == "fcn"):
            raise ZssegError(f"the '{proposals.name}' proposals have no classifier of their own; 'network' needs maskformer "
                             "proposals or the fcn method")
        if clip is None:
            clip = getattr(proposals, "region_clip", None) or DEFAULT_CLIP
        self.clip = clip if isinstance(clip, ClipModel) else load_clip(clip, device=device, dtype=dtype, tokenizer=tokenizer)
        self.method = method
        self.proposals = proposals
        fcn_network = self.fcn_source = None
        if method == "fcn":
            from .networks.fcn import TrainedFcn, load_fcn

            fcn_network = fcn if isinstance(fcn, TrainedFcn) else load_fcn(Path(fcn), device=self.clip.device)
            self.fcn_source = "(in memory)" if isinstance(fcn, TrainedFcn) else str(fcn)
        if prompt is None:  # Eq. 1's: a separate region adapter's, else the network's own, else zsseg's
            network = fcn_network if fcn_network is not None else proposals.trained if trained else None
            region = getattr(network, "region_prompt", None)
            prompt = region or (network.training_prompt if network is not None else DEFAULT_PROMPT)
        self.classifier = RegionClassifier(self.clip, prompt=prompt, batch_size=batch_size, text_cache=text_cache, crop=crop)
        self.max_size = max_size
        self.test_size = test_size
        self.ensemble_weight = kind.default_ensemble_weight if ensemble_weight is None else ensemble_weight
        self.classifier_mode = classifier
        self.dense_mode, self.overlap = dense_mode, overlap
        self.implementation: Method = build_method(method, Parts(
            clip=self.clip, classifier=self.classifier, proposals=proposals, fcn=fcn_network, dense_mode=dense_mode,
            overlap=overlap, ensemble_weight=self.ensemble_weight, classifier_mode=classifier, network_prompt=network_prompt))

    def settings(self) -> dict:
        """What determines this segmenter's labels, as JSON values: recorded in every output's
        JSON, and compared by `zsseg segment --skip-existing`. Models are named by where they
        were loaded from, with the CLIP's text-tower fingerprint."""
        proposals = self.proposals
        network = self.network_prompts
        return {
            "zsseg": SOFTWARE,
            "method": self.method,
            "clip": self.clip.source,
            "clip_text": self.clip.text_fingerprint()[:16],
            "dtype": self.clip.precision,
            "prompt": self.classifier.prompts.prompt.describe(),
            "network_prompt": network.prompt.describe() if network is not None else None,
            "proposals": None if self.implementation.per_pixel else proposals.name,
            "proposal_model": None if self.implementation.per_pixel else getattr(proposals, "source", None),
            "max_proposals": None if self.implementation.per_pixel else proposals.max_proposals,
            "fcn": self.fcn_source,
            "max_size": self.max_size,
            "test_size": self.test_size,
            "mask_threshold": self.classifier.mask_threshold,
            **({} if self.classifier.crop == CropConfig(threshold=self.classifier.mask_threshold) else
               {"crop": {k: v for k, v in asdict(self.classifier.crop).items() if k != "threshold"}}),
            "ensemble_weight": self.ensemble_weight if network is not None else None,
            "classifier": self.classifier_mode,
            "dense_mode": self.dense_mode if self.dense is not None else None,
            "overlap": self.overlap if self.dense is not None else None,
        }

    @property
    def network_prompts(self) -> PromptEncoder | None:
        """The prompt encoder of a trained network's own text classifier (proposal network or
        FCN), where the method ensembles with one."""
        return self.implementation.network_prompts

    @property
    def dense(self):
        """Dense CLIP (`zsseg.classification.dense.DenseClip`) of the methods that use it, else None."""
        return getattr(self.implementation, "dense", None)

    @property
    def fcn(self):
        """The trained FCN of the fcn method, else None."""
        return getattr(self.implementation, "fcn", None)

    def prepare(self, vocabulary: Vocabulary | str | list[str]) -> Vocabulary:
        """Validate a vocabulary and encode its names (cached), so errors surface before any image."""
        vocabulary = as_vocabulary(vocabulary)
        self.classifier.embed_vocabulary(vocabulary)
        self.implementation.prepare(vocabulary)
        return vocabulary

    def segment(
        self,
        image: ImageInput,
        vocabulary: Vocabulary | str | list[str],
        ground_truth: np.ndarray | None = None,
        seen: list[bool] | np.ndarray | torch.Tensor | None = None,
    ) -> SegmentationResult:
        """Label every pixel of `image` with a class of `vocabulary`: `finish(prepare_image(...))`.

        Args:
            image: a path, PIL image, or HWC uint8 array.
            vocabulary: a `Vocabulary`, a preset name, "a; b, c" text, or a list of names.
            ground_truth: `[H, W]` label map, only for proposals that need one (the
                "ground-truth" generator: CLIP then classifies the true segments). Such
                proposals are made at full size so that they match the label map exactly.
            seen: `[C]` bool, for the ensemble with a trained network: the classes it takes as
                seen (p_net^lambda * p_clip^(1 - lambda)), the others unseen (exponents
                swapped). Default: the classes whose names it was trained on. A benchmark's
                evaluation passes the benchmark's own split (`zsseg.evaluation.reference_settings`).
        """
        return self.finish(self.prepare_image(image, ground_truth), vocabulary, seen)

    def prepare_image(self, image: ImageInput, ground_truth: np.ndarray | None = None) -> PreparedImage:
        """The first half of `segment`, which runs no model where the method allows (the
        two-stage and fast methods with Selective Search, contour or ground-truth proposals):
        the image at its processing size, its proposals and their crops for CLIP. Safe to call
        on another thread while `finish` runs on an earlier image (`zsseg.runs.read_ahead`)."""
        clock = _Clock()
        full = as_rgb_array(image)
        method = self.implementation
        small = resize_image(full, method.processing_size(full.shape[0], full.shape[1], self.max_size, self.test_size))
        clock.lap("image_loading")
        work = method.prepare_image(small, ground_truth=ground_truth, lap=clock.lap)
        return PreparedImage(small, full.shape[:2], work, clock.timings)

    def finish(
        self,
        prepared: PreparedImage,
        vocabulary: Vocabulary | str | list[str],
        seen: list[bool] | np.ndarray | torch.Tensor | None = None,
    ) -> SegmentationResult:
        """The second half of `segment`: the models (CLIP, a network) on what `prepare_image`
        made, then Eq. 2 at full size. The result's timings hold both halves' stages."""
        clock = _Clock(dict(prepared.timings))
        vocabulary = as_vocabulary(vocabulary)
        text = self.classifier.embed_vocabulary(vocabulary)
        clock.lap("text_encoding")
        method = self.implementation
        output = method.scores(prepared.image, prepared.work, vocabulary, text, seen=seen, lap=clock.lap)
        if method.per_pixel:
            labels = dense_labels(output.probs, prepared.full_size)
        else:
            labels = assemble_labels(output.masks, output.probs, size=prepared.full_size)
        clock.lap("assembly")
        return SegmentationResult(
            label_map=labels.numpy().astype(np.int32),
            class_names=vocabulary.names,
            masks=output.masks,
            region_probs=output.probs if not method.per_pixel else torch.empty(0, len(vocabulary)),
            timings=clock.timings,
            pixel_probs=output.probs if method.per_pixel else None,
        )


@dataclass
class PreparedImage:
    """An image after `Segmenter.prepare_image`, ready for `Segmenter.finish`.

    Attributes:
        image: HWC uint8 at the method's processing size.
        full_size: (H, W) of the input image, the label map's size.
        work: what the method prepared (`Method.prepare_image`: proposals and crops), or None.
        timings: seconds spent so far in each stage.
    """

    image: np.ndarray
    full_size: tuple[int, int]
    work: object
    timings: dict[str, float]


class _Clock:
    """Seconds spent in each stage: `lap(stage)` adds the time since the previous lap."""

    def __init__(self, timings: dict[str, float] | None = None):
        self.timings = {} if timings is None else timings
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now

__all__ = ["PreparedImage", "Segmenter", "SegmentationResult", "UNLABELED", "ENSEMBLE_WEIGHT", "FCN_ENSEMBLE_WEIGHT", "CLASSIFIERS", "METHODS", "PER_PIXEL_METHODS"]
