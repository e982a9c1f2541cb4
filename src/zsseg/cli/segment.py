"""`zsseg segment`: label every pixel of images with your class names."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZssegError, counted
from ..images import IMAGE_EXTENSIONS, read_image
from ..progress import Progress
from ..vocabulary import PRESETS, Vocabulary
from ..writers import check_target, output_paths, write_outputs, written_by_zsseg
from .arguments import USABLE_PROPOSALS, check_method_flags, model_options
from .models import build_segmenter, check_prompt, proposal_generator
from .outputs import check_outputs, input_files, interrupted_status, report


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
    segment.add_argument("--skip-existing", action="store_true",
                         help="skip an image whose outputs zsseg already wrote in --out with the same vocabulary and settings "
                         "(resumes an interrupted run)")
    segment.set_defaults(run=run)


@dataclass
class Inputs:
    """The images a command line names, each once, with what went wrong and what was passed over.

    Attributes:
        images: image files named directly or found in folders (not recursively), in order.
        failures: one line per input that cannot be used.
        passed_over: in the folders: subfolders, dangling links and files that are not images
            (zsseg's own outputs aside), counted for the summary.
    """

    images: list[Path]
    failures: list[str]
    passed_over: Counter

    def summary(self) -> str:
        """"; in the folders, 2 subfolders and 1 file of another type were passed over (...)"."""
        if not self.passed_over:
            return ""
        parts = [counted(n, kind, plural) for kind, plural, n in
                 (("subfolder", None, self.passed_over["subfolder"]), ("dangling link", None, self.passed_over["link"]),
                  ("file of another type", "files of another type", self.passed_over["other"])) if n]
        return f"; in the folders, {', '.join(parts)} passed over (folders are not searched recursively)"


def _collect_images(inputs: list[str]) -> Inputs:
    """Image files named directly or found (non-recursively) in folders, each once (by resolved
    path, in the order given); plus per-input errors. In a folder, label maps and overlays that
    zsseg wrote are not inputs, so segmenting a folder into itself twice works."""
    images: dict[Path, Path] = {}
    failures = []
    passed_over: Counter = Counter()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                entries = sorted(path.iterdir())
            except OSError as error:
                failures.append(f"{path}: cannot read the folder: {error.strerror or error}")
                continue
            found = []
            for entry in entries:
                if entry.is_symlink() and not entry.exists():
                    passed_over["link"] += 1
                elif entry.is_dir():
                    passed_over["subfolder"] += 1
                elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS and not written_by_zsseg(entry):
                    found.append(entry)
                elif not (entry.is_file() and written_by_zsseg(entry)):
                    passed_over["other"] += 1
            if not found:
                failures.append(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif path.exists():
            found = [path]
        else:
            found = []
            failures.append(f"{path}: no such file or folder")
        for image in found:
            images.setdefault(image.resolve(), image)
    return Inputs(list(images.values()), failures, passed_over)


def already_segmented(out: Path, stem: str, vocabulary: Vocabulary, settings: dict) -> bool:
    """Whether `out` holds the outputs of `stem` that zsseg wrote with this vocabulary and these
    settings (as its JSON records them)."""
    targets = output_paths(out, stem)
    if not all(target.is_file() and written_by_zsseg(target) for target in targets):
        return False
    try:
        record = json.loads(targets[-1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return record.get("vocabulary") == vocabulary.names and record.get("settings") == json.loads(json.dumps(settings))


def _vocabulary(args: argparse.Namespace) -> Vocabulary:
    if args.classes is not None:
        return Vocabulary.parse(args.classes)
    if args.vocabulary is not None:
        return Vocabulary.preset(args.vocabulary)
    return Vocabulary.from_file(args.vocabulary_file)


def run(args: argparse.Namespace) -> int:
    vocabulary = _vocabulary(args)
    check_prompt(args)
    check_method_flags(args)
    found = _collect_images(args.inputs)
    images, failures = found.images, found.failures
    inputs = input_files(args, images)
    check_outputs(images, args.out, args.overwrite, inputs)
    created = not args.out.exists()
    done = skipped = 0
    if images:
        segmenter = build_segmenter(args, args.device, proposal_generator(args, args.device))
        segmenter.prepare(vocabulary)
        settings = segmenter.settings()
        progress = Progress(len(images), "segmenting", "image")
        try:
            for path in images:
                try:
                    if args.skip_existing and already_segmented(args.out, path.stem, vocabulary, settings):
                        skipped += 1
                        continue
                    image = read_image(path)
                    result = segmenter.segment(image, vocabulary)
                    for target in output_paths(args.out, path.stem):  # again: a file may have appeared since
                        check_target(target, inputs, args.overwrite)
                    write_outputs(args.out, path.stem, image, result.label_map, result.class_names, str(path), settings)
                    done += 1
                except ZssegError as error:
                    failures.append(str(error))
                except OSError as error:
                    failures.append(f"{path}: cannot write outputs to {args.out}: {error.strerror or error}")
                finally:
                    progress.update()
        except KeyboardInterrupt as error:
            report(failures)
            where = f"; their outputs are in {args.out}" if done or skipped else ""
            print(f"zsseg: interrupted: {done} of {counted(len(images), 'image')} segmented{_skipped(skipped)}, "
                  f"{len(failures)} failed{where}", file=sys.stderr)
            return interrupted_status(error)
        finally:
            progress.close()
            if created and args.out.is_dir() and not any(args.out.iterdir()):
                args.out.rmdir()  # made for an output that then failed: leave nothing behind
    report(failures)
    where = f"; outputs in {args.out}" if done or skipped else ""
    print(f"zsseg: {counted(done, 'image')} segmented{_skipped(skipped)}, {len(failures)} failed{where}{found.summary()}", file=sys.stderr)
    return 1 if failures else 0


def _skipped(count: int) -> str:
    return f", {count} already done (--skip-existing)" if count else ""
