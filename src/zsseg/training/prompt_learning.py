"""Learning a prompt with a frozen CLIP (CoOp; the paper's §4.2): `zsseg train prompts`.

    run = train_prompts(load_dataset("coco-stuff", root, "train"), load_recipe("prompts", "paper"),
                        clip=load_clip(...), output_dir=Path("out"), protocol="zero-shot")
    Segmenter(clip=..., prompt="out")  # or --prompt out

What is learned: n context vectors c_1..c_n (16 by default, initialised N(0, 0.02^2)) that take
the place of token embeddings before each class name, "[SOS] c_1 .. c_n NAME . [EOS]"; every
weight of CLIP stays as it is. As in the paper's code (`LearnablePromptExtractor` and the
`*learn_prompt*` configs):

- Samples: one per (training image, seen class present in it). At most `samples_per_class`
  samples per class are drawn once, with the seed.
- Crops, as the reference's mapper and `ProposalClipClassifier` make them (`augmented_crop`):
  the image is cropped to the class's box unmasked, a random resized crop of it (area 8-100%,
  aspect 3/4-4/3) is resized to 244 x 224 (Pillow's bilinear filter) and flipped at random;
  then the pixels outside the class's mask are set to CLIP's mean in normalised units. CLIP
  sees the 244 x 224 crop with its position embeddings resized bicubically.
- Loss: cross-entropy of softmax(100 x cos(image, text)) over the seen class names (Eq. 1).
- SGD (momentum 0.9), lr 0.02, weight decay 5e-4, gradient norm clipped at 0.01, lr x 0.005
  for the first 100 steps then a cosine decay to 0 at `max_iters`; batch 32.
- The loop is `zsseg.training.loop.run_training` (DDP under torchrun, atomic checkpoints, exact
  resume, `log.jsonl`); at the end `OUT/prompt.safetensors` + `OUT/prompt.json`.

The image tower is frozen too, so nothing here could change CLIP's image features; they are
recomputed for each augmented crop, as the reference does.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models.base import learned_prompt_tower
from ..models.loading import ClipModel
from ..data.datasets import SegmentationDataset, training_classes
from ..runs.distributed import Distributed
from ..errors import ZssegError
from ..data.images import resize_image
from .augmentation import randint, resize_label_map, uniform
from .proposal_data import seeded_generator
from ..prompts.encoding import PROMPT_JSON, PROMPT_TENSORS, LearnedPrompt, VocabularyEmbedding, save_learned_prompt, synonym_rows
from .prompt_config import PromptTrainConfig
from .recipes import Recipe
from .loop import LoopSettings, TrainingResult, run_record, run_training
from .loop import check_output_dir as _check_output_dir
from ..data.vocabulary import Vocabulary


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


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the box the reference crops around a `[H, W]` bool mask before its
    random resized crop: the mask's bounding box, whose right and bottom ends are clipped to
    W - 1 and H - 1 (so a mask touching the right or bottom edge loses that last column or row,
    as `expand_box` does), at least 1 x 1."""
    height, width = mask.shape
    cols, rows = np.nonzero(mask.any(axis=0))[0], np.nonzero(mask.any(axis=1))[0]
    x, y = int(cols.min()), int(rows.min())
    right, bottom = min(int(cols.max()) + 1, width - 1), min(int(rows.max()) + 1, height - 1)
    return x, y, max(right - x, 1), max(bottom - y, 1)


def random_resized_box(height: int, width: int, generator: torch.Generator, min_area: float,
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(x, y, w, h) of an Inception-style random crop of a `height` x `width` region: area
    U(min_area, 1) of the region, aspect log-uniform in `ratio`, 10 tries, then a centre crop
    (the reference's `RandomResizedCrop`)."""
    area = height * width
    for _ in range(10):
        target = area * uniform(generator, min_area, 1.0)
        aspect = math.exp(uniform(generator, math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return randint(generator, width - w), randint(generator, height - h), w, h
    shape = width / height
    if shape < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif shape > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def augmented_crop(image: np.ndarray, label: np.ndarray, cls: int, size: tuple[int, int], mean: tuple, std: tuple,
                   generator: torch.Generator, min_area: float, flip: bool) -> torch.Tensor | None:
    """One training crop of class `cls` as the reference makes it (its binary-semantic mapper
    and `ProposalClipClassifier`).

    1. The image and labels are cropped to the class's box (`mask_box`), unmasked.
    2. A random resized crop of that box (`random_resized_box`) is resized to `size` = (h, w):
       the image with Pillow's bilinear filter, the labels with torch's "nearest".
    3. A horizontal flip with probability 1/2 when `flip`.
    4. The class's mask is taken from the resized labels; the pixels are normalised with CLIP's
       `mean` and `std` (in [0, 1] units) and every pixel outside the mask is set to `mean`
       itself, in those normalised units, as the reference writes it.

    `image` `[H, W, 3]` uint8 and `label` `[H, W]` int. Returns `[3, h, w]` float32, or None when
    the random crop holds no pixel of the class (the reference then draws another sample).
    """
    x, y, w, h = mask_box(label == cls)
    image, label = image[y : y + h, x : x + w], label[y : y + h, x : x + w]
    x, y, w, h = random_resized_box(h, w, generator, min_area)
    image, label = resize_image(image[y : y + h, x : x + w], size), resize_label_map(label[y : y + h, x : x + w], size)
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    mask = torch.from_numpy(np.ascontiguousarray(label == cls)).float()
    if not mask.any():
        return None
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    pixels = (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) / 255.0 - mean_t) / std_t
    return pixels * mask + (1 - mask) * mean_t


class PromptCrops:
    """The training crops (a `zsseg.training.loop.BatchSource`): sample p of the run is segment
    `order_e[p mod N]` of epoch e = p // N (a seeded permutation per epoch), cropped with a
    generator seeded by (seed, p). Where the random crop misses the class, the reference draws
    another sample: here attempt k takes a segment and a generator seeded by (seed, p, k)."""

    MAX_ATTEMPTS = 100

    def __init__(self, dataset: SegmentationDataset, samples: list[tuple[int, int]], target: dict[int, int],
                 config: PromptTrainConfig, mean: tuple, std: tuple):
        self.dataset, self.samples, self.target, self.config = dataset, samples, target, config
        self.mean, self.std = tuple(mean), tuple(std)
        self._order: dict[int, torch.Tensor] = {}

    def segment(self, position: int) -> tuple[int, int]:
        """(image index, class) of sample `position`'s first attempt."""
        epoch, offset = divmod(position, len(self.samples))
        if epoch not in self._order:
            self._order = {epoch: torch.randperm(len(self.samples), generator=seeded_generator(self.config.seed, epoch, 2))}
        return self.samples[int(self._order[epoch][offset])]

    def crop(self, position: int) -> tuple[torch.Tensor, int]:
        """`[3, h, w]` crop and training-class index of sample `position`."""
        config = self.config
        for attempt in range(self.MAX_ATTEMPTS):
            if attempt == 0:
                image_index, cls = self.segment(position)
                generator = seeded_generator(config.seed, position, 3)
            else:
                generator = seeded_generator(config.seed, position, 3, attempt)
                image_index, cls = self.samples[randint(generator, len(self.samples) - 1)]
            crop = augmented_crop(self.dataset.load_image(image_index), self.dataset.load_label(image_index), cls, config.crop_size,
                                  self.mean, self.std, generator, config.min_crop_area, config.flip)
            if crop is not None:
                return crop, self.target[cls]
        raise ZssegError(f"{self.MAX_ATTEMPTS} random crops in a row missed their class (sample {position})")

    def batch(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        crops, targets = zip(*(self.crop(p) for p in positions))
        return torch.stack(crops), torch.tensor(targets)


class PromptLearner(nn.Module):
    """The learned context vectors; CLIP is held outside the module's parameters and state, so
    checkpoints hold the vectors only and DDP synchronises nothing else."""

    def __init__(self, clip: ClipModel, length: int, init_std: float, seed: int):
        super().__init__()
        width = learned_prompt_tower(clip).token_width  # refuses, in one line, a text tower that is not CLIP's
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
    """Prompt learning as a `zsseg.training.loop.TrainingTask`."""

    output_names = (PROMPT_TENSORS, PROMPT_JSON)
    postfix_terms = ("acc",)

    def __init__(self, dataset: SegmentationDataset, recipe: Recipe, clip: ClipModel, protocol: str,
                 device: torch.device, progress: bool = True):
        config = recipe.train
        self.dataset, self.recipe, self.config, self.clip, self.protocol, self.device = dataset, recipe, config, clip, protocol, device
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
        self.data = PromptCrops(dataset, self.samples, self.target, config, clip.image_mean, clip.image_std)

    def initialise(self) -> None:
        pass

    def prepare(self) -> None:
        pass

    def build_optimizer(self):
        config = self.config
        optimizer = torch.optim.SGD([self.module.context], lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, config))
        return optimizer, scheduler

    def loss(self, module: nn.Module, batch: tuple, context: Distributed) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        crops, target = batch
        image = self.clip.encode_images(crops)  # no gradient: the image tower is frozen
        text = VocabularyEmbedding(module(self.synonyms), self.owner.to(self.device), len(self.vocabulary))
        with torch.autocast(self.device.type, enabled=False):  # the logits and the loss in fp32
            logits = text.class_logits(image.to(self.device), self.config.temperature)
        target = target.to(self.device)
        logits = logits.float()
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
            "config": self.recipe.to_dict(),  # what `zsseg train prompts --config` takes to run it again
        }
        prompt = LearnedPrompt(self.module.context.detach().float().cpu().clone(), learned_prompt_tower(self.clip).token_probe(), info)
        return save_learned_prompt(output_dir, prompt)[1]


def check_output_dir(output_dir: Path) -> None:
    """A new run may replace only the log and prompt files that an earlier zsseg run left."""
    _check_output_dir(output_dir, PromptTask.output_names)


def train_prompts(
    dataset: SegmentationDataset,
    recipe: Recipe,
    clip: ClipModel,
    output_dir: Path,
    protocol: str = "zero-shot",
    context: Distributed = Distributed(),
    progress: bool = True,
    workers: int = 0,
    dtype: str = "fp32",
) -> TrainingResult:
    """Learn (or resume learning) a prompt on the training classes of `dataset`; see the module
    docstring. Returns where `prompt.json` was written as `weights`. `workers` DataLoader
    processes make the crops; `dtype` "bf16" autocasts the text tower's forward pass. `recipe`:
    `zsseg.training.recipes.load_recipe("prompts", ...)`."""
    config = recipe.train
    task = PromptTask(dataset, recipe, clip, protocol, torch.device(context.device), progress and context.is_main)
    settings = LoopSettings(config.max_iters, config.batch_size, config.grad_clip, config.checkpoint_every, config.log_every, config.seed,
                            workers, dtype)
    return run_training(task, settings, output_dir, context, progress)


__all__ = [
    "PromptLearner",
    "PromptTask",
    "PromptTrainConfig",
    "augmented_crop",
    "image_classes",
    "present_classes",
    "sample_segments",
    "train_prompts",
]
