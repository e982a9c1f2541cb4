"""Pretrained models from the Hugging Face hub or a local folder: one loading path for CLIP,
SAM and the MaskFormer family.

    model, source, local = load_pretrained("facebook/sam-vit-base", SAM, loader)

A name that is an existing folder is loaded from it (after checking it holds a config.json of
an accepted `model_type` and weights); a name that looks like a path but does not exist is an
error; anything else is a hub id, tried in the local Hugging Face cache first, then on the hub
if it can be reached. Every failure is one line (`ZssegError`) that says, for hub ids, how to
download the model elsewhere and pass its folder. Weights are read from safetensors, or with
`torch.load(weights_only=True)`: nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from safetensors import SafetensorError

from .errors import ZssegError

# What a damaged or mismatched checkpoint raises inside transformers: one line, not a traceback.
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError, SafetensorError)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelKind:
    """A family of checkpoints zsseg loads.

    Attributes:
        label: its name in messages ("CLIP", "SAM").
        model_types: the config.json `model_type`s accepted.
        option: how a folder is passed on the command line, `{}` standing for the folder
            ("--clip {}", "--proposals sam:{}").
        folder: a name for the downloaded folder in the offline help ("clip-model").
    """

    label: str
    model_types: tuple[str, ...]
    option: str
    folder: str

    @property
    def accepted(self) -> str:
        """The accepted model types, for messages: "'sam' or 'sam_hq'"."""
        return " or ".join(f"'{t}'" for t in self.model_types)

    def offline_help(self, name: str) -> str:
        return (
            f"to use it offline, download it where the hub is reachable (`hf download {name} --local-dir {self.folder}`), "
            f"copy that folder here and pass its path ({self.option.format(self.folder)}), or point HF_HOME at a "
            "Hugging Face cache that holds it"
        )


def read_json(path: Path) -> dict:
    """A JSON file's content; a one-line error if it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ZssegError(f"cannot read {path}: {error}") from None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a connection to the Hugging Face hub (or $HF_ENDPOINT) opens within `timeout`.

    Asked before downloading, so that an offline machine gets the offline message at once
    instead of after the hub client's retries (about half a minute). Behind a proxy the answer
    cannot be known from here, so it is yes and the hub client decides."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)), timeout):
            return True
    except OSError:
        return False


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE asks not to contact the hub at all."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def looks_like_path(name: str) -> bool:
    """A hub id is "owner/name"; anything else with a separator is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' and huggingface_hub's logs and weight-loading bars, which would
    bury our one-line errors; restores the previous settings on exit."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logger.setLevel(logging.ERROR)  # its per-retry network warnings
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hub_logger.setLevel(hub_level)
        if bars:
            hf_logging.enable_progress_bar()


def check_folder(folder: Path, kind: ModelKind) -> str:
    """A checkpoint folder's `model_type`, after checking it is one of `kind` and has weights."""
    if not folder.is_dir():
        raise ZssegError(f"{kind.label} checkpoint {folder} is a file; give the folder that holds config.json and the weights")
    config = folder / "config.json"
    if not config.is_file():
        raise ZssegError(f"{folder} is not a {kind.label} checkpoint folder: it has no config.json")
    model_type = read_json(config).get("model_type")
    if model_type not in kind.model_types:
        raise ZssegError(f"{folder} holds a '{model_type}' model, not {kind.label} (config.json model_type must be {kind.accepted})")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ZssegError(f"{folder} has a {kind.label} config.json but no weights (model.safetensors or pytorch_model.bin)")
    return model_type


def check_model_type(model_type: str, name: str, kind: ModelKind) -> None:
    """Refuse a checkpoint (from the hub, where no folder was checked) of another family."""
    if model_type not in kind.model_types:
        raise ZssegError(f"'{name}' is a '{model_type}' model, not {kind.label} (its model_type must be {kind.accepted})")


def check_complete(source: str, info: dict, kind: ModelKind) -> None:
    """Refuse weights that leave part of the model at its random initialisation: it would run,
    and silently give meaningless results."""
    missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        raise ZssegError(
            f"the {kind.label} weights in {source} are incomplete: {len(missing)} tensor(s) missing or of the wrong shape, "
            f"for example {missing[0]}; give a complete checkpoint"
        )


def load_pretrained(name_or_path: str | Path, kind: ModelKind, load: Callable[[str, bool], tuple[Any, dict]]) -> tuple[Any, str, bool]:
    """Load a checkpoint of `kind` from a folder or a hub id.

    Args:
        name_or_path: hub id ("facebook/sam-vit-base") or folder in Hugging Face format.
        load: `load(source, local_files_only)` -> (what was loaded, transformers' loading info
            with missing and mismatched keys); it may raise any of `LOAD_ERRORS`, or a
            `ZssegError` that is passed on as is.
    Returns:
        (what `load` returned, the source it was loaded from, whether that was local only).
    Raises:
        ZssegError: one line saying what was tried and, for hub ids, how to work offline.
    """
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if folder.exists():
        check_folder(folder, kind)
        sources = [(str(folder), True)]
    elif looks_like_path(name):
        raise ZssegError(f"{kind.label} folder not found: {folder}")
    else:
        # The local cache first (fast, and the only option offline), then the hub.
        sources = [(name, True)] + ([] if hub_offline() or not hub_reachable() else [(name, False)])

    with quiet_transformers():
        last_error: Exception | None = None
        for source, local_only in sources:
            try:
                loaded, info = load(source, local_only)
            except LOAD_ERRORS as error:
                last_error = error
                continue
            check_complete(source, info, kind)
            return loaded, source, local_only
    if folder.exists():
        detail = str(last_error).strip().splitlines()[0] if last_error else "unknown error"
        raise ZssegError(f"cannot load {kind.label} from {folder}: {detail}")
    raise ZssegError(
        f"cannot load {kind.label} '{name}': it is not in the local Hugging Face cache and the hub could not be reached "
        f"(and no folder of that name exists); " + kind.offline_help(name)
    )


def optional_json(source: str, filename: str, local_only: bool) -> dict:
    """A checkpoint's optional JSON file (such as preprocessor_config.json), or {} if it has none."""
    folder = Path(source).expanduser()
    path: Path | None = folder / filename if folder.is_dir() else None
    if path is None:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, filename, local_files_only=local_only))
        except Exception:  # an optional file: the caller falls back to its defaults
            return {}
    return read_json(path) if path.is_file() else {}
