"""One configuration of a segmenter, composed of each stage's own settings, to JSON and back.

    config = SegmenterConfig(proposals=SelectiveSearchConfig(max_proposals=50))
    config = SegmenterConfig.from_options(clip="openai/clip-vit-base-patch16", max_proposals=50)
    segmenter = Segmenter(config)
    SegmenterConfig.from_dict(config.to_dict()) == config
    config, vocabulary = load_config("outputs/photo.json")  # what made an output's labels

Each stage's settings are a dataclass beside its code: the CLIP (`ClipConfig`), the proposals
(each generator's `Config`: `SelectiveSearchConfig`, `SamConfig`, `MaskFormerConfig`, ...),
Eq. 1 (`RegionConfig` with its `CropConfig`), the ensemble with a trained network
(`EnsembleConfig`), dense CLIP (`DenseConfig`), the image size (`SizeConfig`) and the FCN
(`FcnConfig`). A setting that the chosen method or generator does not use is an error
(`SettingError`), never dropped. Every output zsseg writes records the configuration that made
it, with the vocabulary and the identities of the models (`Segmenter.record`); `load_config`
reads such a record, or a file holding a configuration alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .catalogue import CLASSIFIERS, METHODS, PER_PIXEL_METHODS
from .classification.dense import DenseConfig
from .classification.regions import CropConfig, RegionConfig
from .data.images import SizeConfig
from .data.vocabulary import Vocabulary
from .errors import SettingError, ZssegError
from .methods.base import EnsembleConfig
from .methods.fcn import FcnConfig
from .models.loading import ClipConfig
from .proposals import GENERATORS, ProposalConfig, parse_generator, proposal_config
from .proposals.maskformer import MaskFormerConfig
from .settings import from_json, to_json

#: What the chosen method, generator and network make of a part left to them.
IMPLIED = object()

#: Each option of `SegmenterConfig.from_options` (and of `Segmenter`'s shortcut), and what uses it.
OPTIONS = {
    "method": "every segmenter", "clip": "every segmenter", "device": "every segmenter", "dtype": "every segmenter",
    "tokenizer": "every segmenter",
    "proposals": "the proposal methods (two-stage, fast)", "max_proposals": "the proposal methods (two-stage, fast)",
    "proposal_weights": "maskformer proposals",
    "prompt": "every segmenter", "temperature": "every segmenter", "batch_size": "every segmenter", "text_cache": "every segmenter",
    "mask_threshold": "the proposal methods (two-stage, fast)", "crop": "Eq. 1's crops (method two-stage)",
    "mask_fill": "Eq. 1's crops (method two-stage)", "mask_expand_ratio": "Eq. 1's crops (method two-stage)",
    "mask_matting": "Eq. 1's crops (method two-stage)", "resize_crops": "Eq. 1's crops (method two-stage)",
    "ensemble_weight": "maskformer proposals or method fcn", "classifier": "maskformer proposals or method fcn",
    "network_prompt": "maskformer proposals or method fcn", "seen": "maskformer proposals or method fcn",
    "dense_mode": "the methods with dense CLIP features (fast, dense-clip, fcn)",
    "overlap": "the methods with sliding windows (dense-clip, fcn)",
    "max_size": "every segmenter", "test_size": "the proposal methods (two-stage, fast)", "fcn": "method fcn",
}
#: The options of Eq. 1's crop settings (`CropConfig`'s fields), besides the mask threshold.
CROP_OPTIONS = {"mask_fill": "fill", "mask_expand_ratio": "expand_ratio", "mask_matting": "matting", "resize_crops": "resize"}
#: Keys of an output's record besides the configuration's own.
RECORD_KEYS = ("zsseg", "vocabulary", "models", "masks")


def _not_for(setting: str, what: str) -> SettingError:
    return SettingError(setting, f"{{setting}} is for {OPTIONS[setting]}, not {what}")


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that decides a segmenter's labels, but the vocabulary (given per image).

    Attributes:
        method: "two-stage" (the paper's), "fast", "dense-clip" or "fcn" (`zsseg.methods`).
        clip: the vision-language model (`ClipConfig`).
        proposals: the mask proposal generator's settings, for the proposal methods (default
            Selective Search's); None for the per-pixel ones.
        region: Eq. 1 (`RegionConfig`: the prompt, the crops, the batch).
        ensemble: with a trained network (maskformer proposals, or the fcn method), its
            ensemble with CLIP (`EnsembleConfig`); None otherwise.
        dense: dense CLIP's features and windows (`DenseConfig`) for fast, dense-clip and fcn;
            None otherwise.
        size: the size images are processed at (`SizeConfig`).
        fcn: the trained FCN of the fcn method (`FcnConfig`).

    Parts left out take what the method and generator imply (proposals, ensemble, dense).
    """

    method: str = "two-stage"
    clip: ClipConfig = ClipConfig()
    proposals: ProposalConfig | None = field(default=IMPLIED)  # type: ignore[assignment]
    region: RegionConfig = RegionConfig()
    ensemble: EnsembleConfig | None = field(default=IMPLIED)  # type: ignore[assignment]
    dense: DenseConfig | None = field(default=IMPLIED)  # type: ignore[assignment]
    size: SizeConfig = SizeConfig()
    fcn: FcnConfig | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise SettingError("method", f"unknown {{setting}} '{self.method}'; choose from {', '.join(METHODS)}")
        per_pixel = self.method in PER_PIXEL_METHODS
        if self.proposals is IMPLIED:
            object.__setattr__(self, "proposals", None if per_pixel else GENERATORS["selective-search"].Config())
        if self.ensemble is IMPLIED:
            object.__setattr__(self, "ensemble", EnsembleConfig() if self.trained else None)
        if self.dense is IMPLIED:
            object.__setattr__(self, "dense", DenseConfig() if self.method in ("fast", "dense-clip", "fcn") else None)
        self._check_parts(per_pixel)
        self._check_settings(per_pixel)

    @property
    def trained(self) -> bool:
        """Whether a trained network takes part (maskformer proposals, or the FCN)."""
        return self.method == "fcn" or (self.method not in PER_PIXEL_METHODS and isinstance(self.proposals, MaskFormerConfig))

    @property
    def what(self) -> str:
        """The method (and generator) in a message's words: "method two-stage with selective-search proposals"."""
        if self.proposals is None:
            return f"method {self.method}"
        return f"method {self.method} with {self.proposals.name} proposals"

    def _check_parts(self, per_pixel: bool) -> None:
        if per_pixel and self.proposals is not None:
            raise _not_for("proposals", f"method {self.method}")
        if not per_pixel and self.proposals is None:
            raise SettingError("proposals", f"method {self.method} needs {{setting}}: a generator's settings")
        if self.ensemble is not None and not self.trained:
            raise _not_for(_first_set(self.ensemble, EnsembleConfig(), ENSEMBLE_NAMES) or "ensemble_weight", self.what)
        if self.ensemble is not None and self.ensemble.classifier == "network" and not self.trained:
            raise _not_for("classifier", self.what)
        if self.dense is not None and self.method not in ("fast", "dense-clip", "fcn"):
            raise _not_for(_first_set(self.dense, DenseConfig(), DENSE_NAMES) or "dense_mode", self.what)
        if self.method == "fcn" and self.fcn is None:
            raise SettingError("fcn", "method fcn needs trained FCN weights: {setting} (the output folder of `zsseg train fcn`)")
        if self.method != "fcn" and self.fcn is not None:
            raise _not_for("fcn", self.what)

    def _check_settings(self, per_pixel: bool) -> None:
        if self.method == "fast" and self.dense.overlap != DenseConfig.overlap:
            raise _not_for("overlap", self.what)
        crop = self.region.crop
        if per_pixel and crop.threshold != CropConfig.threshold:
            raise _not_for("mask_threshold", self.what)
        if self.method != "two-stage" and crop != CropConfig(threshold=crop.threshold):
            raise _not_for(_first_set(crop, CropConfig(), CROP_OPTIONS) or "crop", self.what)
        if per_pixel and self.size.test_size is not None:
            raise _not_for("test_size", self.what)

    @classmethod
    def from_options(cls, base: SegmenterConfig | None = None, **options) -> SegmenterConfig:
        """`base` (default: the defaults) with the flat options `OPTIONS` names in place: the
        names `Segmenter`'s shortcut and the command line use (`ensemble_weight` for
        `ensemble.weight`, `max_proposals` for `proposals.max_proposals`, ...)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise SettingError(unknown[0], "{setting} is not an option of a segmenter; the options are " + ", ".join(OPTIONS))
        base = base or cls()
        method = options.get("method", base.method)
        if method not in METHODS:
            raise SettingError("method", f"unknown {{setting}} '{method}'; choose from {', '.join(METHODS)}")
        clip = _replaced(base.clip, options, {"clip": "source", "dtype": "precision", "device": "device", "tokenizer": "tokenizer"})
        switched = (method in PER_PIXEL_METHODS) != (base.method in PER_PIXEL_METHODS)
        proposals = _proposals(base.proposals, options, method, switched)
        trained = method == "fcn" or (method not in PER_PIXEL_METHODS and isinstance(proposals, MaskFormerConfig))
        return cls(
            method=method,
            clip=clip,
            proposals=proposals,
            region=_region(base.region, options),
            ensemble=_part(base.ensemble if trained or base.ensemble != EnsembleConfig() else IMPLIED, options, ENSEMBLE_NAMES,
                           EnsembleConfig, switched or "proposals" in options),
            dense=_part(base.dense, options, DENSE_NAMES, DenseConfig, switched or "method" in options),
            size=_replaced(base.size, options, {"max_size": "max_size", "test_size": "test_size"}),
            fcn=_fcn(base.fcn, options),
        )

    def to_dict(self) -> dict:
        """The configuration as JSON values (`from_dict` rebuilds it)."""
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> SegmenterConfig:
        """The configuration `to_dict` wrote (or a record holding it: its vocabulary and models
        are left out); `where` names the file in errors. A key it does not know is an error."""
        if not isinstance(data, dict):
            raise SettingError(where or "config", "{setting} must be a JSON object of settings")
        parts = {"clip": ClipConfig, "region": RegionConfig, "ensemble": EnsembleConfig, "dense": DenseConfig, "size": SizeConfig,
                 "fcn": FcnConfig}
        values: dict = {}
        for key, value in data.items():
            if key in RECORD_KEYS:
                continue
            if key == "method":
                values[key] = value
            elif key == "proposals":
                values[key] = None if value is None else _proposals_from_json(value)
            elif key in parts:
                values[key] = None if value is None else _part_from_json(parts[key], value, key)
            else:
                raise SettingError(key, "{setting} is not a part of a segmenter's configuration (" + ", ".join(
                    f.name for f in dataclasses.fields(cls)) + ")")
        return cls(**values)


ENSEMBLE_NAMES = {"ensemble_weight": "weight", "classifier": "classifier", "network_prompt": "network_prompt", "seen": "seen"}
DENSE_NAMES = {"dense_mode": "mode", "overlap": "overlap"}


def _first_set(settings, defaults, names: dict[str, str]) -> str | None:
    """The option name of the first of `settings`' fields that differs from `defaults`."""
    return next((option for option, name in names.items() if getattr(settings, name) != getattr(defaults, name)), None)


def _replaced(settings, options: dict, names: dict[str, str]):
    """`settings` with the fields `names` maps the given options to replaced."""
    changes = {name: options[option] for option, name in names.items() if option in options}
    return dataclasses.replace(settings, **changes) if changes else settings


def _part(settings, options: dict, names: dict[str, str], cls: type, reconsider: bool):
    """An optional part (ensemble, dense) with its options; implied again where the method or
    proposals changed and no option of it is given."""
    if any(option in options for option in names):
        return _replaced(settings if settings not in (None, IMPLIED) else cls(), options, names)
    return IMPLIED if reconsider and settings in (None, cls()) else settings


def _proposals(base: ProposalConfig | None, options: dict, method: str, switched: bool) -> ProposalConfig | None:
    """The proposals' settings: `options["proposals"]` (a generator name, "NAME:MODEL", or its
    settings), else the base's, with max_proposals and proposal_weights applied."""
    given = options.get("proposals", IMPLIED if switched else base)
    settings = {name: options[option] for option, name in (("max_proposals", "max_proposals"), ("proposal_weights", "weights"))
                if option in options and options[option] is not None}
    if isinstance(given, str):
        name, _ = parse_generator(given)
        if "weights" in settings and name != MaskFormerConfig.name:
            raise SettingError("proposal_weights", f"{{setting}} is for maskformer proposals, not {name}")
        return proposal_config(given, **{k: str(v) if k == "weights" else v for k, v in settings.items()})
    if given is IMPLIED:
        given = None if method in PER_PIXEL_METHODS else GENERATORS["selective-search"].Config()
    if settings and given is None:
        option = "max_proposals" if "max_proposals" in settings else "proposal_weights"
        raise _not_for(option, f"method {method}")
    if "weights" in settings and not isinstance(given, MaskFormerConfig):
        raise SettingError("proposal_weights", f"{{setting}} is for maskformer proposals, not {given.name}")
    return dataclasses.replace(given, **{k: str(v) if k == "weights" else v for k, v in settings.items()}) if settings else given


def _region(base: RegionConfig, options: dict) -> RegionConfig:
    region = _replaced(base, options, {"prompt": "prompt", "temperature": "temperature", "batch_size": "batch_size",
                                       "text_cache": "text_cache"})
    crop = _replaced(options.get("crop") or region.crop, options, CROP_OPTIONS)
    if "mask_threshold" in options and options["mask_threshold"] is not None:
        if options.get("crop") is not None and options["crop"].threshold != options["mask_threshold"]:
            raise SettingError("mask_threshold", f"two mask thresholds: {{setting}}={options['mask_threshold']} and "
                               f"crop.threshold={options['crop'].threshold}")
        crop = dataclasses.replace(crop, threshold=options["mask_threshold"])
    return dataclasses.replace(region, crop=crop) if crop != region.crop else region


def _fcn(base: FcnConfig | None, options: dict) -> FcnConfig | None:
    if "fcn" not in options:
        return base
    value = options["fcn"]
    return None if value is None else value if isinstance(value, FcnConfig) else FcnConfig(str(value))


def _proposals_from_json(value) -> ProposalConfig:
    if not isinstance(value, dict) or value.get("name") not in GENERATORS:
        name = value.get("name") if isinstance(value, dict) else value
        raise SettingError("proposals.name", f"{{setting}} '{name}' is not a generator; choose from {', '.join(GENERATORS)}")
    return from_json(GENERATORS[value["name"]].Config, value, "proposals")


def _part_from_json(cls: type, value, where: str):
    if cls is RegionConfig and isinstance(value, dict) and "crop" in value:
        value = {**value, "crop": from_json(CropConfig, value["crop"], f"{where}.crop")}
    return from_json(cls, value, where)


def applicable(options: dict) -> dict:
    """Of flat `options`, those the method and proposals they name take (the others dropped): a
    page that switches methods keeps each setting where it belongs."""
    method = options.get("method") or "two-stage"
    per_pixel = method in PER_PIXEL_METHODS
    proposals = options.get("proposals")
    name = None if per_pixel else parse_generator(proposals)[0] if isinstance(proposals, str) else getattr(proposals, "name", None)
    trained = method == "fcn" or name == MaskFormerConfig.name
    takes = {
        "proposals": not per_pixel, "max_proposals": not per_pixel, "mask_threshold": not per_pixel, "test_size": not per_pixel,
        "proposal_weights": name == MaskFormerConfig.name, "crop": method == "two-stage", "fcn": method == "fcn",
        "ensemble_weight": trained, "classifier": trained, "network_prompt": trained, "seen": trained,
        "dense_mode": method in ("fast", "dense-clip", "fcn"), "overlap": method in ("dense-clip", "fcn"),
        **{field: method == "two-stage" for field in CROP_OPTIONS},
    }
    return {key: value for key, value in options.items() if value is not None and takes.get(key, True)}


def check_prompts(config: SegmenterConfig) -> None:
    """Read the prompts a configuration names (a misspelt set, a broken prompt file), so that they
    fail before any model loads."""
    from .prompts.encoding import load_prompt

    for prompt in (config.region.prompt, config.ensemble and config.ensemble.network_prompt):
        if prompt is not None:
            load_prompt(prompt)


def load_config(path: str | Path) -> tuple[SegmenterConfig, Vocabulary | None]:
    """The configuration in `path`, and the vocabulary where it records one: a JSON file that
    zsseg wrote (an output's record: segment's or classify's JSON, an evaluation report, a
    pseudo-label folder's manifest), which holds it under "config", or a configuration alone."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZssegError(f"configuration file not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ZssegError(f"cannot read the configuration {path}: {error}") from None
    record = data.get("config", data) if isinstance(data, dict) else data
    if isinstance(data, dict) and "config" not in data and "method" not in data:
        raise ZssegError(f"{path} holds no configuration: give a JSON file zsseg wrote, or a configuration")
    try:
        config = SegmenterConfig.from_dict(record, str(path))
    except SettingError as error:
        raise SettingError(error.setting, f"{path}: {error.template}") from None
    classes = record.get("vocabulary") if isinstance(record, dict) else None
    return config, (Vocabulary.from_classes(classes) if classes else None)


__all__ = ["CLASSIFIERS", "ClipConfig", "CropConfig", "DenseConfig", "EnsembleConfig", "FcnConfig", "IMPLIED", "OPTIONS", "RegionConfig",
           "SegmenterConfig", "SizeConfig", "check_prompts", "load_config"]
