"""`ClipModel`: the one interface zsseg uses for every vision-language model, and its
implementation for CLIP ViTs (`TransformersClip`, on `zsseg.models.clip_vit`).

A `ClipModel` gives L2-normalised image features of crops and text features of prompts,
fingerprints of its weights, and its key in the text-feature cache (`text_cache_key`). Two
capabilities only some families have are small protocols, checked where they are used:
`DenseFeatures` (cell features in the joint space: dense CLIP, the fast mode) through
`dense_tower`, and `LearnedPromptTower` (CLIP's token embeddings, for CoOp's learned prompts)
through `learned_prompt_tower`.
Implementations: `TransformersClip` (here), `zsseg.models.resnet_clip.ResNetClip` and
`zsseg.models.siglip.SiglipClip`; `zsseg.models.loading.load_clip` picks one from what it is given.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch.nn import functional as F

from ..catalogue import DENSE_MODES, DTYPE_NAMES, TEMPERATURE
from ..errors import SettingError, ZssegError, one_line
from .fingerprints import FingerprintMemo, WeightOrigin, fingerprint, memo_fingerprint, tokenizer_identity
from .hub import ModelKind

# OpenAI CLIP's normalisation, used when a checkpoint has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16)))

# How zsseg turns prompts into text features (tokenising, padding, pooling, projecting): part of
# the text-feature cache's key. Raise it with any change to `encode_text` that changes numbers,
# so that features cached before it are not read after it.
TEXT_ENCODING = 1

CLIP_KIND = ModelKind("CLIP", ("clip", "siglip"), "clip", "{}", "clip-model")


@dataclass(eq=False)
class ClipModel:
    """A loaded vision-language model with what is needed to feed it: the one interface every
    part of zsseg uses, whatever the model family.

    Implementations: `TransformersClip` (CLIP ViTs in transformers' layout, and OpenAI/open_clip-layout
    ViTs converted to them), `zsseg.models.resnet_clip.ResNetClip` (OpenAI's ModifiedResNet CLIPs) and
    `zsseg.models.siglip.SiglipClip` (SigLIP and SigLIP 2).

    Attributes:
        model: a torch module holding every weight, in eval mode, on `device` in `dtype`.
        tokenizer: its tokenizer.
        source: the hub id, folder or file it was loaded from.
        image_size: side of the square input the image tower expects (224 for ViT-B/16, 288
            for RN50x4).
        image_mean, image_std: per-channel normalisation, for pixels scaled to [0, 1].
        context_length: the text tower's maximum number of tokens (77 for CLIP).
        interpolation: how the model's own preprocessing resizes ("bicubic" for CLIP); Eq. 1's
            crops are resized with it.
    """

    model: torch.nn.Module
    tokenizer: object
    source: str
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    context_length: int
    interpolation: str = "bicubic"
    _text_fingerprint: str | None = field(default=None, repr=False, compare=False)
    _int8: bool = field(default=False, repr=False, compare=False)
    _origin: WeightOrigin | None = field(default=None, repr=False, compare=False)
    _tokenizer_identity: tuple | None = field(default=None, repr=False, compare=False)  # (tokenizer, its identity)

    #: The model family, for messages and settings ("clip", "openai-resnet", "siglip").
    family: ClassVar[str] = "clip"

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def _anchor(self) -> torch.Tensor:
        """A weight whose device and dtype are the model's."""
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint image-text embedding space."""
        raise NotImplementedError

    @property
    def precision(self) -> str:
        """How the image tower runs: "fp32", "bf16", "fp16", or "int8" (`quantize_image_tower`)."""
        if self._int8:
            return "int8"
        return {v: k for k, v in DTYPES.items()}.get(self.dtype, str(self.dtype).removeprefix("torch."))

    def image_tower(self) -> torch.nn.Module:
        """The module holding the image tower's weights (what `quantize_image_tower` quantises)."""
        raise NotImplementedError

    def quantize_image_tower(self) -> None:
        """Dynamic int8 quantisation of the image tower's linear layers (weights int8, activations
        quantised per batch; CPU only; `zsseg.models.int8`), after `fold_quick_gelu`: for CPUs
        without AMX. Text features stay float32, so the text cache is shared
        with fp32. Convolutions (a ResNet's stages) stay float32."""
        from .int8 import quantise_linears

        if self.device.type != "cpu":
            raise SettingError("dtype", f"int8 runs on the CPU only (dynamic quantisation); on {self.device} use {{setting}} bf16 or auto")
        if self.dtype != torch.float32:
            raise ZssegError("int8 quantises a float32 model")
        # Each MLP is quantised as soon as it is folded, its folded float weights written into
        # buffers that every MLP reuses (quantisation packs copies of them): folding in place
        # would write memory-mapped weights (see `fold_quick_gelu`), and fresh copies per MLP
        # leave 0.2 GB of freed memory in the heap for ViT-B/16. Then the rest.
        fold_quick_gelu(self.image_tower(), then=quantise_linears)
        quantise_linears(self.image_tower())
        self._int8 = True

    @property
    def temperature(self) -> float:
        """The scale of cosine similarities in Eq. 1's softmax: the paper's 100 (which CLIP's
        own learned logit scale also reaches)."""
        return TEMPERATURE

    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings, `[N, D]` float32. Texts must fit the context."""
        raise NotImplementedError

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings `[N, D]` float32 from normalised pixels `[N, 3, H, W]`."""
        raise NotImplementedError

    def token_counts(self, texts: list[str]) -> list[int]:
        """Number of tokens of each text, special tokens included."""
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    def text_state(self) -> dict[str, torch.Tensor]:
        """The text tower's weights by name: what its text features depend on."""
        raise NotImplementedError

    def text_fingerprint(self, memo: FingerprintMemo | None = None) -> str:
        """SHA-256 of the text tower's weights as loaded (dtype included): the model's identity for
        the text-feature cache. Computed once per process (0.13 CPU-s for ViT-B/16), or read from
        `memo` (the text cache) where it vouches for the weights: the files the loader read them
        from, unchanged, and the tensors it made, unmodified (`zsseg.models.fingerprints`)."""
        if self._text_fingerprint is None:
            self._text_fingerprint = memo_fingerprint(self.text_state(), self._origin, memo)
        return self._text_fingerprint

    def text_settings(self) -> dict:
        """The text tower's configuration (widths, activation, norms' epsilon, the token it pools
        at, ...): what its text features depend on besides the weights and the tokenizer."""
        raise NotImplementedError

    def text_cache_key(self, memo: FingerprintMemo | None = None) -> str:
        """The text-feature cache's key for this model: a SHA-256 of everything its text features
        depend on: the text tower's weights (`text_fingerprint`, read from `memo` where it can
        be), its configuration (`text_settings`), its tokenizer (`tokenizer_identity`, without
        reading a tokenizer that is not read yet), the model class, and how zsseg encodes
        (`TEXT_ENCODING`). The same weights with another tokenizer or configuration never read
        each other's features."""
        described = {"encoding": TEXT_ENCODING, "class": type(self).__name__, "weights": self.text_fingerprint(memo),
                     "settings": self.text_settings(), "tokenizer": self._tokenizer_key()}
        return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()

    def _tokenizer_key(self) -> str:
        """`tokenizer_identity` of the tokenizer, computed once per tokenizer object (a loaded
        tokenizer's serialised state takes 20 ms for CLIP's 49,408 tokens)."""
        if self._tokenizer_identity is None or self._tokenizer_identity[0] is not self.tokenizer:
            self._tokenizer_identity = (self.tokenizer, tokenizer_identity(self.tokenizer))
        return self._tokenizer_identity[1]

    def note_weight_files(self, files: list) -> None:
        """Called by loaders once the text tower is built: the identities of the files its weights
        came from (`zsseg.models.fingerprints.reading_weight_files`), for `text_fingerprint`'s memo."""
        describe = {"class": type(self).__name__, "family": self.family, "source": self.source}
        self._origin = WeightOrigin(files, self.text_state(), describe) if files else None

    def weights_fingerprint(self) -> str:
        """SHA-256 of every weight as loaded, image tower included."""
        return fingerprint(dict(self.model.state_dict()))


@runtime_checkable
class DenseFeatures(Protocol):
    """An image tower whose every cell lies in the joint space, as its pooled output does (CLIP's
    ViTs and ResNets; not SigLIP's attention-pooling head): what dense CLIP, the fast mode and
    the FCN ensemble read."""

    #: The dense modes it offers ("plain", "sclip").
    dense_modes: ClassVar[tuple[str, ...]]

    @property
    def dense_stride(self) -> int:
        """Pixels per cell of `dense_features` (the ViT's patch size, a ResNet's 32)."""

    def dense_features(self, pixels: torch.Tensor, mode: str = "plain") -> torch.Tensor:
        """`[B, 3, S, S]` normalised pixels -> `[B, D, S / dense_stride, S / dense_stride]` float32
        embeddings of every cell in the joint space (not normalised), on the model's device."""


@runtime_checkable
class LearnedPromptTower(Protocol):
    """CLIP's own text tower, whose token embeddings learned context vectors (CoOp) stand in for."""

    @property
    def token_width(self) -> int:
        """Width of the token embeddings that learned context vectors stand in for."""

    def token_probe(self) -> torch.Tensor:
        """Rows of the token embedding table that identify this text tower."""

    def context_rows(self, names: list[str], n: int, m: int = 0) -> list[list[int]]:
        """Token ids of each prompt, with places for n learned vectors before the name and m after."""

    def encode_with_context(self, context: torch.Tensor, names: list[str], signals: torch.Tensor | None = None,
                            suffix: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised text embeddings with the learned vectors in place."""


def dense_tower(clip: ClipModel, mode: str = "plain") -> DenseFeatures:
    """`clip` as a `DenseFeatures`, refused in one line where its image tower has no dense
    features or not in `mode`."""
    if not isinstance(clip, DenseFeatures):
        reason = getattr(clip, "no_dense_reason", "") or "its image tower gives no per-cell features in the joint space"
        raise SettingError("method", f"this {clip.family} model ('{clip.source}') has no dense features ({reason}); "
                           "use {setting} two-stage")
    if mode not in clip.dense_modes:
        raise SettingError("dense_mode", f"{{setting}} '{mode}' needs a ViT image tower; this {clip.family} model "
                           f"('{clip.source}') offers {', '.join(repr(m) for m in clip.dense_modes)}")
    return clip


def learned_prompt_tower(clip: ClipModel) -> LearnedPromptTower:
    """`clip` as a `LearnedPromptTower`, refused in one line where its text tower is not CLIP's."""
    if not isinstance(clip, LearnedPromptTower):
        raise SettingError("prompt", f"learned prompts need CLIP's text tower; this {clip.family} model ('{clip.source}') "
                           "takes template prompts only ({setting} imagenet, vild, or a template)")
    return clip


class ClipTextTower:
    """The methods of CLIP's own text tower (transformers' `CLIPTextTransformer` under
    `model.text_model`, with `model.text_projection`), shared by every CLIP family whose text
    side is CLIP's: BPE tokens, EOS pooling, learned prompts."""

    @property
    def _anchor(self) -> torch.Tensor:
        return self.model.text_projection.weight

    @property
    def embed_dim(self) -> int:
        return self.model.text_projection.weight.shape[0]

    @property
    def token_width(self) -> int:
        return self.model.text_model.embeddings.token_embedding.weight.shape[1]

    @torch.no_grad()
    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings, `[N, D]` float32. Texts must fit the context."""
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size], padding=True, truncation=False, return_tensors="pt"
            ).to(self.device)
            if batch["input_ids"].shape[1] > self.context_length:
                raise ZssegError(f"a prompt is longer than CLIP's {self.context_length}-token context")
            pooled = self.model.text_model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).pooler_output
            out.append(F.normalize(self.model.text_projection(pooled).float(), dim=-1))
        if not out:
            return torch.empty(0, self.embed_dim)
        return torch.cat(out)

    def text_settings(self) -> dict:
        return asdict(self.model.text_model.spec)

    def text_state(self) -> dict[str, torch.Tensor]:
        tensors = {f"text_model.{k}": v for k, v in self.model.text_model.state_dict().items()}
        tensors["text_projection.weight"] = self.model.text_projection.weight
        return tensors

    def token_probe(self) -> torch.Tensor:
        """`[64, W]` float32 rows of the token embedding table at fixed token ids: compared with
        the rows a learned prompt was trained with, to tell whether this CLIP is that one."""
        table = self.model.text_model.embeddings.token_embedding.weight
        ids = torch.linspace(0, table.shape[0] - 1, 64).round().long()
        return table.detach()[ids.to(table.device)].float().cpu()

    def context_rows(self, names: list[str], n: int, m: int = 0) -> list[list[int]]:
        """Token ids of "[SOS] X*n NAME X*m . [EOS]" for each name (X marks the places learned
        vectors take, n before the name and m after it); a name too long for CLIP's context is an
        error naming it."""
        tokenizer = self.tokenizer
        filler = tokenizer("X", add_special_tokens=False)["input_ids"]
        dot = tokenizer(".", add_special_tokens=False)["input_ids"]
        rows = [[tokenizer.bos_token_id, *filler * n, *ids, *filler * m, *dot, tokenizer.eos_token_id]
                for ids in tokenizer(names, add_special_tokens=False)["input_ids"]]
        for name, row in zip(names, rows):
            if len(row) > self.context_length:
                raise ZssegError(
                    f"class name '{name[:60]}' is too long: with {n + m} learned prompt vectors it is {len(row)} tokens, "
                    f"CLIP's context is {self.context_length}"
                )
        return rows

    def encode_with_context(self, context: torch.Tensor, names: list[str], signals: torch.Tensor | None = None,
                            suffix: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised text embeddings `[N, D]` float32 of "[SOS] c_1 .. c_n NAME s_1 .. s_m .
        [EOS]", where c_i are the rows of `context` `[n, W]` and s_j those of `suffix` `[m, W]`
        (none by default) put in place of token embeddings (CoOp's learned prompt, as the paper's
        code builds it). `signals` `[4, W]`, where given, replace the embeddings of the start
        token, the ".", the end token and the padding (the copies the reference stores with its
        prompt). Differentiable with respect to `context`; with n = 0 it equals
        `encode_text([f"{name}." ...])`."""
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        n = int(context.shape[0])
        m = 0 if suffix is None else int(suffix.shape[0])
        rows = self.context_rows(names, n, m)
        if not rows:
            return torch.empty(0, self.embed_dim)
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        text_model = self.model.text_model
        embeds = text_model.embeddings.token_embedding(ids)
        if n:
            context = context.to(device=embeds.device, dtype=embeds.dtype)
            embeds = torch.cat([embeds[:, :1], context.expand(len(rows), -1, -1), embeds[:, 1 + n :]], dim=1)
        ends = torch.tensor([len(r) for r in rows], device=embeds.device)[:, None]
        place = torch.arange(length, device=embeds.device)[None, :, None]
        for j in range(m):  # after the name, before the "."
            embeds = torch.where(place == ends[..., None] - 2 - m + j, suffix[j].to(device=embeds.device, dtype=embeds.dtype), embeds)
        if signals is not None:
            start, dot, end, pad = signals.to(device=embeds.device, dtype=embeds.dtype)
            embeds = torch.where(place == 0, start, embeds)
            embeds = torch.where(place == ends[..., None] - 2, dot, embeds)
            embeds = torch.where(place == ends[..., None] - 1, end, embeds)
            embeds = torch.where(place >= ends[..., None], pad, embeds)

        def use_embeds(module, args, kwargs):  # the tower's own mask and pooling, our token embeddings
            return (), {**kwargs, "input_ids": None, "inputs_embeds": embeds}

        hook = text_model.embeddings.register_forward_pre_hook(use_embeds, with_kwargs=True)
        try:
            pooled = text_model(input_ids=ids, attention_mask=mask).pooler_output
        finally:
            hook.remove()
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)



class TransformersClip(ClipTextTower, ClipModel):
    """A CLIP ViT in transformers' layout: zsseg's `zsseg.models.clip_vit.ClipNet`, which
    computes what transformers' `CLIPModel` does, loaded from the hub, a transformers folder, or
    converted from OpenAI's layout (`zsseg.models.openai_clip`)."""

    family: ClassVar[str] = "clip"
    dense_modes: ClassVar[tuple[str, ...]] = DENSE_MODES

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings `[N, D]` float32 from normalised pixels `[N, 3, H, W]`,
        S x S (`image_size`) or any other size: then the position embeddings are resized
        bicubically to the patch grid, as the reference's CLIP does (prompt learning's 244 x 224)."""
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        other = tuple(pixels.shape[-2:]) != (self.image_size, self.image_size)
        pooled = self.model.vision_model(pixel_values=pixels, interpolate_pos_encoding=other).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def image_tower(self) -> torch.nn.Module:
        return torch.nn.ModuleList([self.model.vision_model, self.model.visual_projection])

    @property
    def dense_stride(self) -> int:
        return self.model.vision_model.embeddings.patch_size

    def _csa_block(self, layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """SCLIP's last block: x + out_proj((softmax(QQ^T s) + softmax(KK^T s)) V) on layer_norm1(x),
        per head, no feed-forward block."""
        attention = layer.self_attn
        x = layer.layer_norm1(hidden)
        batch, tokens, _ = x.shape

        def heads(projection: torch.nn.Linear) -> torch.Tensor:  # [B, heads, N, head_dim]
            return projection(x).view(batch, tokens, attention.num_heads, attention.head_dim).transpose(1, 2)

        q, k, v = heads(attention.q_proj), heads(attention.k_proj), heads(attention.v_proj)
        weights = (q @ q.transpose(-1, -2) * attention.scale).softmax(dim=-1)
        weights = weights + (k @ k.transpose(-1, -2) * attention.scale).softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, -1)
        return hidden + attention.out_proj(out)

    @torch.no_grad()
    def dense_features(self, pixels: torch.Tensor, mode: str = "plain") -> torch.Tensor:
        """The last layer's patch tokens through the final layer norm and the projection ("plain",
        the paper's dense baseline), or with SCLIP's correlative self-attention in that layer
        ("sclip", see `zsseg.classification.dense`)."""
        dense_tower(self, mode)
        vision = self.model.vision_model
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        size = pixels.shape[-1]
        hidden = vision.embeddings(pixels, interpolate_pos_encoding=size != self.image_size)
        hidden = vision.pre_layrnorm(hidden)
        *layers, last = vision.encoder.layers
        for layer in layers:
            hidden = layer(hidden, None)
        hidden = self._csa_block(last, hidden) if mode == "sclip" else last(hidden, None)
        patches = self.model.visual_projection(vision.post_layernorm(hidden[:, 1:])).float()
        side = size // self.dense_stride
        return patches.view(len(pixels), side, side, -1).permute(0, 3, 1, 2)


QUICK_GELU = 1.702  # CLIP's quick GELU: x * sigmoid(1.702 x)


@torch.no_grad()
def fold_quick_gelu(tower: torch.nn.Module, then=None) -> int:
    """Rewrite each MLP `fc2(quick_gelu(fc1(x)))` of `tower` (`zsseg.models.clip_vit` layers) as
    `(fc2 / 1.702)(silu((1.702 fc1)(x)))`: the same function (silu(y) = y sigmoid(y)), one
    pass over the hidden activations instead of three (a scaling, a sigmoid, a product).
    Floating-point rounding
    differs from the original's, so only the int8 tower, already an approximation, uses it.
    `then(mlp)`, where given, is called on each MLP once it is rewritten, and must leave its
    float weights unused afterwards (quantisation packs copies): the rewritten weights are then
    written into buffers that every MLP reuses. Returns the MLPs rewritten."""
    from .clip_vit import QuickGELU

    buffers: dict[tuple, torch.Tensor] = {}

    def scaled(weight: torch.nn.Parameter, divide: bool = False) -> torch.nn.Parameter:
        """`weight` times (or divided by) 1.702, as a new tensor or, with `then`, in a reused buffer."""
        out = None
        if then is not None:
            out = buffers.setdefault((tuple(weight.shape), weight.dtype, weight.device), torch.empty_like(weight))
        value = torch.div(weight, QUICK_GELU, out=out) if divide else torch.mul(weight, QUICK_GELU, out=out)
        return torch.nn.Parameter(value, requires_grad=weight.requires_grad)

    folded = 0
    for module in list(tower.modules()):
        fc1, fc2 = getattr(module, "fc1", None), getattr(module, "fc2", None)
        if isinstance(getattr(module, "activation_fn", None), QuickGELU) and \
                isinstance(fc1, torch.nn.Linear) and isinstance(fc2, torch.nn.Linear):
            # New tensors, not in-place products: loaded weights are often a memory-mapped file's
            # pages, and writing them copies each page with a TLB flush on every core (0.7 CPU-s
            # for ViT-B/16's MLPs on 2 cores, in the kernel).
            fc1.weight = scaled(fc1.weight)
            if fc1.bias is not None:
                fc1.bias = scaled(fc1.bias)
            fc2.weight = scaled(fc2.weight, divide=True)
            module.activation_fn = torch.nn.SiLU(inplace=True)
            folded += 1
            if then is not None:
                then(module)
    return folded


def normalisation(preprocessor: dict, mean: tuple, std: tuple, where: str = "preprocessor_config.json") -> tuple[tuple, tuple]:
    """image_mean and image_std from a checkpoint's preprocessor_config.json (as a dict; {} if it
    has none), else the model family's `mean` and `std`; values that are not 3 numbers each (std
    above 0) are an error naming `where`."""
    from .hub import mean_std

    return mean_std(preprocessor, "image_mean", "image_std", mean, std, where)


DEVICE_TYPES = ("cpu", "cuda")  # what zsseg runs on


def parse_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device, after checking that it is one zsseg runs on (cpu, cuda,
    cuda:N): one line for a misspelling, or a device type torch knows but zsseg does not run on
    ("meta", "mps", "xla"). Touches no device (under torchrun, every process would otherwise
    open one on GPU 0)."""
    text = str(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation notes on old device types: refused below
            parsed = torch.device(device)
    except Exception as error:  # torch raises RuntimeError, ValueError or TypeError by the string
        raise ZssegError(f"device '{text}' is not a device ({one_line(error, 120)}); give cpu, cuda or cuda:N") from None
    if parsed.type not in DEVICE_TYPES:
        raise ZssegError(f"device '{text}' is not one zsseg runs on; give cpu, cuda or cuda:N (the GPU's index)")
    return parsed


def usable_device(device: str | torch.device) -> torch.device:
    """`parse_device`, and a tensor can be made there: one line for "cuda" on a machine without
    one, or a bad index."""
    parsed = parse_device(device)
    try:
        torch.empty(0, device=parsed)
    except Exception as error:
        raise ZssegError(f"device '{device}' is not usable here: {one_line(error, 160)}") from None
    return parsed


def wrap_clip(model: torch.nn.Module, tokenizer, source: str, image_mean: tuple = CLIP_MEAN, image_std: tuple = CLIP_STD) -> "TransformersClip":
    """A `TransformersClip` around a loaded `zsseg.models.clip_vit.ClipNet` (put in eval mode)
    and its tokenizer; the input size and the context length are read from the model's config."""
    return TransformersClip(
        model=model.eval(),
        tokenizer=tokenizer,
        source=source,
        image_size=int(model.config.vision_config.image_size),
        image_mean=image_mean,
        image_std=image_std,
        context_length=int(model.config.text_config.max_position_embeddings),
    )
