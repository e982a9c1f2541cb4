"""The `zsseg` command's entry point: light to import, so that Ctrl-C at any moment, even
while torch is still loading, ends with one line and status 130 instead of a traceback."""

from __future__ import annotations

import gc
import os
import sys


def _exit_now(status: int) -> None:
    # Modules that the interrupt left half-imported (numpy, torch) must not run their exit
    # hooks: they fail with tracebacks of their own. Nothing has been written yet.
    os._exit(status)


# Worker threads that wait for work sleep soon instead of spinning: torch's OpenMP workers
# spinning between parallel regions burned 8% of a two-stage run's CPU on 2 cores (0.5-0.9 CPU-s
# per image), and numpy's and scipy's OpenBLAS workers 0.15 CPU-s of every run, for no gain in
# wall time (docs/benchmarks.md). Set before torch and numpy load those runtimes, which read them
# then; values the user set are kept. The library leaves its host process's settings alone.
IDLE_WAITING = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}

# Python's cycle collector runs after 10,000 net allocations instead of 700: importing torch and
# loading a model allocate millions of objects, and the collections they triggered took 0.1 CPU-s
# of every run (perf: gc_collect_main); zsseg makes few reference cycles.
COLLECTION_THRESHOLDS = (10_000, 10, 10)

# glibc's malloc hands every block over 32 MB back to the kernel when it is freed, and the next
# such block is mapped afresh and zero-filled page by page. Batches of crops through CLIP do
# that with every layer's activations: 1.2 million page faults and 2.3 CPU-s in the kernel for
# one two-stage image, 12 CPU-s for 8 (docs/benchmarks.md). Large blocks come from the heap
# instead (M_MMAP_MAX 0), which keeps up to 256 MB free for the next batch (M_TRIM_THRESHOLD):
# peak memory is 0.1-0.5 GB higher. Where the user set malloc's own variables, they are kept.
MALLOC_SETTINGS = {"M_MMAP_MAX": (-4, 0), "M_TRIM_THRESHOLD": (-1, 256 << 20)}
MALLOC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def reuse_freed_memory() -> dict[str, int]:
    """Apply `MALLOC_SETTINGS` with glibc's mallopt, unless the user set malloc's variables
    (`MALLOC_VARIABLES`, or glibc.malloc tunables) or the C library is not glibc. Returns the
    settings applied."""
    try:
        libc_name = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):  # not a GNU C library, or no confstr
        return {}
    if not libc_name.startswith("glibc") or any(os.environ.get(name) for name in MALLOC_VARIABLES) \
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return {}
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    return {name: value for name, (option, value) in MALLOC_SETTINGS.items() if mallopt(option, value) == 1}


def main() -> int:
    for name, value in IDLE_WAITING.items():
        os.environ.setdefault(name, value)
    gc.set_threshold(*COLLECTION_THRESHOLDS)
    reuse_freed_memory()
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("zsseg: interrupted", file=sys.stderr, flush=True)
        _exit_now(130)
        return 130
    status = run()
    pipeline = sys.modules.get("zsseg.runs.read_ahead")
    if pipeline is not None and pipeline.busy():
        # Interrupted while the next image was being prepared (`zsseg.runs.read_ahead`): its result would
        # never be written, so the process ends now instead of after it, without the interpreter
        # shutdown that a thread inside torch's native code would abort.
        _flushed()
        _exit_now(status)
    # The interpreter's shutdown collects cycles among every object left, several times over
    # (torch's and the model's: 0.3 CPU-s, perf: gc_collect_main). Nothing of zsseg's is
    # waiting on it: outputs are complete and closed by now. Frozen objects are skipped by those
    # collections; they are still released by reference counting as modules are torn down.
    gc.freeze()
    return status


def run() -> None:
    """The `zsseg` command's process entry point (the installed script, `python -m zsseg`):
    `main`, then the end of the process.

    Once the command is done and its output flushed, the process ends as the interpreter would
    (exit handlers run: logs, temporary folders, child processes), but without the teardown that
    follows them: freeing every module and object one by one, torch's and the model's, cost
    0.25-0.3 CPU-s of every run, after the results were written (docs/benchmarks.md). Where a
    thread other than daemons is still running, or the output cannot be flushed, the interpreter
    ends the process as usual, joining the thread or reporting the error."""
    status = main()
    import atexit
    import threading

    running = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if running or run_exit_handlers is None or not _flushed():
        sys.exit(status)
    run_exit_handlers()
    if not _flushed():
        sys.exit(status)
    os._exit(status)


def _flushed() -> bool:
    """Whether standard output and error took everything written to them."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            return False
    return True


if __name__ == "__main__":
    run()
