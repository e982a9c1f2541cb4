"""`zsseg datasets`: list the benchmarks; `zsseg datasets prepare NAME --from PATH ...` writes one
from its official downloads; `zsseg datasets check NAME` says whether a prepared tree is usable
(status 0) or not (status 1). The work is `zsseg.data.preparation`'s; this maps flags and prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalogue import DATASET_NAMES
from .arguments import at_least
from .listings import datasets as list_datasets
from .outputs import output


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "datasets", help="list the benchmarks `zsseg eval` reads; `prepare` one from its official downloads; `check` a prepared tree",
        description="Without an action: list the benchmarks. `zsseg datasets prepare NAME --from FILE_OR_FOLDER ...` writes a "
        "benchmark's prepared layout from the files its owners publish (see docs/datasets.md); `zsseg datasets check NAME` "
        "checks a prepared tree.")
    parser.set_defaults(run=list_datasets)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    prepare = actions.add_parser(
        "prepare", help="write a benchmark's prepared layout from its official downloads",
        description="Reads the official archives (zip, tar, tar.gz, tgz) member by member, or the folders they were extracted to, "
        "and writes the layout `zsseg eval` reads, byte for byte as the community preparation scripts write it. Run it again "
        "after an interruption: it goes on where it stopped. It never replaces a file: one that differs from what it would "
        "write stops it, untouched.")
    prepare.add_argument("name", choices=DATASET_NAMES, metavar="NAME", help=f"the benchmark: {', '.join(DATASET_NAMES)}")
    prepare.add_argument("--from", dest="sources", action="append", required=True, type=Path, metavar="PATH",
                         help="an official download (archive or extracted folder); repeat for each file the benchmark needs")
    _root_option(prepare)
    prepare.add_argument("--workers", type=at_least(1), default=None,
                         help="threads that read and write files, and processes that convert them (default: one per CPU)")
    prepare.add_argument("--quiet", action="store_true", help="print no progress")
    prepare.set_defaults(run=run_prepare)

    check = actions.add_parser(
        "check", help="say whether a prepared benchmark is usable and complete (status 0 if usable, 1 if not)",
        description="Checks every split present (or --split): each image has its label map and each label map its image, "
        "label values are the benchmark's, label maps are as large as their images, and the number of images against the "
        "official split. Prints a summary and the problems; the status is 0 when `zsseg eval` can use the tree, 1 when not.")
    check.add_argument("name", choices=DATASET_NAMES, metavar="NAME", help=f"the benchmark: {', '.join(DATASET_NAMES)}")
    _root_option(check)
    check.add_argument("--split", default=None, help="check this split only (default: every split present)")
    check.add_argument("--complete", action="store_true", help="count a split smaller than the official one as a problem")
    check.add_argument("--workers", type=at_least(1), default=None, help="threads that read the files (default: one per CPU)")
    check.add_argument("--quiet", action="store_true", help="print no progress")
    check.set_defaults(run=run_check)


def _root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=None, metavar="DIR",
                        help="where the benchmarks' folders are (default: $DETECTRON2_DATASETS, else ./datasets)")


def run_prepare(args: argparse.Namespace) -> int:
    from ..data.preparation import prepare_dataset

    report = prepare_dataset(args.name, args.sources, data_root=args.data_root, workers=args.workers, progress=not args.quiet)
    output(report.lines())
    root = f" --data-root {args.data_root}" if args.data_root is not None else ""
    print(f"zsseg: check it with `zsseg datasets check {args.name}{root}`", file=sys.stderr)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..data.preparation import check_dataset

    result = check_dataset(args.name, data_root=args.data_root, split=args.split, workers=args.workers, complete=args.complete,
                           progress=not args.quiet)
    output(result.lines())
    return 0 if result.usable else 1
