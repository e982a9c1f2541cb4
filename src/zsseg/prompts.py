"""Prompt templates and the cached text embeddings of a vocabulary.

A class name is put into every template of a set ("a photo of a {}."), each prompt is encoded
and L2-normalised, and the class embedding is the L2-normalised mean of those (CLIP's prompt
ensembling). Embeddings are cached per (model, template set, name), so a vocabulary shared by
many images is encoded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .clip import ClipModel
from .errors import ZssegError
from .vocabulary import Vocabulary

# CLIP's 80 ImageNet templates (Radford et al. 2021, the ImageNet zero-shot notebook).
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.",
    "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)

# ViLD's 14 templates (Gu et al. 2022), as used by the paper's code.
VILD_TEMPLATES = (
    "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene",
    "There is the {} in the scene", "a photo of a {} in the scene", "a photo of a small {}.",
    "a photo of a medium {}.", "a photo of a large {}.", "This is a photo of a small {}.",
    "This is a photo of a medium {}.", "This is a photo of a large {}.",
    "There is a small {} in the scene.", "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

SINGLE_TEMPLATE = ("a photo of a {}.",)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "vild": VILD_TEMPLATES,
    "single": SINGLE_TEMPLATE,
}


def resolve_templates(templates: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A template set by name ("imagenet", "vild", "single") or an explicit list of templates."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        templates = (templates,)
    templates = tuple(templates)
    if not templates:
        raise ZssegError("the template list is empty")
    for template in templates:
        if template.count("{}") != 1:
            raise ZssegError(
                f"template '{template}' must contain '{{}}' exactly once (or name a set: {', '.join(TEMPLATE_SETS)})"
            )
    return templates


@dataclass
class VocabularyEmbedding:
    """Text side of Eq. 1 for one vocabulary.

    Attributes:
        features: `[S, D]` float32, one L2-normalised embedding per synonym.
        synonym_class: `[S]` int64, the class index of each synonym row.
        num_classes: C.
    """

    features: torch.Tensor
    synonym_class: torch.Tensor
    num_classes: int

    def class_logits(self, image_features: torch.Tensor, temperature: float) -> torch.Tensor:
        """`[N, C]` logits: temperature x cosine, max over each class's synonyms."""
        sims = temperature * image_features @ self.features.T  # [N, S]
        logits = sims.new_full((sims.shape[0], self.num_classes), float("-inf"))
        index = self.synonym_class.to(sims.device).expand_as(sims)
        return logits.scatter_reduce(1, index, sims, reduce="amax", include_self=True)


class PromptEncoder:
    """Encodes class names with a template set, caching one embedding per name."""

    def __init__(self, clip: ClipModel, templates: str | tuple[str, ...] | list[str] = "imagenet"):
        self.clip = clip
        self.templates = resolve_templates(templates)
        self._cache: dict[str, torch.Tensor] = {}

    def check_lengths(self, names: list[str]) -> None:
        """Raise if a name, put in the longest template, exceeds CLIP's context."""
        longest = max(self.templates, key=len)
        counts = self.clip.token_counts([longest.format(n) for n in names])
        for name, count in zip(names, counts):
            if count > self.clip.context_length:
                raise ZssegError(
                    f"class name '{name[:60]}{'...' if len(name) > 60 else ''}' is too long: "
                    f"with its prompt it is {count} tokens, CLIP's context is {self.clip.context_length}"
                )

    def encode_names(self, names: list[str]) -> torch.Tensor:
        """`[N, D]` float32 class embeddings, in the order of `names`."""
        missing = list(dict.fromkeys(n for n in names if n not in self._cache))
        if missing:
            self.check_lengths(missing)
            prompts = [t.format(n) for n in missing for t in self.templates]
            per_prompt = self.clip.encode_text(prompts).view(len(missing), len(self.templates), -1)
            for name, embedding in zip(missing, F.normalize(per_prompt.mean(dim=1), dim=-1)):
                self._cache[name] = embedding.cpu()
        if not names:
            return torch.empty(0, self.clip.embed_dim)
        return torch.stack([self._cache[n] for n in names])

    def encode_vocabulary(self, vocabulary: Vocabulary) -> VocabularyEmbedding:
        synonyms = [s for cls in vocabulary.classes for s in cls]
        owner = [i for i, cls in enumerate(vocabulary.classes) for _ in cls]
        return VocabularyEmbedding(
            features=self.encode_names(synonyms).to(self.clip.device),
            synonym_class=torch.tensor(owner, dtype=torch.long).unsqueeze(0),
            num_classes=len(vocabulary),
        )
