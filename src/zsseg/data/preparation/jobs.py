"""Running a preparation: each job reads one or more files of one source and makes one or more
files of the prepared layout (a copy, or a conversion). `workers` threads read and write (file
I/O releases the interpreter); the conversions of a large preparation run on as many processes,
since Pillow holds the interpreter lock while it encodes a PNG into memory, so threads alone
would convert one file at a time.

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

import multiprocessing
import os
import signal
import threading
from collections import defaultdict
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ...errors import SettingError, ZssegError
from ...runs.progress import Progress
from .sources import Source
from .targets import KEPT, OMITTED, WRITTEN, Conflict, Output, Record, compare, existing, place, sync_folders

Convert = Callable[[Sequence[bytes]], Sequence["bytes | None"]]
PROCESSES_FROM = 64  # conversions in a pass before a pool of processes repays its start (a second or so)


@dataclass
class Job:
    """Files `members` of `source` (none: made from what the plan read) -> files `outputs`
    (paths under the data root). `convert` makes the outputs' bytes (None for an output the
    community script does not write) and must pickle (a module-level function, or a partial of
    one) to run on another process; without it, the one member is copied as it is."""

    source: Source
    members: tuple[str, ...]
    outputs: tuple[str, ...]
    convert: Convert | None = None


class _Converter:
    """Runs the jobs' conversions: here, or on `workers` processes when there are enough of them.
    The processes are forked when this process has no other thread (they start at once, and
    forking is safe then), and spawned otherwise, before the run's own threads start."""

    def __init__(self, workers: int, conversions: int):
        self.pool = None
        if workers > 1 and conversions >= PROCESSES_FROM:
            single = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if single else "spawn")
            self.pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_leave_signals)
            self.pool.submit(int).result()  # started now: a fork copies this thread alone, and no lock is held

    def outputs(self, job: Job, data: Sequence[bytes]) -> list[Output]:
        if job.convert is None:
            made = list(data)
        elif self.pool is None:
            made = list(job.convert(data))
        else:
            try:
                made = list(self.pool.submit(job.convert, data).result())
            except BrokenProcessPool:
                raise ZssegError("a conversion process stopped unexpectedly (out of memory? or, from Python, a script without "
                                 "`if __name__ == '__main__':`); run it again with fewer workers") from None
        return [Output(path, value) for path, value in zip(job.outputs, made)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _leave_signals() -> None:
    """In a conversion process: Ctrl-C is the main process's to handle (it stops the pool), and
    SIGTERM ends it quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
            _execute(to_verify, lambda job, data, convert: _verify(job, data, root, record, convert), root, workers, progress,
                     f"{description}: comparing with the files already there")
        to_write = [job for job in pending if not all(record.done(path) for path in job.outputs)]
        if to_write:
            _execute(to_write, lambda job, data, convert: _write(job, data, root, record, tally, convert), root, workers, progress,
                     description)
        writing = {id(job) for job in to_write}
        for job in pending:
            if id(job) not in writing:  # all its files were already there, byte for byte
                for path in job.outputs:
                    tally.add(KEPT)
    except Conflict as conflict:
        raise SettingError("data_root", f"{conflict.path} exists and was not written by zsseg (it differs from what the preparation "
                           "writes there), so it is left untouched; move it away, or prepare into another {setting}") from None
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


def _verify(job: Job, data: Sequence[bytes] | None, root: Path, record: Record, converter: _Converter) -> None:
    if data is None:  # its own target
        record.note(job.outputs[0])
        return
    for output in converter.outputs(job, data):
        if not record.done(output.path) and existing(root, output.path):
            compare(root, output, record)


def _write(job: Job, data: Sequence[bytes] | None, root: Path, record: Record, tally: Tally, converter: _Converter) -> None:
    if data is None:
        record.note(job.outputs[0])
        tally.add(KEPT)
        return
    for output in converter.outputs(job, data):
        tally.add(place(root, output, record), (root / output.path).parent)


def _execute(jobs: list[Job], work: Callable[[Job, Sequence[bytes] | None, _Converter], None], root: Path, workers: int,
             progress: bool, description: str) -> None:
    """`work(job, member bytes, converter)` for every job (bytes None for a copy onto itself), on
    `workers` threads; the first error stops the rest and is raised once the running jobs are done."""
    root_of = {}
    groups: dict[int, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[id(job.source)].append(job)
        root_of[id(job.source)] = job.source
    converter = _Converter(workers, sum(1 for job in jobs if job.convert is not None))
    bar = Progress(total=len(jobs), description=description, unit="file", enabled=progress, every=max(50, len(jobs) // 50))
    bar_lock = threading.Lock()

    def run(job: Job, data: Sequence[bytes] | None) -> None:
        work(job, data, converter)
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
        converter.close()
        bar.close()
