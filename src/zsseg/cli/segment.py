"""`zsseg segment`: label every pixel of images with your class names (`zsseg.segment_folder`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import counted
from .arguments import USABLE_PROPOSALS, chosen_vocabulary, model_options, pipeline_option, vocabulary_options
from .outputs import interrupted_status, report


def add_parser(commands) -> None:
    segment = commands.add_parser("segment", help="label every pixel of images with your class names")
    segment.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    vocabulary_options(segment)
    model_options(segment, USABLE_PROPOSALS)
    segment.add_argument("--out", required=True, type=Path,
                         help="output folder (created when the first output is written); never one of the inputs' own files")
    segment.add_argument("--overwrite", action="store_true",
                         help="replace existing files in --out that zsseg did not write (files zsseg wrote are always replaced)")
    segment.add_argument("--skip-existing", action="store_true",
                         help="skip an image whose outputs zsseg already wrote in --out with the same vocabulary and settings "
                         "(resumes an interrupted run)")
    pipeline_option(segment, "segment")
    segment.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Segment the images (`zsseg.runs.folder.FolderRun`). Under torchrun each process takes its
    share of the input list, so each image is written by exactly one process; process 0 prints
    the failures in input order and one summary of the totals."""
    from ..runs.folder import FolderRun
    from ..outputs.safety import remove_if_empty
    from .models import base_config, settings

    config, recorded = base_config(args)
    vocabulary = chosen_vocabulary(args, recorded)
    folder = FolderRun(args.inputs, args.out, vocabulary, config=config, skip_existing=args.skip_existing, overwrite=args.overwrite,
                       pipeline=args.pipeline, protected=[args.vocabulary_file, args.config], **settings(args))
    try:
        result = folder.run()
    except KeyboardInterrupt as error:
        share, context = folder.share, folder.context
        report(failure for _, failure in share.failures)
        process = f" (process {context.rank} of {context.world_size})" if context.enabled else ""
        where = f"; their outputs are in {args.out}" if share.done or share.skipped else ""
        after = " (torchrun reports the signal below, and exits 1)" if context.enabled else ""
        print(f"zsseg: interrupted{process}: {share.done} of {counted(len(share.indices), 'image')} segmented"
              f"{_skipped(share.skipped)}, {len(share.failures)} failed{where}{after}", file=sys.stderr)
        if not context.enabled:
            remove_if_empty(args.out, folder.created)
        return interrupted_status(error)
    if folder.context.is_main:
        report(result.failures)
        where = f"; outputs in {args.out}" if result.segmented or result.skipped else ""
        after = " (status 1, which torchrun reports below as a ChildFailedError)" if folder.context.enabled and result.failures else ""
        print(f"zsseg: {counted(result.segmented, 'image')} segmented{_skipped(result.skipped)}, {len(result.failures)} failed{where}"
              f"{result.passed_over}{after}", file=sys.stderr)
    return 1 if result.failures else 0


def _skipped(count: int) -> str:
    return f", {count} already done (--skip-existing)" if count else ""
