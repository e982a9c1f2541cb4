"""Running under `torchrun`: process group set-up, sharding and reductions.

A plain `python`/`zsseg` run is a world of one and never touches `torch.distributed`. Under
torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) each process joins
one group: NCCL when it runs on CUDA, gloo on CPU. Several nodes work as torchrun allows.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from datetime import timedelta
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from ..models.base import parse_device
from ..errors import SettingError, StoppedElsewhere, ZssegError
from .read_ahead import ahead, settle

T = TypeVar("T")

@dataclass(frozen=True)
class Distributed:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> range:
        """Indices 0..count-1 that this process handles (strided, so shards differ by at most one)."""
        return range(self.rank, count, self.world_size)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over all processes (exact for integer tensors)."""
        return self._reduce(tensor, dist.ReduceOp.SUM)

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over all processes."""
        return self._reduce(tensor, dist.ReduceOp.MAX)

    def gather(self, value: object) -> list:
        """Every process's `value` (picklable), in rank order, on every process."""
        if not self.enabled:
            return [value]
        values: list = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def same_everywhere(self, key: str) -> bool:
        """Whether every process holds the same `key` (a checksum is compared)."""
        if not self.enabled:
            return True
        checksum = torch.tensor([zlib.crc32(key.encode("utf-8", "surrogatepass"))], dtype=torch.int64)
        return int(self.max(checksum)[0]) == -int(self.max(-checksum)[0])

    def _reduce(self, tensor: torch.Tensor, op) -> torch.Tensor:
        if not self.enabled:
            return tensor
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
        reduced = tensor.to(self.device if self.device.startswith("cuda") else "cpu").clone()
        dist.all_reduce(reduced, op=op)
        return reduced.cpu()


class _Loads(torch.utils.data.Dataset):
    """Item i: (indices[i], load(indices[i]), None), or (index, None, error) for a `ZssegError`,
    which travels back as a value to be raised in the main process."""

    def __init__(self, indices: list[int], load: Callable[[int], object]):
        self.indices, self.load = indices, load

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple:
        try:
            return self.indices[i], self.load(self.indices[i]), None
        except ZssegError as error:
            return self.indices[i], None, error


def _as_loaded(item: tuple) -> tuple:
    return item  # not DataLoader's default, which would turn numpy arrays into tensors


def prefetched(indices: list[int], load: Callable[[int], object], workers: int = 0):
    """`(index, load(index), error)` for `indices` in order, loaded by `workers` DataLoader
    processes two items ahead each (none: here, when asked). `load` must be picklable."""
    loader = torch.utils.data.DataLoader(_Loads(indices, load), batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=2 if workers else None, collate_fn=_as_loaded,
                                         generator=torch.Generator().manual_seed(0))
    return iter(loader)


def for_each_shard(count: int, context: Distributed, work: Callable[..., None], load: Callable[[int], object] | None = None,
                   workers: int = 0, prepare: Callable[[int, object], object] | None = None, pipeline: bool = False) -> None:
    """Call `work(index)` for this process's share of 0..count-1 (`Distributed.shard`); with
    `load`, `work(index, load(index))`, the loads made ahead by `workers` DataLoader processes;
    with `prepare` too, `work(index, prepare(index, load(index)))`, and with `pipeline` the
    preparation runs on a worker thread one item ahead of `work` (`zsseg.runs.read_ahead.ahead`: the
    proposals and crops of the next image while CLIP works on this one). `work` always runs
    here, in order, so the results are those of the sequential loop.

    Every process takes the same number of steps and, after each, learns whether any process's
    `work` (or `load`, or `prepare`) raised a `ZssegError`: then all stop together (the failing
    one re-raises its error, the others say which process failed), so no process waits forever
    in a later collective. On the way out the preparing thread is waited for (it ends after the
    item in hand: a process must not exit under it), but after Ctrl-C or SIGTERM, where the
    command ends the process at once (`zsseg.console`).
    """
    steps = math.ceil(count / context.world_size)
    mine = [i for i in (s * context.world_size + context.rank for s in range(steps)) if i < count]
    loads = prefetched(mine, load, workers) if load is not None and mine else None

    def ready(index: int) -> object:
        if loads is None:
            return None
        _, item, error = next(loads)
        if error is not None:
            raise error
        return item if prepare is None else prepare(index, item)

    staged = ahead(mine, ready, enabled=pipeline and loads is not None)
    interrupted = False
    try:
        for step in range(steps):
            index = step * context.world_size + context.rank
            failure = None
            if index < count:
                try:
                    _, outcome = next(staged)
                    if loads is None:
                        work(index)
                    else:
                        work(index, outcome.result())
                except ZssegError as error:
                    failure = error
            failed_rank = int(context.max(torch.tensor([context.rank + 1 if failure else 0]))[0]) - 1
            if failure is not None:
                raise failure
            if failed_rank >= 0:
                raise ZssegError(f"stopped: process {failed_rank} failed (see its error)")
    except KeyboardInterrupt:
        interrupted = True  # the item in preparation is not waited for: `zsseg.console` ends the process at once
        raise
    finally:
        staged.close()
        if not interrupted:
            settle()


def together(context: Distributed, work: Callable[[], T]) -> T:
    """`work()` on every process, then agree on the outcome: if it raised a `ZssegError` on any
    process, all stop. The lowest failing process raises its error (printed once, by it); the
    others raise `StoppedElsewhere`, which the command line does not print."""
    failure = None
    result = None
    try:
        result = work()
    except ZssegError as error:
        failure = error
    if not context.enabled:
        if failure is not None:
            raise failure
        return result
    lowest = context.world_size - int(context.max(torch.tensor([context.world_size - context.rank if failure else 0]))[0])
    if lowest == context.world_size:
        return result
    if context.rank == lowest:
        raise failure
    raise StoppedElsewhere(f"stopped: process {lowest} failed (see its error)")


def init_distributed(device: str = "cpu", timeout_minutes: float = 30.0) -> Distributed:
    """Join the torchrun process group if launched by torchrun, else a world of one.

    On CUDA each process takes the GPU of its LOCAL_RANK ("cuda" becomes "cuda:LOCAL_RANK").
    """
    parse_device(device)  # first: a bad --device is one line before anything else is done
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(device=device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = device.startswith("cuda")
    if on_cuda:
        if not torch.cuda.is_available():
            raise SettingError("device", f"{{setting}} {device} was asked for but CUDA is not available")
        if device == "cuda":
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if on_cuda else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(minutes=timeout_minutes),
        )
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_session(device: str = "cpu") -> Iterator[Distributed]:
    """This process's place in the run for the work inside (`init_distributed`); a process
    group it joined is left on the way out, one it found joined is left as it was."""
    joined = dist.is_available() and dist.is_initialized()
    context = init_distributed(device)
    try:
        yield context
    finally:
        if not joined:
            shutdown_distributed()


def rank_is_main() -> bool:
    """Whether this process is the one that prints and writes a run's summary (rank 0 of a
    torchrun world, or a process on its own)."""
    return int(os.environ.get("RANK", "0")) == 0 or int(os.environ.get("WORLD_SIZE", "1")) <= 1
