"""MaskFormer (Cheng et al. 2021) with a CLIP-text classifier, as the paper's proposal network.

    backbone (ResNet, `zsseg.networks.maskformer.resnet`, or CLIP's image tower) -> features at strides 4, 8, 16, 32
    pixel decoder (FPN) -> per-pixel mask embeddings at stride 4
    transformer decoder (DETR's), Q learned queries attending to the stride-32 features
        -> per query: a mask embedding (mask logits = its dot product with the per-pixel
           embeddings) and, through an MLP, a class embedding in CLIP's joint space

The architecture is the reference code's (MaskFormer's `BasePixelDecoder` and transformer
predictor, the zero-shot predictor's MLP class head), so the authors' checkpoints load by a key
table (`zsseg.networks.maskformer.reference`).

Class logits are 100 x cosine similarity between a query's class embedding and the frozen CLIP
text embeddings of the vocabulary, plus one learned "no object" embedding, so one trained network
classifies into any vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ...catalogue import TEMPERATURE  # as Eq. 1: the text classifier is CLIP's, so is its temperature
from ...models.loading import CLIP_MEAN, CLIP_STD
from ...errors import ZssegError
from ...prompts.encoding import VocabularyEmbedding
from .config import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from .resnet import RESNETS, ResNet

SIZE_DIVISIBILITY = 32  # inputs are padded to a multiple of the coarsest stride


def build_backbone(name: str, clip_vision: dict | None = None) -> nn.Module:
    """A backbone by name: a ResNet of `RESNETS`, or "clip" (CLIP's ViT image tower, from its
    vision config). Each has `channels` (of its four outputs), `mean` and `std` (the input
    normalisation, for pixels in [0, 1]) and `load_pretrained(source)`."""
    if name == "clip":
        if not clip_vision:
            raise ZssegError("the 'clip' backbone needs the CLIP vision config (clip_vision)")
        return ClipFeatures(clip_vision)
    if name not in RESNETS:
        raise ZssegError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    backbone = ResNet(RESNETS[name])
    backbone.mean, backbone.std = IMAGENET_MEAN, IMAGENET_STD
    return backbone


class ClipFeatures(nn.Module):
    """CLIP's ViT image tower as a backbone: the patch tokens of four evenly spaced layers,
    resampled to strides 4, 8, 16 and 32 (a simple feature pyramid over one-scale ViT features)."""

    def __init__(self, vision_config: dict):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        config = CLIPVisionConfig.from_dict(vision_config)
        self.body = CLIPVisionModel(config)
        self.patch = config.patch_size
        depth = config.num_hidden_layers
        self.taps = [max(1, depth * (i + 1) // 4) for i in range(4)]
        self.channels = (config.hidden_size,) * 4
        self.mean, self.std = CLIP_MEAN, CLIP_STD

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        batch, _, height, width = pixels.shape
        out = self.body(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True)
        grid = (height // self.patch, width // self.patch)
        maps = []
        for tap, stride in zip(self.taps, (4, 8, 16, 32)):
            tokens = out.hidden_states[tap][:, 1:, :]  # drop the class token
            x = tokens.transpose(1, 2).reshape(batch, -1, *grid)
            maps.append(F.interpolate(x, size=(height // stride, width // stride), mode="bilinear", align_corners=False))
        return maps


def _conv_norm(in_channels: int, out_channels: int, kernel: int, relu: bool) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False), nn.GroupNorm(32, out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PixelDecoder(nn.Module):
    """MaskFormer's FPN pixel decoder: top-down path over the four stages, then a 3x3 conv to
    the per-pixel mask embeddings at stride 4."""

    def __init__(self, in_channels: tuple[int, ...], conv_dim: int, mask_dim: int):
        super().__init__()
        self.top = _conv_norm(in_channels[-1], conv_dim, 3, relu=True)
        self.lateral = nn.ModuleList(_conv_norm(c, conv_dim, 1, relu=False) for c in in_channels[:-1])
        self.output = nn.ModuleList(_conv_norm(conv_dim, conv_dim, 3, relu=True) for _ in in_channels[:-1])
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        y = self.top(features[-1])
        for level in reversed(range(len(features) - 1)):
            x = self.lateral[level](features[level])
            y = self.output[level](x + F.interpolate(y, size=x.shape[-2:], mode="nearest"))
        return self.mask_features(y)


def sine_position_embedding(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """DETR's normalised 2-D sine embedding, `[H*W, dim]` (dim/2 channels for y, then for x)."""
    half = dim // 2
    scale = 2 * math.pi
    y = (torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + 1e-6) * scale)[:, None].expand(height, width)
    x = (torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + 1e-6) * scale)[None, :].expand(height, width)
    freqs = 10000 ** (2 * (torch.arange(half, device=device) // 2) / half)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord[..., None] / freqs
        return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)

    return torch.cat([encode(y), encode(x)], dim=-1).reshape(height * width, 2 * half)


class DecoderLayer(nn.Module):
    """DETR's post-norm decoder layer: self-attention, cross-attention, feed-forward."""

    def __init__(self, dim: int, heads: int, feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, feedforward), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(feedforward, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = tgt + query_pos
        tgt = self.norms[0](tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norms[1](tgt + self.dropout(attended))
        return self.norms[2](tgt + self.dropout(self.ffn(tgt)))


class MLP(nn.Sequential):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int):
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            modules.append(nn.Linear(a, b))
            if i < layers - 1:
                modules.append(nn.ReLU(inplace=True))
        super().__init__(*modules)


@dataclass
class LayerOutput:
    """One decoder layer's predictions for a batch.

    Attributes:
        class_embeddings: `[B, Q, D]` each query's embedding in CLIP's joint space, not
            normalised (`MaskFormer.class_logits` compares its direction with the text).
        mask_logits: `[B, Q, H/4, W/4]` at a quarter of the padded input.
    """

    class_embeddings: torch.Tensor
    mask_logits: torch.Tensor


class TransformerPredictor(nn.Module):
    """DETR's decoder over the stride-32 features (post-norm, no encoder): Q learned queries,
    each read out by a 3-layer MLP into a mask embedding and by the class head (an MLP with
    `class_head_layers` layers, 256 -> 1024 -> 512 in the paper's) into CLIP's joint space."""

    def __init__(self, config: ModelConfig, in_channels: int):
        super().__init__()
        dim = config.hidden_dim
        self.input_proj = nn.Conv2d(in_channels, dim, 1)
        self.query_embed = nn.Embedding(config.num_queries, dim)
        self.layers = nn.ModuleList(
            DecoderLayer(dim, config.heads, config.feedforward_dim, config.dropout) for _ in range(config.decoder_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.class_embed = MLP(dim, config.class_head_hidden, config.embed_dim, config.class_head_layers)
        self.mask_embed = MLP(dim, dim, config.mask_dim, 3)

    def forward(self, coarse: torch.Tensor, mask_features: torch.Tensor, all_layers: bool) -> list[LayerOutput]:
        memory = self.input_proj(coarse)
        batch, dim, height, width = memory.shape
        memory = memory.flatten(2).transpose(1, 2)  # [B, HW, dim]
        pos = sine_position_embedding(height, width, dim, memory.device).to(memory.dtype)[None]
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for i, layer in enumerate(self.layers):
            tgt = layer(tgt, memory, pos, query_pos)
            if all_layers or i == len(self.layers) - 1:
                outputs.append(self._predict(self.norm(tgt), mask_features))
        return outputs

    def _predict(self, hidden: torch.Tensor, mask_features: torch.Tensor) -> LayerOutput:
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(hidden), mask_features)
        return LayerOutput(self.class_embed(hidden), masks)


class MaskFormer(nn.Module):
    """The proposal network. `forward` takes `[B, 3, H, W]` pixels in [0, 255] of any size,
    normalises them and pads them at the bottom and right with zeros to multiples of 32 (so the
    padding is the mean colour, as detectron2's `ImageList`), and returns one `LayerOutput` per
    decoder layer (only the last unless `all_layers`), at a quarter of the padded size."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, config.clip_vision)
        self.pixel_decoder = PixelDecoder(self.backbone.channels, config.conv_dim, config.mask_dim)
        self.predictor = TransformerPredictor(config, self.backbone.channels[-1])
        self.void_embedding = nn.Parameter(torch.randn(config.embed_dim))
        self.register_buffer("pixel_mean", pixel_constants(self.backbone.mean), persistent=False)
        self.register_buffer("pixel_std", pixel_constants(self.backbone.std), persistent=False)

    def forward(self, images: torch.Tensor, all_layers: bool = False) -> list[LayerOutput]:
        pixels = pad_to_multiple((images - self.pixel_mean) / self.pixel_std, SIZE_DIVISIBILITY)
        features = self.backbone(pixels)
        mask_features = self.pixel_decoder(features)
        return self.predictor(features[-1], mask_features, all_layers)

    def class_logits(self, class_embeddings: torch.Tensor, text: VocabularyEmbedding) -> torch.Tensor:
        """`[..., C + 1]` logits: 100 x cosine of each query's embedding with the text
        embeddings of each class (the best of its synonyms), then with the learned "no object"
        embedding (last column)."""
        flat = F.normalize(class_embeddings.reshape(-1, class_embeddings.shape[-1]), dim=-1)
        features = text.features.to(flat)
        if features.shape[0] == text.num_classes:  # one embedding per class: a plain product
            classes = TEMPERATURE * flat @ features.T
        else:
            classes = VocabularyEmbedding(features, text.synonym_class, text.num_classes).class_logits(flat, TEMPERATURE)
        void = TEMPERATURE * flat @ F.normalize(self.void_embedding, dim=0)
        return torch.cat([classes, void[:, None]], dim=1).reshape(*class_embeddings.shape[:-1], text.num_classes + 1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return parameter_groups(self)


def pixel_constants(values: tuple[float, float, float]) -> torch.Tensor:
    """`[1, 3, 1, 1]` normalisation constants for pixels in [0, 255], from values for [0, 1]
    (scaled in double precision: 255 x 0.485 is the reference's 123.675 exactly in float32)."""
    return torch.tensor([255.0 * v for v in values], dtype=torch.float32).view(1, 3, 1, 1)


def pad_to_multiple(pixels: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    """`[B, C, H, W]` padded at the bottom and right to multiples of `multiple`."""
    height, width = pixels.shape[-2:]
    return F.pad(pixels, (0, -width % multiple, 0, -height % multiple), value=value)


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """A network's trainable parameters split by optimiser treatment: backbone (modules under
    `backbone`) or head, with or without weight decay (norms and embeddings have none)."""
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_no_decay": [], "head": [], "head_no_decay": []}
    no_decay_types = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d, nn.Embedding)
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            part = "backbone" if module_name.startswith("backbone") else "head"
            no_decay = isinstance(module, no_decay_types) or "embedding" in name
            groups[part + ("_no_decay" if no_decay else "")].append(param)
    return groups


def build_model(config: ModelConfig, seed: int | None = None) -> MaskFormer:
    """A randomly initialised network (deterministic for a given seed)."""
    return seeded(MaskFormer, config, seed)


def seeded(network: type[nn.Module], config, seed: int | None) -> nn.Module:
    """`network(config)` initialised under `seed` (the global RNG is left as it was), or
    unseeded if None."""
    if seed is None:
        return network(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return network(config)
