"""Where a preparation writes, and how: each file atomically (a temporary file beside it, written,
flushed to disk with fsync, then renamed into place), never over a file it did not write, and
noted in a record so that running it again skips what is done.

The prepared files carry no mark of their own: they are byte for byte what the community scripts
write. What zsseg wrote is known from its record instead, `DATA_ROOT/.zsseg-prepare/NAME.jsonl`:
one JSON line per file (its path under the data root, size and modification time), written
after the file is in place. A file whose size and time still agree is done. Any other file
already at a target, whoever wrote it, is compared with the bytes the preparation would write
there: the same bytes are kept (and noted), different ones stop the preparation, untouched.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ...errors import ZssegError
from ...outputs.writers import SOFTWARE, temporaries_of, write_atomically

RECORD_FOLDER = ".zsseg-prepare"

WRITTEN, KEPT, OMITTED, ABSENT = "written", "kept", "omitted", "absent"


class Conflict(Exception):
    """A target already holds other bytes than the preparation would write (`path`)."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def record_path(root: Path, key: str) -> Path:
    return root / RECORD_FOLDER / f"{key}.jsonl"


class Record:
    """The files one benchmark's preparation has placed under `root`, read from and appended to
    its JSON-lines file. A line that cannot be read (the end of a file cut short by a crash) is
    ignored: the file it named is then compared with what would be written, as any other file is."""

    def __init__(self, root: Path, key: str):
        self.root = root
        self.path = record_path(root, key)
        self.key = key
        self.entries: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.pending: list[str] = []
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise ZssegError(f"{self.path} is not a file; zsseg keeps its record of prepared files there: move it away")
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as error:
            raise ZssegError(f"cannot read {self.path}: {error.strerror or error}") from None
        header = _json(lines[0]) if lines else None
        ours = isinstance(header, dict) and str(header.get("software", "")).startswith("zsseg")
        if not ours and not (lines and lines[0].startswith('{"software": "zsseg')):  # (a first line cut short by a crash)
            raise ZssegError(f"{self.path} exists and was not written by zsseg, so it is left untouched; "
                             "zsseg keeps its record of prepared files there: move it away")
        for line in lines[1:]:
            entry = _json(line)
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                self.entries[entry["path"]] = entry

    def done(self, relative: str) -> bool:
        """Whether `relative` is as this preparation left it: the file it wrote or kept, unchanged
        since (same size and time), or no file where the community script writes none."""
        entry = self.entries.get(relative)
        if entry is None:
            return False
        try:
            stat = (self.root / relative).stat()
        except FileNotFoundError:
            return bool(entry.get("omitted"))
        except OSError:
            return False
        return not entry.get("omitted") and stat.st_size == entry.get("size") and stat.st_mtime_ns == entry.get("mtime_ns")

    def omitted(self) -> set[str]:
        """The targets the community script writes no file for (COCO-Stuff maps with no labelled pixel)."""
        return {path for path, entry in self.entries.items() if entry.get("omitted")}

    def note(self, relative: str, omitted: bool = False) -> None:
        if omitted:
            entry = {"path": relative, "omitted": True}
        else:
            stat = (self.root / relative).stat()
            entry = {"path": relative, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        with self.lock:
            self.entries[relative] = entry
            self.pending.append(json.dumps(entry, ensure_ascii=False))
            if len(self.pending) >= 256:
                self._flush()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = [json.dumps({"software": SOFTWARE, "dataset": self.key})] if new else []
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in header + self.pending))
            f.flush()
            os.fsync(f.fileno())
        self.pending.clear()


def _json(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


@dataclass(frozen=True)
class Output:
    """One file of the prepared layout: its path under the data root and its bytes (None: the
    community script writes no file here)."""

    path: str
    data: bytes | None


def existing(root: Path, relative: str) -> bool:
    return os.path.lexists(root / relative)


def compare(root: Path, output: Output, record: Record) -> str:
    """For a target that exists and is not in the record: KEPT (noted) if it holds `output`'s
    bytes (or the community script writes nothing there: it is not ours to touch); else `Conflict`."""
    target = root / output.path
    if output.data is None:
        return KEPT
    if target.is_file() and not target.is_symlink() and target.stat().st_size == len(output.data) and target.read_bytes() == output.data:
        record.note(output.path)
        return KEPT
    raise Conflict(target)


def place(root: Path, output: Output, record: Record) -> str:
    """Put `output` in place unless it is done: WRITTEN, KEPT or OMITTED. Never replaces a file."""
    if record.done(output.path):
        return KEPT
    if existing(root, output.path):
        return compare(root, output, record)
    if output.data is None:
        record.note(output.path, omitted=True)
        return OMITTED
    target = root / output.path
    _make_folder(target.parent)
    remove_own_temporaries(target, output.data)
    try:
        write_atomically([target], [lambda f: _write_synced(f, output.data)])
    except OSError as error:
        raise ZssegError(f"cannot write {target}: {error.strerror or error}") from None
    record.note(output.path)
    return WRITTEN


def remove_own_temporaries(target: Path, data: bytes) -> int:
    """Remove the temporaries a killed preparation left for `target`: those whose bytes are the
    start of the very bytes it would write there. Prepared files carry no mark (they must be the
    community scripts' bytes), so their content is the proof; an empty or other file is kept."""
    removed = 0
    for path in temporaries_of(target):
        try:
            with open(path, "rb") as f:
                head = f.read(len(data) + 1)
        except OSError:
            continue
        if head and data.startswith(head):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _write_synced(f, data: bytes) -> None:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ZssegError(f"cannot make the folder {folder}: a file of that name is in the way; move it away") from None
    except OSError as error:
        raise ZssegError(f"cannot make the folder {folder}: {error.strerror or error}") from None


def sync_folders(folders: set[Path]) -> None:
    """fsync the folders files were renamed into, so that the renames themselves are on disk."""
    for folder in folders:
        try:
            handle = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(handle)
        except OSError:
            pass
        finally:
            os.close(handle)
