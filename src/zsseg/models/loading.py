"""Loading a vision-language model: one path for hub ids, folders and files of every family.

`load_clip("openai/clip-vit-base-patch16")`, `load_clip("/path/to/folder")`,
`load_clip("timm/resnet50_clip.openai")` or `load_clip("RN50.safetensors")` returns a `ClipModel`
(`zsseg.models.base`) holding the model, its tokenizer and its image preprocessing constants.
Weights are read from safetensors, or from a PyTorch file with `torch.load(weights_only=True)`:
nothing is unpickled. OpenAI's and open_clip's layouts go through `zsseg.models.openai_clip` (ViTs
renamed to transformers' layout, ResNets to `zsseg.models.resnet_clip`), SigLIP through `zsseg.models.siglip`.
CLIP ViTs of every format run on `zsseg.models.clip_vit` (transformers' `CLIPModel`, without
importing its modelling code); SigLIP runs on transformers' own model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..catalogue import DEFAULT_CLIP, PRECISIONS
from .base import (  # re-exported (__all__): the names every other module takes from here
    CLIP_KIND, CLIP_MEAN, CLIP_STD, DTYPES, ClipModel, ClipTextTower, TransformersClip, fingerprint, normalisation, parse_device, usable_device,
    wrap_clip,
)
from ..errors import SettingError, ZssegError, one_line
from .fingerprints import reading_weight_files
from .hub import check_model_type, check_unexpected, check_weights_fit, load_pretrained
from .precision import resolve_precision

@dataclass(frozen=True)
class ClipConfig:
    """The vision-language model and how it runs.

    Attributes:
        source: anything `load_clip` takes (hub id, folder, OpenAI-layout file); None: the CLIP
            that came with a proposal network (an authors' checkpoint holds one), else
            `DEFAULT_CLIP`.
        precision: "fp32", "bf16", "fp16", "int8" or "auto" (`zsseg.models.precision`).
        device: "cpu", "cuda", "cuda:1", ...
        tokenizer: CLIP's tokenizer for a checkpoint that carries none (a folder or hub id).
    """

    source: str | None = None
    precision: str = "fp32"
    device: str = "cpu"
    tokenizer: str | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise SettingError("dtype", f"unknown {{setting}} '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        parse_device(self.device)  # a misspelt or unsupported device is an error now, before anything loads

    def load(self, source: str | None = None) -> ClipModel:
        """The model: `source` (a default decided by the caller) where this names none."""
        return load_clip(self.source or source or DEFAULT_CLIP, device=self.device, dtype=self.precision, tokenizer=self.tokenizer)


def load_clip(name_or_path: str = DEFAULT_CLIP, device: str | torch.device = "cpu", dtype: str = "fp32",
              tokenizer: str | None = None) -> ClipModel:
    """Load a vision-language model: CLIP (ViT or ResNet) or SigLIP, in any of the formats zsseg reads.

    Args:
        name_or_path: one of
            - a hub id or folder in transformers' format (config.json model_type "clip" or
              "siglip"): "openai/clip-vit-base-patch16", "google/siglip-base-patch16-224";
            - a hub id or folder in open_clip's hub layout (open_clip_config.json and
              open_clip_model.safetensors or open_clip_pytorch_model.bin), with towers in
              OpenAI's layout: "timm/resnet50_clip.openai", "timm/vit_base_patch16_clip_224.openai";
            - a state-dict file in OpenAI's layout (.safetensors, or .pt/.pth/.bin read as tensors
              only; OpenAI's TorchScript archives are refused with how to convert them).
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "fp32", "bf16", "fp16", "int8" (the image tower's linear layers quantised, CPU) or
            "auto" (`resolve_precision`).
        tokenizer: a folder (CLIP's vocab.json and merges.txt, or a full tokenizer folder) or hub
            id, for the OpenAI and open_clip formats, which carry no tokenizer (default: CLIP's BPE
            files from the hub, cached); for a transformers checkpoint it replaces the folder's own.

    Raises:
        ZssegError: one line saying what was tried and, for hub ids, how to work offline.
    """
    if dtype not in PRECISIONS:
        raise ZssegError(f"unknown dtype '{dtype}'; choose one of {', '.join(PRECISIONS)}")
    device = usable_device(device)
    precision = resolve_precision(dtype, device)
    try:
        with reading_weight_files() as files:
            clip = _load(str(name_or_path), device, "fp32" if precision == "int8" else precision, tokenizer)
        clip.note_weight_files(files)
    except ZssegError:
        raise
    except Exception as error:  # whatever a model folder or file holds, one line naming it
        raise ZssegError(f"cannot load CLIP from {name_or_path}: {one_line(error)}") from None
    if precision == "int8":
        clip.quantize_image_tower()
    return clip


def _load(name: str, device: torch.device, dtype: str, tokenizer: str | None) -> ClipModel:
    """`load_clip` for a floating-point dtype."""
    from pathlib import Path

    from .hub import looks_like_path
    from .openai_clip import OPEN_CLIP_CONFIG, STATE_SUFFIXES, load_open_clip_folder, load_openai_clip_file, open_clip_hub_folder

    path = Path(name).expanduser()
    if path.is_file():
        return load_openai_clip_file(path, tokenizer, device, dtype)
    if not path.exists() and path.suffix.lower() in STATE_SUFFIXES:
        # Meant as a weights file, whatever its slashes: no hub repository is named like one, and
        # "models/clip.safetensors" mistyped would otherwise be tried on the hub as "owner/name".
        raise ZssegError(f"CLIP file not found: {path}")
    if path.is_dir() and (path / OPEN_CLIP_CONFIG).is_file():
        return load_open_clip_folder(path, tokenizer, device, dtype)
    if not path.exists() and not looks_like_path(name):
        folder = open_clip_hub_folder(name)
        if folder is not None:
            return load_open_clip_folder(folder, tokenizer, device, dtype, source=name)
    return _load_transformers(name, device, dtype, tokenizer)


# What a transformers-format CLIP or SigLIP folder may hold beside config.json and its weights.
CHECKPOINT_EXTRAS = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "vocab.json", "merges.txt", "spiece.model")


def _load_transformers(name: str, device: torch.device, dtype: str, tokenizer: str | None) -> ClipModel:
    """A transformers-format CLIP or SigLIP checkpoint (hub id or folder), by its config's
    model_type. A CLIP is built as zsseg's `ClipNet` (`zsseg.models.clip_vit`), which takes
    transformers' weights as they are, so transformers' modelling code is never imported for it."""
    from pathlib import Path

    from .hub import hub_snapshot, read_json

    def load(source: str, local_only: bool):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            folder = hub_snapshot(source, local_only, CHECKPOINT_EXTRAS)
        config = read_json(folder / "config.json")
        check_model_type(config.get("model_type"), name, CLIP_KIND)
        preprocessor = read_json(folder / "preprocessor_config.json") if (folder / "preprocessor_config.json").is_file() else {}
        if config["model_type"] == "siglip":
            from .hub import quiet_transformers

            with quiet_transformers():
                return _load_siglip(folder, source, name, dtype, tokenizer, preprocessor), {}
        return _load_clip_folder(folder, source, name, dtype, tokenizer, config, preprocessor), {}

    clip, _, _ = load_pretrained(name, CLIP_KIND, load, quiet=False)
    clip.model.to(device)
    return clip


def _load_clip_folder(folder, source: str, name: str, dtype: str, tokenizer: str | None, config: dict, preprocessor: dict) -> ClipModel:
    """A transformers-format CLIP folder (config.json already read) as a `TransformersClip` on the CPU."""
    from .clip_vit import ClipSpec, build_clip, misfits, weight_shapes
    from .openai_clip import LazyTokenizer, _tokenizer_name

    try:
        spec = ClipSpec.from_transformers(config)
    except ZssegError as error:
        raise ZssegError(f"cannot load CLIP from {folder}: {error}") from None
    tensors = _folder_weights(folder)
    # Position ids were saved as buffers by transformers before 4.31; they are not weights.
    tensors = {k: v for k, v in tensors.items() if not k.endswith(".position_ids")}
    expected = weight_shapes(spec)
    reshaped, missing, unused = misfits(expected, tensors)
    if reshaped:
        key = reshaped[0]
        raise ZssegError(f"cannot load CLIP from {folder}: its config.json does not describe its weights ({key} is "
                         f"{list(tensors[key].shape)} in the weights, {list(expected[key])} by the config)")
    if missing:
        raise ZssegError(f"the CLIP weights in {folder} are incomplete: {len(missing)} tensor(s) missing or of the wrong shape, "
                         f"for example {missing[0]}; give a complete checkpoint")
    if unused:
        raise ZssegError(f"cannot load CLIP from {folder}: its config.json has no place for {len(unused)} of its weights' "
                         f"tensors (for example {sorted(unused)[0]}): the config is not theirs")
    model = build_clip(spec, tensors, DTYPES[dtype], where=f"the CLIP weights in {folder}")
    where = _tokenizer_name(tokenizer) if tokenizer else f"the tokenizer of {name}"
    mean, std = normalisation(preprocessor, CLIP_MEAN, CLIP_STD)
    return wrap_clip(model, LazyTokenizer(tokenizer or folder, spec.text_config, where), source, mean, std)


def _folder_weights(folder) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers folder's weights (its safetensors, one file or an index's
    shards, else pytorch_model.bin), each file read by `read_tensor_file`; one line naming the
    folder and the file that cannot be read."""
    from .hub import _safetensors_files
    from .openai_clip import read_tensor_file

    tensors: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(folder) or [folder / "pytorch_model.bin"]:
        try:
            tensors.update(read_tensor_file(file))
        except ZssegError as error:
            raise ZssegError(f"cannot load CLIP from {folder}: {error}") from None
    return tensors


def _load_siglip(folder, source: str, name: str, dtype: str, tokenizer: str | None, preprocessor: dict) -> ClipModel:
    """A transformers-format SigLIP folder, through transformers' own model."""
    from transformers import AutoConfig, AutoTokenizer, SiglipModel

    from .siglip import wrap_siglip

    check_weights_fit(folder, lambda: SiglipModel(AutoConfig.from_pretrained(str(folder), local_files_only=True)), CLIP_KIND.label)
    model, info = SiglipModel.from_pretrained(str(folder), dtype=DTYPES[dtype], local_files_only=True, weights_only=True,
                                              output_loading_info=True)
    check_unexpected(source, info, CLIP_KIND)
    from .hub import check_complete

    check_complete(source, info, CLIP_KIND)
    if tokenizer is None:
        try:
            loaded = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except ImportError as error:  # SigLIP's SentencePiece tokenizer without the package
            package = "sentencepiece" if "sentencepiece" in str(error).lower() else "a package"
            raise ZssegError(f"the tokenizer of '{name}' needs {package}, which is not installed: "
                             'pip install "zsseg[siglip]"' + ("" if package == "sentencepiece" else f" ({str(error).strip()[:120]})")) from None
    else:
        from .openai_clip import _load_tokenizer

        loaded = _load_tokenizer(tokenizer)
    return wrap_siglip(model, loaded, source, preprocessor)


__all__ = ["ClipConfig", "CLIP_KIND", "CLIP_MEAN", "CLIP_STD", "DEFAULT_CLIP", "DTYPES", "ClipModel", "ClipTextTower", "TransformersClip",
           "fingerprint", "normalisation", "load_clip", "usable_device", "wrap_clip"]
