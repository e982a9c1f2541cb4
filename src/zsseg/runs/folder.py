"""Segmenting many images into a folder, as `zsseg segment` does, in one call.

    report = zsseg.segment_folder(["photos/"], "outputs", "cat; sofa, couch; wall", clip="openai/clip-vit-base-patch16")
    report.segmented, report.skipped, report.failures

Each image gets STEM.png (its label map), STEM_overlay.png and STEM.json (the classes' areas and
RLEs, and the record of what made them). Before any work: no two images may write the same
file, no output may be one of the inputs, and no file that zsseg did not write is replaced
(unless `overwrite`). An image that fails is reported and the next one taken. With
`skip_existing`, an image whose outputs zsseg already wrote, whole, with the same configuration
and vocabulary, is passed over: an interrupted run is resumed. The next image is read and
prepared on a worker thread while CLIP works on this one (`pipeline`; the same outputs). Under
torchrun each process takes its share of the images (`Distributed.shard`), so each image is
written by exactly one process.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SegmenterConfig, check_prompts
from ..data.vocabulary import Vocabulary, as_vocabulary
from ..errors import ZssegError, counted
from ..outputs.safety import check_outputs, model_paths, protected_files, remove_if_empty
from .distributed import Distributed, distributed_session, together
from .progress import Progress
from .read_ahead import ahead, pipeline_enabled, settle


@dataclass
class Inputs:
    """The images a run names, each once, with what went wrong and what was passed over.

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


def collect_images(inputs: list[str | Path]) -> Inputs:
    """Image files named directly or found (non-recursively) in folders, each once (by resolved
    path, in the order given); plus per-input errors. In a folder, label maps and overlays that
    zsseg wrote are not inputs, so segmenting a folder into itself twice works."""
    images: dict[Path, Path] = {}
    failures: list[str] = []
    passed_over: Counter = Counter()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = _folder_images(path, failures, passed_over)
        elif path.exists():
            found = [path]
        else:
            found = []
            failures.append(f"{path}: no such file or folder")
        for image in found:
            images.setdefault(image.resolve(), image)
    return Inputs(list(images.values()), failures, passed_over)


def _folder_images(folder: Path, failures: list[str], passed_over: Counter) -> list[Path]:
    from ..data.images import IMAGE_EXTENSIONS
    from ..outputs.writers import written_by_zsseg

    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        failures.append(f"{folder}: cannot read the folder: {error.strerror or error}")
        return []
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
        failures.append(f"{folder}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


def already_segmented(out: Path, stem: str, record: dict) -> bool:
    """Whether `out` holds the outputs of `stem` that zsseg wrote with this record (the
    configuration, vocabulary and models: `Segmenter.record`), each whole: every PNG complete
    to its last chunk and of the size the JSON records. An output cut short is not done."""
    from ..outputs.writers import output_paths, whole

    targets = output_paths(out, stem)
    if not all(whole(target) for target in targets):
        return False
    try:
        data = json.loads(targets[-1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = data.get("files") if isinstance(data, dict) else None
    if isinstance(files, dict) and any(files.get(t.name) != t.stat().st_size for t in targets[:-1]):
        return False
    return data.get("config") == json.loads(json.dumps(record))


@dataclass
class FolderReport:
    """What a folder run did: counts over every process, the failures in input order."""

    out: Path
    segmented: int
    skipped: int
    failures: list[str]
    passed_over: str = ""


@dataclass
class Share:
    """One process's images (indices into the input list) and what became of them so far."""

    indices: list[int]
    done: int = 0
    skipped: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)


class FolderRun:
    """`segment_folder` as an object, whose counts (`share`) a caller can read when the run is
    interrupted. Arguments as `segment_folder`'s."""

    def __init__(self, inputs: list[str | Path], out: str | Path, vocabulary: Vocabulary | str | list[str], *,
                 config: SegmenterConfig | str | Path | None = None, skip_existing: bool = False, overwrite: bool = False,
                 pipeline: bool = True, progress: bool = True, protected: list[str | Path] = (), **options):
        self.inputs, self.out, self.vocabulary = list(inputs), Path(out), as_vocabulary(vocabulary)
        self.config, self.options = config, options
        self.skip_existing, self.overwrite, self.pipeline, self.progress = skip_existing, overwrite, pipeline, progress
        self.protected = list(protected)
        self.found: Inputs | None = None
        self.share = Share([])
        self.created = False
        self.context = Distributed()

    def run(self) -> FolderReport:
        from ..segmenter import Segmenter

        first = SegmenterConfig.from_options(_loaded_config(self.config), **_settings_only(self.options))
        with distributed_session(first.clip.device) as context:
            self.context = context
            found = together(context, lambda: self._plan(first, context.is_main))
            if not context.same_everywhere("\n".join(str(image.resolve()) for image in found.images)):
                raise ZssegError("the processes found different input images: every machine of the run must see the same files")
            segmenter = together(context, lambda: self._segmenter(Segmenter, context.device)) if found.images else None
            self.share = Share(list(context.shard(len(found.images))))
            self._segment(segmenter, context.is_main)  # on Ctrl-C the image in preparation is not waited for (zsseg.console)
            settle()  # the worker that prepares ahead ends after the image in hand: a process must not exit under it
            try:
                shares = context.gather((self.share.done, self.share.skipped, self.share.failures))
            except RuntimeError:  # a process of the world died; torchrun stops the others
                raise ZssegError(f"another process of the run stopped before the end; the {counted(self.share.done, 'image')} this "
                                 "one segmented are written: run it again, skipping the existing outputs, to finish") from None
        if context.is_main:
            remove_if_empty(self.out, self.created)
        failures = found.failures + [failure for _, failure in sorted(f for s in shares for f in s[2])]
        return FolderReport(self.out, sum(s[0] for s in shares), sum(s[1] for s in shares), failures, found.summary())

    def _plan(self, config: SegmenterConfig, main: bool) -> Inputs:
        """The images, after every check that needs no model. The output checks (no image writes
        over an input, a file zsseg did not write, or another image's outputs) run on one process
        only, before any process writes; so does the removal of temporaries a killed run left."""
        from ..outputs.writers import output_paths, remove_stale_temporaries

        check_prompts(config)
        self.found = found = collect_images(self.inputs)
        self.inputs_protected = protected_files([*found.images, *self.protected], model_paths(config))
        self.created = not self.out.exists()
        if main:
            check_outputs(found.images, self.out, self.overwrite, self.inputs_protected)
            remove_stale_temporaries(self.out, [t for image in found.images for t in output_paths(self.out, image.stem)])
        return found

    def _segmenter(self, Segmenter, device: str):
        segmenter = Segmenter(_loaded_config(self.config), **{**self.options, "device": device})
        segmenter.prepare(self.vocabulary)
        return segmenter

    def _segment(self, segmenter, show_progress: bool) -> None:
        """Segment and write the share's images, counting into `share` as it goes (so an
        interrupt leaves true counts). A failed image is counted and the next one taken. Each
        image is read and prepared on a worker thread while CLIP works on the one before;
        outputs are written here, in order, and are those of the sequential run."""
        share, images = self.share, self.found.images
        record = segmenter.record(self.vocabulary) if share.indices else None

        def load(index: int):
            """The image and its prepared half, or None where the run passes it over."""
            from ..data.images import read_image

            path = images[index]
            if self.skip_existing and already_segmented(self.out, path.stem, record):
                return None
            image = read_image(path)
            return image, segmenter.prepare_image(image)

        loaded = ahead(share.indices, load, enabled=self.pipeline and pipeline_enabled())
        with Progress(len(share.indices), "segmenting", "image", enabled=show_progress and self.progress) as bar, closing(loaded):
            for index, outcome in loaded:
                try:
                    self._finish(segmenter, images[index], outcome, record)
                except ZssegError as error:
                    share.failures.append((index, str(error)))
                except OSError as error:
                    share.failures.append((index, f"{images[index]}: cannot write outputs to {self.out}: {error.strerror or error}"))
                finally:
                    bar.update()

    def _finish(self, segmenter, path: Path, outcome, record: dict) -> None:
        from ..outputs.writers import check_target, output_paths, write_outputs

        if (ready := outcome.result()) is None:
            self.share.skipped += 1
            return
        image, prepared = ready
        result = segmenter.finish(prepared, self.vocabulary)
        for target in output_paths(self.out, path.stem):  # again: a file may have appeared since
            check_target(target, self.inputs_protected, self.overwrite)
        write_outputs(self.out, path.stem, image, result.label_map, result.class_names, str(path), record)
        self.share.done += 1


def _loaded_config(config):
    if isinstance(config, (str, Path)):
        from ..config import load_config

        return load_config(config)[0]
    return config


def _settings_only(options: dict) -> dict:
    """The options as settings (loaded models stand for their sources)."""
    from ..models.loading import ClipModel
    from ..proposals import ProposalGenerator

    settings = dict(options)
    if isinstance(settings.get("clip"), ClipModel):
        settings["clip"] = settings["clip"].source
    if isinstance(settings.get("proposals"), ProposalGenerator):
        settings["proposals"] = settings["proposals"].config
    if settings.get("fcn") is not None and not isinstance(settings["fcn"], (str, Path)):
        settings["fcn"] = getattr(settings["fcn"], "source", "(in memory)")
    return settings


def segment_folder(inputs: list[str | Path], out: str | Path, vocabulary: Vocabulary | str | list[str], **kwargs) -> FolderReport:
    """Segment images (files, or folders of them, not searched recursively) into `out`.

    Args:
        inputs: image files and folders.
        out: the output folder (made when the first output is written).
        vocabulary: a `Vocabulary`, a preset name, "a; b, c" text, or a list of names.
        config: a `SegmenterConfig`, or a file holding one (an output's record).
        skip_existing: pass over an image whose outputs zsseg already wrote with the same record.
        overwrite: replace files in `out` that zsseg did not write.
        pipeline: prepare the next image on a worker thread while CLIP works on this one.
        progress: show a progress bar (or lines, where the output is not a terminal).
        protected: further files no output may replace (a vocabulary file).
        options: settings by their flat names (`zsseg.config.OPTIONS`), or loaded models.

    Returns:
        a `FolderReport`: counts over every process, and one line per failed input.
    """
    return FolderRun(inputs, out, vocabulary, **kwargs).run()


__all__ = ["FolderReport", "FolderRun", "Inputs", "already_segmented", "collect_images", "segment_folder"]
