"""What commands write and print: the files they read (which no output may replace), the
checks of output folders and files before any work, and printing results."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..catalogue import parse_generator
from ..errors import ZssegError

if TYPE_CHECKING:
    from ..data.datasets import SegmentationDataset
# zsseg.outputs.writers (numpy, PIL, pycocotools) is imported where a file is checked or written: the
# parser of `zsseg --help` and `--version` imports this module.


def input_files(args: argparse.Namespace, images: list[Path] = ()) -> frozenset[Path]:
    """Every file the command reads (resolved): images, the vocabulary file, and the files of
    the CLIP, proposal-weight and FCN folders. No output may be one of them, even with --overwrite."""
    files = [*images, getattr(args, "vocabulary_file", None)]
    prompt = getattr(args, "prompt", None)
    prompt = Path(prompt) if prompt is not None and Path(prompt).expanduser().exists() else None
    spec = getattr(args, "proposals", None)
    pretrained = parse_generator(spec)[1] if spec else None
    for model in (getattr(args, "clip", None), getattr(args, "proposal_weights", None), getattr(args, "fcn_weights", None), prompt, pretrained):
        path = Path(model).expanduser() if model is not None else None
        if path is not None and path.is_dir():
            files.extend(p for p in path.iterdir() if p.is_file())
        elif path is not None and path.is_file():
            files.extend([path, path.with_suffix(".json"), path.with_suffix(".safetensors")])
    return frozenset(Path(f).resolve() for f in files if f is not None)


def check_outputs(images: list[Path], out: Path, overwrite: bool, inputs: frozenset[Path]) -> None:
    """Before any work: no two images write the same file, no output is an input, and no
    existing file that zsseg did not write is replaced (unless `overwrite`)."""
    from ..outputs.writers import check_target, output_paths

    check_output_folder(out, "--out")
    owner: dict[str, Path] = {}
    for image in images:
        for target in output_paths(out, image.stem):
            if target.name in owner:
                raise ZssegError(f"{owner[target.name]} and {image} would both write {target.name}; rename one or run them separately")
            owner[target.name] = image
            check_target(target, inputs, overwrite)


def remove_if_empty(out: Path, created: bool) -> None:
    """A folder made for an output that then failed: leave nothing behind."""
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def check_output_folder(folder: Path, flag: str) -> None:
    """`folder` is a folder, or can be made as one, and is writable. Creates nothing: outputs
    make their folder when they are written."""
    if folder.is_symlink() and not folder.exists():
        raise ZssegError(f"{flag} {folder} is a symbolic link to nothing (dangling, or a loop)")
    if folder.exists() and not folder.is_dir():
        raise ZssegError(f"{flag} {folder} exists and is not a folder")
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ZssegError(f"{flag} {folder} is not writable: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ZssegError(f"{flag} {folder} is not writable: {error.strerror or error}") from None


def check_json_output(path: Path, flag: str, dataset: SegmentationDataset, inputs: frozenset[Path]) -> None:
    """Fail before a long run, not after it, if the JSON cannot or may not be written. A missing
    folder is made when the JSON is written, as `--save-predictions` and `--out` make theirs."""
    from ..outputs.writers import check_target

    if path.is_dir():
        raise ZssegError(f"{flag} {path} is a folder; give a file name such as {path / 'scores.json'}")
    dataset.check_outside(path, flag)
    check_output_folder(path.parent, flag)
    check_target(path, inputs, advice=f"give another {flag} file")


def report(failures: list[str]) -> None:
    for failure in failures:
        print(f"zsseg: {failure}", file=sys.stderr)


def output(lines: Iterable[str]) -> None:
    """Print results to standard output. A closed pipe propagates (main stops quietly); any
    other write error (a full disk, `> /dev/full`) is a one-line error."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise ZssegError(f"cannot write to standard output: {error.strerror or error}") from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (from `timeout`, a scheduler, `kill`): handled as Ctrl-C is, with status 143."""


def terminate(signum, frame) -> None:
    """The SIGTERM handler: stop as Ctrl-C stops (summaries printed, no half-written file)."""
    raise Terminated


def interrupted_status(error: KeyboardInterrupt) -> int:
    """The exit status of an interrupted command: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(error, Terminated) else 130
