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


def main() -> int:
    for name, value in IDLE_WAITING.items():
        os.environ.setdefault(name, value)
    gc.set_threshold(*COLLECTION_THRESHOLDS)
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
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        _exit_now(status)
    # The interpreter's shutdown collects cycles among every object left, several times over
    # (torch's and the model's: 0.3 CPU-s, perf: gc_collect_main). Nothing of zsseg's is
    # waiting on it: outputs are complete and closed by now. Frozen objects are skipped by those
    # collections; they are still released by reference counting as modules are torn down.
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(main())
