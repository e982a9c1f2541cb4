"""CLIP's ResNet image tower (RN50, RN101, RN50x4, RN50x16, RN50x64), zsseg's own implementation.

The architecture is the "modified ResNet" of OpenAI's CLIP (Radford et al. 2021, "Learning
Transferable Visual Models From Natural Language Supervision", section 2.4), as published in
OpenAI's `clip/model.py`. It differs from torchvision's ResNet in three places:

- the stem is three 3x3 convolutions (width/2, width/2, width channels; the first with stride 2),
  each with batch norm and ReLU, followed by a 2x2 average pool instead of a max pool;
- strided bottlenecks are anti-aliased: every convolution has stride 1, and an average pool of the
  stride comes before the last 1x1 convolution of the main path and before the 1x1 convolution of
  the shortcut;
- the global average pool is replaced by attention pooling: the mean of the final feature map is
  prepended as a token, a learned position embedding is added to every token, and one multi-head
  attention layer with the mean token as its only query gives the image embedding.

Parameter and buffer names are OpenAI's under `visual.` (`conv1.weight`, `layer3.5.bn2.running_var`,
`layer2.0.downsample.0.weight`, `attnpool.q_proj.bias`, ...), so OpenAI's tensors load by name:

    model = modified_resnet_from_state(state)      # state: OpenAI's CLIP state dict, "visual.*"
    embeddings = model(pixels)                     # [N, output_dim], not normalised
    dense = model.dense(pixels)                    # [N, output_dim, H/32, W/32] (MaskCLIP)

Parity with OpenAI's `clip/model.py` (its ModifiedResNet run outside this repository, loaded
strictly with the same `random_openai_resnet_state` tensors, seed 0; two 3-channel noise images;
fp32 on the CPU, torch 2.13): the pooled embeddings, the final feature maps and MaskCLIP's dense
embeddings (computed there from OpenAI's modules) are bitwise equal (max abs difference 0) for
RN50 at 224, RN101 at 224, RN50x4 at 288 and RN50x16 at 384 (outputs up to 27 in size); for a
tiny (1, 2, 1, 2)-block, width-8 model at 64 x 64 the pooled embeddings differ by at most 8.3e-7
(outputs up to 3.8). RN50x64 was compared by its 1203 tensor names and shapes only.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ZssegError

EXPANSION = 4  # a bottleneck's output has 4x the channels of its 3x3 convolution
STRIDE = 32  # the final feature map's stride: stem 4, then stages 1, 2, 2, 2
HEAD_WIDTH = 64  # OpenAI gives each attention-pool head 64 channels: heads = width * 32 // 64


@dataclass(frozen=True)
class ResNetConfig:
    """The architecture of a CLIP ResNet image tower, all of which a state dict's shapes fix.

    Attributes:
        layers: bottleneck blocks in each of the four stages.
        width: channels of the stem's output and of the first stage's 3x3 convolutions; stage k
            (0-based) has width * 2**k in its 3x3 convolutions and 4x that at its output.
        output_dim: size of the image embedding (the attention pool's output projection).
        image_size: the side of the square input the position embedding was learned for (pixels).
    """

    layers: tuple[int, int, int, int]
    width: int
    output_dim: int
    image_size: int

    @property
    def embed_dim(self) -> int:
        """Channels of the final feature map: 8 * width in the last stage's bottlenecks, times 4."""
        return self.width * 8 * EXPANSION

    @property
    def heads(self) -> int:
        """Attention-pool heads, as OpenAI's CLIP sets them (it stores no head count)."""
        return self.embed_dim // HEAD_WIDTH

    @property
    def grid(self) -> int:
        """Side of the final feature map at `image_size`, and of the position embedding's grid."""
        return self.image_size // STRIDE


# OpenAI's released ResNet CLIPs, as its build_model reads them from their state dicts.
OPENAI_RESNETS = {
    "RN50": ResNetConfig((3, 4, 6, 3), 64, 1024, 224),
    "RN101": ResNetConfig((3, 4, 23, 3), 64, 512, 224),
    "RN50x4": ResNetConfig((4, 6, 10, 6), 80, 640, 288),
    "RN50x16": ResNetConfig((6, 8, 18, 8), 96, 768, 384),
    "RN50x64": ResNetConfig((3, 15, 36, 10), 128, 1024, 448),
}


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, [avgpool(stride)], 1x1 expand, each convolution bias-free with batch norm.
    The shortcut is `downsample` (avgpool(stride), 1x1 conv, batch norm; keys `downsample.0`,
    `downsample.1` as OpenAI's) where the stride or the channels change, else the identity."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride > 1 or in_channels != out_channels:
            # "-1" sorts the pool before OpenAI's "0" (conv) and "1" (norm) without renaming them.
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(in_channels, out_channels, 1, bias=False)),
                ("1", nn.BatchNorm2d(out_channels)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.avgpool(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling of a feature map `[N, C, H, W]` into one embedding `[N, output_dim]`.

    The tokens are the mean of the H*W positions followed by the positions themselves (row-major),
    plus `positional_embedding` `[grid**2 + 1, C]`; the mean token is the only query. For another
    feature-map size than grid x grid the embedding's spatial part is resized bicubically (as
    transformers resizes a ViT's position embeddings, and zsseg's ViT CLIP uses it); the mean
    token's row is kept.
    """

    def __init__(self, grid: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        if embed_dim % heads:
            raise ZssegError(f"attention pooling of {embed_dim} channels cannot be split into {heads} heads")
        self.grid, self.heads = grid, heads
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)

    def positions(self, height: int, width: int) -> torch.Tensor:
        """The position embedding `[height * width + 1, C]` for a height x width feature map."""
        table = self.positional_embedding
        if (height, width) == (self.grid, self.grid):
            return table
        spatial = table[1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        spatial = F.interpolate(spatial, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([table[:1], spatial.permute(0, 2, 3, 1).reshape(height * width, -1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [N, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positions(height, width).to(tokens.dtype)  # [N, HW + 1, C]

        def split(t: torch.Tensor) -> torch.Tensor:  # [N, L, C] -> [N, heads, L, C / heads]
            return t.unflatten(-1, (self.heads, channels // self.heads)).transpose(1, 2)

        query = split(self.q_proj(tokens[:, :1]))
        pooled = F.scaled_dot_product_attention(query, split(self.k_proj(tokens)), split(self.v_proj(tokens)))
        return self.c_proj(pooled.transpose(1, 2).reshape(n, channels))

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """MaskCLIP's dense embeddings `[N, output_dim, H, W]` of a feature map `[N, C, H, W]`: the
        value then output projections at every position, as 1x1 convolutions (no position embedding,
        no query or key)."""
        if not isinstance(self.v_proj, nn.Linear):  # int8 projections (zsseg.models.int8): applied per position
            return self.c_proj(self.v_proj(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        value = F.conv2d(x, self.v_proj.weight[:, :, None, None], self.v_proj.bias)
        return F.conv2d(value, self.c_proj.weight[:, :, None, None], self.c_proj.bias)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower. Inputs are CLIP-normalised pixels `[N, 3, H, W]`, converted to the
    weights' dtype; H and W are multiples of 32 (`config.image_size` squared is what it was trained
    on; other sizes resize the attention pool's position embedding, see `AttentionPool2d`). Batch
    norm uses its running statistics only in eval mode: call `.eval()` (the loaders do)."""

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        channels = width
        for stage, blocks in enumerate(config.layers):
            planes, layer = width * 2**stage, []
            for block in range(blocks):  # stages 2 to 4 halve the resolution in their first block
                layer.append(Bottleneck(channels, planes, stride=2 if stage > 0 and block == 0 else 1))
                channels = planes * EXPANSION
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.attnpool = AttentionPool2d(config.grid, config.embed_dim, config.heads, config.output_dim)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The final feature map `[N, 32 * width, H/32, W/32]` (after layer4, before pooling)."""
        x = pixels.to(self.conv1.weight.dtype)
        for conv, norm in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(norm(conv(x)))
        x = self.avgpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings `[N, output_dim]` from pixels `[N, 3, H, W]`, not normalised."""
        return self.attnpool(self.features(pixels))

    def dense(self, pixels: torch.Tensor) -> torch.Tensor:
        """Dense image embeddings `[N, output_dim, H/32, W/32]`, one per position of the final
        feature map, in the space of the pooled embeddings (so of CLIP's text embeddings).

        This is MaskCLIP's trick (Zhou, Loy and Dai, ECCV 2022, "Extract Free Dense Labels from
        CLIP"): the attention pool's value and output projections applied to each position alone,
        skipping the query-key attention and the position embedding. How it relates to `forward`:
        the pooled embedding is c_proj of an attention-weighted average of v_proj of the
        position-embedded tokens, each head with its own weights; as both projections are affine,
        with uniform attention and no position embedding it would be exactly the spatial mean of
        these dense embeddings.
        """
        return self.attnpool.dense(self.features(pixels))


BLOCK_KEY = re.compile(r"layer([1-4])\.(\d+)\.")


def _strip(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _tensor(tower: dict, prefix: str, key: str) -> torch.Tensor:
    if key not in tower:
        raise ZssegError(f"the CLIP ResNet state lacks '{prefix}{key}'")
    return tower[key]


def resnet_config_from_state(state: dict, prefix: str = "visual.") -> ResNetConfig:
    """The architecture of the CLIP ResNet under `prefix` in `state`, read from tensor shapes as
    OpenAI's build_model does: blocks per stage from the `layerK.M.` indices, the width from
    `layer1.0.conv1.weight`, the embedding size from `attnpool.c_proj.weight` and the input size
    from the position embedding (grid**2 + 1 rows, 32 pixels per grid cell).

    Raises:
        ZssegError: one line: no tensor under `prefix`, an empty stage, a missing tensor, a position
            embedding that is not a square grid plus the mean token, or an odd width.
    """
    tower = _strip(state, prefix)
    if not tower:
        raise ZssegError(f"the state holds no tensor under '{prefix}'" if prefix else "the state is empty")
    last = [-1] * 4  # the highest block index of each stage: a gap shows as that block's missing tensors
    for key in tower:
        if match := BLOCK_KEY.match(key):
            stage = int(match[1]) - 1
            last[stage] = max(last[stage], int(match[2]))
    if -1 in last:
        raise ZssegError(f"the CLIP ResNet state has no block in '{prefix}layer{last.index(-1) + 1}'")
    width = int(_tensor(tower, prefix, "layer1.0.conv1.weight").shape[0])
    if width % 2:
        raise ZssegError(f"'{prefix}layer1.0.conv1.weight' gives an odd width {width}: a CLIP ResNet's stem halves it")
    output_dim = int(_tensor(tower, prefix, "attnpool.c_proj.weight").shape[0])
    positions = int(_tensor(tower, prefix, "attnpool.positional_embedding").shape[0])
    grid = round((positions - 1) ** 0.5)
    if grid < 1 or grid * grid + 1 != positions:
        raise ZssegError(f"'{prefix}attnpool.positional_embedding' has {positions} rows, not a square grid plus the mean token")
    return ResNetConfig(tuple(i + 1 for i in last), width, output_dim, grid * STRIDE)


def meta_model(config: ResNetConfig) -> ModifiedResNet:
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        return ModifiedResNet(config)


def modified_resnet_from_state(state: dict, prefix: str = "visual.", dtype: torch.dtype = torch.float32) -> ModifiedResNet:
    """A `ModifiedResNet` in eval mode holding the tensors under `prefix` in `state` (OpenAI's CLIP
    state dict as is, or any with OpenAI's names), without a random initialisation. Entries outside
    `prefix` are ignored.

    Args:
        state: tensors by name; on the CPU in `dtype`, the model shares memory with them.
        prefix: the image tower's key prefix: "visual." in OpenAI's CLIP state dict.
        dtype: every floating tensor is converted to it (OpenAI's fp16 checkpoints keep some
            batch norm tensors in fp32; one dtype throughout runs everywhere).

    Raises:
        ZssegError: one line naming the first missing, unexpected or misshaped tensor, or why the
            architecture cannot be read (see `resnet_config_from_state`). Batch norm's
            `num_batches_tracked` counters may be absent; they are not used in eval mode.
    """
    config = resnet_config_from_state(state, prefix)
    model = meta_model(config)
    expected = model.state_dict()
    tower = _strip(state, prefix)
    unexpected = [k for k in tower if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ZssegError(f"unexpected tensor '{prefix}{unexpected[0]}'{more} in the CLIP ResNet state: "
                         f"it has no place in a ResNet of {config.layers} blocks")
    missing = [k for k in expected if k not in tower and not k.endswith(".num_batches_tracked")]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ZssegError(f"the CLIP ResNet state lacks '{prefix}{missing[0]}'{more}")
    tensors = {}
    for key, meta in expected.items():
        tensor = tower.get(key)
        if tensor is None:  # an absent num_batches_tracked
            tensor = torch.zeros((), dtype=torch.long)
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(meta.shape):
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ZssegError(f"'{prefix}{key}' has shape {shape}, which does not fit the CLIP ResNet read "
                             f"from the other tensors (it needs {tuple(meta.shape)})")
        tensors[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    model.load_state_dict(tensors, assign=True)
    return model.eval()


