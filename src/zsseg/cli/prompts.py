"""`zsseg prompts select`: the best single template on training data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..prompts.templates import TEMPLATE_SETS
from .arguments import at_least, clip_option, training_data_options
from .outputs import output


def add_parser(commands) -> None:
    prompt_commands = commands.add_parser("prompts", help="choose the best prompt template on training data")
    prompt_tools = prompt_commands.add_subparsers(dest="what", metavar="WHAT")
    select = prompt_tools.add_parser(
        "select",
        help="score every template of a set, alone, on the training split's seen classes, and write the best",
        description="Score each template alone by the mean class accuracy of Eq. 1 on the ground-truth segments of the "
        "training split's seen classes (all classes for cross-dataset). Never reads validation images or unseen classes. "
        "Prints the ranking and writes the best template as a prompt file that --prompt takes.",
    )
    training_data_options(select, "zero-shot: seen classes only (default); cross-dataset: all", split=False)
    select.add_argument("--templates", default="imagenet", choices=list(TEMPLATE_SETS), help="the set to choose from (default imagenet, CLIP's 80)")
    clip_option(select)
    select.add_argument("--limit", type=at_least(1), default=None, help="use the first N training images only")
    select.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    select.add_argument("--batch-size", type=at_least(1), default=32, help="crops per CLIP forward pass (default 32)")
    select.add_argument("--no-text-cache", action="store_true", help="encode the class names afresh, without the disk cache of text features")
    select.add_argument("--output", required=True, type=Path, help="the prompt file to write (JSON), with the whole ranking")
    select.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models.loading import load_clip
    from ..data.datasets import load_dataset, unseen_classes
    from ..outputs.safety import check_json_output, protected_files
    from ..outputs.writers import check_target
    from ..prompts.selection import TRAINING_SPLIT, select_template
    from ..prompts.encoding import save_template_prompt

    dataset = load_dataset(args.dataset, args.data_root, TRAINING_SPLIT)
    unseen_classes(dataset, args.protocol)
    inputs = protected_files([], [args.clip, args.tokenizer])
    check_json_output(args.output, "output", dataset, inputs)
    clip = load_clip(args.clip, device=args.device, tokenizer=args.tokenizer)
    selection = select_template(dataset, clip, args.protocol, args.templates, args.limit, args.batch_size,
                                text_cache=not args.no_text_cache)
    output(selection.table().splitlines())
    check_target(args.output, inputs, advice="give another --output file")
    save_template_prompt(args.output, selection.best, {"clip": args.clip, "template_set": args.templates, **selection.as_dict()})
    print(f"zsseg: best template '{selection.ranking[0].template}'; wrote {args.output} (pass --prompt {args.output})", file=sys.stderr)
    return 0
