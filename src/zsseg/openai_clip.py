"""CLIP weights in OpenAI's layout (its `clip/model.py`), as a zsseg `ClipModel`.

The paper's released checkpoints embed OpenAI's CLIP ViT-B/16 under `clip_adapter.clip_model.`
in OpenAI's own names (`visual.conv1.weight`, `transformer.resblocks.0.attn.in_proj_weight`,
`token_embedding.weight`, ...). This module reads the architecture from the tensor shapes, renames
every tensor to transformers' `CLIPModel` (the key map below is data) and builds the model from
them without a random initialisation:

    clip = clip_from_openai_state(state, "path/to/clip-tokenizer", source="model_final.pth",
                                  prefix="clip_adapter.clip_model.")

The caller reads the checkpoint as tensors (safetensors, or `torch.load(weights_only=True)`; a
detectron2 checkpoint keeps its state dict under "model"); nothing is unpickled here. Only ViT visual towers are supported: a ResNet one is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .clip import CLIP_KIND, CLIP_MEAN, CLIP_STD, DTYPES, ClipModel, usable_device, wrap_clip
from .errors import ZssegError
from .hub import LOAD_ERRORS, ModelKind, load_pretrained, quiet_transformers

HEAD_WIDTH = 64  # OpenAI's build_model gives every attention head 64 channels
BOS_ID, EOS_ID = 49406, 49407  # CLIP's BPE start and end of text; EOS also pads (OpenAI pads with 0)

# OpenAI name -> transformers name, outside the residual blocks.
TOP_LEVEL = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: transformers' spelling
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "visual.proj": "visual_projection.weight",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "text_projection": "text_projection.weight",
    "logit_scale": "logit_scale",
}

# Inside residual block N: OpenAI's `visual.transformer.resblocks.N.` (vision) or
# `transformer.resblocks.N.` (text) + key -> `vision_model.encoder.layers.N.` or
# `text_model.encoder.layers.N.` + value. A 3-tuple takes the tensor's equal thirds along dim 0:
# nn.MultiheadAttention packs the query, key and value projections in that order.
BLOCK = {
    "attn.in_proj_weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.in_proj_bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
}
TOWERS = {"visual.transformer.resblocks.": "vision_model.encoder.layers.", "transformer.resblocks.": "text_model.encoder.layers."}
BLOCK_KEY = re.compile(r"((?:visual\.)?transformer\.resblocks\.)(\d+)\.(.+)")

# OpenAI computes `x @ P` with P `[in, out]`; a Linear computes `x @ W.T`, so W = P.T.
TRANSPOSED = {"visual.proj", "text_projection"}
# Integers that OpenAI's TorchScript archives carry beside the weights; its build_model drops them too.
DROPPED = {"input_resolution", "context_length", "vocab_size"}
# Names only a ResNet visual tower has (its stages and attention pooling).
RESNET_MARKERS = ("visual.layer1.", "visual.attnpool.")

TOKENIZER_KIND = ModelKind("CLIP tokenizer", CLIP_KIND.model_types, "tokenizer={}", "clip-tokenizer")


def _strip(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `state` under `prefix`, with the prefix removed (the rest of a checkpoint
    is not CLIP and is left alone)."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def is_openai_clip_state(state: dict, prefix: str = "") -> bool:
    """Whether `state` holds, under `prefix`, a CLIP in OpenAI's layout (ViT or ResNet visual tower)."""
    keys = _strip(state, prefix).keys()
    return {"token_embedding.weight", "text_projection"} <= keys and any(k.startswith("visual.") for k in keys)


def _tensor(clip: dict, prefix: str, key: str) -> torch.Tensor:
    if key not in clip:
        raise ZssegError(f"the OpenAI CLIP state lacks '{prefix}{key}'")
    return clip[key]


def _layers(clip: dict, tower: str) -> int:
    """Number of residual blocks of a tower: the highest index + 1, so that a gap is reported as
    the block's missing tensors."""
    indices = [int(m[2]) for k in clip if (m := BLOCK_KEY.fullmatch(k)) and m[1] == tower]
    return max(indices) + 1 if indices else 0


def _heads(width: int, what: str) -> int:
    if width % HEAD_WIDTH:
        raise ZssegError(f"the OpenAI CLIP {what} width {width} is not a multiple of its {HEAD_WIDTH}-channel attention heads")
    return width // HEAD_WIDTH


def openai_vit_config(state: dict, prefix: str = ""):
    """The transformers `CLIPConfig` of an OpenAI-layout ViT CLIP, read from tensor shapes as
    OpenAI's `build_model` does (ViT-B/16: width 768, patch 16, 224 pixels, 12 layers; text width
    512, 12 layers, context 77, vocabulary 49408; 512-d embeddings).

    Raises:
        ZssegError: a ResNet visual tower, a missing tensor, or shapes no ViT CLIP has.
    """
    from transformers import CLIPConfig

    clip = _strip(state, prefix)
    if not clip:
        raise ZssegError(f"the state holds no tensor under '{prefix}'" if prefix else "the state is empty")
    if any(k.startswith(RESNET_MARKERS) for k in clip):
        raise ZssegError("ResNet CLIP checkpoints are not supported yet (only ViT visual towers)")
    conv = _tensor(clip, prefix, "visual.conv1.weight")  # [width, 3, patch, patch]
    positions = _tensor(clip, prefix, "visual.positional_embedding").shape[0]  # grid^2 + 1 (class token)
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise ZssegError(f"'{prefix}visual.positional_embedding' has {positions} rows, not a square grid plus the class token")
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    text_width = int(_tensor(clip, prefix, "ln_final.weight").shape[0])
    embed_dim = int(_tensor(clip, prefix, "text_projection").shape[1])
    visual_dim = int(_tensor(clip, prefix, "visual.proj").shape[1])
    if visual_dim != embed_dim:
        raise ZssegError(f"the OpenAI CLIP's image embeddings are {visual_dim}-d but its text embeddings {embed_dim}-d")
    common = dict(hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=embed_dim)  # as OpenAI's CLIP
    vision = dict(
        hidden_size=width,
        intermediate_size=int(_tensor(clip, prefix, "visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0]),
        num_hidden_layers=_layers(clip, "visual.transformer.resblocks."),
        num_attention_heads=_heads(width, "vision"),
        num_channels=int(conv.shape[1]),
        image_size=patch * grid,
        patch_size=patch,
        **common,
    )
    text = dict(
        hidden_size=text_width,
        intermediate_size=int(_tensor(clip, prefix, "transformer.resblocks.0.mlp.c_fc.weight").shape[0]),
        num_hidden_layers=_layers(clip, "transformer.resblocks."),
        num_attention_heads=_heads(text_width, "text"),
        vocab_size=int(_tensor(clip, prefix, "token_embedding.weight").shape[0]),
        max_position_embeddings=int(_tensor(clip, prefix, "positional_embedding").shape[0]),
        # transformers pools the first EOS position: OpenAI's argmax of the ids, as EOS is the highest id.
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        **common,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed_dim)


def _renamed(key: str) -> str | tuple[str, ...] | None:
    """The transformers name(s) of an OpenAI key (prefix removed), or None if it has none."""
    if key in TOP_LEVEL:
        return TOP_LEVEL[key]
    match = BLOCK_KEY.fullmatch(key)
    if match is None or match[3] not in BLOCK:
        return None
    tower, index, part = match.groups()
    layer, target = f"{TOWERS[tower]}{index}.", BLOCK[part]
    return tuple(layer + name for name in target) if isinstance(target, tuple) else layer + target


def _expected_keys(config) -> list[str]:
    """Every OpenAI key (prefix removed) that a ViT CLIP of `config` has."""
    keys = list(TOP_LEVEL)
    for tower, layers in (("visual.transformer.resblocks.", config.vision_config.num_hidden_layers),
                          ("transformer.resblocks.", config.text_config.num_hidden_layers)):
        keys += [f"{tower}{i}.{part}" for i in range(layers) for part in BLOCK]
    return keys


def _convert(state: dict, prefix: str, config) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(transformers name -> tensor, transformers name -> the OpenAI key it came from), for the
    CLIP of `config` (`openai_vit_config`)."""
    clip = _strip(state, prefix)
    unknown = [k for k in clip if k not in DROPPED and _renamed(k) is None]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ZssegError(f"unexpected tensor '{prefix}{unknown[0]}'{more} in the OpenAI CLIP state: it has no place in a ViT CLIP")
    missing = [k for k in _expected_keys(config) if k not in clip]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ZssegError(f"the OpenAI CLIP state lacks '{prefix}{missing[0]}'{more}")
    tensors, sources = {}, {}
    for key, tensor in clip.items():
        renamed = _renamed(key)
        if renamed is None:  # a DROPPED integer
            continue
        if isinstance(renamed, tuple):
            if tensor.shape[0] % len(renamed):
                raise ZssegError(f"'{prefix}{key}' has {tensor.shape[0]} rows, not the query, key and value projections stacked")
            parts = tensor.chunk(len(renamed), dim=0)
        else:
            parts = (tensor.T.contiguous() if key in TRANSPOSED else tensor,)
            renamed = (renamed,)
        for name, part in zip(renamed, parts):
            tensors[name], sources[name] = part, f"{prefix}{key}"
    return tensors, sources


def openai_to_transformers(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of an OpenAI-layout ViT CLIP under `prefix`, renamed for transformers'
    `CLIPModel` (`in_proj` split into q, k, v; the two projections transposed). Entries of
    `state` outside `prefix` are ignored. Tensors are shared with `state` where no change is needed.

    Raises:
        ZssegError: one line naming a tensor that has no place in a ViT CLIP, or one it lacks.
    """
    return _convert(state, prefix, openai_vit_config(state, prefix))[0]


def _load_tokenizer(tokenizer):
    """A tokenizer from a folder (CLIP's BPE files `vocab.json` + `merges.txt`, or a full
    tokenizer folder) or a hub id; an already loaded tokenizer is returned as is."""
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from transformers import AutoTokenizer, CLIPTokenizerFast

    folder = Path(tokenizer).expanduser()
    if folder.is_file():
        raise ZssegError(f"CLIP tokenizer {folder} is a file; give the folder holding vocab.json and merges.txt")
    if folder.is_dir():
        with quiet_transformers():
            try:
                if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
                    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
                    # Positional: the keyword names changed between transformers releases.
                    return CLIPTokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"))
            except LOAD_ERRORS as error:
                raise ZssegError(f"cannot load the CLIP tokenizer from {folder}: {str(error).strip().splitlines()[0]}") from None
        raise ZssegError(f"{folder} holds no CLIP tokenizer (vocab.json and merges.txt, or tokenizer.json)")

    def load(source: str, local_only: bool):
        return AutoTokenizer.from_pretrained(source, local_files_only=local_only), {}

    return load_pretrained(str(tokenizer), TOKENIZER_KIND, load)[0]


def _check_tokenizer(tokenizer, config) -> None:
    """The tokenizer must give ids this CLIP knows, and end texts with the token it pools."""
    text = config.text_config
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos != text.eos_token_id:
        raise ZssegError(f"the tokenizer's end-of-text id is {eos}, not CLIP's {text.eos_token_id}: it is not CLIP's BPE tokenizer")
    if len(tokenizer) > text.vocab_size:
        raise ZssegError(f"the tokenizer has {len(tokenizer)} tokens but this CLIP's vocabulary {text.vocab_size}")


def clip_from_openai_state(state: dict, tokenizer, source: str, prefix: str = "",
                           device: str | torch.device = "cpu", dtype: str = "fp32") -> ClipModel:
    """A `ClipModel` from an OpenAI-layout ViT CLIP state dict (a fraction of a second for ViT-B/16:
    the model is built without random initialisation and takes the converted tensors).

    Args:
        state: tensors by name, such as a checkpoint's state dict; only the entries under
            `prefix` are read. In fp32 on the CPU the model shares memory with them.
        tokenizer: a folder with CLIP's BPE files (vocab.json and merges.txt) or a full
            tokenizer folder, a hub id such as "openai/clip-vit-base-patch16", or a loaded tokenizer.
        source: where the state came from, kept as `ClipModel.source` (a file name, say).
        prefix: the CLIP's key prefix in `state`, e.g. "clip_adapter.clip_model.".
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "fp32", "bf16" or "fp16".

    Raises:
        ZssegError: one line: an unsupported or incomplete state, a tensor of the wrong shape
            (named), an unknown dtype or device, or a tokenizer that is not CLIP's.
    """
    from transformers import CLIPModel

    if dtype not in DTYPES:
        raise ZssegError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    device = usable_device(device)
    config = openai_vit_config(state, prefix)
    tensors, sources = _convert(state, prefix, config)
    tokenizer = _load_tokenizer(tokenizer)
    _check_tokenizer(tokenizer, config)

    with torch.device("meta"):  # shapes only: costs no memory and no initialisation
        expected = CLIPModel(config).state_dict()
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            original = state[sources[name]].shape
            raise ZssegError(f"'{sources[name]}' has shape {tuple(original)}, which does not fit the CLIP read from the "
                             f"other tensors (it needs {tuple(expected[name].shape)} after conversion)")
    # Built on the meta device and given the tensors: no random initialisation of the ~150M
    # parameters (seconds for ViT-B/16); transformers also makes the position-id buffers.
    with quiet_transformers():
        model, info = CLIPModel.from_pretrained(None, config=config, state_dict=tensors, dtype=DTYPES[dtype],
                                                output_loading_info=True)
    left = sorted({*info["missing_keys"], *info["unexpected_keys"], *map(str, info["mismatched_keys"])})
    if left:
        raise ZssegError(f"transformers did not load the converted CLIP exactly: {left[0]}")
    return wrap_clip(model.to(device), tokenizer, source, CLIP_MEAN, CLIP_STD)
