"""Choosing the single best template on training data (the paper's §4.2): `zsseg prompts select`.

Each template of a set is scored alone by how well it classifies the ground-truth segments of
the **training** split into the **seen** classes (all classes under the cross-dataset
protocol): every (image, seen class) segment is cropped as Eq. 1 crops a proposal, encoded
once, and classified by softmax(100 x cos) over the seen class names put in that template. The
score is the mean class accuracy (the mean over seen classes of the share of their segments
classified right), so that frequent classes do not decide alone; plain accuracy is reported
beside it. Validation images and unseen classes are never read: a split other than the
training one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.loading import ClipModel
from ..data.datasets import SegmentationDataset, training_classes
from ..errors import ZssegError
from ..data.images import image_tensor
from ..training.prompt_learning import present_classes
from .encoding import PromptEncoder, TemplatePrompt, resolve_templates
from ..classification.regions import crop_regions
from ..data.vocabulary import Vocabulary

TRAINING_SPLIT = "train"


@dataclass(frozen=True)
class TemplateScore:
    template: str
    mean_class_accuracy: float  # percent
    accuracy: float  # percent


@dataclass
class Selection:
    """The templates ranked best first, and what they were scored on."""

    ranking: list[TemplateScore]
    dataset: str
    split: str
    protocol: str
    images: int
    segments: int
    classes: int

    @property
    def best(self) -> TemplatePrompt:
        return TemplatePrompt((self.ranking[0].template,), name=self.ranking[0].template)

    def table(self) -> str:
        lines = [f"{'rank':>4}  {'mean class acc':>14}  {'accuracy':>8}  template"]
        for rank, score in enumerate(self.ranking, 1):
            lines.append(f"{rank:4d}  {score.mean_class_accuracy:14.2f}  {score.accuracy:8.2f}  {score.template}")
        lines.append(f"scored on {self.segments} segments of {self.classes} classes in {self.images} {self.dataset} "
                     f"{self.split} images ({self.protocol} protocol: {'seen classes only' if self.protocol == 'zero-shot' else 'all classes'})")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "selected_on": {"dataset": self.dataset, "split": self.split, "protocol": self.protocol, "images": self.images,
                            "segments": self.segments, "classes": self.classes,
                            "score": "mean class accuracy of Eq. 1 on the ground-truth segments (training split; zero-shot: seen classes only)"},
            "ranking": [vars(score) for score in self.ranking],
        }


def segment_features(dataset: SegmentationDataset, clip: ClipModel, classes: list[int], limit: int | None = None,
                     batch_size: int = 32, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`[M, D]` CLIP features of the Eq. 1 crops of every ground-truth segment of `classes` in
    the first `limit` images, and `[M]` their class (dataset index). Each label map is read
    once, and only images with such a segment are read."""
    from tqdm import tqdm

    wanted = set(classes)
    features, targets = [], []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in tqdm(range(count), desc="encoding segments", unit="image", disable=not progress or None, leave=False):
        label = dataset.load_label(index)
        present = present_classes(label, wanted)
        if not present:
            continue
        masks = torch.stack([torch.from_numpy(label == c) for c in present])
        crops, _ = crop_regions(image_tensor(dataset.load_image(index)), masks, clip.image_size, clip.image_mean, clip.image_std,
                                  interpolation=clip.interpolation)
        for start in range(0, len(crops), batch_size):
            features.append(clip.encode_images(crops[start : start + batch_size]).cpu())
        targets.extend(present)
    if not features:
        return torch.empty(0, clip.embed_dim), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.tensor(targets, dtype=torch.long)


def select_template(
    dataset: SegmentationDataset,
    clip: ClipModel,
    protocol: str = "zero-shot",
    templates: str | tuple[str, ...] | list[str] = "imagenet",
    limit: int | None = None,
    batch_size: int = 32,
    text_cache: bool = True,
    progress: bool = True,
) -> Selection:
    """Rank `templates` (a set name or a list), each alone; see the module docstring.

    Args:
        dataset: the training split of a benchmark.
        protocol: "zero-shot" scores the seen classes only; "cross-dataset" all classes.
        limit: use the first `limit` training images (all by default).
    """
    if dataset.split != TRAINING_SPLIT:
        raise ZssegError(f"templates are selected on the {TRAINING_SPLIT} split, never on '{dataset.split}' (that would select on test data)")
    candidates = resolve_templates(templates)
    classes = training_classes(dataset, protocol)
    features, targets = segment_features(dataset, clip, classes, limit, batch_size, progress)
    if len(targets) == 0:
        raise ZssegError(f"no ground-truth segment of the seen classes in the first {limit or len(dataset)} {dataset.name} {dataset.split} images")
    vocabulary = Vocabulary([dataset.vocabulary.classes[i] for i in classes], name=f"{dataset.name}-{protocol}")
    target = torch.tensor([classes.index(int(t)) for t in targets])
    present = torch.unique(target)
    scores = []
    for template in candidates:
        encoder = PromptEncoder(clip, TemplatePrompt((template,), name=template), cache=text_cache)
        logits = encoder.encode_vocabulary(vocabulary).class_logits(features.to(clip.device), clip.temperature).cpu()
        right = (logits.argmax(dim=1) == target).float()
        per_class = torch.stack([right[target == c].mean() for c in present])
        scores.append(TemplateScore(template, round(100 * float(per_class.mean()), 4), round(100 * float(right.mean()), 4)))
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].mean_class_accuracy, -scores[i].accuracy, i))
    return Selection(
        ranking=[scores[i] for i in order],
        dataset=dataset.name,
        split=dataset.split,
        protocol=protocol,
        images=min(limit or len(dataset), len(dataset)),
        segments=len(targets),
        classes=len(present),
    )


__all__ = ["Selection", "TemplateScore", "segment_features", "select_template"]
