"""Seconds spent in each stage of a segmentation, recorded where the work is done.

    with timed() as timer:          # Segmenter.prepare_image / finish
        ...
        lap("proposals")            # anywhere below: adds the time since the previous lap
    timer.timings                   # {"proposals": 1.2, ...}

The timer in force is a context variable, so the stages need no timing argument, and work done
on another thread (the image prepared ahead) times itself into its own timer. `lap` outside
`timed` does nothing.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator


class Timer:
    """Seconds per stage: `lap(stage)` adds the time since the previous lap (or the start)."""

    def __init__(self, timings: dict[str, float] | None = None):
        self.timings = {} if timings is None else timings
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


_current: ContextVar[Timer | None] = ContextVar("zsseg_timer", default=None)


@contextmanager
def timed(timings: dict[str, float] | None = None) -> Iterator[Timer]:
    """Time the stages run inside, adding to `timings` (a new dict by default)."""
    timer = Timer(timings)
    token = _current.set(timer)
    try:
        yield timer
    finally:
        _current.reset(token)


def lap(stage: str) -> None:
    """Add the time since the previous lap to `stage` in the timer in force, if any."""
    timer = _current.get()
    if timer is not None:
        timer.lap(stage)


__all__ = ["Timer", "lap", "timed"]
