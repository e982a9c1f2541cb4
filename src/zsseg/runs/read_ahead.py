"""Prepare the next image while CLIP works on this one.

A folder run spends about half of each image's time in work that runs no model and is mostly
single-threaded (decoding, Selective Search, Eq. 1's crops: `Segmenter.prepare_image`), and the
other half in CLIP, whose forward passes use every core. `ahead` does the first kind for item
i+1 on one worker thread while the caller does the second for item i:

    for item, outcome in ahead(items, load):
        value = outcome.result()  # load(item)'s value, or the exception it raised, raised here

Items come back in their order, each with what `load` made of it, so the caller's loop is the
sequential one (the same failures, counts and outputs); `enabled=False` is that loop (each item
loaded when its turn comes). The worker holds at most two loaded items that the caller has not
taken. Once the caller's loop ends (Ctrl-C, an error) it stops after the item in hand; it
writes nothing. A process must not exit while a worker is inside that item: a thread still in
torch's native code when the interpreter shuts down aborts the process ("terminate called
without an active exception", status -6, seen with daemon threads). So a command calls `settle`
before it exits (after its summary): it waits for that item, at most one image's preparation.
After Ctrl-C or SIGTERM it does not wait (an image's preparation took 11.5 s): the `zsseg`
command (`zsseg.console`) then ends the process with `os._exit`, which runs no interpreter
shutdown to abort, while a worker is `busy`. The worker writes nothing, so nothing is lost.

`$ZSSEG_PIPELINE=0` (or `zsseg segment --no-pipeline`) runs sequentially.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")
V = TypeVar("V")

_POLL_SECONDS = 0.1  # how often a worker waiting to hand over an item checks whether to stop
_workers: set[threading.Thread] = set()  # the workers still running, for `settle`


@dataclass
class Outcome(Generic[V]):
    """What loading one item gave: its value, or the exception raised instead."""

    value: V | None = None
    error: BaseException | None = None

    def result(self) -> V:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def pipeline_enabled(default: bool = True) -> bool:
    """Whether runs prepare ahead: `$ZSSEG_PIPELINE` "0"/"1" when set, else `default`."""
    value = os.environ.get("ZSSEG_PIPELINE", "").strip()
    return default if not value else value not in ("0", "false", "no", "off")


def ahead(items: Sequence[T], load: Callable[[T], V], enabled: bool = True) -> Iterator[tuple[T, Outcome[V]]]:
    """`(item, Outcome of load(item))` for each item in order; with `enabled` and more than one
    item, `load` runs on a worker thread, ahead of the caller (see the module docstring)."""
    if not enabled or len(items) < 2:
        for item in items:
            yield item, _load(load, item, Exception)
        return
    handed: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        for item in items:
            outcome = _load(load, item, BaseException)  # anything: the caller must not wait forever
            while not stop.is_set():
                try:
                    handed.put((item, outcome), timeout=_POLL_SECONDS)
                    break
                except queue.Full:
                    pass
            if stop.is_set():
                return

    def run() -> None:
        try:
            work()
        finally:
            _workers.discard(threading.current_thread())

    worker = threading.Thread(target=run, name="zsseg-prepare", daemon=True)
    _workers.add(worker)
    worker.start()
    try:
        for _ in range(len(items)):
            yield handed.get()
    finally:
        stop.set()


def settle() -> None:
    """Wait until every worker of `ahead` has stopped (each ends after the item in hand once its
    loop is over): what a process must do before it exits (see the module docstring)."""
    for worker in list(_workers):
        worker.join()


def busy() -> bool:
    """Whether a worker of `ahead` is still running (preparing an item no one will take)."""
    return any(worker.is_alive() for worker in list(_workers))


def _load(load: Callable[[T], V], item: T, catch: type[BaseException]) -> Outcome[V]:
    try:
        return Outcome(value=load(item))
    except catch as error:
        return Outcome(error=error)


__all__ = ["Outcome", "ahead", "busy", "pipeline_enabled", "settle"]
