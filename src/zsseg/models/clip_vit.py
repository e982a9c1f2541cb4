"""CLIP's two transformers (a ViT image tower and the text tower) in plain torch: the model every
CLIP ViT runs as in zsseg, whatever format it is loaded from.

Why not transformers' `CLIPModel`: importing its modelling code costs about 2.2 CPU-seconds in
every process (it pulls in torch's compiler and distributed tensors), more than the fast mode's
whole work on an image. The modules here carry transformers' module and weight names
(`vision_model.encoder.layers.0.self_attn.q_proj.weight`, ...), so a transformers checkpoint
loads into them as it is, and they compute what transformers' CLIP computes with its default
(SDPA) attention: `tests/test_clip_vit.py` compares both towers, resized position embeddings
and padded text with transformers' own model.

    spec = ClipSpec.from_transformers(json.load(open("config.json")))
    model = build_clip(spec, tensors)          # tensors: name -> tensor, every weight the spec has

Configs follow transformers' `CLIPConfig`: `from_transformers` reads its config.json with its
defaults; `to_transformers` gives a vision tower's config back (the proposal network's CLIP
backbone is built from it).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ZssegError


class QuickGELU(nn.Module):
    """CLIP's activation x * sigmoid(1.702 x) (OpenAI's QuickGELU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# config.json's hidden_act -> the module; "gelu" is the exact (erf) GELU, as transformers' ACT2FN has it.
ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


@dataclass(frozen=True)
class TowerSpec:
    """The shape of one transformer tower. Defaults are transformers' `CLIPVisionConfig`'s
    (config.json leaves out nothing it writes, but older files may)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512

    def __post_init__(self):
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "projection_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ZssegError(f"the CLIP config's {name} must be a positive integer, not {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ZssegError(f"the CLIP config's hidden_size {self.hidden_size} is not a multiple of its "
                             f"{self.num_attention_heads} attention heads")
        if self.hidden_act not in ACTIVATIONS:
            raise ZssegError(f"the CLIP config's hidden_act '{self.hidden_act}' is not one CLIP uses ({', '.join(ACTIVATIONS)})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TowerSpec":
        """The spec from a config.json section: keys it does not know are ignored, missing ones
        take transformers' defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class VisionSpec(TowerSpec):
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    model_type: str = field(default="clip_vision_model", repr=False)

    def __post_init__(self):
        super().__post_init__()
        if not all(isinstance(v, int) and v > 0 for v in (self.image_size, self.patch_size, self.num_channels)):
            raise ZssegError("the CLIP config's image_size, patch_size and num_channels must be positive integers")
        if self.image_size % self.patch_size:
            raise ZssegError(f"the CLIP config's image_size {self.image_size} is not a multiple of its patch_size {self.patch_size}")


@dataclass(frozen=True)
class TextSpec(TowerSpec):
    """The text tower; `eos_token_id` says where it pools: the first end-of-text token, or, where
    it is 2 (configs written before transformers fixed it), the largest token id, which is
    CLIP's end-of-text."""

    hidden_size: int = 512
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    vocab_size: int = 49408
    max_position_embeddings: int = 77
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1
    model_type: str = field(default="clip_text_model", repr=False)


@dataclass(frozen=True)
class ClipSpec:
    """A CLIP ViT: both towers and the joint embedding size (transformers' `CLIPConfig`)."""

    text_config: TextSpec
    vision_config: VisionSpec
    projection_dim: int = 512
    model_type: str = "clip"

    @classmethod
    def from_transformers(cls, config: dict) -> "ClipSpec":
        """The spec of a transformers config.json (as a dict). `text_config_dict` and
        `vision_config_dict`, which early configs carry, override `text_config` and
        `vision_config` as transformers lets them."""
        def section(name: str) -> dict:
            values = {}
            for key in (name, f"{name}_dict"):
                part = config.get(key)
                if part is not None and not isinstance(part, dict):
                    raise ZssegError(f"the CLIP config's {key} must be an object")
                values.update(part or {})
            return values

        projection = config.get("projection_dim", 512)
        text, vision = section("text_config"), section("vision_config")
        return cls(TextSpec.from_dict({"projection_dim": projection, **text}),
                   VisionSpec.from_dict({"projection_dim": projection, **vision}), projection)


class Pooled(NamedTuple):
    """A tower's output, named as transformers names them."""

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


class Attention(nn.Module):
    """Multi-head self-attention with separate query, key, value and output projections."""

    def __init__(self, spec: TowerSpec):
        super().__init__()
        width = spec.hidden_size
        self.num_heads = spec.num_attention_heads
        self.head_dim = width // self.num_heads
        self.scale = self.head_dim ** -0.5
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """`x` [B, N, W]; `mask` [B, 1, N, N] (True: attend), or `causal` for the plain causal mask."""
        batch, tokens, _ = x.shape

        def heads(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj), heads(self.k_proj), heads(self.v_proj),
                                             attn_mask=mask, scale=self.scale, is_causal=causal and mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class MLP(nn.Module):
    def __init__(self, spec: TowerSpec):
        super().__init__()
        self.activation_fn = ACTIVATIONS[spec.hidden_act]()
        self.fc1 = nn.Linear(spec.hidden_size, spec.intermediate_size)
        self.fc2 = nn.Linear(spec.intermediate_size, spec.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class EncoderLayer(nn.Module):
    """A pre-norm residual block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, spec: TowerSpec):
        super().__init__()
        self.self_attn = Attention(spec)
        self.layer_norm1 = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)
        self.mlp = MLP(spec)
        self.layer_norm2 = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.layer_norm1(hidden), mask, causal)
        return hidden + self.mlp(self.layer_norm2(hidden))


class Encoder(nn.Module):
    def __init__(self, spec: TowerSpec):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(spec) for _ in range(spec.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        for layer in self.layers:
            hidden = layer(hidden, mask, causal)
        return hidden


class VisionEmbeddings(nn.Module):
    """Patch embedding, class token and learned position embeddings; at another input size the
    position grid is resized bicubically (align_corners False), as transformers' CLIP does with
    `interpolate_pos_encoding`."""

    def __init__(self, spec: VisionSpec):
        super().__init__()
        self.image_size, self.patch_size = spec.image_size, spec.patch_size
        self.class_embedding = nn.Parameter(torch.empty(spec.hidden_size))
        self.patch_embedding = nn.Conv2d(spec.num_channels, spec.hidden_size, spec.patch_size, spec.patch_size, bias=False)
        self.position_embedding = nn.Embedding((spec.image_size // spec.patch_size) ** 2 + 1, spec.hidden_size)

    def positions(self, height: int, width: int) -> torch.Tensor:
        """`[1, 1 + (height / patch) * (width / patch), W]`: the position embeddings for that input."""
        table = self.position_embedding.weight[None]
        if (height, width) == (self.image_size, self.image_size):
            return table
        side, dim = self.image_size // self.patch_size, table.shape[-1]
        grid = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height // self.patch_size, width // self.patch_size), mode="bicubic", align_corners=False)
        return torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        batch, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height, width) != (self.image_size, self.image_size):
            raise ValueError(f"input of {height}x{width} pixels, the model's is {self.image_size}x{self.image_size}")
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_embedding.expand(batch, 1, -1), patches], dim=1)
        return tokens + self.positions(height, width)


class VisionTransformer(nn.Module):
    def __init__(self, spec: VisionSpec):
        super().__init__()
        self.embeddings = VisionEmbeddings(spec)
        self.pre_layrnorm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)  # sic: transformers' name
        self.encoder = Encoder(spec)
        self.post_layernorm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> Pooled:
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding)))
        return Pooled(hidden, self.post_layernorm(hidden[:, 0]))


class TextEmbeddings(nn.Module):
    def __init__(self, spec: TextSpec):
        super().__init__()
        self.token_embedding = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.position_embedding = nn.Embedding(spec.max_position_embeddings, spec.hidden_size)

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token plus position embeddings; `inputs_embeds` stands in for the token embeddings
        (learned prompts put their vectors there, through a forward pre-hook)."""
        if inputs_embeds is None:
            inputs_embeds = self.token_embedding(input_ids)
        length = inputs_embeds.shape[-2]
        if length > self.position_embedding.num_embeddings:
            raise ValueError(f"{length} tokens, the text tower's context is {self.position_embedding.num_embeddings}")
        return inputs_embeds + self.position_embedding.weight[:length]


class TextTransformer(nn.Module):
    def __init__(self, spec: TextSpec):
        super().__init__()
        self.embeddings = TextEmbeddings(spec)
        self.encoder = Encoder(spec)
        self.final_layer_norm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)
        self.eos_token_id = spec.eos_token_id
        self.spec = spec  # what its features depend on besides the weights (the text cache's key)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Pooled:
        """Causal attention over the tokens (and, where `attention_mask` [B, N] has zeros, not to
        padding); pooled at the end-of-text token."""
        hidden = self.embeddings(input_ids=input_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            tokens = input_ids.shape[-1]
            causal = torch.ones(tokens, tokens, dtype=torch.bool, device=hidden.device).tril()
            mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
        hidden = self.final_layer_norm(self.encoder(hidden, mask, causal=True))
        ids = input_ids.to(device=hidden.device, dtype=torch.int)
        ends = ids.argmax(dim=-1) if self.eos_token_id == 2 else (ids == self.eos_token_id).int().argmax(dim=-1)
        return Pooled(hidden, hidden[torch.arange(len(hidden), device=hidden.device), ends])


class ClipNet(nn.Module):
    """Both towers with their projections into the joint space, under transformers' names."""

    def __init__(self, spec: ClipSpec):
        super().__init__()
        self.config = spec
        self.text_model = TextTransformer(spec.text_config)
        self.vision_model = VisionTransformer(spec.vision_config)
        self.visual_projection = nn.Linear(spec.vision_config.hidden_size, spec.projection_dim, bias=False)
        self.text_projection = nn.Linear(spec.text_config.hidden_size, spec.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.empty(()))


class TextNet(nn.Module):
    """The text tower alone with its projection (a ResNet CLIP's text side)."""

    def __init__(self, spec: TextSpec):
        super().__init__()
        self.config = spec
        self.text_model = TextTransformer(spec)
        self.text_projection = nn.Linear(spec.hidden_size, spec.projection_dim, bias=False)


def weight_shapes(spec: ClipSpec | TextSpec) -> dict[str, tuple[int, ...]]:
    """Every weight's name and shape in the model of `spec` (a `TextNet` for a `TextSpec`),
    computed from the spec alone: tensors are checked against it before any memory is taken,
    so a config that does not describe its weights (hidden_size 10**7) is refused at once.
    `tests/test_clip_vit.py` holds it equal to the modules' own state dict."""
    def tower(prefix: str, t: TowerSpec) -> dict[str, tuple[int, ...]]:
        w, m = t.hidden_size, t.intermediate_size
        block = {"self_attn.k_proj.weight": (w, w), "self_attn.k_proj.bias": (w,), "self_attn.v_proj.weight": (w, w),
                 "self_attn.v_proj.bias": (w,), "self_attn.q_proj.weight": (w, w), "self_attn.q_proj.bias": (w,),
                 "self_attn.out_proj.weight": (w, w), "self_attn.out_proj.bias": (w,), "layer_norm1.weight": (w,),
                 "layer_norm1.bias": (w,), "mlp.fc1.weight": (m, w), "mlp.fc1.bias": (m,), "mlp.fc2.weight": (w, m),
                 "mlp.fc2.bias": (w,), "layer_norm2.weight": (w,), "layer_norm2.bias": (w,)}
        return {f"{prefix}encoder.layers.{i}.{k}": v for i in range(t.num_hidden_layers) for k, v in block.items()}

    text = spec if isinstance(spec, TextSpec) else spec.text_config
    w = text.hidden_size
    out = {"text_model.embeddings.token_embedding.weight": (text.vocab_size, w),
           "text_model.embeddings.position_embedding.weight": (text.max_position_embeddings, w),
           **tower("text_model.", text),
           "text_model.final_layer_norm.weight": (w,), "text_model.final_layer_norm.bias": (w,)}
    if isinstance(spec, TextSpec):
        return {**out, "text_projection.weight": (spec.projection_dim, w)}
    v = spec.vision_config
    grid = (v.image_size // v.patch_size) ** 2 + 1
    out.update({"vision_model.embeddings.class_embedding": (v.hidden_size,),
                "vision_model.embeddings.patch_embedding.weight": (v.hidden_size, v.num_channels, v.patch_size, v.patch_size),
                "vision_model.embeddings.position_embedding.weight": (grid, v.hidden_size),
                "vision_model.pre_layrnorm.weight": (v.hidden_size,), "vision_model.pre_layrnorm.bias": (v.hidden_size,),
                **tower("vision_model.", v),
                "vision_model.post_layernorm.weight": (v.hidden_size,), "vision_model.post_layernorm.bias": (v.hidden_size,),
                "visual_projection.weight": (spec.projection_dim, v.hidden_size),
                "text_projection.weight": (spec.projection_dim, w), "logit_scale": ()})
    return out


def misfits(expected: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """How `tensors` differ from `expected` (`weight_shapes`): the names whose shapes differ, the
    names missing, the names left over (each in `expected`'s or `tensors`' order)."""
    reshaped = [k for k, shape in expected.items() if k in tensors and tuple(tensors[k].shape) != shape]
    return reshaped, [k for k in expected if k not in tensors], [k for k in tensors if k not in expected]


@contextmanager
def _uninitialised():
    """Modules built inside keep `torch.empty`'s content (no random initialisation, whose cost
    for ViT-B/16 is seconds): every weight is replaced by a loaded one afterwards. Building on
    the meta device would do the same but costs half a CPU-second of torch imports."""
    names = ("kaiming_uniform_", "uniform_", "normal_", "ones_", "zeros_")
    saved = {name: getattr(nn.init, name) for name in names}
    for name in names:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def build_clip(spec: ClipSpec | TextSpec, tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
               where: str = "the CLIP weights") -> ClipNet | TextNet:
    """The model of `spec` (a `ClipSpec`, or a `TextSpec` for a text tower alone) holding exactly
    `tensors`, in eval mode, without a random initialisation: tensors already in `dtype` are
    used as they are (no copy). Names missing or left over, and shapes that differ, are one
    line naming the first of them (callers with their own messages check `weight_shapes` first)."""
    expected = weight_shapes(spec)
    reshaped, missing, unused = misfits(expected, tensors)
    for problem, keys in (("lack", missing), ("have no place for", unused)):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise ZssegError(f"{where} {problem} '{keys[0]}'{more}: they are not the CLIP their config describes")
    if reshaped:
        name = reshaped[0]
        raise ZssegError(f"{where}: '{name}' has shape {list(tensors[name].shape)}, the config's CLIP needs {list(expected[name])}")
    with _uninitialised():
        model = ClipNet(spec) if isinstance(spec, ClipSpec) else TextNet(spec)
    model.load_state_dict({k: v if v.dtype == dtype else v.to(dtype) for k, v in tensors.items()}, assign=True)
    return model.eval()


__all__ = ["ACTIVATIONS", "ClipNet", "ClipSpec", "Pooled", "QuickGELU", "TextNet", "TextSpec", "TowerSpec", "VisionSpec",
           "build_clip", "misfits", "weight_shapes"]
