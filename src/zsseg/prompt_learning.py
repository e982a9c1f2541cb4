"""Learning a prompt with a frozen CLIP (CoOp; the paper's §4.2): `zsseg train prompts`.

    run = train_prompts(load_dataset("coco-stuff", root, "train"), prompt_config("paper"),
                        clip=load_clip(...), output_dir=Path("out"), protocol="zero-shot")
    Segmenter(clip=..., prompt="out")  # or --prompt out

What is learned: n context vectors c_1..c_n (16 by default, initialised N(0, 0.02^2)) that take
the place of token embeddings before each class name, "[SOS] c_1 .. c_n NAME . [EOS]"; every
weight of CLIP stays as it is. As in the paper's code (`LearnablePromptExtractor` and the
`*learn_prompt*` configs):

- Samples: one per (training image, seen class present in it): the class's ground-truth mask,
  cropped as Eq. 1 crops a proposal (background erased to CLIP's mean, the mask's box), then a
  random resized crop (area 8-100% of the box, aspect 3/4-4/3) to CLIP's input size and a
  random flip. At most `samples_per_class` samples per class are drawn once, with the seed.
- Loss: cross-entropy of softmax(100 x cos(image, text)) over the seen class names (Eq. 1).
- SGD (momentum 0.9), lr 0.02, weight decay 5e-4, gradient norm clipped at 0.01, lr x 0.005
  for the first 100 steps then a cosine decay to 0 at `max_iters`; batch 32.
- The loop is `zsseg.training.run_training` (DDP under torchrun, atomic checkpoints, exact
  resume, `log.jsonl`); at the end `OUT/prompt.safetensors` + `OUT/prompt.json`.

The image tower is frozen too, so nothing here could change CLIP's image features; they are
recomputed for each augmented crop, as the reference does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .clip import ClipModel
from .datasets import SegmentationDataset, training_classes
from .distributed import Distributed
from .errors import ZssegError
from .images import image_tensor
from .maskformer.data import randint, seeded_generator, uniform
from .prompts import PROMPT_JSON, PROMPT_TENSORS, LearnedPrompt, VocabularyEmbedding, save_learned_prompt, synonym_rows
from .region_classification import TEMPERATURE, mask_boxes
from .training import LoopSettings, TrainingResult, run_record, run_training
from .training import check_output_dir as _check_output_dir
from .vocabulary import Vocabulary


@dataclass(frozen=True)
class PromptTrainConfig:
    """Settings of `zsseg train prompts`; the defaults are the paper's COCO-Stuff config.

    Attributes:
        context_length: n, the number of learned vectors before the class name.
        init_std: their initialisation, N(0, init_std^2).
        max_iters, batch_size: optimisation steps and crops per step (over all processes).
        samples_per_class: at most this many (image, class) samples per class (the reference's
            SAMPLE_PER_CLASS); 0 keeps them all.
        lr, momentum, weight_decay: SGD.
        warmup_iters, warmup_factor: lr x warmup_factor for the first warmup_iters steps.
        grad_clip: maximum L2 norm of the context vectors' gradient (0: none).
        min_crop_area: smallest area of the random resized crop, as a fraction of the box.
        flip: random horizontal flip.
        temperature: the logit scale of the loss (Eq. 1's 100, which is also a trained CLIP's
            own scale; a CLIP trained here with a smaller scale may learn better at its own).
        checkpoint_every, log_every: steps between checkpoints and between log lines.
        seed: fixes initialisation, sample choice, order and augmentation.
    """

    context_length: int = 16
    init_std: float = 0.02
    max_iters: int = 16000
    batch_size: int = 32
    samples_per_class: int = 32
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.005
    grad_clip: float = 0.01
    min_crop_area: float = 0.08
    flip: bool = True
    temperature: float = TEMPERATURE
    checkpoint_every: int = 1000
    log_every: int = 20
    seed: int = 0

    def __post_init__(self):
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ZssegError(f"temperature must be a finite number above 0, got {self.temperature}")
        for name in ("context_length", "max_iters", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ZssegError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.samples_per_class < 0 or self.warmup_iters < 0:
            raise ZssegError("samples-per-class and warmup iterations must not be negative")
        if self.lr <= 0 or self.weight_decay < 0 or self.init_std < 0 or not 0 < self.warmup_factor <= 1:
            raise ZssegError("lr must be positive, weight decay and init std non-negative, warmup factor in (0, 1]")
        if not 0 <= self.seed < 2**32:
            raise ZssegError(f"seed must be in 0..{2**32 - 1}, got {self.seed}")
        if not 0 < self.min_crop_area <= 1:
            raise ZssegError(f"min crop area must be in (0, 1], got {self.min_crop_area}")


@dataclass(frozen=True)
class NamedPromptConfig:
    description: str
    train: PromptTrainConfig


PROMPT_CONFIGS: dict[str, NamedPromptConfig] = {
    "paper": NamedPromptConfig(
        "the paper's COCO-Stuff config: 16 vectors, 32 samples per class, batch 32, 16k steps, SGD lr 0.02",
        PromptTrainConfig(),
    ),
    "paper-voc": NamedPromptConfig(
        "the paper's VOC config: as paper with 128 samples per class and 3200 steps",
        PromptTrainConfig(samples_per_class=128, max_iters=3200),
    ),
    "cpu": NamedPromptConfig(
        "as paper, 400 steps, checkpoints every 100 (a CPU run on the shared samples)",
        PromptTrainConfig(max_iters=400, checkpoint_every=100, log_every=10),
    ),
}


def prompt_config(name: str) -> PromptTrainConfig:
    if name not in PROMPT_CONFIGS:
        raise ZssegError(f"unknown prompt config '{name}'; choose one of {', '.join(PROMPT_CONFIGS)}")
    return PROMPT_CONFIGS[name].train


def prompt_config_with(config: PromptTrainConfig, **overrides) -> PromptTrainConfig:
    """`config` with the given fields replaced (None leaves a field as it is)."""
    known = {f.name for f in fields(PromptTrainConfig)}
    return replace(config, **{k: v for k, v in overrides.items() if v is not None and k in known})


def present_classes(label: np.ndarray, classes: set[int]) -> list[int]:
    """The classes of `classes` that `label` ([H, W], -1 ignored) shows, in increasing order."""
    return [int(c) for c in np.unique(label) if int(c) in classes]


def image_classes(dataset: SegmentationDataset, classes: list[int], limit: int | None = None,
                  progress: bool = True) -> list[tuple[int, list[int]]]:
    """(image index, the classes of `classes` present in its ground truth), for the first
    `limit` images of `dataset` that have any. Reads every label map once."""
    from tqdm import tqdm

    wanted = set(classes)
    found = []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in tqdm(range(count), desc="reading labels", unit="image", disable=not progress or None, leave=False):
        present = present_classes(dataset.load_label(index), wanted)
        if present:
            found.append((index, present))
    return found


def sample_segments(found: list[tuple[int, list[int]]], per_class: int, seed: int) -> list[tuple[int, int]]:
    """(image index, class) samples: for each class at most `per_class` of the images that
    show it, drawn without replacement with `seed` (0: all). Ordered by class, then image."""
    by_class: dict[int, list[int]] = {}
    for image, classes in found:
        for cls in classes:
            by_class.setdefault(cls, []).append(image)
    rng = np.random.default_rng(seed)
    samples = []
    for cls in sorted(by_class):
        images = by_class[cls]
        if per_class and len(images) > per_class:
            images = sorted(rng.choice(images, size=per_class, replace=False).tolist())
        samples.extend((image, cls) for image in images)
    return samples


def augmented_crop(image: torch.Tensor, mask: torch.Tensor, size: int, mean: tuple, std: tuple,
                   generator: torch.Generator, min_area: float, flip: bool) -> torch.Tensor:
    """An Eq. 1 crop of one mask (background erased to the mean, the mask's box), then a random
    resized crop of that box to `size` x `size` and a random flip. `[3, size, size]` normalised."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255
    x0, y0, x1, y1 = mask_boxes(mask[None])[0].tolist()
    region = (image[:, y0:y1, x0:x1].float() - mean_t) / std_t * mask[y0:y1, x0:x1]
    height, width = region.shape[1:]
    for _ in range(10):  # Inception-style random resized crop, as the reference's
        area = height * width * uniform(generator, min_area, 1.0)
        aspect = math.exp(uniform(generator, math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = randint(generator, height - h), randint(generator, width - w)
            region = region[:, top : top + h, left : left + w]
            break
    crop = F.interpolate(region[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        crop = crop.flip(-1)
    return crop


class PromptLearner(nn.Module):
    """The learned context vectors; CLIP is held outside the module's parameters and state, so
    checkpoints hold the vectors only and DDP synchronises nothing else."""

    def __init__(self, clip: ClipModel, length: int, init_std: float, seed: int):
        super().__init__()
        width = clip.model.text_model.embeddings.token_embedding.weight.shape[1]
        generator = torch.Generator().manual_seed(seed)
        self.context = nn.Parameter(torch.randn(length, width, generator=generator) * init_std)
        self._clip = (clip,)  # a tuple, not an attribute nn.Module would register

    def forward(self, names: list[str]) -> torch.Tensor:
        """`[N, D]` normalised text embeddings of `names` with the current context."""
        return self._clip[0].encode_with_context(self.context, names)


def warmup_cosine(step: int, config: PromptTrainConfig) -> float:
    """The lr factor at `step`: constant warmup, then cosine over the whole run (detectron2's
    WarmupCosineLR, as the reference configures it)."""
    warmup = config.warmup_factor if step < config.warmup_iters else 1.0
    return warmup * 0.5 * (1.0 + math.cos(math.pi * min(step, config.max_iters) / config.max_iters))


class PromptTask:
    """Prompt learning as a `zsseg.training.TrainingTask`."""

    output_names = (PROMPT_TENSORS, PROMPT_JSON)
    postfix_terms = ("acc",)

    def __init__(self, dataset: SegmentationDataset, config: PromptTrainConfig, clip: ClipModel, protocol: str,
                 device: torch.device, progress: bool = True):
        self.dataset, self.config, self.clip, self.protocol, self.device = dataset, config, clip, protocol, device
        classes = training_classes(dataset, protocol)
        self.vocabulary = Vocabulary([dataset.vocabulary.classes[i] for i in classes], name=f"{dataset.name}-{protocol}")
        self.synonyms, self.owner = synonym_rows(self.vocabulary)
        self.target = {dataset_class: i for i, dataset_class in enumerate(classes)}
        self.samples = sample_segments(image_classes(dataset, classes, progress=progress), config.samples_per_class, config.seed)
        if not self.samples:
            raise ZssegError(f"{dataset.name} {dataset.split} has no pixels of the classes to learn")
        clip.model.requires_grad_(False)  # frozen: its weights never change, and no gradient is kept for them
        self.module = PromptLearner(clip, config.context_length, config.init_std, config.seed)
        settings = asdict(config)
        settings.pop("max_iters")
        self.signature = {
            "prompt": settings, "dataset": dataset.name, "split": dataset.split, "num_images": len(dataset),
            "protocol": protocol, "class_names": self.vocabulary.names, "clip": clip.source,
            "clip_text": clip.text_fingerprint(), "samples": len(self.samples),
        }
        self._order: dict[int, torch.Tensor] = {}

    def sample(self, position: int) -> tuple[torch.Tensor, int]:
        """Crop `[3, S, S]` and target of sample `position` of the run (a function of the seed
        and the position only, so resuming sees what an uninterrupted run would)."""
        epoch, offset = divmod(position, len(self.samples))
        if epoch not in self._order:
            self._order = {epoch: torch.randperm(len(self.samples), generator=seeded_generator(self.config.seed, epoch, 2))}
        image_index, cls = self.samples[int(self._order[epoch][offset])]
        image = image_tensor(self.dataset.load_image(image_index))
        mask = torch.from_numpy(self.dataset.load_label(image_index) == cls)
        crop = augmented_crop(image, mask, self.clip.image_size, self.clip.image_mean, self.clip.image_std,
                              seeded_generator(self.config.seed, position, 3), self.config.min_crop_area, self.config.flip)
        return crop, self.target[cls]

    def initialise(self) -> None:
        pass

    def prepare(self) -> None:
        pass

    def build_optimizer(self):
        config = self.config
        optimizer = torch.optim.SGD([self.module.context], lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, config))
        return optimizer, scheduler

    def loss(self, module: nn.Module, positions: list[int], context: Distributed) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        crops, targets = zip(*(self.sample(p) for p in positions))
        image = self.clip.encode_images(torch.stack(crops))  # no gradient: the image tower is frozen
        text = VocabularyEmbedding(module(self.synonyms), self.owner.to(self.device), len(self.vocabulary))
        logits = text.class_logits(image.to(self.device), self.config.temperature)
        target = torch.tensor(targets, device=self.device)
        ce = F.cross_entropy(logits, target)
        return ce, {"ce": ce.detach(), "acc": (logits.argmax(dim=1) == target).float().mean()}

    def learning_rate(self, optimizer: torch.optim.Optimizer) -> float:
        return optimizer.param_groups[0]["lr"]

    def save(self, output_dir: Path) -> Path:
        info = {
            **run_record(self.clip.source, self.dataset, self.protocol, self.config.max_iters),
            "class_names": self.vocabulary.names,
            "samples": len(self.samples),
            "train": asdict(self.config),
        }
        prompt = LearnedPrompt(self.module.context.detach().float().cpu().clone(), self.clip.token_probe(), info)
        return save_learned_prompt(output_dir, prompt)[1]


def check_output_dir(output_dir: Path) -> None:
    """A new run may replace only the log and prompt files that an earlier zsseg run left."""
    _check_output_dir(output_dir, PromptTask.output_names)


def train_prompts(
    dataset: SegmentationDataset,
    config: PromptTrainConfig,
    clip: ClipModel,
    output_dir: Path,
    protocol: str = "zero-shot",
    context: Distributed = Distributed(),
    progress: bool = True,
) -> TrainingResult:
    """Learn (or resume learning) a prompt on the training classes of `dataset`; see the module
    docstring. Returns where `prompt.json` was written as `weights`."""
    task = PromptTask(dataset, config, clip, protocol, torch.device(context.device), progress and context.is_main)
    settings = LoopSettings(config.max_iters, config.batch_size, config.grad_clip, config.checkpoint_every, config.log_every, config.seed)
    return run_training(task, settings, output_dir, context, progress)


__all__ = [
    "PROMPT_CONFIGS",
    "PromptLearner",
    "PromptTask",
    "PromptTrainConfig",
    "augmented_crop",
    "image_classes",
    "present_classes",
    "prompt_config",
    "sample_segments",
    "train_prompts",
]
