"""`zsseg segment`: label every pixel of images with your class names."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ZssegError, counted
from ..runs.read_ahead import ahead, pipeline_enabled, settle
from ..runs.progress import Progress
from ..data.vocabulary import Vocabulary
from .arguments import USABLE_PROPOSALS, check_method_flags, chosen_vocabulary, model_options, pipeline_option, vocabulary_options
from .outputs import check_outputs, input_files, interrupted_status, remove_if_empty, report


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
    from ..data.images import IMAGE_EXTENSIONS  # here, as the writers: numpy and PIL are not for `zsseg --help`
    from ..outputs.writers import damaged_output_of_zsseg, written_by_zsseg

    def zsseg_output(entry: Path) -> bool:
        return entry.is_file() and (written_by_zsseg(entry) or damaged_output_of_zsseg(entry))

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
                elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS and not zsseg_output(entry):
                    found.append(entry)
                elif not zsseg_output(entry):
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
    settings (as its JSON records them), each whole: every PNG complete to its last chunk (CRCs
    right) and of the size the JSON records. An output cut short is not done: it is written again."""
    from ..outputs.writers import output_paths, whole

    targets = output_paths(out, stem)
    if not all(whole(target) for target in targets):
        return False
    try:
        record = json.loads(targets[-1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = record.get("files") if isinstance(record, dict) else None
    if isinstance(files, dict) and any(files.get(t.name) != t.stat().st_size for t in targets[:-1]):
        return False
    return record.get("vocabulary") == vocabulary.names and record.get("settings") == json.loads(json.dumps(settings))


@dataclass
class _Plan:
    vocabulary: Vocabulary
    found: Inputs
    inputs: frozenset[Path]
    created: bool


def _plan(args: argparse.Namespace, main: bool) -> _Plan:
    """What to segment, after every check that needs no model. The output checks (no image writes
    over an input, a file zsseg did not write, or another image's outputs) run on one process
    only, before any process writes; so does the removal of temporaries that a killed run left."""
    from ..outputs.writers import output_paths, remove_stale_temporaries
    from .models import check_prompt
    vocabulary = chosen_vocabulary(args)
    check_prompt(args)
    check_method_flags(args)
    found = _collect_images(args.inputs)
    inputs = input_files(args, found.images)
    created = not args.out.exists()
    if main:
        check_outputs(found.images, args.out, args.overwrite, inputs)
        remove_stale_temporaries(args.out, [t for image in found.images for t in output_paths(args.out, image.stem)])
    return _Plan(vocabulary, found, inputs, created)


def run(args: argparse.Namespace) -> int:
    """Segment the images. Under torchrun each process takes its share of the input list
    (`Distributed.shard`: the same split on every machine), so each image is written by exactly
    one process; process 0 prints the failures in input order and one summary of the totals."""
    from ..runs.distributed import init_distributed, shutdown_distributed, together

    context = init_distributed(args.device)
    interrupted = False
    try:
        plan = together(context, lambda: _plan(args, context.is_main))
        images = plan.found.images
        if not context.same_everywhere("\n".join(str(image.resolve()) for image in images)):
            raise ZssegError("the processes found different input images: every machine of the run must see the same files")
        segmenter = together(context, lambda: _segmenter(args, context.device, plan.vocabulary)) if images else None
        share = _Share(list(context.shard(len(images))))
        try:
            _segment_share(args, plan, segmenter, share, context.is_main)
        except KeyboardInterrupt as error:
            interrupted = True
            report(failure for _, failure in share.failures)
            process = f" (process {context.rank} of {context.world_size})" if context.enabled else ""
            where = f"; their outputs are in {args.out}" if share.done or share.skipped else ""
            after = " (torchrun reports the signal below, and exits 1)" if context.enabled else ""
            print(f"zsseg: interrupted{process}: {share.done} of {counted(len(share.indices), 'image')} segmented"
                  f"{_skipped(share.skipped)}, {len(share.failures)} failed{where}{after}", file=sys.stderr)
            if not context.enabled:
                remove_if_empty(args.out, plan.created)
            return interrupted_status(error)
        try:
            shares = context.gather((share.done, share.skipped, share.failures))
        except RuntimeError:  # a process of the world died; torchrun stops the others
            raise ZssegError(f"another process of the run stopped before the end; the {counted(share.done, 'image')} this one "
                             "segmented are written: run the same command with --skip-existing to finish") from None
    finally:
        if not interrupted:  # after an interrupt, the image in preparation is not waited for: `zsseg.console`
            _settle()
        shutdown_distributed()
    done, skipped = sum(s[0] for s in shares), sum(s[1] for s in shares)
    failures = plan.found.failures + [failure for _, failure in sorted(f for s in shares for f in s[2])]
    if context.is_main:
        remove_if_empty(args.out, plan.created)
        report(failures)
        where = f"; outputs in {args.out}" if done or skipped else ""
        after = " (status 1, which torchrun reports below as a ChildFailedError)" if context.enabled and failures else ""
        print(f"zsseg: {counted(done, 'image')} segmented{_skipped(skipped)}, {len(failures)} failed{where}{plan.found.summary()}"
              f"{after}", file=sys.stderr)
    return 1 if failures else 0


def _settle() -> None:
    """Wait for the worker that prepares images ahead to finish the one in hand (a process that
    exits under it aborts: `zsseg.runs.read_ahead`), after the summary of an interrupt; a second Ctrl-C
    meanwhile ends the process at once, with the interrupt's status."""
    try:
        settle()
    except KeyboardInterrupt as error:
        sys.stderr.flush()
        os._exit(interrupted_status(error))


def _segmenter(args: argparse.Namespace, device: str, vocabulary: Vocabulary):
    from .models import build_segmenter, proposal_generator
    segmenter = build_segmenter(args, device, proposal_generator(args, device))
    segmenter.prepare(vocabulary)
    return segmenter


@dataclass
class _Share:
    """One process's images (indices into the input list) and what became of them."""

    indices: list[int]
    done: int = 0
    skipped: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)


def _segment_share(args: argparse.Namespace, plan: _Plan, segmenter, share: _Share, show_progress: bool) -> None:
    """Segment and write the share's images, counting into `share` as it goes (so an interrupt
    leaves true counts). A failed image is counted and the next one taken. Each image is read
    and prepared (`Segmenter.prepare_image`: proposals, crops) on a worker thread while CLIP
    works on the one before (`zsseg.runs.read_ahead`); outputs are written here, in order, and are
    those of the sequential run (`--no-pipeline`)."""
    from ..data.images import read_image
    from ..outputs.writers import check_target, output_paths, write_outputs

    images = plan.found.images
    settings = segmenter.settings() if share.indices else None

    def load(index: int):
        """The image and its prepared half, or None when --skip-existing passes it over."""
        path = images[index]
        if args.skip_existing and already_segmented(args.out, path.stem, plan.vocabulary, settings):
            return None
        image = read_image(path)
        return image, segmenter.prepare_image(image)

    loaded = ahead(share.indices, load, enabled=args.pipeline and pipeline_enabled())
    with Progress(len(share.indices), "segmenting", "image", enabled=show_progress) as progress, closing(loaded):
        for index, outcome in loaded:
            path = images[index]
            try:
                if (ready := outcome.result()) is None:
                    share.skipped += 1
                    continue
                image, prepared = ready
                result = segmenter.finish(prepared, plan.vocabulary)
                for target in output_paths(args.out, path.stem):  # again: a file may have appeared since
                    check_target(target, plan.inputs, args.overwrite)
                write_outputs(args.out, path.stem, image, result.label_map, result.class_names, str(path), settings)
                share.done += 1
            except ZssegError as error:
                share.failures.append((index, str(error)))
            except OSError as error:
                share.failures.append((index, f"{path}: cannot write outputs to {args.out}: {error.strerror or error}"))
            finally:
                progress.update()


def _skipped(count: int) -> str:
    return f", {count} already done (--skip-existing)" if count else ""
