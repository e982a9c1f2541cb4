"""`zsseg train proposals|fcn|prompts`: the proposal network, the FCN baseline, a learned prompt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ZssegError, counted
from .arguments import (
    at_least, clip_option, network_training_options, positive_number, recipe_option, training_data_options, training_loop_options,
    training_split, worker_count,
)

if TYPE_CHECKING:  # the dataset readers import numpy and PIL: not for `zsseg --help`
    from ..data.datasets import SegmentationDataset


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train the proposal network (MaskFormer with a CLIP-text classifier), the FCN baseline or a prompt")
    trainers = train.add_subparsers(dest="what", metavar="WHAT")
    proposals = trainers.add_parser(
        "proposals",
        help="train MaskFormer proposals on a benchmark's training split",
        description="Train the paper's proposal network on the seen classes (zero-shot) or all classes (cross-dataset). "
        "Rerunning the same command resumes from the newest checkpoint in --output-dir. Under torchrun "
        "(torchrun --nproc_per_node N --no-python zsseg train proposals ...) each process takes its share of every batch.",
    )
    network_training_options(proposals, "proposals", "proposals",
                              "; for the clip backbone, 'none' skips CLIP's image weights")
    proposals.add_argument("--loss-pixels", default=None, choices=["all", "labelled"],
                           help="pixels the mask losses and the matching see: all, ignored ones (unseen classes, void, padding) as "
                           "negatives of every mask, as the reference (default); labelled: the ignored ones count nowhere")
    proposals.add_argument("--pseudo-labels", type=Path, default=None, metavar="DIR",
                           help="self-training: train on the labels `zsseg pseudo-label` wrote to DIR for this --dataset/--split "
                           "(seen ground truth + unseen pseudo-labels), learning every class (zero-shot protocol)")

    fcn = trainers.add_parser(
        "fcn",
        help="train the paper's FCN baseline: per-pixel embeddings scored against CLIP text",
        description="Train the paper's retrained FCN (ResNet + FPN, per-pixel embeddings, 100 x cosine with frozen CLIP text "
        "embeddings, cross-entropy on the seen classes, unseen and void pixels ignored). Rerunning the same command resumes. "
        "Under torchrun each process takes its share of every batch. Then: zsseg segment|eval --method fcn --fcn-weights OUT.",
    )
    network_training_options(fcn, "fcn", "fcn")

    prompts = trainers.add_parser(
        "prompts",
        help="learn a prompt (CoOp context vectors) with a frozen CLIP on a benchmark's training split",
        description="Learn context vectors put before every class name, on Eq. 1 crops of the ground-truth segments of the seen "
        "classes (zero-shot) or all classes (cross-dataset), with CLIP frozen. Writes OUT/prompt.safetensors + OUT/prompt.json, "
        "which --prompt OUT takes. Rerunning the same command resumes; torchrun as for proposals.",
    )
    training_data_options(prompts, "zero-shot: learn on the seen classes only (default); cross-dataset: all", paper_voc=True)
    recipe_option(prompts, "prompts", "prompt.json")
    clip_option(prompts, "the frozen CLIP")
    prompts.add_argument("--context-length", type=at_least(1), default=None, help="learned vectors before the class name (default: the config's, 16)")
    prompts.add_argument("--samples-per-class", type=at_least(0), default=None, help="at most this many samples per class, 0 = all (default: the config's)")
    prompts.add_argument("--temperature", type=positive_number, default=None, help="logit scale of the loss (default: the config's, 100 as in Eq. 1)")
    training_loop_options(prompts, "crops")
    prompts.add_argument("--output-dir", required=True, type=Path, help="checkpoints, log.jsonl, and the final prompt.safetensors + prompt.json")
    proposals.set_defaults(run=_train)
    fcn.set_defaults(run=_train_fcn)
    prompts.set_defaults(run=_train_prompts)


#: The flags that override a recipe's training settings, by kind.
OVERRIDES = {
    "proposals": ("max_iters", "batch_size", "crop_size", "checkpoint_every", "log_every", "seed", "loss_pixels", "prompt"),
    "fcn": ("max_iters", "batch_size", "crop_size", "checkpoint_every", "log_every", "seed", "prompt"),
    "prompts": ("context_length", "samples_per_class", "temperature", "max_iters", "batch_size", "checkpoint_every", "log_every", "seed"),
}


def _recipe(args: argparse.Namespace, kind: str):
    """The recipe --config names (a built-in one or a file), with the flags given beside it in place."""
    from ..prompts.encoding import load_prompt
    from ..training.recipes import load_recipe

    recipe = load_recipe(kind, args.config)
    if getattr(args, "prompt", None) is not None:
        load_prompt(args.prompt)  # a bad prompt is an error now, not after the dataset is read
    return recipe.with_train(**{key: getattr(args, key, None) for key in OVERRIDES[kind]})


def _backbone_weights(args: argparse.Namespace, backbone: str) -> str | None:
    from ..networks.maskformer.resnet import RESNETS

    if args.backbone_weights is None:
        return "clip" if backbone == "clip" else RESNETS[backbone].imagenet_weights
    return None if args.backbone_weights.lower() == "none" else args.backbone_weights


def _train(args: argparse.Namespace) -> int:
    from ..training.proposals import check_output_dir, train_proposals

    config = _recipe(args, "proposals")
    weights = _backbone_weights(args, config.model.backbone)
    labels = {}

    def check(dataset: SegmentationDataset) -> None:
        if args.pseudo_labels is not None:
            from ..data.pseudo_labels import load_pseudo_labels

            if args.protocol != "zero-shot":
                raise ZssegError("--pseudo-labels is for the zero-shot protocol (--protocol zero-shot)")
            labels["pseudo_labels"] = load_pseudo_labels(args.pseudo_labels, dataset)

    return _run_training(
        args, check_output_dir,
        lambda dataset, clip, context: train_proposals(dataset, config, clip, args.output_dir, args.protocol, weights, context,
                                                       text_cache=not args.no_text_cache, workers=worker_count(args),
                                                       dtype=args.dtype, **labels),
        lambda result: f"weights in {result.weights}" + (" (self-trained)" if labels else ""),
        check, config,
    )


def _train_fcn(args: argparse.Namespace) -> int:
    from ..training.fcn import check_output_dir, train_fcn

    config = _recipe(args, "fcn")
    weights = _backbone_weights(args, config.model.backbone)
    return _run_training(
        args, check_output_dir,
        lambda dataset, clip, context: train_fcn(dataset, config, clip, args.output_dir, args.protocol, weights, context,
                                                 text_cache=not args.no_text_cache, workers=worker_count(args), dtype=args.dtype),
        lambda result: f"weights in {result.weights}; use them with --method fcn --fcn-weights {args.output_dir}",
        recipe=config,
    )


def _train_prompts(args: argparse.Namespace) -> int:
    from ..training.prompt_learning import check_output_dir, train_prompts

    config = _recipe(args, "prompts")
    return _run_training(
        args, check_output_dir,
        lambda dataset, clip, context: train_prompts(dataset, config, clip, args.output_dir, args.protocol, context,
                                                     workers=worker_count(args), dtype=args.dtype),
        lambda result: f"pass --prompt {args.output_dir}",
        recipe=config,
    )


def _run_training(args: argparse.Namespace, check_output_dir: Callable[[Path], None], train: Callable, done: Callable,
                  check: Callable[[SegmentationDataset], None] = lambda dataset: None, recipe=None) -> int:
    """What every `zsseg train` does around its training: the dataset, the checks of
    --output-dir (and `check` of the dataset) before any model loads, torchrun, and the
    closing line."""
    from ..models.loading import load_clip
    from ..data.datasets import load_dataset, unseen_classes
    from ..runs.distributed import init_distributed, shutdown_distributed

    dataset = load_dataset(args.dataset, args.data_root, training_split(args, recipe.name))
    unseen_classes(dataset, args.protocol)  # before CLIP loads: a protocol the dataset lacks
    from ..outputs.safety import check_output_folder

    dataset.check_outside(args.output_dir, "output_dir")
    check_output_folder(args.output_dir, "output_dir")
    check_output_dir(args.output_dir)
    check(dataset)
    context = init_distributed(args.device)
    try:
        result = train(dataset, load_clip(args.clip, device=context.device, tokenizer=args.tokenizer), context)
    finally:
        shutdown_distributed()
    if context.is_main:
        resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
        loss = f", last loss {result.last_log['loss']:.4f}" if result.last_log else ""
        print(f"zsseg: trained {counted(result.steps, 'step')}{resumed}{loss}; {done(result)}", file=sys.stderr)
    return 0
