"""Where outputs may go: checked before any work, so that a run never fails late, never writes
over one of its inputs, and never replaces a file that zsseg did not write.

The checks name an output by the setting that gave it (`out`, `save_predictions`, ...), as the
Python API does; the command line shows the flag instead (`zsseg.errors.SettingError`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

from ..errors import SettingError, ZssegError


def protected_files(files: Iterable[str | Path | None], models: Iterable[str | Path | None] = ()) -> frozenset[Path]:
    """Every file a run reads (resolved): `files` as they are (images, a vocabulary file, a
    configuration file), and the files of `models` (a model folder counts by its files, a
    weights file with its JSON and safetensors siblings). No output may be one of them, even
    when overwriting is allowed."""
    found = [Path(value).expanduser() for value in files if value is not None]
    for value in models:
        if value is None:
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            found.extend(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            found.extend([path, path.with_suffix(".json"), path.with_suffix(".safetensors")])
    return frozenset(f.resolve() for f in found)


def model_paths(config) -> list[str | None]:
    """The paths a segmenter configuration reads models from (those that are local)."""
    paths = [config.clip.source, config.clip.tokenizer]
    proposals = config.proposals
    if proposals is not None:
        paths += [getattr(proposals, "weights", None), getattr(proposals, "model", None)]
    if config.fcn is not None:
        paths.append(config.fcn.weights)
    prompt = config.region.prompt
    if isinstance(prompt, (str, Path)) and Path(prompt).expanduser().exists():
        paths.append(prompt)
    return [p for p in paths if p is not None and not (isinstance(p, str) and ":" in p and not Path(p).exists())]


def check_output_folder(folder: Path, setting: str) -> None:
    """`folder` is a folder, or can be made as one, and is writable. Creates nothing: outputs
    make their folder when they are written."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise SettingError(setting, f"{{setting}} {folder} is a symbolic link to nothing (dangling, or a loop)")
    if folder.exists() and not folder.is_dir():
        raise SettingError(setting, f"{{setting}} {folder} exists and is not a folder")
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SettingError(setting, f"{{setting}} {folder} is not writable: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise SettingError(setting, f"{{setting}} {folder} is not writable: {error.strerror or error}") from None


def check_outputs(images: list[Path], out: Path, overwrite: bool, inputs: frozenset[Path]) -> None:
    """Before any work: no two images write the same file, no output is an input, and no
    existing file that zsseg did not write is replaced (unless `overwrite`)."""
    from .writers import check_target, output_paths

    check_output_folder(out, "out")
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


def check_json_output(path: Path, setting: str, dataset, inputs: frozenset[Path]) -> None:
    """Fail before a long run, not after it, if the JSON cannot or may not be written. A missing
    folder is made when the JSON is written."""
    from .writers import check_target

    path = Path(path)
    if path.is_dir():
        raise SettingError(setting, f"{{setting}} {path} is a folder; give a file name such as {path / 'scores.json'}")
    if dataset is not None:
        dataset.check_outside(path, setting)
    check_output_folder(path.parent, setting)
    check_target(path, inputs, advice="give another file")


__all__ = ["check_json_output", "check_output_folder", "check_outputs", "model_paths", "protected_files", "remove_if_empty"]
