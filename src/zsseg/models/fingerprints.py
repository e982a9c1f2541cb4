"""Fingerprints of weights, and a memo that spares recomputing them in every process.

The text-feature cache keys on a SHA-256 of the text tower's weights as loaded
(`ClipModel.text_fingerprint`; `ClipModel.text_cache_key` adds the text configuration and the
tokenizer's identity, `tokenizer_identity`): hashing ViT-B/16's 250 MB costs 0.13 CPU-s in every
run, ViT-L/14's twice that, before a single cached feature can be read. So the loaders note the
files they read weights from (`reading_weight_files`, `note_weight_file`), and the text cache
keeps a memo from those files' identities to the fingerprint. An entry is used only when all of
these hold:

- the files are the ones noted at loading, unchanged since: path, size, inode, device, and
  modification and status-change times to the nanosecond (any write changes the status-change
  time, which no user command can set back);
- the text tower's tensors are the ones the loader made, never modified in place
  (`tensor_identity`: storage address and torch's version counter of each);
- the entry was made for the same zsseg version, model class and source, tensor names, shapes
  and dtypes;
- a sample of the weights' bytes (`sample_digest`: the first, last and evenly spaced elements of
  every tensor) equals the entry's, so a loader that converts the same file differently (another
  zsseg build of the same version) is caught.

Otherwise the weights are hashed in full, as without the memo.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator, Protocol

import torch

_FILES: ContextVar[list | None] = ContextVar("zsseg_weight_files", default=None)
SAMPLE_ELEMENTS = 64  # per tensor, from its start, its end and evenly between


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, dtypes and bytes): identifies weights as loaded."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tensor.numel()};".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


# What a tokenizer folder may be read from (`zsseg.models.openai_clip._load_tokenizer`, and
# transformers' AutoTokenizer for SigLIP's).
TOKENIZER_FOLDER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                          "vocab.json", "merges.txt", "spiece.model")


class UnknownTokenizer(TypeError):
    """A tokenizer `tokenizer_identity` cannot identify (an object with no files, vocabulary or
    `identity()`): its features cannot be cached safely."""


def tokenizer_identity(tokenizer) -> str:
    """SHA-256 of what a tokenizer's token ids depend on, for the text-feature cache's key:

    - a folder: the names and bytes of its tokenizer files (`TOKENIZER_FOLDER_FILES`; about 4 MB
      for CLIP's, milliseconds), so a run whose features are all cached never reads the tokenizer;
    - a hub id: the id;
    - anything with an `identity()` method (`zsseg.models.openai_clip.LazyTokenizer`): that;
    - a loaded tokenizer: its class and serialised state (a fast tokenizer's whole pipeline, or a
      slow one's vocabulary file, or vocabulary, and settings).

    Raises:
        UnknownTokenizer: for anything else.
    """
    digest = hashlib.sha256()
    if isinstance(tokenizer, (str, os.PathLike)):
        folder = Path(tokenizer).expanduser()
        if not folder.is_dir():
            return hashlib.sha256(f"hub:{tokenizer}".encode()).hexdigest()
        for name in TOKENIZER_FOLDER_FILES:
            if (folder / name).is_file():
                digest.update(f"{name}:".encode())
                digest.update(hashlib.sha256((folder / name).read_bytes()).digest())
        return digest.hexdigest()
    if callable(getattr(type(tokenizer), "identity", None)):
        return tokenizer.identity()
    digest.update(f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__};".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: normaliser, pre-tokeniser, model, added tokens, post-processor
        digest.update(backend.to_str().encode())
        return digest.hexdigest()
    vocabulary = getattr(tokenizer, "vocab_file", None)
    if isinstance(vocabulary, (str, os.PathLike)) and Path(vocabulary).is_file():
        digest.update(Path(vocabulary).read_bytes())
    elif callable(getattr(tokenizer, "get_vocab", None)):
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    else:
        raise UnknownTokenizer(f"cannot tell which tokenizer a {type(tokenizer).__name__} is (no tokenizer files, vocabulary or identity())")
    settings = {k: v for k, v in (getattr(tokenizer, "init_kwargs", None) or {}).items() if k not in ("name_or_path", "vocab_file")}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def sample_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of names, dtypes, shapes and a sample of each tensor's elements (see the module's
    docstring): cheap, and not an identity of the weights by itself."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensors[name].shape)};".encode())
        if tensor.numel():
            count = tensor.numel()
            index = torch.cat([torch.arange(min(SAMPLE_ELEMENTS, count)),
                               torch.arange(SAMPLE_ELEMENTS) * (count - 1) // (SAMPLE_ELEMENTS - 1),  # integer steps
                               torch.arange(max(0, count - SAMPLE_ELEMENTS), count)])
            digest.update(tensor[index.to(tensor.device)].cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def tensor_identity(tensors: dict[str, torch.Tensor]) -> tuple:
    """Which tensors these are and whether they were modified: names, storage addresses, torch's
    in-place version counters, shapes and dtypes."""
    return tuple((name, t.data_ptr(), t._version, tuple(t.shape), str(t.dtype)) for name, t in sorted(tensors.items()))


def file_identity(path: str | Path) -> list:
    """A file as `os.stat` identifies it (see the module's docstring)."""
    info = os.stat(path)
    return [str(Path(path).resolve()), info.st_size, info.st_ino, info.st_dev, info.st_mtime_ns, info.st_ctime_ns]


@contextmanager
def reading_weight_files() -> Iterator[list]:
    """Collects the identities of the weight files read inside it (`note_weight_file`), taken
    before each is read."""
    files: list = []
    token = _FILES.set(files)
    try:
        yield files
    finally:
        _FILES.reset(token)


def note_weight_file(path: str | Path) -> None:
    """Called by the readers of weight files, before reading `path`."""
    files = _FILES.get()
    if files is not None:
        try:
            files.append(file_identity(path))
        except OSError:  # the reader reports a missing file in its own words
            pass


class FingerprintMemo(Protocol):
    """Where memo entries live (`zsseg.prompts.text_cache.TextFeatureCache`)."""

    def known_fingerprint(self, key: str) -> tuple[str, str] | None:
        """The (fingerprint, sample digest) stored under `key`, if any."""

    def remember_fingerprint(self, key: str, fingerprint: str, sample: str) -> None:
        """Store an entry (nothing is written where the memo cannot be)."""


class WeightOrigin:
    """Where a model's text weights came from, as its loader noted them: the memo's key, while
    the files and tensors are unchanged."""

    def __init__(self, files: list, tensors: dict[str, torch.Tensor], describe: dict):
        self.files = [list(f) for f in files]
        self.identity = tensor_identity(tensors)
        self.describe = describe

    def key(self, tensors: dict[str, torch.Tensor]) -> str | None:
        """The memo key, or None when the memo cannot vouch for these tensors."""
        from ..version import __version__

        if not self.files or tensor_identity(tensors) != self.identity:
            return None
        try:
            if [file_identity(f[0]) for f in self.files] != self.files:
                return None
        except OSError:
            return None
        shapes = [(name, str(t.dtype), list(t.shape)) for name, t in sorted(tensors.items())]
        text = json.dumps([__version__, self.describe, self.files, shapes], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def memo_fingerprint(tensors: dict[str, torch.Tensor], origin: WeightOrigin | None, memo: FingerprintMemo | None) -> str:
    """`fingerprint(tensors)`, from `memo` where an entry vouches for it (see the module's
    docstring), else computed and, where the memo can vouch for it later, remembered."""
    key = origin.key(tensors) if origin is not None and memo is not None else None
    if key is None:
        return fingerprint(tensors)
    sample = sample_digest(tensors)
    known = memo.known_fingerprint(key)
    if known is not None and known[1] == sample:
        return known[0]
    value = fingerprint(tensors)
    memo.remember_fingerprint(key, value, sample)
    return value


__all__ = ["TOKENIZER_FOLDER_FILES", "FingerprintMemo", "UnknownTokenizer", "WeightOrigin", "file_identity", "fingerprint",
           "memo_fingerprint", "note_weight_file", "reading_weight_files", "sample_digest", "tensor_identity", "tokenizer_identity"]
