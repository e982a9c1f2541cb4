"""Training the proposal network on the seen classes (`zsseg train proposals`).

    run = train_proposals(load_dataset("coco-stuff", root, "train"), named_config("tiny"),
                          clip=load_clip(...), output_dir=Path("out"), protocol="zero-shot")

- Zero-shot protocol: only the seen classes are learned; pixels of unseen classes are ignored
  (left out of the losses). Cross-dataset: every class of the training set.
- The class head's weights are the frozen CLIP text embeddings of the training classes.
- Under torchrun each process computes its share of every batch; DDP averages the gradients
  (gloo on CPU, NCCL on GPU).
- Checkpoints (`OUT/checkpoint-STEP.pt`: model, optimiser, scheduler, step, every process's RNG
  state) are written atomically every `checkpoint_every` steps; rerunning the same command
  resumes from the newest one and ends with the same weights as an uninterrupted run.
- `OUT/log.jsonl` has one line per `log_every` steps with the loss terms and learning rate
  (each line says `"software": "zsseg VERSION"`, so a user's log is never taken for zsseg's).
- At the end `OUT/proposals.safetensors` and `OUT/proposals.json` hold the trained network.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..clip import ClipModel
from ..datasets import SegmentationDataset
from ..distributed import Distributed
from ..errors import ZssegError
from ..evaluation import unseen_classes
from ..prompts import PromptEncoder, VocabularyEmbedding
from ..vocabulary import Vocabulary
from ..writers import SOFTWARE, check_target, write_atomically
from .config import ModelConfig, NamedConfig, TrainConfig
from .criterion import set_loss
from .data import Augmentation, TrainingSamples
from .model import MaskFormer, build_model
from .weights import CONFIG_NAME, WEIGHTS_NAME, save_proposals

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d{7})\.pt$")
KEEP_CHECKPOINTS = 2
LOG_NAME = "log.jsonl"


@dataclass
class TrainingResult:
    output_dir: Path
    steps: int
    resumed_from: int
    weights: Path
    last_log: dict | None


def training_classes(dataset: SegmentationDataset, protocol: str) -> list[int]:
    """Dataset class indices learned under `protocol`: the seen classes (zero-shot) or all."""
    unseen = set(unseen_classes(dataset, protocol) or ())
    return [i for i in range(dataset.num_classes) if i not in unseen]


def poly_factor(step: int, max_iters: int, power: float) -> float:
    return (1.0 - min(step, max_iters) / max_iters) ** power


def build_optimizer(model: MaskFormer, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
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


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _run_signature(model_config: ModelConfig, config: TrainConfig, dataset: SegmentationDataset, protocol: str,
                   class_names: list[str], backbone_weights: str | None, clip_source: str) -> dict:
    """What must be equal for a checkpoint to be resumed (max_iters may grow)."""
    train = asdict(config)
    train.pop("max_iters")
    return {
        "model": asdict(model_config),
        "train": train,
        "dataset": dataset.name,
        "split": dataset.split,
        "num_images": len(dataset),
        "protocol": protocol,
        "class_names": class_names,
        "backbone_weights": backbone_weights,
        "clip": clip_source,
    }


def _save_checkpoint(folder: Path, state: dict) -> Path:
    path = folder / f"checkpoint-{state['step']:07d}.pt"
    write_atomically([path], [lambda f: torch.save(state, f)])
    for _, old in _checkpoints(folder)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return path


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file: say which, do not guess
        raise ZssegError(f"cannot read checkpoint {path}: {str(error).strip().splitlines()[0]}; delete it to resume from the one before") from None


def _gather(context: Distributed, state: torch.Tensor) -> list[torch.Tensor]:
    """Every process's `state` (an RNG state), in rank order."""
    if not context.enabled:
        return [state]
    states: list = [None] * context.world_size
    dist.all_gather_object(states, state)
    return states


def _average(values: dict[str, float], context: Distributed) -> dict[str, float]:
    if not context.enabled:
        return values
    keys = sorted(values)
    tensor = context.sum(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / context.world_size for k, v in zip(keys, tensor)}


def _barrier(context: Distributed) -> None:
    if context.enabled:
        dist.barrier()


def check_output_dir(output_dir: Path) -> None:
    """A new run (no checkpoint in `output_dir`) may replace only the log and weights that an
    earlier zsseg run left there, never a user's file of the same name."""
    if output_dir.is_dir() and not _checkpoints(output_dir):
        for name in (LOG_NAME, WEIGHTS_NAME, CONFIG_NAME):
            check_target(output_dir / name, advice="choose a new --output-dir")


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill
    write_atomically([path], [lambda f: f.write("".join(f"{line}\n" for line in kept).encode("utf-8"))])


def train_proposals(
    dataset: SegmentationDataset,
    config: NamedConfig,
    clip: ClipModel,
    output_dir: Path,
    protocol: str = "zero-shot",
    backbone_weights: str | None = None,
    context: Distributed = Distributed(),
    progress: bool = True,
) -> TrainingResult:
    """Train (or resume training) the proposal network; see the module docstring.

    Args:
        dataset: the training split.
        config: architecture and training settings (`named_config(...)`, possibly overridden).
        clip: gives the frozen text embeddings (and the image tower for the "clip" backbone).
        output_dir: checkpoints, log and final weights; created if missing.
        backbone_weights: ImageNet weights of a ResNet backbone (hub id or folder) or None for a
            random backbone; for the "clip" backbone any non-None value starts from CLIP's tower.
        context: this process's place under torchrun.
    """
    from tqdm import tqdm

    train = config.train
    if train.batch_size % context.world_size:
        raise ZssegError(f"batch size {train.batch_size} must be a multiple of the number of processes ({context.world_size})")
    device = torch.device(context.device)
    class_indices = training_classes(dataset, protocol)
    vocabulary = Vocabulary([dataset.vocabulary.classes[i] for i in class_indices], name=f"{dataset.name}-{protocol}")
    text: VocabularyEmbedding = PromptEncoder(clip, train.templates).encode_vocabulary(vocabulary)
    text = VocabularyEmbedding(text.features.float().to(device), text.synonym_class.to(device), text.num_classes)

    model_config = replace(
        config.model,
        embed_dim=clip.embed_dim,
        clip_vision=clip.model.config.vision_config.to_dict() if config.model.backbone == "clip" else None,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    signature = _run_signature(model_config, train, dataset, protocol, vocabulary.names, backbone_weights, clip.source)

    model = build_model(model_config, seed=train.seed)
    start = 0
    check_output_dir(output_dir)
    checkpoints = _checkpoints(output_dir)
    resume = _load_checkpoint(checkpoints[-1][1]) if checkpoints else None
    if resume is None:
        if backbone_weights is not None:
            if model_config.backbone == "clip":
                model.backbone.body.vision_model.load_state_dict(clip.model.vision_model.state_dict())
            else:
                model.backbone.load_pretrained(backbone_weights)
    else:
        if json.loads(resume["signature"]) != signature:
            raise ZssegError(
                f"{output_dir} holds checkpoints of a different run (config, dataset, classes or CLIP differ); "
                "use a new --output-dir, or the same settings to resume"
            )
        if len(resume["rng"]) != context.world_size:
            raise ZssegError(
                f"the checkpoint in {output_dir} was written by {len(resume['rng'])} process(es); "
                f"resume with the same number, not {context.world_size}"
            )
        start = int(resume["step"])
        if start > train.max_iters:
            raise ZssegError(f"{output_dir} already holds a checkpoint at step {start}, past --max-iters {train.max_iters}")
        model.load_state_dict(resume["model"])
    model.to(device).train()
    if backbone_weights is not None:
        freeze_batch_norm(model.backbone)  # before the optimiser: frozen parameters stay out of it
    optimizer, scheduler = build_optimizer(model, train)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"][context.rank])
        if device.type == "cuda" and resume.get("cuda_rng"):
            torch.cuda.set_rng_state(resume["cuda_rng"][context.rank], device)
    else:
        torch.manual_seed(train.seed + 1000 * context.rank)  # dropout differs across processes

    ddp: nn.Module = model
    if context.enabled:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    samples = TrainingSamples(dataset, class_indices, Augmentation(train.crop_size, train.min_scale, train.max_scale, train.flip), train.seed)
    log_path = output_dir / LOG_NAME
    if context.is_main:
        _trim_log(log_path, start)
    weights = {"ce": train.class_weight, "focal": train.mask_weight, "dice": train.dice_weight}
    last_log = None
    bar = tqdm(total=train.max_iters, initial=start, desc="training", unit="step", disable=not (progress and context.is_main) or None)
    clock = time.perf_counter()
    for step in range(start, train.max_iters):
        positions = [step * train.batch_size + j for j in context.shard(train.batch_size)]
        images, targets = samples.batch(positions)
        images = images.to(device)
        targets = [t.to(device) for t in targets]
        num_masks = context.sum(torch.tensor([float(sum(len(t.classes) for t in targets))], dtype=torch.float64))
        num_masks = max(float(num_masks) / context.world_size, 1.0)

        outputs = ddp(images, all_layers=train.deep_supervision)
        terms: dict[str, torch.Tensor] = {}
        total = images.new_zeros(())
        for layer, output in enumerate(outputs):
            logits = model.class_logits(output.class_embeddings, text)
            losses = set_loss(logits, output.mask_logits, targets, num_masks, train.no_object_weight, **_match_weights(train))
            suffix = "" if layer == len(outputs) - 1 else f"_{layer}"
            for name, value in losses.items():
                terms[name + suffix] = value.detach()
                total = total + weights[name] * value
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)) if train.grad_clip > 0 else float("nan")
        optimizer.step()
        scheduler.step()
        done = step + 1

        if done % train.log_every == 0 or done == train.max_iters:
            values = _average({"loss": float(total.detach()), **{k: float(v) for k, v in terms.items()}}, context)
            now = time.perf_counter()
            last_log = {
                "step": done,
                **{k: round(v, 6) for k, v in values.items()},
                "lr": _head_lr(optimizer),
                "grad_norm": round(grad_norm, 6),
                "seconds_per_step": round((now - clock) / train.log_every, 4),
            }
            clock = now
            if context.is_main:
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(json.dumps({"software": SOFTWARE, **last_log}) + "\n")
                bar.set_postfix(loss=f"{values['loss']:.3f}", ce=f"{values['ce']:.3f}", dice=f"{values['dice']:.3f}")
        if done % train.checkpoint_every == 0 or done == train.max_iters:
            rng = _gather(context, torch.get_rng_state())
            cuda_rng = _gather(context, torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
            if context.is_main:
                _save_checkpoint(output_dir, {
                    "step": done,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng,
                    "cuda_rng": cuda_rng,
                    "signature": json.dumps(signature),
                })
            _barrier(context)
        bar.update(1)
    bar.close()

    weights_path = output_dir / WEIGHTS_NAME
    if context.is_main:
        info = {
            "clip": clip.source,
            "dataset": dataset.name,
            "split": dataset.split,
            "protocol": protocol,
            "steps": train.max_iters,
            "backbone_weights": backbone_weights,
            "train": asdict(train),
        }
        model.eval()
        save_proposals(output_dir, model, text, vocabulary.names, info)
    _barrier(context)
    return TrainingResult(output_dir, train.max_iters, start, weights_path, last_log)


def _match_weights(train: TrainConfig) -> dict[str, float]:
    return {"class_weight": train.class_weight, "mask_weight": train.mask_weight, "dice_weight": train.dice_weight}


def _head_lr(optimizer: torch.optim.Optimizer) -> float:
    return next(g["lr"] for g in optimizer.param_groups if g["name"].startswith("head"))



__all__ = [
    "CONFIG_NAME",
    "LOG_NAME",
    "TrainingResult",
    "WEIGHTS_NAME",
    "build_optimizer",
    "train_proposals",
    "training_classes",
]
