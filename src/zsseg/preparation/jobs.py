"""Running a preparation: each job reads one or more files of one source and makes one or more
files of the prepared layout (a copy, or a conversion), on `workers` threads (Pillow, zlib,
numpy and scipy's readers release the interpreter while they work).

Two passes, so that a file in the way is found before anything is written:
1. the jobs some of whose targets exist but are not in the record: their bytes are made and
   compared with the files there; the same bytes are kept, other bytes stop the run (`Conflict`)
   with nothing written;
2. the jobs with targets still missing: made and written, each file atomically, each noted in
   the record once it is in place.
A job whose targets are all in the record, unchanged, is not read at all: a second run, or one
after an interruption, does only what is left.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ZssegError
from ..progress import Progress
from .sources import Source
from .targets import KEPT, OMITTED, WRITTEN, Conflict, Output, Record, compare, existing, place, sync_folders

Convert = Callable[[Sequence[bytes]], Sequence["bytes | None"]]


@dataclass
class Job:
    """Files `members` of `source` -> files `outputs` (paths under the data root). `convert`
    makes the outputs' bytes (None for an output the community script does not write); without
    it, the one member is copied as it is."""

    source: Source
    members: tuple[str, ...]
    outputs: tuple[str, ...]
    convert: Convert | None = None

    def make(self, data: Sequence[bytes]) -> list[Output]:
        made = list(data) if self.convert is None else list(self.convert(data))
        return [Output(path, value) for path, value in zip(self.outputs, made)]


@dataclass
class Tally:
    """How many files a preparation wrote, found already in place, and left out as the community script does."""

    written: int = 0
    kept: int = 0
    omitted: int = 0
    folders: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str, folder: Path | None = None) -> None:
        with self.lock:
            if outcome == WRITTEN:
                self.written += 1
                self.folders.add(folder)
            elif outcome == OMITTED:
                self.omitted += 1
            else:
                self.kept += 1


def default_workers() -> int:
    """One thread per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(jobs: list[Job], root: Path, record: Record, workers: int, progress: bool, description: str) -> Tally:
    tally = Tally()
    pending = []
    for job in jobs:
        if all(record.done(path) for path in job.outputs):
            for path in job.outputs:
                tally.add(OMITTED if record.entries[path].get("omitted") else KEPT)
        else:
            pending.append(job)
    try:
        to_verify = [job for job in pending if any(existing(root, path) and not record.done(path) for path in job.outputs)]
        if to_verify:
            _execute(to_verify, lambda job, data: _verify(job, data, root, record), root, workers, progress,
                     f"{description}: comparing with the files already there")
        to_write = [job for job in pending if not all(record.done(path) for path in job.outputs)]
        if to_write:
            _execute(to_write, lambda job, data: _write(job, data, root, record, tally), root, workers, progress, description)
        for job in pending:
            if job not in to_write:
                for path in job.outputs:
                    tally.add(KEPT)
    except Conflict as conflict:
        raise ZssegError(f"{conflict.path} exists and was not written by zsseg (it differs from what the preparation writes there), "
                         "so it is left untouched; move it away, or prepare into another --data-root") from None
    finally:
        record.flush()
        sync_folders(tally.folders)
    return tally


def _same_file(job: Job, root: Path) -> bool:
    """A copy whose source is its own target (a folder extracted into the data root)."""
    if job.convert is not None:
        return False
    local = job.source.local_file(job.members[0])
    target = root / job.outputs[0]
    try:
        return local is not None and target.exists() and os.path.samefile(local, target)
    except OSError:
        return False


def _verify(job: Job, data: Sequence[bytes] | None, root: Path, record: Record) -> None:
    if data is None:  # its own target
        record.note(job.outputs[0])
        return
    for output in job.make(data):
        if not record.done(output.path) and existing(root, output.path):
            compare(root, output, record)


def _write(job: Job, data: Sequence[bytes] | None, root: Path, record: Record, tally: Tally) -> None:
    if data is None:
        record.note(job.outputs[0])
        tally.add(KEPT)
        return
    for output in job.make(data):
        tally.add(place(root, output, record), (root / output.path).parent)


def _execute(jobs: list[Job], work: Callable[[Job, Sequence[bytes] | None], None], root: Path, workers: int, progress: bool,
             description: str) -> None:
    """`work(job, member bytes)` for every job (bytes None for a copy onto itself), on `workers`
    threads; the first error stops the rest and is raised once the running jobs are done."""
    root_of = {}
    groups: dict[int, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[id(job.source)].append(job)
        root_of[id(job.source)] = job.source
    bar = Progress(total=len(jobs), description=description, unit="file", enabled=progress)
    bar_lock = threading.Lock()

    def run(job: Job, data: Sequence[bytes] | None) -> None:
        work(job, data)
        with bar_lock:
            bar.update()

    def read_and_run(job: Job) -> None:
        data = None if _same_file(job, root) else [job.source.read(name) for name in job.members]
        run(job, data)

    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    running: set[Future] = set()
    slots = threading.Semaphore(max(2, 2 * workers))

    def submit(function, *args) -> None:
        if pool is None:
            function(*args)
            return
        for future in [f for f in running if f.done()]:
            running.discard(future)
            future.result()  # an error stops the submission of more
        slots.acquire()
        future = pool.submit(function, *args)
        future.add_done_callback(lambda _: slots.release())
        running.add(future)

    try:
        for key, group in groups.items():
            source = root_of[key]
            if source.random_access:
                for job in group:
                    submit(read_and_run, job)
                continue
            waiting: dict[str, list[Job]] = defaultdict(list)
            for job in group:
                if not job.members:  # made from what the plan read (a split list)
                    submit(run, job, [])
                for name in job.members:
                    waiting[name].append(job)
            collected: dict[int, dict[str, bytes]] = defaultdict(dict)
            for name, data in source.stream(waiting):
                for job in waiting.pop(name):
                    parts = collected[id(job)]
                    parts[name] = data
                    if len(parts) == len(job.members):
                        del collected[id(job)]
                        submit(run, job, [parts[member] for member in job.members])
        if running:
            done, _ = wait(running, return_when=FIRST_EXCEPTION)
            for future in [*done, *running]:
                future.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
