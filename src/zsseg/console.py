"""The `zsseg` command's entry point: light to import, so that Ctrl-C at any moment, even
while torch is still loading, ends with one line and status 130 instead of a traceback."""

from __future__ import annotations

import os
import sys


def _exit_now(status: int) -> None:
    # Modules that the interrupt left half-imported (numpy, torch) must not run their exit
    # hooks: they fail with tracebacks of their own. Nothing has been written yet.
    os._exit(status)


# OpenMP's worker threads wait passively between parallel regions instead of spinning: spinning
# burned 8% of a two-stage run's CPU on 2 cores (0.5-0.9 CPU-s per image) for no gain in wall
# time (docs/benchmarks.md). Set before torch loads its OpenMP runtime, which reads it then; a
# value the user set is kept. The library leaves its host process's setting alone.
OPENMP_WAIT = ("OMP_WAIT_POLICY", "PASSIVE")


def main() -> int:
    os.environ.setdefault(*OPENMP_WAIT)
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
    return status


if __name__ == "__main__":
    sys.exit(main())
