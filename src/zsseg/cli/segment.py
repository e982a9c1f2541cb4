"""`zsseg segment`: label every pixel of images with your class names."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ZssegError
from ..images import IMAGE_EXTENSIONS, read_image
from ..vocabulary import PRESETS, Vocabulary
from ..writers import check_target, output_paths, write_outputs, written_by_zsseg
from .arguments import USABLE_PROPOSALS, check_method_flags, model_options
from .models import build_segmenter, check_prompt, proposal_generator
from .outputs import check_outputs, input_files, report


def add_parser(commands) -> None:
    segment = commands.add_parser("segment", help="label every pixel of images with your class names")
    segment.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    vocab = segment.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", help='class names: "cat; sofa, couch; wall" (";" between classes, "," between synonyms)')
    vocab.add_argument("--vocabulary", choices=list(PRESETS), help="a built-in benchmark vocabulary")
    vocab.add_argument("--vocabulary-file", type=Path, help="text file, one class per line, synonyms separated by commas")
    model_options(segment, USABLE_PROPOSALS)
    segment.add_argument("--out", required=True, type=Path,
                         help="output folder (created when the first output is written); never one of the inputs' own files")
    segment.add_argument("--overwrite", action="store_true",
                         help="replace existing files in --out that zsseg did not write (files zsseg wrote are always replaced)")
    segment.set_defaults(run=run)


def _collect_images(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Image files named directly or found (non-recursively) in folders, each once (by resolved
    path, in the order given); plus per-input errors. In a folder, label maps and overlays that
    zsseg wrote are not inputs, so segmenting a folder into itself twice works."""
    images: dict[Path, Path] = {}
    failures = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not written_by_zsseg(p))
            except OSError as error:
                failures.append(f"{path}: cannot read the folder: {error.strerror or error}")
                continue
            if not found:
                failures.append(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif path.exists():
            found = [path]
        else:
            found = []
            failures.append(f"{path}: no such file or folder")
        for image in found:
            images.setdefault(image.resolve(), image)
    return list(images.values()), failures


def _vocabulary(args: argparse.Namespace) -> Vocabulary:
    if args.classes is not None:
        return Vocabulary.parse(args.classes)
    if args.vocabulary is not None:
        return Vocabulary.preset(args.vocabulary)
    return Vocabulary.from_file(args.vocabulary_file)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    vocabulary = _vocabulary(args)
    check_prompt(args)
    check_method_flags(args)
    images, failures = _collect_images(args.inputs)
    inputs = input_files(args, images)
    check_outputs(images, args.out, args.overwrite, inputs)
    created = not args.out.exists()
    done = 0
    if images:
        segmenter = build_segmenter(args, args.device, proposal_generator(args, args.device))
        segmenter.prepare(vocabulary)
        try:
            for path in tqdm(images, desc="segmenting", unit="image", disable=None):
                try:
                    image = read_image(path)
                    result = segmenter.segment(image, vocabulary)
                    for target in output_paths(args.out, path.stem):  # again: a file may have appeared since
                        check_target(target, inputs, args.overwrite)
                    write_outputs(args.out, path.stem, image, result.label_map, result.class_names, str(path))
                    done += 1
                except ZssegError as error:
                    failures.append(str(error))
                except OSError as error:
                    failures.append(f"{path}: cannot write outputs to {args.out}: {error.strerror or error}")
        except KeyboardInterrupt:
            report(failures)
            where = f"; their outputs are in {args.out}" if done else ""
            print(f"zsseg: interrupted: {done} of {len(images)} image(s) segmented, {len(failures)} failed{where}", file=sys.stderr)
            return 130
        finally:
            if created and args.out.is_dir() and not any(args.out.iterdir()):
                args.out.rmdir()  # made for an output that then failed: leave nothing behind
    report(failures)
    where = f"; outputs in {args.out}" if done else ""
    print(f"zsseg: {done} image(s) segmented, {len(failures)} failed{where}", file=sys.stderr)
    return 1 if failures else 0
