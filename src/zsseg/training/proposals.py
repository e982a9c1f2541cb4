"""Training the proposal network on the seen classes (`zsseg train proposals`).

    run = train_proposals(load_dataset("coco-stuff", root, "train"), load_recipe("proposals", "tiny"),
                          clip=load_clip(...), output_dir=Path("out"), protocol="zero-shot")

- Zero-shot protocol: only the seen classes are learned; pixels of unseen classes are ignored
  (left out of the losses). Cross-dataset: every class of the training set.
- The class head's weights are the frozen CLIP text embeddings of the training classes.
  The prompt that makes them is `config.train.prompt`; a learned prompt (`zsseg train
  prompts`) is trained first, then given here, and is stored inside the proposal weights.
- The loop is `zsseg.training.loop.run_training`: DDP under torchrun, atomic checkpoints every
  `checkpoint_every` steps, exact resume by rerunning the same command, `OUT/log.jsonl`.
- At the end `OUT/proposals.safetensors` and `OUT/proposals.json` hold the trained network.
- Self-training (`pseudo_labels=`, from `zsseg pseudo-label`): the same training on the
  pseudo-labelled images, where the unseen classes now have labels, so every class is
  learned. The run records where its labels came from and the seen/unseen split
  (`TrainedProposals.self_training`); the ensemble keeps treating the original unseen
  classes as unseen.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from ..models.loading import ClipModel
from ..data.datasets import SegmentationDataset, training_classes
from ..runs.distributed import Distributed
from ..data.pseudo_labels import PseudoLabels
from ..errors import SettingError, ZssegError
from ..prompts.encoding import PromptEncoder, VocabularyEmbedding, load_prompt
from .loop import LOG_NAME, LoopSettings, TrainingResult, run_record, run_training
from .loop import check_output_dir as _check_output_dir
from ..data.vocabulary import Vocabulary
from ..networks.maskformer.config import SolverConfig
from .recipes import Recipe
from ..networks.maskformer.criterion import set_loss
from .proposal_data import Augmentation, TrainingSamples
from ..networks.maskformer.model import build_model
from ..networks.maskformer.weights import CONFIG_NAME, WEIGHTS_NAME, save_proposals


def poly_factor(step: int, max_iters: int, power: float) -> float:
    return (1.0 - min(step, max_iters) / max_iters) ** power


def build_optimizer(model: nn.Module, config: SolverConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (backbone at lr x backbone_lr_multiplier; no decay on norms and embeddings) and
    the poly schedule."""
    groups = model.parameter_groups()
    param_groups = []
    for name, params in groups.items():
        if params:
            lr = config.lr * (config.backbone_lr_multiplier if name.startswith("backbone") else 1.0)
            decay = 0.0 if name.endswith("no_decay") else config.weight_decay
            param_groups.append({"params": params, "lr": lr, "weight_decay": decay, "name": name})
    optimizer = torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: poly_factor(step, config.max_iters, config.poly_power)
    )
    return optimizer, scheduler


def freeze_batch_norm(model: nn.Module) -> None:
    """Pretrained backbones keep their BatchNorm statistics and affine terms (detectron2's
    FrozenBatchNorm): with a few images per process, updated statistics would be noise."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)


def check_output_dir(output_dir: Path) -> None:
    """A new run may replace only the log and weights that an earlier zsseg run left there."""
    _check_output_dir(output_dir, (WEIGHTS_NAME, CONFIG_NAME))


class TextClassifierTask:
    """What a `zsseg.training.loop.TrainingTask` shares with every network whose classifier is the
    frozen CLIP text embeddings of its training classes (the proposal network, the FCN): those
    embeddings, the data stream, the run's signature and record, the optimiser, and loading and
    freezing a pretrained ResNet backbone. Subclasses set `module`, its config, and the loss."""

    def __init__(self, dataset: SegmentationDataset, recipe: Recipe, clip: ClipModel, protocol: str,
                 backbone_weights: str | None, device: torch.device, text_cache: bool, class_indices: list[int]):
        train = recipe.train
        self.recipe, self.train, self.dataset, self.clip, self.protocol = recipe, train, dataset, clip, protocol
        self.backbone_weights = backbone_weights
        self.device = device
        self.vocabulary = Vocabulary([dataset.vocabulary.classes[i] for i in class_indices], name=f"{dataset.name}-{protocol}")
        self.prompt = load_prompt(train.prompt)
        text = PromptEncoder(clip, self.prompt, cache=text_cache).encode_vocabulary(self.vocabulary)
        self.text = VocabularyEmbedding(text.features.float().to(device), text.synonym_class.to(device), text.num_classes)
        augmentation = Augmentation(train.crop_size, train.train_min_sizes, train.train_max_size, train.color_aug, train.flip)
        self.samples = TrainingSamples(dataset, class_indices, augmentation, train.seed)
        self.data = self.samples

    def run_signature(self, model_config) -> dict:
        """What must be equal for a checkpoint to be resumed (max_iters is checked by the loop,
        which names it in its message)."""
        train = asdict(self.train)
        train.pop("max_iters")
        return {
            "model": asdict(model_config),
            "train": train,
            "dataset": self.dataset.name,
            "split": self.dataset.split,
            "num_images": len(self.dataset),
            "trained_images": len(self.samples.kept),
            "protocol": self.protocol,
            "class_names": self.vocabulary.names,
            "backbone_weights": self.backbone_weights,
            "clip": self.clip.source,
            "prompt": self.prompt.identity,
        }

    def run_info(self) -> dict:
        """The run's record in the saved JSON (beside the architecture and classes)."""
        return {
            **run_record(self.clip.source, self.dataset, self.protocol, self.train.max_iters),
            "backbone_weights": self.backbone_weights,
            "train": asdict(self.train),
            "config": self.recipe.to_dict(),  # what `zsseg train --config` takes to run it again
        }

    def initialise(self) -> None:
        if self.backbone_weights is not None:
            self.module.backbone.load_pretrained(self.backbone_weights)

    def prepare(self) -> None:
        if self.backbone_weights is not None:
            freeze_batch_norm(self.module.backbone)  # before the optimiser: frozen parameters stay out of it

    def build_optimizer(self):
        return build_optimizer(self.module, self.train)

    def learning_rate(self, optimizer: torch.optim.Optimizer) -> float:
        return next(g["lr"] for g in optimizer.param_groups if g["name"].startswith("head"))


class ProposalTask(TextClassifierTask):
    """The proposal network as a `zsseg.training.loop.TrainingTask`: the set loss of MaskFormer,
    with the frozen CLIP text embeddings of the training classes as its classifier."""

    output_names = (WEIGHTS_NAME, CONFIG_NAME)
    postfix_terms = ("ce", "dice")

    def __init__(self, dataset: SegmentationDataset, config: Recipe, clip: ClipModel, protocol: str,
                 backbone_weights: str | None, device: torch.device, text_cache: bool = True,
                 pseudo_labels: PseudoLabels | None = None):
        self.pseudo_labels = pseudo_labels
        if pseudo_labels is not None:
            if protocol != "zero-shot":
                raise SettingError("protocol", "pseudo-labels are for the zero-shot protocol ({setting} zero-shot)")
            dataset = pseudo_labels.dataset
            class_indices = list(range(dataset.num_classes))  # the unseen classes have labels now
        else:
            class_indices = training_classes(dataset, protocol)
        super().__init__(dataset, config, clip, protocol, backbone_weights, device, text_cache, class_indices)
        self.samples.loss_pixels = config.train.loss_pixels
        if config.model.backbone == "clip" and clip.family != "clip":
            raise ZssegError(f"the 'clip' backbone is CLIP's ViT image tower; '{clip.source}' is a {clip.family} model "
                             "without one: choose another backbone, or a ViT CLIP")
        self.model_config = replace(
            config.model,
            embed_dim=clip.embed_dim,
            clip_vision=clip.model.config.vision_config.to_dict() if config.model.backbone == "clip" else None,
        )
        self.module = build_model(self.model_config, seed=config.train.seed)
        self.signature = self.run_signature(self.model_config)
        if pseudo_labels is not None:
            manifest = pseudo_labels.manifest
            self.signature["pseudo_labels"] = {"signature": manifest["signature"], "pixels": manifest["pixels"]}
        train = config.train
        self.loss_weights = {"ce": train.class_weight, "focal": train.mask_weight, "dice": train.dice_weight}

    def initialise(self) -> None:
        if self.backbone_weights is not None and self.model_config.backbone == "clip":
            self.module.backbone.body.vision_model.load_state_dict(self.clip.model.vision_model.state_dict())
        else:
            super().initialise()

    def loss(self, module: nn.Module, batch: tuple, context: Distributed) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        train = self.train
        images, targets = batch
        images = images.to(self.device, non_blocking=True)
        targets = [t.to(self.device) for t in targets]
        num_masks = context.sum(torch.tensor([float(sum(len(t.classes) for t in targets))], dtype=torch.float64))
        num_masks = max(float(num_masks) / context.world_size, 1.0)
        outputs = module(images, all_layers=train.deep_supervision)
        terms: dict[str, torch.Tensor] = {}
        total = images.new_zeros(())
        for layer, output in enumerate(outputs):
            # The logits, the matching and the losses in fp32, whatever the network ran in (bf16 autocast).
            with torch.autocast(images.device.type, enabled=False):
                logits = self.module.class_logits(output.class_embeddings.float(), self.text)
                losses = set_loss(logits, output.mask_logits.float(), targets, num_masks, train.no_object_weight,
                                  class_weight=train.class_weight, mask_weight=train.mask_weight, dice_weight=train.dice_weight)
            suffix = "" if layer == len(outputs) - 1 else f"_{layer}"
            for name, value in losses.items():
                terms[name + suffix] = value.detach()
                total = total + self.loss_weights[name] * value
        return total, terms

    def save(self, output_dir: Path) -> Path:
        info = self.run_info()
        if self.pseudo_labels is not None:
            info["self_training"] = self.pseudo_labels.record()
        return save_proposals(output_dir, self.module, self.text, self.vocabulary.names, info, self.prompt)[0]


def loop_settings(train: SolverConfig, workers: int = 0, dtype: str = "fp32") -> LoopSettings:
    return LoopSettings(train.max_iters, train.batch_size, train.grad_clip, train.checkpoint_every, train.log_every, train.seed,
                        workers, dtype)


def train_proposals(
    dataset: SegmentationDataset,
    config: Recipe,
    clip: ClipModel,
    output_dir: Path,
    protocol: str = "zero-shot",
    backbone_weights: str | None = None,
    context: Distributed = Distributed(),
    progress: bool = True,
    text_cache: bool = True,
    pseudo_labels: PseudoLabels | None = None,
    workers: int = 0,
    dtype: str = "fp32",
) -> TrainingResult:
    """Train (or resume training) the proposal network; see the module docstring.

    Args:
        dataset: the training split.
        config: architecture and training settings (`zsseg.training.recipes.load_recipe("proposals", ...)`);
            `config.train.prompt` gives the classifier's text embeddings (a template set, a
            template, or a learned prompt file: it is stored with the weights).
        clip: gives the frozen text embeddings (and the image tower for the "clip" backbone).
        output_dir: checkpoints, log and final weights; created if missing.
        backbone_weights: ImageNet weights of a ResNet backbone (hub id or folder) or None for a
            random backbone; for the "clip" backbone any non-None value starts from CLIP's tower.
        context: this process's place under torchrun.
        text_cache: use the disk cache of text features.
        pseudo_labels: self-training: train on these labels of `dataset`'s images
            (`zsseg.data.pseudo_labels.load_pseudo_labels`) instead of its ground truth.
        workers: DataLoader processes that make the batches (0: this process).
        dtype: "fp32" (the reference's), or "bf16" autocast of the forward pass.
    """
    task = ProposalTask(dataset, config, clip, protocol, backbone_weights, torch.device(context.device), text_cache, pseudo_labels)
    return run_training(task, loop_settings(config.train, workers, dtype), output_dir, context, progress)


__all__ = [
    "CONFIG_NAME",
    "LOG_NAME",
    "ProposalTask",
    "TrainingResult",
    "WEIGHTS_NAME",
    "build_optimizer",
    "train_proposals",
    "training_classes",
]
