"""CLIP weights in OpenAI's layout (its `clip/model.py`), as a zsseg `ClipModel`.

The paper's released checkpoints embed OpenAI's CLIP ViT-B/16 under `clip_adapter.clip_model.`
in OpenAI's own names (`visual.conv1.weight`, `transformer.resblocks.0.attn.in_proj_weight`,
`token_embedding.weight`, ...). This module reads the architecture from the tensor shapes, renames
every tensor to transformers' `CLIPModel` names (the key map below is data) and builds zsseg's
`zsseg.models.clip_vit.ClipNet`, which carries those names, from them without a random
initialisation:

    clip = clip_from_openai_state(state, "path/to/clip-tokenizer", source="model_final.pth",
                                  prefix="clip_adapter.clip_model.")

The caller reads the checkpoint as tensors (safetensors, or `torch.load(weights_only=True)`; a
detectron2 checkpoint keeps its state dict under "model"); nothing is unpickled here. A ResNet
image tower goes to `zsseg.models.resnet_clip` (zsseg's `ModifiedResNet`), with the same text tower.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .base import CLIP_KIND, CLIP_MEAN, CLIP_STD, DTYPES, ClipModel, usable_device, wrap_clip
from .clip_vit import ClipSpec, TextSpec, VisionSpec, build_clip, weight_shapes
from .fingerprints import note_weight_file, tokenizer_identity
from ..errors import ZssegError, one_line
from .hub import LOAD_ERRORS, ModelKind, load_pretrained, load_torch_file, looks_like_path, mean_std, quiet_transformers

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

# The tokenizer of OpenAI-layout checkpoints, which carry none: CLIP's BPE files (about 2 MB).
DEFAULT_TOKENIZER = "openai/clip-vit-base-patch16"
TOKENIZER_KIND = ModelKind("CLIP tokenizer", ("clip",), "tokenizer", "{}", "clip-tokenizer")


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


def _heads(width: int, what: str, head_width: int = HEAD_WIDTH) -> int:
    if head_width < 1 or width % head_width:
        raise ZssegError(f"the OpenAI CLIP {what} width {width} is not a multiple of its {head_width}-channel attention heads")
    return width // head_width


def _text_config(clip: dict, prefix: str, embed_dim: int, act: str, heads: int | None = None) -> dict:
    """transformers' `CLIPTextConfig` values of the OpenAI-layout text tower in `clip`."""
    width = int(_tensor(clip, prefix, "ln_final.weight").shape[0])
    return dict(
        hidden_size=width,
        intermediate_size=int(_tensor(clip, prefix, "transformer.resblocks.0.mlp.c_fc.weight").shape[0]),
        num_hidden_layers=_layers(clip, "transformer.resblocks."),
        num_attention_heads=heads or _heads(width, "text"),
        vocab_size=int(_tensor(clip, prefix, "token_embedding.weight").shape[0]),
        max_position_embeddings=int(_tensor(clip, prefix, "positional_embedding").shape[0]),
        # transformers pools the first EOS position: OpenAI's argmax of the ids, as EOS is the highest id.
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        hidden_act=act,
        layer_norm_eps=1e-5,
        projection_dim=embed_dim,
    )


def is_resnet_state(state: dict, prefix: str = "") -> bool:
    """Whether the OpenAI-layout CLIP under `prefix` has a ResNet image tower."""
    return any(k.startswith(prefix + marker) for k in state for marker in RESNET_MARKERS)


def openai_vit_config(state: dict, prefix: str = "", act: str = "quick_gelu", heads: tuple[int | None, int | None] = (None, None)):
    """The `ClipSpec` (transformers' `CLIPConfig` values) of an OpenAI-layout ViT CLIP, read from tensor shapes as
    OpenAI's `build_model` does (ViT-B/16: width 768, patch 16, 224 pixels, 12 layers; text width
    512, 12 layers, context 77, vocabulary 49408; 512-d embeddings). `act` is the MLPs'
    activation: OpenAI's "quick_gelu", or "gelu" for open_clip models trained without it.
    `heads` (image, text): attention heads where they are not OpenAI's 64 channels each (open_clip's
    config gives them: ViT-H/14's 80-channel heads, say); None: width / 64.

    Raises:
        ZssegError: a ResNet visual tower, a missing tensor, or shapes no ViT CLIP has.
    """
    clip = _strip(state, prefix)
    if not clip:
        raise ZssegError(f"the state holds no tensor under '{prefix}'" if prefix else "the state is empty")
    if is_resnet_state(clip):
        raise ZssegError("this OpenAI CLIP state has a ResNet image tower: load it with zsseg.models.resnet_clip (load_clip does)")
    conv = _tensor(clip, prefix, "visual.conv1.weight")  # [width, 3, patch, patch]
    positions = _tensor(clip, prefix, "visual.positional_embedding").shape[0]  # grid^2 + 1 (class token)
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise ZssegError(f"'{prefix}visual.positional_embedding' has {positions} rows, not a square grid plus the class token")
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    embed_dim = int(_tensor(clip, prefix, "text_projection").shape[1])
    visual_dim = int(_tensor(clip, prefix, "visual.proj").shape[1])
    if visual_dim != embed_dim:
        raise ZssegError(f"the OpenAI CLIP's image embeddings are {visual_dim}-d but its text embeddings {embed_dim}-d")
    vision = dict(
        hidden_size=width,
        intermediate_size=int(_tensor(clip, prefix, "visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0]),
        num_hidden_layers=_layers(clip, "visual.transformer.resblocks."),
        num_attention_heads=heads[0] or _heads(width, "vision"),
        num_channels=int(conv.shape[1]),
        image_size=patch * grid,
        patch_size=patch,
        hidden_act=act,
        layer_norm_eps=1e-5,
        projection_dim=embed_dim,
    )
    text = _text_config(clip, prefix, embed_dim, act, heads[1])
    return ClipSpec(TextSpec(**text), VisionSpec(**vision), embed_dim)


def openai_text_config(state: dict, prefix: str = "", act: str = "quick_gelu", heads: int | None = None):
    """The `TextSpec` of the text tower of an OpenAI-layout CLIP (any image tower)."""
    clip = _strip(state, prefix)
    embed_dim = int(_tensor(clip, prefix, "text_projection").shape[1])
    return TextSpec(**_text_config(clip, prefix, embed_dim, act, heads))


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
    """Every OpenAI key (prefix removed) that a ViT CLIP of `config` (a `ClipSpec`) has, or,
    for a `TextSpec`, that the text tower has (with `logit_scale`)."""
    text_only = not hasattr(config, "vision_config")
    keys = [k for k in TOP_LEVEL if not (text_only and k.startswith("visual."))]
    towers = [("transformer.resblocks.", (config if text_only else config.text_config).num_hidden_layers)]
    if not text_only:
        towers.append(("visual.transformer.resblocks.", config.vision_config.num_hidden_layers))
    for tower, layers in towers:
        keys += [f"{tower}{i}.{part}" for i in range(layers) for part in BLOCK]
    return keys


def _convert(state: dict, prefix: str, config) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(transformers name -> tensor, transformers name -> the OpenAI key it came from), for the
    CLIP of `config` (`openai_vit_config`), or for its text tower alone (`openai_text_config`:
    the `visual.` tensors are then left to the caller)."""
    clip = _strip(state, prefix)
    if not hasattr(config, "vision_config"):
        clip = {k: v for k, v in clip.items() if not k.startswith("visual.")}
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


def check_tokenizer_folder(tokenizer) -> None:
    """What can be told of a tokenizer source without reading it: a folder must exist and hold
    CLIP's BPE files (vocab.json and merges.txt) or a full tokenizer (tokenizer.json or
    tokenizer_config.json); a path that is not there is an error. Hub ids and loaded tokenizers
    pass (they are resolved when read)."""
    if not isinstance(tokenizer, (str, os.PathLike)):
        return
    folder = Path(tokenizer).expanduser()
    if folder.is_file():
        raise ZssegError(f"CLIP tokenizer {folder} is a file; give the folder holding vocab.json and merges.txt")
    if folder.is_dir():
        if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")) and \
                not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
            raise ZssegError(f"{folder} holds no CLIP tokenizer (vocab.json and merges.txt, or tokenizer.json)")
    elif looks_like_path(str(tokenizer)):
        raise ZssegError(f"{TOKENIZER_KIND.label} folder not found: {folder}")


def _load_tokenizer(tokenizer):
    """A tokenizer from a folder (CLIP's BPE files `vocab.json` + `merges.txt`, or a full
    tokenizer folder) or a hub id; an already loaded tokenizer is returned as is."""
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    check_tokenizer_folder(tokenizer)
    from transformers import AutoTokenizer, CLIPTokenizerFast

    folder = Path(tokenizer).expanduser()
    if folder.is_dir():
        with quiet_transformers():
            try:
                if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
                    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                # Positional: the keyword names changed between transformers releases.
                return CLIPTokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"))
            except LOAD_ERRORS as error:
                raise ZssegError(f"cannot load the CLIP tokenizer from {folder}: {one_line(error)}") from None

    def load(source: str, local_only: bool):
        return AutoTokenizer.from_pretrained(source, local_files_only=local_only), {}

    return load_pretrained(str(tokenizer), TOKENIZER_KIND, load)[0]


class LazyTokenizer:
    """A CLIP tokenizer read the first time it is used, and then checked against the text tower
    it feeds (`_check_tokenizer`). Reading one imports transformers' tokenizers (about 0.75
    CPU-s), which a run whose text features all come from the cache never needs: loading a CLIP
    therefore does not read its tokenizer, only checks that a folder given for it holds one
    (`check_tokenizer_folder`). A tokenizer that cannot be read, or is not this CLIP's, is
    reported when text is first encoded, before any image. Every attribute and call goes to the
    tokenizer."""

    def __init__(self, tokenizer, text, where: str):
        check_tokenizer_folder(tokenizer)
        self._source, self._text, self._where = tokenizer, text, where
        self._tokenizer = None

    def identity(self) -> str:
        """`tokenizer_identity` of its source (a folder's files, a hub id), without reading the
        tokenizer (`ClipModel.text_cache_key` asks once per tokenizer)."""
        return tokenizer_identity(self._source)

    @property
    def loaded(self):
        """The tokenizer itself (read and checked now, if not yet)."""
        if self._tokenizer is None:
            tokenizer = _load_tokenizer(self._source)
            _check_tokenizer(tokenizer, self._text, self._where)
            self._tokenizer = tokenizer
        return self._tokenizer

    def __call__(self, *args, **kwargs):
        return self.loaded(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.loaded)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy and pickle probe private names before __init__ has run
            raise AttributeError(name)
        return getattr(self.loaded, name)

    def __repr__(self) -> str:
        return f"LazyTokenizer({self._source!r}, loaded={self._tokenizer is not None})"


def _tokenizer_name(tokenizer) -> str:
    """A tokenizer as messages name it: "the CLIP tokenizer FOLDER", or "the tokenizer"."""
    return f"the CLIP tokenizer {tokenizer}" if isinstance(tokenizer, (str, os.PathLike)) else "the tokenizer"


def _check_tokenizer(tokenizer, text, where: str = "the tokenizer") -> None:
    """The tokenizer must tokenize text (a broken one can load and fail only when used), give
    ids this CLIP's text tower (`CLIPTextConfig` `text`) knows, end texts with the token it pools
    (unless the config asks for the legacy pooling, eos_token_id 2), and merge words as CLIP's
    BPE does ("photo" is one token: a merges.txt that is empty or wrong splits it; a vocabulary
    of single characters has no merges to miss)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if text.eos_token_id != 2 and eos != text.eos_token_id:
        raise ZssegError(f"{where}'s end-of-text id is {eos}, not CLIP's {text.eos_token_id}: it is not CLIP's BPE tokenizer")
    try:
        size = len(tokenizer)
        ids = tokenizer(["a photo of a cat."], add_special_tokens=True)["input_ids"][0]
        word = tokenizer(["photo"], add_special_tokens=False)["input_ids"][0]
    except Exception as error:  # the Rust tokenizer raises a bare Exception
        raise ZssegError(f"{where} cannot tokenize text: {one_line(error)}") from None
    if size > text.vocab_size or max(ids, default=0) >= text.vocab_size:
        raise ZssegError(f"{where} has {size} tokens but this CLIP's vocabulary {text.vocab_size}")
    if len(word) != 1 and _has_merged_tokens(tokenizer):
        raise ZssegError(f"{where} splits 'photo' into {len(word)} tokens where CLIP's BPE has one: its merges (merges.txt) "
                         "are missing or wrong")


def _has_merged_tokens(tokenizer) -> bool:
    """Whether the vocabulary holds tokens longer than a character, which only merges reach (a
    character-level vocabulary, such as `zsseg.tiny_clip`'s, has none and needs no merges)."""
    return any(len(token.removesuffix("</w>")) > 1 for token in tokenizer.get_vocab() if not token.startswith("<|"))


def openai_text_tower(state: dict, prefix: str = "", dtype: str = "fp32", act: str = "quick_gelu", heads: int | None = None):
    """The text tower (with its projection) of the OpenAI-layout CLIP under `prefix`, whatever
    its image tower, built without random initialisation (`zsseg.models.clip_vit.TextNet`)."""
    config = openai_text_config(state, prefix, act, heads)
    tensors, sources = _convert(state, prefix, config)
    tensors.pop("logit_scale", None)
    return _from_tensors(config, tensors, sources, state, dtype)


def _from_tensors(config, tensors: dict, sources: dict, state: dict, dtype: str):
    """The `ClipNet` of `config` (a `TextNet` for a `TextSpec`) holding `tensors` exactly, shapes
    checked first with each misfit named by its OpenAI key; no random initialisation of the
    ~150M parameters (seconds for ViT-B/16)."""
    expected = weight_shapes(config)
    for name, tensor in tensors.items():
        if name not in expected:
            raise ZssegError(f"'{sources[name]}' has no place in the converted CLIP")
        if tuple(tensor.shape) != expected[name]:
            original = state[sources[name]].shape
            raise ZssegError(f"'{sources[name]}' has shape {tuple(original)}, which does not fit the CLIP read from the "
                             f"other tensors (it needs {expected[name]} after conversion)")
    return build_clip(config, tensors, DTYPES[dtype], where="the converted CLIP")


def clip_from_openai_state(state: dict, tokenizer, source: str, prefix: str = "",
                           device: str | torch.device = "cpu", dtype: str = "fp32", act: str = "quick_gelu",
                           image_mean: tuple = CLIP_MEAN, image_std: tuple = CLIP_STD, interpolation: str = "bicubic",
                           heads: tuple[int | None, int | None] = (None, None)) -> ClipModel:
    """A `ClipModel` from an OpenAI-layout CLIP state dict: a ViT image tower becomes zsseg's
    `ClipNet` under transformers' names (`TransformersClip`), a ResNet one zsseg's `ModifiedResNet` beside CLIP's
    text tower (`zsseg.models.resnet_clip.ResNetClip`). A fraction of a second for ViT-B/16: the model is
    built without random initialisation and takes the converted tensors.

    Args:
        state: tensors by name, such as a checkpoint's state dict; only the entries under
            `prefix` are read. In fp32 on the CPU the model shares memory with them.
        tokenizer: a folder with CLIP's BPE files (vocab.json and merges.txt) or a full
            tokenizer folder, a hub id such as "openai/clip-vit-base-patch16", or a loaded tokenizer.
        source: where the state came from, kept as `ClipModel.source` (a file name, say).
        prefix: the CLIP's key prefix in `state`, e.g. "clip_adapter.clip_model.".
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "fp32", "bf16" or "fp16".
        act: the transformer MLPs' activation: "quick_gelu" (OpenAI's) or "gelu" (open_clip
            models trained without QuickGELU; their open_clip_config.json says which).
        image_mean, image_std, interpolation: the model's preprocessing (OpenAI's by default).
        heads: (image, text) attention heads where a config gives them (open_clip's); None:
            OpenAI's 64 channels per head (a ResNet's attention pool always has them).

    Raises:
        ZssegError: one line: an unsupported or incomplete state, a tensor of the wrong shape
            (named), an unknown dtype or device, or a tokenizer that is not CLIP's.
    """
    if dtype not in DTYPES:
        raise ZssegError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    device = usable_device(device)
    if is_resnet_state(state, prefix):
        from .resnet_clip import resnet_clip_from_parts

        text = openai_text_tower(state, prefix, dtype, act, heads[1])
        tokenizer = LazyTokenizer(tokenizer, text.config, _tokenizer_name(tokenizer))
        return resnet_clip_from_parts(state, prefix, text, tokenizer, source, device, dtype, image_mean, image_std, interpolation)
    config = openai_vit_config(state, prefix, act, heads)
    tensors, sources = _convert(state, prefix, config)
    tokenizer = LazyTokenizer(tokenizer, config.text_config, _tokenizer_name(tokenizer))
    model = _from_tensors(config, tensors, sources, state, dtype)
    clip = wrap_clip(model.to(device), tokenizer, source, image_mean, image_std)
    clip.interpolation = interpolation
    return clip


# Checkpoint files and folders in OpenAI's and open_clip's formats.
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")  # with tokenizer_config.json or merges.txt: see _load_tokenizer
STATE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear"}


def _torchscript_refusal(path: Path) -> ZssegError:
    return ZssegError(
        f"{path} is a TorchScript archive (as OpenAI's released .pt files are), whose code zsseg does not run; convert it "
        "once where you trust the file: python -c \"import torch; from safetensors.torch import save_file; "
        f"save_file({{k: v.contiguous() for k, v in torch.jit.load('{path}', map_location='cpu').state_dict().items()}}, "
        "'clip.safetensors')\" and pass clip.safetensors"
    )


def read_tensor_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file: safetensors, or a PyTorch file read with
    `torch.load(weights_only=True)` (a training checkpoint's "state_dict" entry, DDP's "module."
    prefix removed). Nothing but tensors is unpickled.

    Raises:
        ZssegError: one line: not found, unreadable, a TorchScript archive (with how to convert
            it), or a file holding anything but tensors (named).
    """
    import zipfile

    path = Path(path).expanduser()
    if not path.is_file():
        raise ZssegError(f"CLIP checkpoint not found: {path}")
    note_weight_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise ZssegError(f"cannot read {path}: {one_line(error)}") from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist()):
                raise _torchscript_refusal(path)
    content = load_torch_file(path)
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not content:
        raise ZssegError(f"{path} holds no state dict (a mapping of names to tensors)")
    state = {}
    for name, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise ZssegError(f"{path}: '{name}' is a {type(value).__name__}, not a tensor: give a file of weights only")
        state[name.removeprefix("module.")] = value
    return state


def load_openai_clip_file(path: str | Path, tokenizer=None, device: str | torch.device = "cpu", dtype: str = "fp32",
                          act: str = "quick_gelu", image_mean: tuple = CLIP_MEAN, image_std: tuple = CLIP_STD,
                          interpolation: str = "bicubic") -> ClipModel:
    """A CLIP from a bare state-dict file in OpenAI's layout (ViT or ResNet image tower), such as
    OpenAI's weights converted to safetensors. Such files carry no tokenizer: `tokenizer` (a
    folder or hub id) defaults to CLIP's BPE files on the hub (cached, about 2 MB)."""
    path = Path(path).expanduser()
    if path.suffix not in STATE_SUFFIXES:
        raise ZssegError(f"CLIP checkpoint {path} is a file of another kind; give a folder (transformers' config.json, or "
                         f"open_clip's {OPEN_CLIP_CONFIG}) or a state-dict file ({', '.join(STATE_SUFFIXES)})")
    state = read_tensor_file(path)
    if not is_openai_clip_state(state):
        raise ZssegError(f"{path} does not hold a CLIP in OpenAI's layout (no token_embedding.weight, text_projection and "
                         "visual.* tensors); transformers-format CLIPs are folders with config.json")
    return clip_from_openai_state(state, tokenizer or DEFAULT_TOKENIZER, str(path), device=device, dtype=dtype, act=act,
                                  image_mean=image_mean, image_std=image_std, interpolation=interpolation)


def load_open_clip_folder(folder: str | Path, tokenizer=None, device: str | torch.device = "cpu", dtype: str = "fp32",
                          source: str | None = None) -> ClipModel:
    """A CLIP from a folder in open_clip's hub layout (`open_clip_config.json` with `model_cfg` and
    `preprocess_cfg`, and `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`), as
    `hf download timm/resnet50_clip.openai --local-dir DIR` gives. The towers must be in OpenAI's
    layout (OpenAI's CLIPs, and open_clip's own ViT/ResNet CLIPs); the config says whether the
    MLPs use QuickGELU, and the model's mean, std and interpolation."""
    folder = Path(folder).expanduser()
    from .hub import read_json

    config = read_json(folder / OPEN_CLIP_CONFIG)
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict):
        raise ZssegError(f"{folder / OPEN_CLIP_CONFIG} has no model_cfg: it is not an open_clip hub config")
    vision_cfg, text_cfg = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    foreign = vision_cfg.get("timm_model_name") or text_cfg.get("hf_model_name")
    if foreign:
        raise ZssegError(f"{folder} is an open_clip model with a timm or Hugging Face tower ('{foreign}'), not in OpenAI's "
                         "layout; zsseg loads OpenAI-layout CLIPs (ViT and ResNet), transformers' CLIP and SigLIP")
    weights = next((folder / name for name in OPEN_CLIP_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise ZssegError(f"{folder} has {OPEN_CLIP_CONFIG} but no weights ({' or '.join(OPEN_CLIP_WEIGHTS)})")
    preprocess = config.get("preprocess_cfg") or {}
    if not isinstance(preprocess, dict):
        raise ZssegError(f"{folder / OPEN_CLIP_CONFIG}: preprocess_cfg must be an object")
    mean, std = mean_std(preprocess, "mean", "std", CLIP_MEAN, CLIP_STD, f"{folder / OPEN_CLIP_CONFIG}: preprocess_cfg")
    interpolation = str(preprocess.get("interpolation", "bicubic"))
    if interpolation not in INTERPOLATIONS:
        raise ZssegError(f"{folder / OPEN_CLIP_CONFIG}: unsupported interpolation '{interpolation}' (bicubic or bilinear)")
    state = read_tensor_file(weights)
    if not is_openai_clip_state(state):
        raise ZssegError(f"{weights} does not hold a CLIP in OpenAI's layout (open_clip's CustomTextCLIP and timm towers "
                         "are not supported)")
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    width, head_width = vision_cfg.get("width"), vision_cfg.get("head_width", HEAD_WIDTH)
    vision_heads = width // head_width if isinstance(width, int) and isinstance(head_width, int) and head_width > 0 else None
    text_heads = text_cfg.get("heads") if isinstance(text_cfg.get("heads"), int) else None
    if tokenizer is None and any((folder / f).is_file() for f in TOKENIZER_FILES):
        tokenizer = folder  # timm's open_clip repos carry CLIP's BPE files beside the weights
    return clip_from_openai_state(state, tokenizer or DEFAULT_TOKENIZER, source or str(folder), device=device, dtype=dtype,
                                  act=act, image_mean=mean, image_std=std,
                                  interpolation=INTERPOLATIONS[interpolation], heads=(vision_heads, text_heads))


def open_clip_hub_folder(name: str) -> Path | None:
    """The local snapshot of hub repo `name` in open_clip's layout (config and weights, downloaded
    if the hub can be reached and they are not cached), or None if the repo has no
    open_clip_config.json (it is then a transformers checkpoint, or not on the hub at all)."""
    from huggingface_hub import hf_hub_download

    from .hub import hub_offline, hub_reachable

    for local_only in (True, False):  # the cache first; the hub is probed only if the cache lacks the repo
        if not local_only and (hub_offline() or not hub_reachable()):
            return None
        try:
            config = Path(hf_hub_download(name, OPEN_CLIP_CONFIG, local_files_only=local_only))
        except Exception:  # not cached, not on the hub, or not an open_clip repo: the caller tries transformers
            continue
        for weights in OPEN_CLIP_WEIGHTS:
            try:
                hf_hub_download(name, weights, local_files_only=local_only)
            except Exception:  # the other weight file, or the hub
                continue
            for extra in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
                try:  # the repo's own tokenizer, where it has one (timm's do): else CLIP's from the hub
                    hf_hub_download(name, extra, local_files_only=local_only)
                except Exception:
                    pass
            return config.parent
        if local_only:  # the config is cached but not the weights: the hub may have them
            continue
        raise CLIP_KIND.offline(f"'{name}' has {OPEN_CLIP_CONFIG} but its weights ({' or '.join(OPEN_CLIP_WEIGHTS)}) could not be "
                                "had", name)
    return None
