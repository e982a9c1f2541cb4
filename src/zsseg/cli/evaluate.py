"""`zsseg eval`: score on a benchmark, with the reference code's settings by default."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalogue import DATASET_NAMES, GENERATORS, MASKFORMER, METHODS, MIOU_RULES, PER_PIXEL_METHODS, PROTOCOLS, parse_generator
from ..errors import ZssegError
from ..version import __version__
from .arguments import at_least, check_method_flags, model_options, pipeline_option, worker_count, workers_option
from .outputs import check_json_output, check_output_folder, input_files, output

if TYPE_CHECKING:  # the dataset readers and writers import numpy and PIL: not for `zsseg --help`
    from ..data.datasets import SegmentationDataset


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


def _benchmark_args(args: argparse.Namespace, dataset: SegmentationDataset) -> tuple[argparse.Namespace, dict]:
    """The command line with each model setting it leaves open taken from the benchmark's row
    of `zsseg.evaluation.reference_settings.SETTINGS` (the reference code's test settings), and a record of every
    setting and where it came from."""
    from ..evaluation.reference_settings import benchmark_settings

    row = benchmark_settings(dataset.name, args.protocol)
    per_pixel = args.method in PER_PIXEL_METHODS
    network = not per_pixel and parse_generator(args.proposals or args.default_proposals)[0] == MASKFORMER
    preset = row.segmenter_options(network or args.method == "fcn")
    if args.method == "fcn":
        preset["ensemble_weight"] = None  # the FCN's own lambda (FCN_ENSEMBLE_WEIGHT), as the reference's per-pixel config
    takes = METHODS[args.method].options | {"max_size", "prompt", "network_prompt"}
    chosen = {key: preset[key] if getattr(args, key) is None and key in takes else getattr(args, key)
              for key in ("test_size", "max_size", "mask_threshold", "ensemble_weight", "prompt", "network_prompt")}
    seen = args.seen_classes or row.seen
    record = {
        "benchmark_settings": row.source,
        "test_size": [chosen["test_size"], chosen["max_size"]],
        "mask_threshold": None if per_pixel else chosen["mask_threshold"],
        "seen_classes": seen,
        "seen_flags": row.seen_flags(dataset.unseen, dataset.num_classes, seen),
        "class_names": row.class_names if args.class_names == "reference" else dataset.vocabulary.name,
        "miou_rule": args.miou_rule,
    }
    return argparse.Namespace(**{**vars(args), **chosen}), record


def run(args: argparse.Namespace) -> int:
    from ..evaluation.reference_settings import benchmark_settings
    from ..data.datasets import load_dataset, unseen_classes
    from ..runs.distributed import init_distributed, shutdown_distributed
    from ..evaluation.runner import ClipPredictor, OraclePredictor, check_prediction_folder, evaluate
    from ..proposals import MaskFormerProposals
    from ..outputs.writers import check_target, write_json
    from .models import build_segmenter, check_prompt, proposal_generator

    if args.oracle and args.method != "two-stage":
        raise ZssegError(f"--oracle scores proposals alone, with no classifier; --method {args.method} does not apply")
    dataset = load_dataset(args.dataset, args.data_root, args.split, skip_missing_labels=args.skip_missing_labels)
    unseen_classes(dataset, args.protocol)
    check_prompt(args)
    if not args.oracle:
        check_method_flags(args)
    args, recorded = _benchmark_args(args, dataset)
    vocabulary = benchmark_settings(dataset.name, args.protocol).vocabulary() if args.class_names == "reference" else dataset.vocabulary
    inputs = input_files(args)
    if args.output is not None:
        check_json_output(args.output, "--output", dataset, inputs)
    if args.save_predictions is not None:
        check_output_folder(args.save_predictions, "--save-predictions")
        check_prediction_folder(dataset, args.save_predictions, args.limit)
    context = init_distributed(args.device)
    try:
        generator = proposal_generator(args, context.device)
        if args.oracle:
            predictor = OraclePredictor(generator, dataset.num_classes, args.max_size, args.test_size)
        else:
            predictor = ClipPredictor(build_segmenter(args, context.device, generator), vocabulary, seen=recorded["seen_flags"])
        per_pixel = args.method in PER_PIXEL_METHODS and not args.oracle
        proposals = None if per_pixel else args.proposals or args.default_proposals
        segmenter = None if args.oracle else predictor.segmenter
        network = getattr(segmenter, "network_prompts", None)
        settings = {
            "oracle": args.oracle,
            "method": None if args.oracle else args.method,
            "proposals": proposals,
            "proposal_model": getattr(generator, "source", None) if not per_pixel else None,
            "proposal_weights": None if args.proposal_weights is None else str(args.proposal_weights),
            "fcn_weights": None if args.fcn_weights is None else str(args.fcn_weights),
            "dense_mode": args.dense_mode if args.method != "two-stage" and not args.oracle else None,
            "overlap": args.overlap if per_pixel else None,
            "ensemble_weight": segmenter.ensemble_weight if network is not None else None,
            "classifier": segmenter.classifier_mode if (proposals == MASKFORMER or args.method == "fcn") and not args.oracle else None,
            "max_proposals": None if per_pixel else generator.max_proposals,
            "self_training": generator.trained.self_training if isinstance(generator, MaskFormerProposals) else None,
            "clip": None if args.oracle else segmenter.clip.source,
            "prompt": None if args.oracle else segmenter.classifier.prompts.prompt.describe(),
            "network_prompt": None if network is None else network.prompt.describe(),
            **{k: v for k, v in recorded.items() if k != "seen_flags"},
            "seen_classes": recorded["seen_classes"] if network is not None else None,
            "mask_threshold": recorded["mask_threshold"] if not args.oracle else None,
            "dtype": None if args.oracle else segmenter.clip.precision,
            "max_size": args.max_size,
            "data_root": str(dataset.root),
            "zsseg_version": __version__,
        }
        report = evaluate(
            dataset,
            predictor,
            protocol=args.protocol,
            limit=args.limit,
            context=context,
            save_predictions=args.save_predictions,
            settings=settings,
            skip_unreadable_labels=args.skip_missing_labels,
            miou_rule=args.miou_rule,
            class_names=vocabulary.names,
            workers=worker_count(args),
            pipeline=args.pipeline,
        )
    finally:
        shutdown_distributed()
    if context.is_main:
        output(report.summary() if args.quiet else report.table().splitlines())
        if args.output is not None:
            check_target(args.output, inputs, advice="give another --output file")
            write_json(args.output, report.as_dict())
            print(f"zsseg: wrote {args.output}", file=sys.stderr)
    return 0
