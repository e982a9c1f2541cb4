"""`zsseg pseudo-label`: self-training's labels of the unseen classes of a training split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalogue import DEFAULT_REJECT_THRESHOLD, MASKFORMER, PER_PIXEL_METHODS
from ..errors import SettingError
from .arguments import (USABLE_PROPOSALS, at_least, model_options, pipeline_option, training_data_options, unit_interval, worker_count,
                        workers_option)
from .outputs import output


def add_parser(commands) -> None:
    pseudo = commands.add_parser(
        "pseudo-label",
        help="self-training: label the unseen classes of a training split with a trained zero-shot model",
        description="Label each training image for self-training: its seen ground truth is kept, every other pixel takes the "
        "unseen class the model scores highest, or is ignored below --reject-threshold. Writes NAME.png per image in the "
        "dataset's own label encoding and pseudo-labels.json. Rerunning the same command resumes. Under torchrun the "
        "images are sharded. Then: zsseg train proposals ... --pseudo-labels DIR.",
    )
    training_data_options(pseudo, "zero-shot (the only protocol with unseen classes)", protocols=["zero-shot"])
    model_options(pseudo, USABLE_PROPOSALS, dtype="fp32")
    pseudo.add_argument("--reject-threshold", type=unit_interval, default=DEFAULT_REJECT_THRESHOLD,
                        help="ignore pixels whose unseen-class score (its share of the covering proposals' probability, 0..1) "
                        f"is below this (default {DEFAULT_REJECT_THRESHOLD}, the reference's: label every non-seen pixel)")
    pseudo.add_argument("--limit", type=at_least(1), default=None, help="label the first N images only (a retrain then uses those)")
    pseudo.add_argument("--output-dir", required=True, type=Path, help="where the label files and pseudo-labels.json go")
    workers_option(pseudo, "processes that read the images and label maps ahead")
    pipeline_option(pseudo, "pseudo-label")
    pseudo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config import SegmenterConfig, check_prompts
    from ..data.datasets import load_dataset
    from ..outputs.safety import check_output_folder
    from ..runs.distributed import distributed_session
    from ..segmenter import Segmenter
    from ..training.self_training import pseudo_label
    from .models import base_config, settings

    config = base_config(args)[0]
    options = settings(args)
    if options.get("method") in PER_PIXEL_METHODS or (config is not None and config.method in PER_PIXEL_METHODS):
        raise SettingError("method", f"pseudo-labels are made from proposals ({{setting}} two-stage or fast), not "
                           f"{options.get('method') or config.method}")
    if config is None and "proposals" not in options:
        options["proposals"] = MASKFORMER  # the trained zero-shot model, by default
    first = SegmenterConfig.from_options(config, **options)  # a flag the method does not take: an error now
    check_prompts(first)
    dataset = load_dataset(args.dataset, args.data_root, args.split)
    dataset.check_outside(args.output_dir, "output_dir")
    check_output_folder(args.output_dir, "output_dir")
    with distributed_session(first.clip.device) as context:
        segmenter = Segmenter(first, device=context.device)
        report = pseudo_label(dataset, segmenter, args.output_dir, protocol=args.protocol, reject_threshold=args.reject_threshold,
                              limit=args.limit, context=context, workers=worker_count(args), pipeline=args.pipeline)
    if context.is_main:
        output(report.summary())
        print(f"zsseg: pseudo-labels in {args.output_dir}; train on them with "
              f"`zsseg train proposals ... --pseudo-labels {args.output_dir}`", file=sys.stderr)
    return 0
