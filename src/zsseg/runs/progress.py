"""Progress of a long run: a tqdm bar on a terminal; elsewhere (a log file, a scheduler's
capture) one plain line every `every` items or `seconds` seconds, whichever comes first, so a
log shows how far a run got and how fast it goes.

    with Progress(total=len(images), description="segmenting", unit="image") as progress:
        for image in images:
            ...
            progress.update()

`$ZSSEG_PROGRESS_EVERY` and `$ZSSEG_PROGRESS_SECONDS` change the defaults (50 items, 60 s).
"""

from __future__ import annotations

import os
import sys
import time


class Progress:
    """Counts done items of `total` and shows them; `enabled=False` shows nothing."""

    def __init__(self, total: int, description: str, unit: str, initial: int = 0, enabled: bool = True,
                 every: int | None = None, seconds: float | None = None):
        self.total, self.description, self.unit = total, description, unit
        self.done = initial
        self.enabled = enabled
        self.every = every or int(os.environ.get("ZSSEG_PROGRESS_EVERY", "50"))
        self.seconds = seconds if seconds is not None else float(os.environ.get("ZSSEG_PROGRESS_SECONDS", "60"))
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=description, unit=unit)
        self.started = self.last_time = time.perf_counter()
        self.last_done = initial
        self.postfix: dict = {}

    def set_postfix(self, values: dict) -> None:
        """Figures shown after the count (a training loss)."""
        self.postfix = dict(values)
        if self.bar is not None:
            self.bar.set_postfix(values)

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.perf_counter()
        due = self.done - self.last_done >= self.every or now - self.last_time >= self.seconds
        if self.enabled and due:
            rate = (self.done - self.last_done) / max(now - self.last_time, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
            eta = f", about {left:.0f} s left" if self.done < self.total and left == left else ""
            print(f"zsseg: {self.description}: {self.done} of {self.total} {self.unit}s, {rate:.2f} {self.unit}s/s{eta}{extra}",
                  file=sys.stderr, flush=True)
            self.last_time, self.last_done = now, self.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Progress"]
