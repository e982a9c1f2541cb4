"""Every method behind one object; the default is the paper's two-stage pipeline.

    segmenter = Segmenter(clip="openai/clip-vit-base-patch16", proposals="selective-search")
    result = segmenter.segment("photo.jpg", "cat; sofa, couch; wall")
    result.label_map  # [H, W] int32, index into result.class_names, -1 where no proposal

A `Segmenter` is built from a `zsseg.config.SegmenterConfig` (or from flat options that make
one: `Segmenter(clip=..., max_proposals=50)`): it loads the models, resizes each image to its
method's processing size, asks the method (`zsseg.methods`: two-stage, fast, dense-clip, fcn,
and the ensemble with a trained proposal network) for proposals and their class probabilities,
or for per-pixel probabilities, and assembles them into the label map at full size (Eq. 2).
`classify` labels masks that already exist instead of proposals.

`segment` is two halves, `finish(prepare_image(image))`: the first runs no model where the
method allows (resizing, Selective Search, the crops for CLIP), so a folder run prepares the
next image on a worker thread while CLIP works on this one (`zsseg.runs`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .assembly import UNLABELED, assemble_labels, dense_labels
from .catalogue import CLASSIFIERS, METHODS, PER_PIXEL_METHODS
from .classification.regions import RegionClassifier
from .config import SegmenterConfig, load_config
from .data.images import ImageInput, as_rgb_array, resize_image
from .data.vocabulary import Vocabulary, as_vocabulary
from .errors import SettingError, ZssegError
from .methods import ENSEMBLE_WEIGHT, FCN_ENSEMBLE_WEIGHT, METHODS as _METHODS, Method, Parts, build_method
from .models.loading import ClipModel
from .models.precision import resolve_precision
from .prompts.encoding import PromptEncoder
from .proposals import MaskFormerConfig, MaskFormerProposals, ProposalGenerator
from .runs.timing import lap, timed
from .outputs.writers import SOFTWARE
from .results import SegmentationResult

DEFAULT_PROMPT = "imagenet"


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


class Segmenter:
    """Holds the loaded models; segments any number of images with any vocabulary.

    Args:
        config: a `SegmenterConfig`, or a JSON file holding one (an output's record, see
            `zsseg.config.load_config`); default: the defaults.
        options: settings in place of the config's, by their flat names (`zsseg.config.OPTIONS`):
            method, clip, device, dtype, tokenizer, proposals, max_proposals, proposal_weights,
            prompt, temperature, batch_size, text_cache, mask_threshold, crop, ensemble_weight,
            classifier, network_prompt, seen, dense_mode, overlap, max_size, test_size, fcn.
            `clip`, `proposals` and `fcn` may also be models already loaded: a `ClipModel`, a
            `ProposalGenerator` (such as `MaskFormerProposals(weights)`), a `TrainedFcn`.

    A setting the chosen method or generator does not use is a `SettingError`, naming it.
    """

    def __init__(self, config: SegmenterConfig | str | Path | None = None, **options):
        if isinstance(config, (str, Path)):
            config = load_config(config)[0]
        loaded = loaded_models(options)
        generator = loaded.get("proposals")
        self.config = config = SegmenterConfig.from_options(config, **options)
        given = loaded.get("clip")
        if given is None and generator is None and config.clip.source is not None and _checkpoint_with_clip(config.proposals):
            given = config.clip.load()  # loaded first: where it is the checkpoint's own CLIP, it takes that one's place
        self.proposals = generator if generator is not None else self._generator(given)
        own = getattr(self.proposals, "region_clip", None)  # a checkpoint's CLIP, for Eq. 1
        self.clip = given or (own if config.clip.source is None and own is not None else config.clip.load())
        fcn = loaded.get("fcn") or self._fcn()
        self.classifier = RegionClassifier.from_config(self.clip, config.region, self._default_prompt(fcn))
        ensemble = config.ensemble
        if ensemble is not None and ensemble.weight is None:
            ensemble = dataclasses.replace(ensemble, weight=_METHODS[config.method].default_ensemble_weight)
        if ensemble is not None and ensemble.weight == 0 and ensemble.classifier == "ensemble" and config.method != "fcn":
            ensemble = dataclasses.replace(ensemble, classifier="clip")  # the reference's weight <= 0 is its CLIP-only branch
        self.ensemble = ensemble
        self.implementation: Method = build_method(config.method, Parts(self.clip, self.classifier, self.proposals, fcn, config.dense,
                                                                        ensemble))

    def _generator(self, given: ClipModel | None) -> ProposalGenerator | None:
        """The proposal generator of the config; a network runs under bf16 autocast where CLIP
        runs in bf16, and an authors' checkpoint's CLIP takes CLIP's precision (or `given`'s
        place: see `load_reference_checkpoint`)."""
        config = self.config
        if config.proposals is None:
            return None
        clip = config.clip
        network_dtype = "bf16" if resolve_precision(clip.precision, clip.device) == "bf16" else "fp32"
        return config.proposals.build(clip.device, clip=given if given is not None else clip.source, tokenizer=clip.tokenizer,
                                      dtype=network_dtype, clip_precision=clip.precision)

    def _fcn(self):
        if self.config.fcn is None:
            return None
        from .networks.fcn import load_fcn

        return load_fcn(Path(self.config.fcn.weights), device=self.clip.device)

    def _default_prompt(self, fcn):
        """Eq. 1's prompt where the config names none: a separate region adapter's, else the
        prompt the network was trained with, else CLIP's ImageNet templates."""
        network = fcn if fcn is not None else self.proposals.trained if isinstance(self.proposals, MaskFormerProposals) else None
        if network is None:
            return DEFAULT_PROMPT
        return getattr(network, "region_prompt", None) or network.training_prompt

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def ensemble_weight(self) -> float | None:
        """lambda of the ensemble with a trained network, as it runs (None without one)."""
        return None if self.ensemble is None else self.ensemble.weight

    @property
    def classifier_mode(self) -> str:
        """Who labels: "ensemble", "clip" or "network" (ablations; "ensemble" without a network)."""
        return "ensemble" if self.ensemble is None else self.ensemble.classifier

    @property
    def max_size(self) -> int | None:
        return self.config.size.max_size

    @property
    def test_size(self) -> int | None:
        return self.config.size.test_size

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

    def record(self, vocabulary: Vocabulary | None = None) -> dict:
        """What made this segmenter's labels, as JSON values: the configuration, the vocabulary,
        and the identities of the models it loaded (source, fingerprints, precision). Every
        output records it under "config"; `Segmenter(config=that file)` rebuilds the segmenter
        and `zsseg segment --skip-existing` compares it."""
        models = {"clip": {"source": self.clip.source, "family": self.clip.family, "text": self.clip.text_fingerprint(self.classifier.prompts.disk)[:16],
                           "precision": self.clip.precision},
                  "prompt": self.classifier.prompts.prompt.describe()}
        if self.network_prompts is not None:
            models["network_prompt"] = self.network_prompts.prompt.describe()
        if self.proposals is not None and getattr(self.proposals, "source", None):
            models["proposals"] = {"source": self.proposals.source}
            self_training = getattr(getattr(self.proposals, "trained", None), "self_training", None)
            if self_training:  # retrained on pseudo-labels: of which images
                models["proposals"]["self_training"] = self_training
        if self.ensemble is not None:  # as it runs: lambda only where both parts take part
            alone = self.ensemble.classifier != "ensemble"
            models["ensemble"] = {"weight": None if alone else self.ensemble.weight, "classifier": self.ensemble.classifier}
        record = {"zsseg": SOFTWARE, **self.config.to_dict(), "models": models}
        if vocabulary is not None:
            record["vocabulary"] = [list(synonyms) for synonyms in as_vocabulary(vocabulary).classes]
        return record

    def prepare(self, vocabulary: Vocabulary | str | list[str]) -> Vocabulary:
        """Validate a vocabulary and encode its names (cached), so errors surface before any image."""
        vocabulary = as_vocabulary(vocabulary)
        self.classifier.embed_vocabulary(vocabulary)
        self.implementation.prepare(vocabulary)
        return vocabulary

    def segment(self, image: ImageInput, vocabulary: Vocabulary | str | list[str]) -> SegmentationResult:
        """Label every pixel of `image` (a path, PIL image, or HWC uint8 array) with a class of
        `vocabulary` (a `Vocabulary`, a preset name, "a; b, c" text, or a list of names):
        `finish(prepare_image(image), vocabulary)`."""
        return self.finish(self.prepare_image(image), vocabulary)

    def classify(self, image: ImageInput, masks, vocabulary: Vocabulary | str | list[str]) -> SegmentationResult:
        """Label masks that already exist, instead of proposals: each by Eq. 1 at the image's
        full size, and every pixel by Eq. 2 over the masks covering it (`zsseg classify`).

        Args:
            image: a path, PIL image, or HWC uint8 array.
            masks: a `MaskSet` (`zsseg.data.mask_files.read_masks`: SAM's output, COCO files,
                PNGs, ...) or `[K, H, W]` bool / 0-1 masks at the image's size; they may overlap.
            vocabulary: as `segment`'s.
        """
        from .classification.masks import classify_masks

        if self.method != "two-stage" or isinstance(self.proposals, MaskFormerProposals):
            raise SettingError("method", "given masks are classified by Eq. 1: {setting} two-stage, with training-free proposals")
        return classify_masks(self.classifier, image, masks, vocabulary)

    def prepare_image(self, image: ImageInput, masks: torch.Tensor | None = None) -> PreparedImage:
        """The first half of `segment`, which runs no model where the method allows (the
        two-stage and fast methods with Selective Search or contour proposals): the image at its
        processing size, its proposals and their crops for CLIP. With `masks` (`[K, H, W]` at
        the image's size, such as a label map's segments), those masks instead of proposals, at
        full size. Safe to call on another thread while `finish` runs on an earlier image."""
        with timed() as timer:
            full = as_rgb_array(image)
            method = self.implementation
            if masks is None:
                size = method.processing_size(full.shape[0], full.shape[1], self.config.size)
                small = resize_image(full, size)
            elif tuple(masks.shape[1:]) != tuple(full.shape[:2]):
                raise ZssegError(f"the masks are {tuple(masks.shape[1:])} but the image is {tuple(full.shape[:2])}: they must match")
            else:
                small = full
            lap("image_loading")
            work = method.prepare_image(small, masks)
        return PreparedImage(small, full.shape[:2], work, timer.timings)

    def finish(self, prepared: PreparedImage, vocabulary: Vocabulary | str | list[str]) -> SegmentationResult:
        """The second half of `segment`: the models (CLIP, a network) on what `prepare_image`
        made, then Eq. 2 at full size. The result's timings hold both halves' stages."""
        with timed(dict(prepared.timings)) as timer:
            vocabulary = as_vocabulary(vocabulary)
            text = self.classifier.embed_vocabulary(vocabulary)
            lap("text_encoding")
            output = self.implementation.scores(prepared.image, prepared.work, vocabulary, text)
            if output.pixel_probs is not None:
                labels = dense_labels(output.pixel_probs, prepared.full_size)
            else:
                labels = assemble_labels(output.masks[output.keep], output.region_probs[output.keep], size=prepared.full_size)
            lap("assembly")
        return SegmentationResult(
            label_map=labels.numpy().astype(np.int32),
            class_names=vocabulary.names,
            masks=output.masks,
            keep=output.keep,
            region_probs=output.region_probs,
            pixel_probs=output.pixel_probs,
            timings=timer.timings,
        )


def _checkpoint_with_clip(proposals) -> bool:
    """Whether the proposals are an authors' checkpoint (which holds a CLIP of its own)."""
    from .networks.maskformer.reference import is_reference_checkpoint

    return isinstance(proposals, MaskFormerConfig) and is_reference_checkpoint(proposals.weights)


def loaded_models(options: dict) -> dict:
    """The models already loaded among `options` (a `ClipModel` as clip, a `ProposalGenerator`
    as proposals, a `TrainedFcn` as fcn), taken out of them; `options` keeps their settings in
    their place, so that the configuration records them (a generator with the proposal options
    given beside it applied)."""
    loaded = {name: options.pop(name) for name in ("clip", "proposals", "fcn") if _is_loaded(options.get(name))}
    if loaded.get("proposals") is not None:
        loaded["proposals"] = _with_settings(loaded["proposals"], options)
        options["proposals"] = loaded["proposals"].config
    if loaded.get("clip") is not None:
        clip = loaded["clip"]
        options.update(clip=clip.source, dtype=clip.precision, device=str(clip.device))
    if loaded.get("fcn") is not None:
        options["fcn"] = getattr(loaded["fcn"], "source", "(in memory)")
    return loaded


def _is_loaded(value) -> bool:
    """Whether an option's value is a loaded model (not a name, a path or settings)."""
    from .networks.fcn import TrainedFcn

    return isinstance(value, (ClipModel, ProposalGenerator, TrainedFcn))


def _with_settings(generator: ProposalGenerator, options: dict) -> ProposalGenerator:
    """A loaded generator with the proposal options given beside it applied (a copy that shares
    its network), so that none is silently dropped."""
    changes = {}
    if options.get("max_proposals") is not None:
        changes["max_proposals"] = options.pop("max_proposals")
    if options.get("proposal_weights") is not None:
        raise SettingError("proposal_weights", "{setting} names the weights of proposals to load; these proposals are loaded already")
    return generator.with_settings(**changes) if changes else generator


__all__ = ["PreparedImage", "Segmenter", "SegmentationResult", "UNLABELED", "ENSEMBLE_WEIGHT", "FCN_ENSEMBLE_WEIGHT", "CLASSIFIERS", "METHODS",
           "PER_PIXEL_METHODS"]
