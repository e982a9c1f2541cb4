"""A disk cache of CLIP text features, shared by every zsseg process of a user.

Encoding a large vocabulary with CLIP's 80 templates (ADE20K-847: 68,000 prompts) takes minutes
on a CPU, and every run would repeat it. Each class embedding is stored once, keyed by

- the CLIP (`ClipModel.text_cache_key`): a SHA-256 of its text tower's weights as loaded (their
  dtype included), its text configuration, its tokenizer and the model class, so a changed or
  fine-tuned model, or the same weights with another tokenizer, never reads another's features;
- the prompt: a SHA-256 of the templates, or of a learned prompt's context vectors;
- the class name, exactly as written.

It also holds the text fingerprint's memo (`zsseg.models.fingerprints`): a run whose CLIP files
are unchanged reads its fingerprint instead of hashing the text tower again.

The store is one SQLite file, `text-features.sqlite3` in `$ZSSEG_CACHE_DIR` (default
`$XDG_CACHE_HOME/zsseg`, else `~/.cache/zsseg`). SQLite makes each write one atomic transaction
and lets several processes (torchrun, parallel jobs) read and write it at once. Features are
stored as float32 bytes: what is read is exactly what was written. A cache that cannot be used
(a read-only file, a folder that is a file) is skipped with one warning that says how to fix it;
a damaged file is set aside once and a new cache started. Results are the same either way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import torch

FILE_NAME = "text-features.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS features ("
    "model TEXT NOT NULL, prompt TEXT NOT NULL, name TEXT NOT NULL, vector BLOB NOT NULL, "
    "PRIMARY KEY (model, prompt, name))"
)
# The text fingerprint's memo (`zsseg.models.fingerprints`): weight files' identities -> fingerprint.
_MEMO_SCHEMA = "CREATE TABLE IF NOT EXISTS fingerprints (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, sample TEXT NOT NULL)"
_CHUNK = 500  # names per query, below SQLite's limit on bound parameters
log = logging.getLogger("zsseg")


def default_cache_dir() -> Path:
    if os.environ.get("ZSSEG_CACHE_DIR"):
        return Path(os.environ["ZSSEG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "zsseg"


class TextFeatureCache:
    """Class embeddings on disk. `get` returns what it has; `put` stores new ones.

    Args:
        folder: where the SQLite file lives (default `default_cache_dir()`); made on first write.
    """

    def __init__(self, folder: Path | str | None = None):
        self.path = Path(folder if folder is not None else default_cache_dir()) / FILE_NAME
        self._disabled = False

    def _connect(self) -> sqlite3.Connection:
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise _Unusable(f"{folder} is a file, not a folder: point $ZSSEG_CACHE_DIR at a folder, or turn the text cache off")
        folder.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=60.0)
        try:
            _create_tables(connection)
        except sqlite3.DatabaseError as error:
            connection.close()
            if "not a database" not in str(error) and "malformed" not in str(error):
                raise
            # A damaged file would be skipped, with a warning, on every run: set it aside once
            # and start a new cache (features are encoded again; results are the same).
            aside = self.path.with_name(self.path.name + ".damaged")
            os.replace(self.path, aside)
            log.warning("zsseg: the text-feature cache %s was damaged (%s); moved it to %s and started a new one", self.path, error, aside)
            connection = sqlite3.connect(self.path, timeout=60.0)
            _create_tables(connection)
        return connection

    def _fail(self, error: Exception) -> None:
        if not self._disabled:
            advice = "" if isinstance(error, _Unusable) else " (results are the same without it; make it writable, or turn the text cache off)"
            log.warning("zsseg: not using the text-feature cache %s: %s%s", self.path, error, advice)
        self._disabled = True

    def get(self, model: str, prompt: str, names: list[str]) -> dict[str, torch.Tensor]:
        """The stored features of those `names` it has, as float32 `[D]` tensors."""
        if self._disabled or not names or not self.path.is_file():
            return {}
        found: dict[str, torch.Tensor] = {}
        try:
            with self._connect() as connection:
                unique = list(dict.fromkeys(names))
                for start in range(0, len(unique), _CHUNK):
                    chunk = unique[start : start + _CHUNK]
                    rows = connection.execute(
                        f"SELECT name, vector FROM features WHERE model = ? AND prompt = ? AND name IN ({','.join('?' * len(chunk))})",
                        [model, prompt, *chunk],
                    )
                    for name, blob in rows:
                        found[name] = torch.from_numpy(np.frombuffer(blob, dtype=np.float32).copy())
            connection.close()
        except (sqlite3.Error, OSError, _Unusable) as error:
            self._fail(error)
            return {}
        return found

    def put(self, model: str, prompt: str, features: dict[str, torch.Tensor]) -> None:
        """Store features (one transaction: all of them or, if it fails, none)."""
        if self._disabled or not features:
            return
        rows = [(model, prompt, name, v.detach().float().cpu().numpy().tobytes()) for name, v in features.items()]
        try:
            with self._connect() as connection:
                connection.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)
            connection.close()
        except (sqlite3.Error, OSError, _Unusable) as error:
            self._fail(error)

    def known_fingerprint(self, key: str) -> tuple[str, str] | None:
        """The text fingerprint's memo entry under `key`: (fingerprint, sample digest), or None."""
        if self._disabled or not self.path.is_file():
            return None
        try:
            with self._connect() as connection:
                row = connection.execute("SELECT fingerprint, sample FROM fingerprints WHERE key = ?", (key,)).fetchone()
            connection.close()
        except (sqlite3.Error, OSError, _Unusable) as error:
            self._fail(error)
            return None
        return None if row is None else (str(row[0]), str(row[1]))

    def remember_fingerprint(self, key: str, fingerprint: str, sample: str) -> None:
        """Store a memo entry (see `zsseg.models.fingerprints`)."""
        if self._disabled:
            return
        try:
            with self._connect() as connection:
                connection.execute("INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?)", (key, fingerprint, sample))
            connection.close()
        except (sqlite3.Error, OSError, _Unusable) as error:
            self._fail(error)


def _create_tables(connection: sqlite3.Connection) -> None:
    """The features table and the fingerprint memo's, where the file has none yet."""
    connection.execute(_SCHEMA)
    connection.execute(_MEMO_SCHEMA)


class _Unusable(Exception):
    """The cache's place cannot hold it (the message says what to do)."""


__all__ = ["FILE_NAME", "TextFeatureCache", "default_cache_dir"]
