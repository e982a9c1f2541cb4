"""The ResNet backbones of the proposal network and the FCN, as detectron2 builds them.

The paper's network uses "R101c": detectron2's DeepLab ResNet-101 (`build_resnet_deeplab_backbone`),
which differs from torchvision's ResNet-101 in three places:

- the stem is three 3x3 convolutions (64, 64, 128 channels) instead of one 7x7;
- res5 uses the multi-grid dilations (1, 2, 4) in its three blocks (stride still 32);
- its ImageNet weights are detectron2's `DeepLab/R-103.pkl`.

Both use the stride in the 3x3 convolution of a bottleneck (`STRIDE_IN_1X1: False`) and, with
pretrained weights, frozen batch norm. This module is zsseg's own implementation of that
architecture, with detectron2's parameter names (`stem.conv1.weight`, `res2.0.conv1.norm.weight`,
...), so that the authors' checkpoints and detectron2's ImageNet files load by name.

    backbone = ResNet(RESNETS["resnet-101c"])
    res2, res3, res4, res5 = backbone(pixels)   # strides 4, 8, 16, 32
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import SettingError, ZssegError, one_line

from .backbones import DEPTHS, RESNETS, ResNetSpec  # noqa: F401  (specifications, torch-free)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (buffers, never trained), as
    detectron2's: the ImageNet statistics of a pretrained backbone stay as they were."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps)


def _norm(kind: str, channels: int) -> nn.Module:
    return FrozenBatchNorm2d(channels) if kind == "FrozenBN" else nn.BatchNorm2d(channels)


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by its norm (`.norm`), named as detectron2's `Conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, norm: str, stride: int = 1, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation, bias=False)
        self.norm = _norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class Stem(nn.Module):
    """The layers before res2: a 7x7 stride-2 conv ("basic") or three 3x3 convs, the first with
    stride 2 ("deeplab"); then a 3x3 stride-2 max pool. Output stride 4."""

    def __init__(self, kind: str, channels: int, norm: str):
        super().__init__()
        if kind == "basic":
            self.conv1 = ConvNorm(3, channels, 7, norm, stride=2)
        elif kind == "deeplab":
            self.conv1 = ConvNorm(3, channels // 2, 3, norm, stride=2)
            self.conv2 = ConvNorm(channels // 2, channels // 2, 3, norm)
            self.conv3 = ConvNorm(channels // 2, channels, 3, norm)
        else:
            raise ZssegError(f"unknown ResNet stem '{kind}'; choose basic or deeplab")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.children():
            x = F.relu(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride and dilation here), 1x1 expand; projection shortcut where the
    width or stride changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int, norm: str):
        super().__init__()
        width = out_channels // 4
        if in_channels != out_channels:
            self.shortcut = ConvNorm(in_channels, out_channels, 1, norm, stride=stride)
        self.conv1 = ConvNorm(in_channels, width, 1, norm)
        self.conv2 = ConvNorm(width, width, 3, norm, stride=stride, dilation=dilation)
        self.conv3 = ConvNorm(width, out_channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        shortcut = self.shortcut(x) if hasattr(self, "shortcut") else x
        return F.relu(out + shortcut)


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride in the first); projection shortcut where the width changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int, norm: str):
        super().__init__()
        if in_channels != out_channels:
            self.shortcut = ConvNorm(in_channels, out_channels, 1, norm, stride=stride)
        self.conv1 = ConvNorm(in_channels, out_channels, 3, norm, stride=stride, dilation=dilation)
        self.conv2 = ConvNorm(out_channels, out_channels, 3, norm, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        shortcut = self.shortcut(x) if hasattr(self, "shortcut") else x
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """`forward([B, 3, H, W] normalised pixels)` returns the outputs of res2..res5 (strides 4, 8,
    16, 32), as a list."""

    def __init__(self, spec: ResNetSpec):
        super().__init__()
        if spec.res5_multi_grid and len(spec.res5_multi_grid) != spec.blocks[3]:
            raise ZssegError(f"res5 has {spec.blocks[3]} blocks but {len(spec.res5_multi_grid)} multi-grid dilations")
        self.spec = spec
        self.stem = Stem(spec.stem, spec.stem_channels, spec.norm)
        block = Bottleneck if spec.bottleneck else BasicBlock
        in_channels = spec.stem_channels
        for stage, (count, width) in enumerate(zip(spec.blocks, spec.widths)):
            dilations = spec.res5_multi_grid if stage == 3 and spec.res5_multi_grid else (1,) * count
            layers = []
            for i in range(count):
                stride = 2 if i == 0 and stage > 0 else 1
                layers.append(block(in_channels, width, stride, dilations[i], spec.norm))
                in_channels = width
            self.add_module(f"res{stage + 2}", nn.Sequential(*layers))
        self.channels = tuple(spec.widths)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(pixels)
        outputs = []
        for stage in (self.res2, self.res3, self.res4, self.res5):
            x = stage(x)
            outputs.append(x)
        return outputs

    def load_pretrained(self, source: str) -> None:
        """Copy ImageNet weights: a detectron2 `.pkl` (file or URL, as `R-103.pkl`), or a hub id
        or folder of a transformers ResNet with the same architecture (basic stem only)."""
        state = read_imagenet_weights(source, self.spec)
        # Batch norm's step counter is bookkeeping, not a weight: neither side needs it.
        own = {k: v for k, v in self.state_dict().items() if not k.endswith("num_batches_tracked")}
        missing = sorted(set(own) - set(state))
        unused = sorted(set(state) - set(own))
        if missing or unused:
            key = (missing or unused)[0]
            raise ZssegError(
                f"backbone weights '{source}' do not match the configured ResNet: "
                + (f"no tensor for {key}" if missing else f"unexpected tensor {key}")
                + f" ({len(missing)} missing, {len(unused)} unexpected)"
            )
        for name, value in state.items():
            if tuple(value.shape) != tuple(own[name].shape):
                raise ZssegError(f"backbone weights '{source}': {name} is {tuple(value.shape)}, the model's is {tuple(own[name].shape)}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


# --- ImageNet weights ---------------------------------------------------------------------------

class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only (detectron2's `.pkl` weight files hold
    `{"model": {name: ndarray}, "__author__": ...}`): any other class is refused, so a
    weights file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a weights file holds arrays only")


def read_detectron2_pickle(data: bytes, source: str, strip_prefix: str | None = "backbone.") -> dict[str, torch.Tensor]:
    """The tensors of a detectron2 `.pkl` weights file (numpy arrays, read without running any
    code), by name, without `strip_prefix` (which a backbone's files may carry)."""
    import numpy as np

    try:
        content = _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except Exception as error:  # a damaged pickle raises anything; nothing but arrays is ever built
        raise ZssegError(f"{source} is not a detectron2 weights file: {one_line(error)}") from None
    model = content.get("model", content) if isinstance(content, dict) else None
    if not isinstance(model, dict) or not model:
        raise ZssegError(f"{source} holds no weights (expected a dict of arrays, as detectron2's .pkl files)")
    tensors = {}
    for name, value in model.items():
        if not isinstance(value, np.ndarray):
            raise ZssegError(f"{source}: {name} is a {type(value).__name__}, not an array")
        tensors[name.removeprefix(strip_prefix) if strip_prefix else name] = torch.from_numpy(np.ascontiguousarray(value))
    return tensors


def _download(url: str) -> bytes:
    """A URL's bytes, from the cache (`$ZSSEG_CACHE_DIR/weights`, ~/.cache/zsseg/weights) or
    downloaded into it once."""
    from ...prompts.text_cache import default_cache_dir

    folder = default_cache_dir() / "weights"
    target = folder / url.rsplit("/", 1)[-1]
    if not target.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except (OSError, ValueError) as error:
            raise SettingError(
                "backbone_weights",
                f"cannot download {url} ({str(error).splitlines()[0] if str(error) else type(error).__name__}); offline, "
                f"download it where the internet is reachable and pass the file: {{setting}} {target.name}, "
                "or {setting} none to start from random weights",
            ) from None
    return target.read_bytes()


# transformers' ResNet names -> detectron2's (basic stem only; stage s is res{s+2}).
_FROM_TRANSFORMERS = (
    ("embedder.embedder.convolution.", "stem.conv1."),
    ("embedder.embedder.normalization.", "stem.conv1.norm."),
)


def _from_transformers(state: dict[str, torch.Tensor], spec: ResNetSpec) -> dict[str, torch.Tensor]:
    import re

    out = {}
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        for old, new in _FROM_TRANSFORMERS:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        found = re.match(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(shortcut|layer\.(\d+))\.(convolution|normalization)\.(.+)", name)
        if found:
            stage, block, part, index, kind, leaf = found.groups()
            conv = "shortcut" if part == "shortcut" else f"conv{int(index) + 1}"
            name = f"res{int(stage) + 2}.{block}.{conv}." + ("" if kind == "convolution" else "norm.") + leaf
        out[name] = value
    return out


def read_imagenet_weights(source: str, spec: ResNetSpec) -> dict[str, torch.Tensor]:
    """A backbone's ImageNet weights in detectron2's names, from a `.pkl` file or URL, or a
    transformers ResNet (hub id or folder)."""
    if source.startswith(("http://", "https://")):
        return read_detectron2_pickle(_download(source), source)
    path = Path(source).expanduser()
    if path.suffix == ".pkl":
        if not path.is_file():
            raise ZssegError(f"backbone weights not found: {path}")
        return read_detectron2_pickle(path.read_bytes(), str(path))
    if spec.stem != "basic":
        raise ZssegError(f"the {spec.stem} stem's ImageNet weights are a detectron2 .pkl (R-103.pkl); '{source}' is not one")
    from transformers import ResNetModel

    from ...models.hub import quiet_transformers

    with quiet_transformers():
        try:
            pretrained = ResNetModel.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise SettingError(
                "backbone_weights",
                f"cannot load backbone weights '{source}': {str(error).strip().splitlines()[0]}; offline, download "
                f"them where the hub is reachable (`hf download {source} --local-dir backbone`) and pass "
                "{setting} backbone, or {setting} none to start from random weights",
            ) from None
    return _from_transformers(pretrained.state_dict(), spec)


__all__ = ["DEPTHS", "RESNETS", "FrozenBatchNorm2d", "ResNet", "ResNetSpec", "read_detectron2_pickle", "read_imagenet_weights"]
