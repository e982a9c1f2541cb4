"""`zsseg eval`: score on a benchmark, with the reference code's settings by default (`zsseg.evaluate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalogue import DATASET_NAMES, GENERATORS, MIOU_RULES, PROTOCOLS
from .arguments import at_least, model_options, pipeline_option, workers_option
from .outputs import output


def add_parser(commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="score on a benchmark: mIoU, fwIoU, pAcc, mAcc (and seen/unseen/hIoU)",
        description="Evaluate on a benchmark split. Under torchrun (torchrun --nproc_per_node N --no-python zsseg eval ...) "
        "the images are sharded across the processes and the scores equal a single process's.",
    )
    evaluate.add_argument("--dataset", required=True, choices=list(DATASET_NAMES), help="benchmark (layouts: docs/datasets.md)")
    evaluate.add_argument("--data-root", type=Path, default=None, help="folder holding the datasets (default $DETECTRON2_DATASETS, else ./datasets)")
    evaluate.add_argument("--split", default="val", help="dataset split (default val)")
    evaluate.add_argument("--limit", type=at_least(1), default=None, help="evaluate the first N images only")
    evaluate.add_argument("--skip-missing-labels", action="store_true",
                          help="leave out images whose label map is missing or unreadable, and report how many (default: an error)")
    evaluate.add_argument("--protocol", default="cross-dataset", choices=list(PROTOCOLS),
                          help="cross-dataset, or zero-shot: also mIoU over seen and unseen classes and hIoU (coco-stuff, voc-20, voc-21)")
    evaluate.add_argument("--oracle", action="store_true",
                          help="each proposal takes the ground-truth class it overlaps most: scores the proposals alone, no CLIP")
    model_options(evaluate, list(GENERATORS), dtype="fp32")
    workers_option(evaluate, "processes that read the images and label maps ahead")
    pipeline_option(evaluate, "evaluate")
    evaluate.add_argument("--class-names", default="reference", choices=["reference", "zsseg"],
                          help="reference: the class strings of the reference code, each put whole into the prompt (default); "
                          "zsseg: the built-in vocabulary of the same name, split into synonyms")
    evaluate.add_argument("--seen-classes", default=None, choices=["split", "none", "names"],
                          help="which classes the ensemble with a trained network takes as seen: split, the benchmark's zero-shot "
                          "seen classes; none, every class unseen; names, those the network was trained on (default: the benchmark's)")
    evaluate.add_argument("--miou-rule", default=MIOU_RULES[0], choices=list(MIOU_RULES),
                          help="what mIoU divides by: the classes present in the ground truth or the predictions (the reference's; "
                          "default), or in the ground truth only")
    evaluate.add_argument("--output", type=Path, default=None, help="write the scores as JSON to this file")
    evaluate.add_argument("--save-predictions", type=Path, default=None, metavar="DIR",
                          help="write each prediction as DIR/IMAGE_NAME.png (class indices; 255 = unlabelled); DIR may not be "
                          "inside the dataset's folders, and only files zsseg wrote are replaced")
    evaluate.add_argument("--quiet", action="store_true", help="print only the summary, not the per-class table")
    evaluate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config import SegmenterConfig, check_prompts
    from ..data.datasets import load_dataset, unseen_classes
    from ..evaluation.runner import evaluate
    from ..outputs.safety import check_json_output, check_output_folder, model_paths, protected_files
    from ..outputs.writers import check_target, write_json
    from ..runs.distributed import rank_is_main
    from .models import base_config, settings

    dataset = load_dataset(args.dataset, args.data_root, args.split, skip_missing_labels=args.skip_missing_labels)
    unseen_classes(dataset, args.protocol)
    config = base_config(args)[0]
    options = settings(args)
    first = SegmenterConfig.from_options(config, **options)  # a flag the method does not take: an error now
    if not args.oracle:
        check_prompts(first)
    inputs = protected_files([args.config], model_paths(first))
    if args.output is not None:
        check_json_output(args.output, "output", dataset, inputs)
    if args.save_predictions is not None:
        check_output_folder(args.save_predictions, "save_predictions")
    report = evaluate(dataset, limit=args.limit, protocol=args.protocol, config=config, oracle=args.oracle, class_names=args.class_names,
                      seen_classes=args.seen_classes, miou_rule=args.miou_rule, skip_missing_labels=args.skip_missing_labels,
                      save_predictions=args.save_predictions, workers=args.workers, pipeline=args.pipeline, **options)
    if rank_is_main():
        output(report.summary() if args.quiet else report.table().splitlines())
        if args.output is not None:
            check_target(args.output, inputs, advice="give another --output file")
            write_json(args.output, report.to_dict())
            print(f"zsseg: wrote {args.output}", file=sys.stderr)
    return 0
