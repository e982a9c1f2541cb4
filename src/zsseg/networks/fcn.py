"""The paper's retrained FCN baseline (§5): per-pixel embeddings scored against CLIP text.

    fcn = load_fcn("out")                         # what `zsseg.training.fcn.train_fcn` wrote
    embeddings = fcn.predict(image)               # [D, H/4, W/4] per-pixel embeddings
    probs = fcn.class_probs(embeddings, text)     # [C, H/4, W/4]

As the paper's code (`ZeroShotPerPixelModel` with `ZeroPerPixelBaselineHead`): a ResNet
backbone and MaskFormer's FPN pixel decoder give per-pixel features at stride 4; a 1x1
convolution maps them to CLIP's D-dim joint space; class logits are 100 x cosine with the
frozen CLIP text embeddings of the vocabulary, so the trained network scores any vocabulary.
Training: the logits are upsampled 4x (bilinear) and cross-entropy is taken over the training
classes, pixels of other classes (the unseen ones, zero-shot) and void ignored.

Training (`zsseg.training.fcn`) writes the weights to `OUT/fcn.safetensors` and `OUT/fcn.json`,
stored as the proposal network's are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models.loading import usable_device
from ..errors import ZssegError
from ..data.images import check_rgb_array, shorter_side_scale
from .fcn_config import FcnModelConfig
from .maskformer.config import config_from_dict
from .maskformer.model import SIZE_DIVISIBILITY, TEMPERATURE, PixelDecoder, build_backbone, pad_to_multiple, parameter_groups, pixel_constants, seeded
from .maskformer.weights import NetworkFiles, read_network
from ..prompts.encoding import Prompt, VocabularyEmbedding
from ..data.vocabulary import Vocabulary

FCN_FILES = NetworkFiles("fcn.safetensors", "fcn.json", "zsseg-fcn/2", "FCN", "zsseg train fcn")  # /1: transformers ResNet


class PerPixelFcn(nn.Module):
    """`forward` takes `[B, 3, H, W]` pixels in [0, 255], normalises them and pads them to
    multiples of 32 with zeros (the mean colour), and returns `[B, D, H'/4, W'/4]` unit-norm
    per-pixel embeddings in CLIP's joint space at a quarter of the padded size."""

    def __init__(self, config: FcnModelConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        self.pixel_decoder = PixelDecoder(self.backbone.channels, config.conv_dim, config.mask_dim)
        self.predictor = nn.Conv2d(config.mask_dim, config.embed_dim, 1)
        nn.init.kaiming_normal_(self.predictor.weight, mode="fan_out", nonlinearity="relu")  # detectron2's c2_msra_fill
        nn.init.zeros_(self.predictor.bias)
        self.register_buffer("pixel_mean", pixel_constants(self.backbone.mean), persistent=False)
        self.register_buffer("pixel_std", pixel_constants(self.backbone.std), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(pad_to_multiple((images - self.pixel_mean) / self.pixel_std, SIZE_DIVISIBILITY))
        return F.normalize(self.predictor(self.pixel_decoder(features)), dim=1)

    @staticmethod
    def class_logits(embeddings: torch.Tensor, text: VocabularyEmbedding) -> torch.Tensor:
        """`[B, C, h, w]` logits: 100 x cosine of each pixel's embedding with each class's text
        embeddings (the best of its synonyms)."""
        batch, dim, height, width = embeddings.shape
        flat = embeddings.permute(0, 2, 3, 1).reshape(-1, dim)
        logits = text.class_logits(flat, TEMPERATURE)
        return logits.reshape(batch, height, width, -1).permute(0, 3, 1, 2)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return parameter_groups(self)


def build_fcn(config: FcnModelConfig, seed: int | None = None) -> PerPixelFcn:
    """A randomly initialised network (deterministic for a given seed)."""
    return seeded(PerPixelFcn, config, seed)


@dataclass
class TrainedFcn:
    """A trained FCN with what inference needs.

    Attributes:
        model: the network, in eval mode.
        train_text: text embeddings of its training classes.
        class_names: its training classes (they count as "seen" in the ensemble with CLIP).
        info: the rest of fcn.json (clip, dataset, protocol, steps, train config).
        prompt: the prompt its classifier was trained with.
    """

    model: PerPixelFcn
    train_text: VocabularyEmbedding
    class_names: list[str]
    info: dict
    prompt: Prompt

    @property
    def test_size(self) -> int:
        return int(self.info["train"]["test_size"])

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    @property
    def training_prompt(self) -> Prompt:
        return self.prompt

    @property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_names(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.model.predictor.weight.device

    def processing_size(self, height: int, width: int, max_size: int | None) -> tuple[int, int]:
        """The size the image is used at: shorter side `test_size`, longer side at most
        `max_size`, both multiples of 4 (so the stride-4 output spans it exactly)."""
        scale = shorter_side_scale(height, width, self.test_size, max_size)
        return tuple(max(4, int(round(side * scale / 4)) * 4) for side in (height, width))  # type: ignore[return-value]

    def seen_classes(self, vocabulary: Vocabulary) -> torch.Tensor:
        """`[C]` bool: classes of `vocabulary` that the network was trained on (any synonym)."""
        return torch.tensor(vocabulary.shares_names(self.vocabulary))

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> torch.Tensor:
        """`[D, H/4, W/4]` unit-norm embeddings of an HWC uint8 image whose sides are multiples
        of 4 (see `processing_size`)."""
        check_rgb_array(image)
        height, width = image.shape[:2]
        if height % 4 or width % 4:
            raise ZssegError(f"FCN images must have sides that are multiples of 4, got {height}x{width} (see processing_size)")
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None].to(self.device)
        return self.model(pixels)[0, :, : height // 4, : width // 4].float()

    @torch.no_grad()
    def class_probs(self, embeddings: torch.Tensor, text: VocabularyEmbedding) -> torch.Tensor:
        """`[C, h, w]` softmax probabilities over the vocabulary of `text`."""
        text = VocabularyEmbedding(text.features.to(self.device).float(), text.synonym_class.to(self.device), text.num_classes)
        return PerPixelFcn.class_logits(embeddings[None].to(self.device), text)[0].float().softmax(dim=0).cpu()


def load_fcn(path: str | Path, device: str | torch.device = "cpu") -> TrainedFcn:
    """Load what `zsseg train fcn` wrote, from its folder or `fcn.safetensors`."""
    stored = read_network(path, FCN_FILES)
    model = PerPixelFcn(config_from_dict(FcnModelConfig, stored.model_config, stored.config))
    stored.load_state(model)
    return TrainedFcn(model.to(usable_device(device)).eval(), stored.text, stored.class_names, stored.info, stored.prompt)


__all__ = ["FCN_FILES", "FcnModelConfig", "PerPixelFcn", "TrainedFcn", "build_fcn", "load_fcn"]
