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
import math
import os
import pickle
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import SettingError, ZssegError, one_line

# What a damaged or mismatched checkpoint raises inside transformers, huggingface_hub and
# tokenizers: anything at all (a config's validator raises its own class, the Rust tokenizer a
# bare Exception). Whatever a folder holds, the user gets one line naming it.
LOAD_ERRORS = (Exception,)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelKind:
    """A family of checkpoints zsseg loads.

    Attributes:
        label: its name in messages ("CLIP", "SAM").
        model_types: the config.json `model_type`s accepted.
        setting: the setting that names it ("clip", "proposals").
        value: that setting's value for a folder, `{}` standing for the folder ("{}", "sam:{}").
        folder: a name for the downloaded folder in the offline help ("clip-model").
    """

    label: str
    model_types: tuple[str, ...]
    setting: str
    value: str
    folder: str

    @property
    def accepted(self) -> str:
        """The accepted model types, for messages: "'sam' or 'sam_hq'"."""
        return " or ".join(f"'{t}'" for t in self.model_types)

    def offline(self, problem: str, name: str) -> SettingError:
        """`problem`, and how to use the model `name` offline (naming the setting to pass it by)."""
        return SettingError(
            self.setting,
            f"{problem}; to use it offline, download it where the hub is reachable (`hf download {name} --local-dir {self.folder}`), "
            f"copy that folder here and pass its path ({{setting}} {self.value.format(self.folder)}), or point HF_HOME at a "
            "Hugging Face cache that holds it",
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
def quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's per-retry network warnings, which would bury our one-line errors."""
    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(hub_level)


def hub_snapshot(name: str, local_only: bool, optional: tuple[str, ...] = ()) -> Path:
    """The local snapshot folder of hub repo `name` holding its config.json, its weights
    (`WEIGHT_FILES`, in that order of preference, with the shards a safetensors index names) and
    whichever of the `optional` files it has; downloaded unless `local_only`, where a missing
    file raises (the caller then tries the hub)."""
    from huggingface_hub import hf_hub_download

    def fetch(filename: str) -> Path:
        return Path(hf_hub_download(name, filename, local_files_only=local_only))

    config = fetch("config.json")
    for weights in WEIGHT_FILES:
        try:
            path = fetch(weights)
        except Exception:  # not this weight file (or not cached): the next one
            continue
        if weights.endswith(".index.json"):
            weight_map = read_json(path).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ZssegError(f"{path}: \"weight_map\" must map tensor names to the shard files")
            for shard in sorted(set(map(str, weight_map.values()))):
                fetch(shard)
        break
    else:
        raise FileNotFoundError(f"'{name}' has config.json but no weights ({' or '.join(WEIGHT_FILES)}) "
                                + ("in the local cache" if local_only else "on the hub"))
    for extra in optional:
        try:
            fetch(extra)
        except Exception:  # an optional file the repo does not have
            pass
    return config.parent


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' and huggingface_hub's logs and weight-loading bars, which would
    bury our one-line errors; restores the previous settings on exit."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with quiet_hub():
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
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


def check_unexpected(source: str, info: dict, kind: ModelKind) -> None:
    """Refuse weights that the config has no place for (transformers' unexpected keys, after its
    own renames and the buffers it knows to ignore): a config of fewer layers than its weights
    loads, and runs meaninglessly."""
    unused = sorted(info.get("unexpected_keys") or [])
    if unused:
        raise ZssegError(f"cannot load {kind.label} from {source}: its config.json has no place for {len(unused)} of its weights' "
                         f"tensors (for example {unused[0]}): the config is not theirs")


def check_complete(source: str, info: dict, kind: ModelKind) -> None:
    """Refuse weights that leave part of the model at its random initialisation: it would run,
    and silently give meaningless results."""
    missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        raise ZssegError(
            f"the {kind.label} weights in {source} are incomplete: {len(missing)} tensor(s) missing or of the wrong shape, "
            f"for example {missing[0]}; give a complete checkpoint"
        )


def load_pretrained(name_or_path: str | Path, kind: ModelKind, load: Callable[[str, bool], tuple[Any, dict]],
                    quiet: bool = True) -> tuple[Any, str, bool]:
    """Load a checkpoint of `kind` from a folder or a hub id.

    Args:
        name_or_path: hub id ("facebook/sam-vit-base") or folder in Hugging Face format.
        load: `load(source, local_files_only)` -> (what was loaded, transformers' loading info
            with missing and mismatched keys); any exception it raises is the checkpoint's
            fault and becomes one line, but a `ZssegError`, which is passed on as is.
        quiet: load under `quiet_transformers` (False where `load` does not use transformers,
            which then is not imported: that alone costs half a CPU-second).
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

    with quiet_transformers() if quiet else quiet_hub():
        last_error: Exception | None = None
        for source, local_only in sources:
            try:
                loaded, info = load(source, local_only)
            except ZssegError:
                raise
            except LOAD_ERRORS as error:
                last_error = error
                continue
            check_complete(source, info, kind)
            return loaded, source, local_only
    if folder.exists():
        detail = one_line(last_error) if last_error else "unknown error"
        raise ZssegError(f"cannot load {kind.label} from {folder}: {detail}")
    raise kind.offline(f"cannot load {kind.label} '{name}': it is not in the local Hugging Face cache and the hub could not be "
                       "reached (and no folder of that name exists)", name)


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


def load_torch_file(path: Path, objects_advice: str = "keep only the weights (a state dict of tensors, ideally as .safetensors)",
                    mmap: bool = False):
    """`torch.load(path, weights_only=True)` on the CPU, with every failure one line that says
    what the file is: empty, not a PyTorch file at all (random bytes, text), a damaged archive,
    or a pickle of objects other than tensors (named; `objects_advice` says what to do). Nothing
    is unpickled but tensors, and torch's warnings about the file (its pickle protocol) are not
    printed: the error says what matters. `mmap` maps the tensors instead of reading them (a
    zip archive only): to look at a large file's other entries cheaply."""
    import warnings

    import torch

    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as error:
        raise ZssegError(f"cannot read {path}: {error.strerror or error}") from None
    if not head:
        raise ZssegError(f"{path} is empty, not a PyTorch file")
    if head != b"PK" and head[:1] != b"\x80":  # torch.save's zip archive, or its legacy pickle format
        raise ZssegError(f"{path} is not a PyTorch file (neither the zip archive torch.save writes nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found:
            raise ZssegError(f"{path} holds objects other than tensors ({found.group(1)}), which zsseg does not unpickle; "
                             f"{objects_advice}") from None
        raise ZssegError(f"{path} is damaged or not a PyTorch file: it cannot be read as tensors "
                         f"({one_line(ValueError(str(error).split('WeightsUnpickler error:')[-1]))})") from None
    except Exception as error:  # a damaged archive or pickle raises anything (IndexError, KeyError, RuntimeError)
        raise ZssegError(f"{path} is damaged or not a PyTorch file ({one_line(error)})") from None


def mean_std(config: dict, mean_key: str, std_key: str, default_mean, default_std, where: str) -> tuple[tuple, tuple]:
    """A preprocessing config's per-channel mean and std (the defaults where it gives neither):
    3 finite numbers each, every std above 0 (a std of 0 would divide every pixel by zero)."""
    mean, std = config.get(mean_key), config.get(std_key)
    if mean is None and std is None:
        return tuple(default_mean), tuple(default_std)
    mean, std = default_mean if mean is None else mean, default_std if std is None else std
    numbers = all(isinstance(values, (list, tuple)) and len(values) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values) for values in (mean, std))
    if not numbers or min(std) <= 0:
        raise ZssegError(f"{where}: {mean_key} and {std_key} must be 3 finite numbers each, every {std_key} above 0; "
                         f"got {str(mean)[:40]} and {str(std)[:40]}")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def check_weights_fit(folder: Path, build_meta: Callable[[], Any], label: str) -> None:
    """Before a folder's weights are loaded: the model its config.json describes, built on the
    meta device (no memory, no initialisation) by `build_meta`, must have the shape of every
    tensor that its safetensors hold under the same name, and no more than twice their size in
    all (weights the config has no place for are found after loading, where transformers has
    applied its renames: `check_unexpected`). A config that does not describe its weights (hidden_size 16384 beside 64-wide weights)
    otherwise allocates gigabytes before transformers refuses it. Folders with PyTorch .bin
    weights only are left to transformers."""
    files = _safetensors_files(folder)
    if not files:
        return
    from safetensors import safe_open

    shapes: dict[str, tuple] = {}
    try:
        for file in files:
            with safe_open(str(file), "pt") as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
    except Exception as error:
        raise ZssegError(f"cannot load {label} from {folder}: {file.name} is damaged ({one_line(error)})") from None
    import warnings

    import torch

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on odd shapes: the comparison below says what is wrong
        model = build_meta()
    stored = sum(math.prod(shape) for shape in shapes.values())
    expected, missing = 0, []
    for key, tensor in model.state_dict().items():
        expected += tensor.numel()
        if key not in shapes:
            missing.append(key)
        elif tuple(tensor.shape) != shapes[key]:
            raise ZssegError(f"cannot load {label} from {folder}: its config.json does not describe its weights ({key} is "
                             f"{list(shapes[key])} in the weights, {list(tensor.shape)} by the config)")
    if expected > 2 * stored:
        raise ZssegError(f"the {label} weights in {folder} are incomplete: {len(missing)} tensor(s) missing, for example "
                         f"{missing[0] if missing else '?'}, and they hold {stored:,} of the {expected:,} values its config.json "
                         "describes; give a complete checkpoint, with its own config.json")


def _safetensors_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder: model.safetensors, or the shards that
    model.safetensors.index.json names."""
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return []
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ZssegError(f"{index}: \"weight_map\" must map tensor names to the shard files")
    shards = [folder / name for name in sorted(set(weight_map.values()))]
    missing = [shard.name for shard in shards if not shard.is_file() or shard.parent.resolve() != folder.resolve()]
    if missing:
        raise ZssegError(f"{index} names shards that are not in the folder: {', '.join(missing[:3])}")
    return shards

