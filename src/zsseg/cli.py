"""Command line: `zsseg segment`, `zsseg vocabularies`.

Exit status: 0 on success, 1 when some images failed (the others are written), 2 when nothing
could run (bad arguments, vocabulary, model or output folder). Errors are one line each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .clip import DEFAULT_CLIP, DTYPES
from .errors import ZssegError
from .images import IMAGE_EXTENSIONS, read_image
from .prompts import TEMPLATE_SETS
from .proposals import GENERATORS
from .segmenter import DEFAULT_MAX_SIZE, DEFAULT_PROPOSALS, Segmenter
from .vocabulary import PRESETS, Vocabulary
from .writers import output_paths, write_outputs

USABLE_PROPOSALS = [name for name, cls in GENERATORS.items() if not cls.needs_ground_truth]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zsseg", description="Open-vocabulary semantic segmentation with CLIP.")
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="label every pixel of images with your class names")
    segment.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    vocab = segment.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", help='class names: "cat; sofa, couch; wall" (";" between classes, "," between synonyms)')
    vocab.add_argument("--vocabulary", choices=list(PRESETS), help="a built-in benchmark vocabulary")
    vocab.add_argument("--vocabulary-file", type=Path, help="text file, one class per line, synonyms separated by commas")
    segment.add_argument("--clip", default=DEFAULT_CLIP, help=f"CLIP hub id or local folder (default {DEFAULT_CLIP})")
    segment.add_argument("--proposals", default=DEFAULT_PROPOSALS, choices=USABLE_PROPOSALS, help=f"mask proposal generator (default {DEFAULT_PROPOSALS})")
    segment.add_argument("--max-proposals", type=int, default=100, help="masks per image (default 100)")
    segment.add_argument("--templates", default="imagenet", choices=list(TEMPLATE_SETS), help="prompt templates (default imagenet)")
    segment.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    segment.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="CLIP precision (default fp32)")
    segment.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, help=f"longer side images are processed at (default {DEFAULT_MAX_SIZE}); outputs are full size")
    segment.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")

    commands.add_parser("vocabularies", help="list the built-in vocabularies")
    return parser


def _collect_images(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Image files named directly or found (non-recursively) in folders; plus per-input errors."""
    images, failures = [], []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                failures.append(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            images.extend(found)
        elif path.exists():
            images.append(path)
        else:
            failures.append(f"{path}: no such file or folder")
    return images, failures


def _check_output_names(images: list[Path]) -> None:
    owner: dict[str, Path] = {}
    for image in images:
        for name in (p.name for p in output_paths(Path("."), image.stem)):
            if name in owner and owner[name] != image:
                raise ZssegError(f"{owner[name]} and {image} would both write {name}; rename one or run them separately")
            owner[name] = image


def _prepare_output(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except FileExistsError:
        raise ZssegError(f"output path {out} exists and is not a folder") from None
    except OSError as error:
        raise ZssegError(f"output folder {out} is not writable: {error.strerror or error}") from None


def _vocabulary(args: argparse.Namespace) -> Vocabulary:
    if args.classes is not None:
        return Vocabulary.parse(args.classes)
    if args.vocabulary is not None:
        return Vocabulary.preset(args.vocabulary)
    return Vocabulary.from_file(args.vocabulary_file)


def _segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.max_proposals < 1:
        raise ZssegError("--max-proposals must be at least 1")
    vocabulary = _vocabulary(args)
    images, failures = _collect_images(args.inputs)
    _check_output_names(images)
    _prepare_output(args.out)
    written = 0
    if images:
        segmenter = Segmenter(
            clip=args.clip,
            proposals=args.proposals,
            templates=args.templates,
            device=args.device,
            dtype=args.dtype,
            max_size=args.max_size,
            max_proposals=args.max_proposals,
        )
        segmenter.prepare(vocabulary)
        for path in tqdm(images, desc="segmenting", unit="image", disable=None):
            try:
                image = read_image(path)
                result = segmenter.segment(image, vocabulary)
                write_outputs(args.out, path.stem, image, result.label_map, result.class_names, str(path))
                written += 1
            except ZssegError as error:
                failures.append(str(error))
            except OSError as error:
                failures.append(f"{path}: cannot write outputs to {args.out}: {error.strerror or error}")
    if failures:
        print(f"zsseg: {len(failures)} input(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(f"zsseg: wrote {3 * written} files for {written} image(s) to {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "vocabularies":
            for name, description in PRESETS.items():
                print(f"{name:20s} {len(Vocabulary.preset(name)):4d} classes  {description}")
            return 0
        return _segment(args)
    except ZssegError as error:
        print(f"zsseg: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zsseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
