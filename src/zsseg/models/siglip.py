"""SigLIP and SigLIP 2 (fixed-resolution checkpoints) from transformers, as a zsseg `ClipModel`.

    clip = load_clip("google/siglip-base-patch16-224")     # or "google/siglip2-base-patch16-224", or a folder

SigLIP is trained with a sigmoid per image-text pair: p(match) = sigmoid(t * cos + b), with a
learned scale t (about 110-120 once trained) and bias b (about -10 to -16). Those probabilities are
independent: for a crop they need not sum to 1 over a vocabulary, and for most crops of a
segmentation they are all close to 0. Eq. 1, Eq. 2 and the geometric ensemble need a distribution
over the user's classes for every region, so zsseg applies Eq. 1's softmax over the vocabulary to
SigLIP's own logits: softmax_i(t * cos_i + b) = softmax_i(t * cos_i), since the bias is the same for
every class and cancels. The temperature is then the model's learned t (`SiglipClip.temperature`)
where CLIP's is the paper's 100; arg-max labels do not depend on it. The sigmoid probabilities
remain available as `sigmoid_probabilities(cos)` for whoever wants "is this a cat?" without a
closed vocabulary.

Text: SigLIP was trained on lower-cased text, padded to its full 64-token context, with no
attention mask and the last position pooled, so prompts are lower-cased and padded that way
(transformers' own pipeline does the same). Images: the checkpoint's preprocessor_config.json gives
the mean and std (0.5 for SigLIP) and the resampling. SigLIP pools with an attention head rather
than a class token, and its patch tokens are not in the text space: dense modes are refused, and
learned prompts (CoOp's context before the name of a CLIP BPE prompt) are CLIP's alone.
SigLIP 2's NaFlex checkpoints (model_type "siglip2", variable resolution) are not supported.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.nn import functional as F

from .base import ClipModel, normalisation
from ..errors import ZssegError

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)  # transformers' SiglipImageProcessor defaults


class SiglipClip(ClipModel):
    """transformers' `SiglipModel`: a ViT with an attention-pooling head, and a text transformer
    pooling its last position."""

    family: ClassVar[str] = "siglip"
    no_dense_reason: ClassVar[str] = "SigLIP pools with an attention head, so its patch tokens are not in the text space"

    @property
    def _anchor(self) -> torch.Tensor:
        return self.model.text_model.head.weight

    @property
    def embed_dim(self) -> int:
        return self.model.text_model.head.weight.shape[0]

    @property
    def temperature(self) -> float:
        """SigLIP's learned logit scale t (see the module docstring)."""
        return float(self.model.logit_scale.detach().float().exp())

    @property
    def logit_bias(self) -> float:
        return float(self.model.logit_bias.detach().float().reshape(-1)[0])

    def sigmoid_probabilities(self, cosines: torch.Tensor) -> torch.Tensor:
        """SigLIP's own per-pair probabilities sigmoid(t * cos + b), each class on its own."""
        return torch.sigmoid(self.temperature * cosines.float() + self.logit_bias)

    def _ids(self, texts: list[str]) -> torch.Tensor:
        texts = [t.lower() for t in texts]
        ids = self.tokenizer(texts, padding="max_length", max_length=self.context_length, truncation=False)["input_ids"]
        longest = max((len(x) for x in ids), default=0)
        if longest > self.context_length:
            raise ZssegError(f"a prompt is longer than SigLIP's {self.context_length}-token context")
        return torch.tensor(ids, dtype=torch.long, device=self.device).reshape(len(texts), self.context_length)

    def token_counts(self, texts: list[str]) -> list[int]:
        ids = self.tokenizer([t.lower() for t in texts], add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    @torch.no_grad()
    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings `[N, D]` float32 (lower-cased, padded to the context)."""
        out = [F.normalize(self.model.text_model(input_ids=self._ids(texts[i : i + batch_size])).pooler_output.float(), dim=-1)
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    def image_tower(self) -> torch.nn.Module:
        return self.model.vision_model

    def text_settings(self) -> dict:
        # transformers' text config, less what names the files or the library (not the function)
        return {k: v for k, v in self.model.config.text_config.to_dict().items()
                if not k.startswith("_") and k not in ("name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures")}

    def text_state(self) -> dict[str, torch.Tensor]:
        return {f"text_model.{k}": v for k, v in self.model.text_model.state_dict().items()}

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings `[N, D]` float32; other sizes than `image_size`
        interpolate the position embeddings."""
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        other = tuple(pixels.shape[-2:]) != (self.image_size, self.image_size)
        pooled = self.model.vision_model(pixel_values=pixels, interpolate_pos_encoding=other).pooler_output
        return F.normalize(pooled.float(), dim=-1)


def wrap_siglip(model: torch.nn.Module, tokenizer, source: str, preprocessor: dict) -> SiglipClip:
    """A `SiglipClip` around a loaded `SiglipModel`, its tokenizer and its preprocessor_config.json."""
    mean, std = normalisation(preprocessor, SIGLIP_MEAN, SIGLIP_STD)
    resample = preprocessor.get("resample", 3)
    return SiglipClip(
        model=model.eval(),
        tokenizer=tokenizer,
        source=source,
        image_size=int(model.config.vision_config.image_size),
        image_mean=mean,
        image_std=std,
        context_length=int(model.config.text_config.max_position_embeddings),
        interpolation="bilinear" if resample == 2 else "bicubic",  # PIL's codes: 2 bilinear, 3 bicubic
    )


__all__ = ["SiglipClip", "wrap_siglip"]
