"""The files a benchmark is prepared from, as the dataset's owners publish them: archives (zip,
tar, tar.gz, tgz, tar.bz2, tar.xz) read member by member without extracting them, or the
folders they were extracted to.

Every source lists its regular files by their path inside it (POSIX, relative), and reads one
file's bytes. A zip or a folder is read at any member, from any thread; a tar archive is read in
the order its members are stored (`stream`), once, from the thread that opened it. A damaged or
truncated archive is a one-line `ZssegError` that names it.
"""

from __future__ import annotations

import os
import re
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator

from ...errors import SettingError, ZssegError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError, ValueError, RuntimeError)


def _damaged(path: Path, error: BaseException, member: str | None = None) -> ZssegError:
    where = f" (reading {member})" if member else ""
    reason = str(error).strip() or type(error).__name__
    return ZssegError(f"{path} is damaged or incomplete{where}: {reason}; download it again")


class Source:
    """One --from path: its files by relative POSIX path."""

    path: Path
    names: list[str]
    random_access: bool = True  # read(name) from any thread, in any order

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def stream(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """The files `names`, in the order reading them is cheapest."""
        for name in names:
            yield name, self.read(name)

    def local_file(self, name: str) -> Path | None:
        """The file on disk that holds `name` (folders only)."""
        return None

    def close(self) -> None:
        pass

    def __str__(self) -> str:
        return str(self.path)


class FolderSource(Source):
    """A folder an archive was extracted to (or any folder holding the official files). Its
    files are named with the folder's own name first ("val2017/ID.jpg" for the folder val2017),
    so that the folder one level down works as well as the one above it."""

    def __init__(self, path: Path):
        self.path = path
        self.prefix = f"{path.resolve().name}/" if path.resolve().name else ""
        self.names = []
        for folder, subfolders, files in os.walk(path):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".zsseg"))
            relative = Path(folder).relative_to(path).as_posix()
            prefix = self.prefix + ("" if relative == "." else relative + "/")
            self.names.extend(prefix + name for name in sorted(files) if not name.startswith("."))

    def read(self, name: str) -> bytes:
        path = self.local_file(name)
        try:
            return path.read_bytes()
        except OSError as error:
            raise ZssegError(f"cannot read {path}: {error.strerror or error}") from None

    def local_file(self, name: str) -> Path:
        return self.path / name[len(self.prefix):]


class ZipSource(Source):
    def __init__(self, path: Path):
        self.path = path
        try:
            self.archive = zipfile.ZipFile(path)
            infos = [info for info in self.archive.infolist() if not info.is_dir()]
        except _READ_ERRORS as error:
            raise _damaged(path, error) from None
        infos.sort(key=lambda info: info.header_offset)
        self.names = [info.filename for info in infos]

    def read(self, name: str) -> bytes:
        try:
            return self.archive.read(name)
        except _READ_ERRORS as error:
            raise _damaged(self.path, error, name) from None

    def close(self) -> None:
        self.archive.close()


class TarSource(Source):
    """A tar archive, compressed or not. Its member list is read once when it is opened (a full
    pass for a compressed one, which also finds a truncated download before anything is written);
    the members are then read in their stored order."""

    random_access = False

    def __init__(self, path: Path):
        self.path = path
        try:
            self.archive = tarfile.open(path, "r:*")
            members = [member for member in self.archive.getmembers() if member.isfile()]
        except _READ_ERRORS as error:
            raise _damaged(path, error) from None
        members.sort(key=lambda member: member.offset_data)
        self.members = {_clean(member.name): member for member in members}
        self.names = list(self.members)

    def read(self, name: str) -> bytes:
        member = self.members[name]
        try:
            handle = self.archive.extractfile(member)
            data = handle.read() if handle is not None else b""
        except _READ_ERRORS as error:
            raise _damaged(self.path, error, name) from None
        if len(data) != member.size:
            raise _damaged(self.path, EOFError(f"{len(data)} of {member.size} bytes"), name)
        return data

    def stream(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for name in sorted(set(names), key=lambda n: self.members[n].offset_data):
            yield name, self.read(name)

    def close(self) -> None:
        self.archive.close()


def _clean(name: str) -> str:
    """A member name as a relative POSIX path ("./a/b" and "a//b" -> "a/b")."""
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    return "/".join(parts)


def open_source(path: str | Path) -> Source:
    """A source path: a folder, a zip, or a tar archive (by its name, else by its first bytes)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if not path.exists():
        raise SettingError("sources", f"{{setting}} {path}: no such file or folder")
    if not path.is_file():
        raise SettingError("sources", f"{{setting}} {path} is neither a file nor a folder")
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return ZipSource(path)
    if lower.endswith(TAR_SUFFIXES):
        return TarSource(path)
    try:
        if zipfile.is_zipfile(path):
            return ZipSource(path)
        if tarfile.is_tarfile(path):
            return TarSource(path)
    except _READ_ERRORS as error:
        raise _damaged(path, error) from None
    raise SettingError("sources", f"{{setting}} {path} is not a folder, a zip or a tar archive (.tar, .tar.gz, .tgz); "
                       "give the files as they were downloaded, or the folder they were extracted to")


class Sources:
    """Every source path of one preparation, searched together by the pattern of a file's path."""

    def __init__(self, paths: Iterable[str | Path]):
        self.items: list[Source] = []
        opened = set()
        try:
            for path in paths:
                key = Path(path).expanduser().resolve()
                if key not in opened:  # the same download given twice
                    opened.add(key)
                    self.items.append(open_source(path))
        except BaseException:
            self.close()
            raise
        if not self.items:
            raise SettingError("sources", "give the downloaded files (or the folders they were extracted to) with {setting}")

    def find(self, pattern: str | re.Pattern, exclude: str | None = None) -> list[tuple[Source, str, re.Match]]:
        """(source, name, match) of every file whose path matches `pattern` (searched, so that a
        pattern anchored with (^|/) fits any leading folders) and no folder of which matches `exclude`."""
        regex = re.compile(pattern)
        skip = re.compile(exclude) if exclude else None
        found = []
        for source in self.items:
            for name in source.names:
                match = regex.search(name)
                if match and not (skip and skip.search(name)):
                    found.append((source, name, match))
        return found

    def first(self, pattern: str) -> tuple[Source, str] | None:
        found = self.find(pattern)
        return (found[0][0], found[0][1]) if found else None

    def unused(self, used: set[int]) -> list[Source]:
        """The sources none of whose files were used (by id(source))."""
        return [source for source in self.items if id(source) not in used]

    def close(self) -> None:
        for source in self.items:
            source.close()

    def __enter__(self) -> "Sources":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
