"""The one training loop of zsseg, shared by everything it trains (`zsseg train proposals|prompts`).

A `TrainingTask` says what is trained: its module, optimiser, loss on a batch, and the files
it leaves at the end. `run_training` does the rest, the same way for every task:

- Under torchrun each process computes its share of every batch (`Distributed.shard`); DDP
  averages the gradients (gloo on CPU, NCCL on GPU).
- Checkpoints (`OUT/checkpoint-STEP.pt`: zsseg's mark, module, optimiser, scheduler, step,
  every process's RNG state, and the run's signature) are written atomically every
  `checkpoint_every` steps; rerunning the same command resumes from the newest one and ends
  with the same weights as an uninterrupted run. A checkpoint of a different run (another
  signature) is refused. Only the newest two are kept, and a checkpoint is removed only when
  it carries zsseg's mark: a file that is only named like one (a user's, an unreadable one)
  stops the run at its start, untouched.
- `OUT/log.jsonl` has one line per `log_every` steps with the loss terms and learning rate;
  each line says `"software": "zsseg VERSION"`, so a user's log is never taken for zsseg's.
- A new run (no checkpoint yet) never replaces a file of the same name that zsseg did not write.
- The batches are made by `task.data` in `LoopSettings.workers` DataLoader worker processes,
  two steps ahead, in pinned memory on CUDA; a batch is a function of its sample positions
  only, so workers change nothing in the result.
- `LoopSettings.dtype` "bf16" runs the forward pass and the loss under bf16 autocast (on CUDA
  or CPU); the weights, gradients and optimiser stay fp32. A run is resumed in the dtype it
  was started in.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn

from ..runs.distributed import Distributed
from ..errors import SettingError, ZssegError, counted
from ..models.hub import load_torch_file
from ..runs.progress import Progress
from ..outputs.writers import SOFTWARE, check_target, write_atomically

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d{7})\.pt$")
KEEP_CHECKPOINTS = 2
LOG_NAME = "log.jsonl"


@dataclass(frozen=True)
class LoopSettings:
    """What the loop itself needs of a task's training config.

    Attributes:
        max_iters: optimisation steps.
        batch_size: samples per step over all processes.
        grad_clip: maximum L2 norm of the whole module's gradient (0: no clipping).
        checkpoint_every, log_every: steps between checkpoints and between log lines.
        seed: seeds what the task does not seed itself (dropout), per process.
        workers: DataLoader worker processes that make the batches (0: the main process).
        dtype: "fp32", or "bf16" for bf16 autocast of the forward pass and loss.
    """

    max_iters: int
    batch_size: int
    grad_clip: float
    checkpoint_every: int
    log_every: int
    seed: int
    workers: int = 0
    dtype: str = "fp32"

    def __post_init__(self):
        if self.workers < 0:
            raise SettingError("workers", f"{{setting}} must be at least 0, got {self.workers}")
        if self.dtype not in AUTOCAST:
            raise ZssegError(f"unknown training dtype '{self.dtype}'; choose one of {', '.join(AUTOCAST)}")


AUTOCAST = {"fp32": None, "bf16": torch.bfloat16}


class BatchSource(Protocol):
    """What makes a task's batches: a function of the sample positions only, run in DataLoader
    workers (so it holds data, not models)."""

    def batch(self, positions: list[int]) -> object:
        """The inputs of `TrainingTask.loss` for these sample positions (tensors, on the CPU)."""


class StepBatches(torch.utils.data.Dataset):
    """Item i: this process's batch of step `start + i`."""

    def __init__(self, source: BatchSource, batch_size: int, start: int, steps: int, shard: range):
        self.source, self.batch_size, self.start, self.steps, self.shard = source, batch_size, start, steps, shard

    def __len__(self) -> int:
        return self.steps - self.start

    def __getitem__(self, index: int) -> object:
        step = self.start + index
        return self.source.batch([step * self.batch_size + j for j in self.shard])


def step_batches(source: BatchSource, settings: LoopSettings, start: int, context: Distributed, pin: bool):
    """The batches of steps start..max_iters-1 in order, made ahead by `settings.workers`
    processes (two steps each) and pinned when `pin`."""
    dataset = StepBatches(source, settings.batch_size, start, settings.max_iters, context.shard(settings.batch_size))
    # A generator of its own: the loader's seed draw must not advance the global RNG (dropout's),
    # which a resumed run restores from its checkpoint.
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=settings.workers,
                                       prefetch_factor=2 if settings.workers else None, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(0))


class TrainingTask(Protocol):
    """What one kind of training provides to `run_training`.

    Attributes:
        module: the trained `nn.Module` (its state is checkpointed; DDP wraps it).
        data: makes the batches (`BatchSource`).
        signature: what must be equal for a checkpoint to be resumed (JSON-serialisable).
        output_names: the files `save` writes in the output folder.
        postfix_terms: loss terms shown beside the progress bar.
    """

    module: nn.Module
    data: BatchSource
    signature: dict
    output_names: tuple[str, ...]
    postfix_terms: tuple[str, ...]

    def initialise(self) -> None:
        """A new run only: load pretrained weights into `module`."""

    def prepare(self) -> None:
        """After the weights are in place, before the optimiser is built (e.g. freeze layers)."""

    def build_optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]: ...

    def loss(self, module: nn.Module, batch: object, context: Distributed) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of this process's `batch` (from `data.batch`, run through `module`,
        the DDP-wrapped one) and its named terms, for the log."""

    def learning_rate(self, optimizer: torch.optim.Optimizer) -> float:
        """The learning rate to log."""

    def save(self, output_dir: Path) -> Path:
        """Write the trained result (main process only); return the main file."""


@dataclass
class TrainingResult:
    output_dir: Path
    steps: int
    resumed_from: int
    weights: Path
    last_log: dict | None


def run_record(clip_source: str, dataset, protocol: str, steps: int) -> dict:
    """What every trained result records of its run: the CLIP, the data, the protocol, the steps."""
    return {"clip": clip_source, "dataset": dataset.name, "split": dataset.split, "protocol": protocol, "steps": steps}


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The checkpoints in `folder`, as (step, path), oldest first."""
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def check_output_dir(output_dir: Path, output_names: tuple[str, ...]) -> None:
    """A run may replace only the log and results that an earlier zsseg run left in
    `output_dir`, never a user's file of the same name; and every file named like a checkpoint
    there must be one that zsseg wrote (`check_checkpoint`), since old ones are removed."""
    if not output_dir.is_dir():
        return
    for name in (LOG_NAME, *output_names):
        check_target(output_dir / name, advice=SettingError("output_dir", "choose a new {setting}"))
    for _, path in checkpoints(output_dir):
        check_checkpoint(path)


def not_zsseg_checkpoint(path: Path) -> str | None:
    """None when `path` is a checkpoint that zsseg wrote (its mark, and the step of its name);
    else why not. Read with its tensors mapped, not loaded."""
    try:
        state = load_torch_file(path, mmap=True)
    except ZssegError as error:
        return f"cannot read checkpoint: {error}"
    if not (isinstance(state, dict) and str(state.get("software", "")).startswith("zsseg")):
        return f"{path} is named like a checkpoint of zsseg but zsseg did not write it (it carries no zsseg mark)"
    match = CHECKPOINT_PATTERN.match(path.name)
    if not match or state.get("step") != int(match.group(1)):
        return f"{path} holds the checkpoint of step {state.get('step')}, not of the step its name says"
    return None


def check_checkpoint(path: Path) -> None:
    """Refuse, before anything is trained or removed, a file named like a checkpoint that zsseg
    cannot prove it wrote."""
    why = not_zsseg_checkpoint(path)
    if why is not None:
        raise ZssegError(f"{why}; zsseg removes only checkpoints it wrote, so it is left untouched: move it away (or, if it "
                         "is a damaged checkpoint of this run, delete it to resume from the one before)")


def _save_checkpoint(folder: Path, state: dict) -> Path:
    path = folder / f"checkpoint-{state['step']:07d}.pt"
    if path.exists():
        check_checkpoint(path)  # a file that appeared while training ran
    write_atomically([path], [lambda f: torch.save({"software": SOFTWARE, **state}, f)])
    ours = [old for _, old in checkpoints(folder) if not_zsseg_checkpoint(old) is None]
    for old in ours[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return path


def _gather(context: Distributed, state: torch.Tensor) -> list[torch.Tensor]:
    """Every process's `state` (an RNG state), in rank order."""
    if not context.enabled:
        return [state]
    states: list = [None] * context.world_size
    dist.all_gather_object(states, state)
    return states


def _average(values: dict[str, float], context: Distributed) -> dict[str, float]:
    if not context.enabled:
        return values
    keys = sorted(values)
    tensor = context.sum(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / context.world_size for k, v in zip(keys, tensor)}


def _barrier(context: Distributed) -> None:
    if context.enabled:
        dist.barrier()


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill
    write_atomically([path], [lambda f: f.write("".join(f"{line}\n" for line in kept).encode("utf-8"))])


def run_training(
    task: TrainingTask,
    settings: LoopSettings,
    output_dir: Path,
    context: Distributed = Distributed(),
    progress: bool = True,
) -> TrainingResult:
    """Train `task` for `settings.max_iters` steps, or resume it from `output_dir`; see the
    module docstring."""
    if settings.batch_size % context.world_size:
        raise ZssegError(f"batch size {settings.batch_size} must be a multiple of the number of processes ({context.world_size})")
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train(task, settings, output_dir, context, progress)
    except BaseException:
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # made for this run, which wrote nothing: leave nothing behind
        raise


def _train(task: TrainingTask, settings: LoopSettings, output_dir: Path, context: Distributed, progress: bool) -> TrainingResult:
    device = torch.device(context.device)
    check_output_dir(output_dir, task.output_names)
    resume, start = _resumed(task, settings, output_dir, context)
    module = task.module
    if resume is None:
        task.initialise()
    else:
        module.load_state_dict(resume["model"])
    module.to(device).train()
    task.prepare()
    optimizer, scheduler = task.build_optimizer()
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"][context.rank])
        if device.type == "cuda" and resume.get("cuda_rng"):
            torch.cuda.set_rng_state(resume["cuda_rng"][context.rank], device)
    else:
        torch.manual_seed(settings.seed + 1000 * context.rank)  # dropout differs across processes

    wrapped: nn.Module = module
    if context.enabled:
        wrapped = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    log = _Log(output_dir / LOG_NAME, task, settings, context, start, progress)
    autocast = AUTOCAST[settings.dtype]
    batches = step_batches(task.data, settings, start, context, pin=device.type == "cuda")
    for step, batch in zip(range(start, settings.max_iters), batches):
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            total, terms = task.loss(wrapped, batch, context)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        trained = [p for p in module.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trained, settings.grad_clip)) if settings.grad_clip > 0 else float("nan")
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done % settings.log_every == 0 or done == settings.max_iters:
            log.write(done, total, terms, task.learning_rate(optimizer), grad_norm)
        if done % settings.checkpoint_every == 0 or done == settings.max_iters:
            _checkpoint(output_dir, task, settings, context, device, done, optimizer, scheduler)
        log.bar.update(1)
    log.bar.close()

    module.eval()
    main_file = output_dir / task.output_names[0]
    if context.is_main:
        main_file = task.save(output_dir)
    _barrier(context)
    return TrainingResult(output_dir, settings.max_iters, start, main_file, log.last)


def _resumed(task: TrainingTask, settings: LoopSettings, output_dir: Path, context: Distributed) -> tuple[dict | None, int]:
    """The last checkpoint in `output_dir` and its step, checked against this run (None, 0 for
    a new run)."""
    found = checkpoints(output_dir)
    if not found:
        return None, 0
    resume = load_torch_file(found[-1][1])  # checked as zsseg's by check_output_dir
    if json.loads(resume["signature"]) != json.loads(json.dumps(task.signature)):
        raise SettingError("output_dir", f"{output_dir} holds checkpoints of a different run (config, dataset, classes or CLIP "
                           "differ); use a new {setting}, or the same settings to resume")
    trained_in = resume.get("dtype", "fp32")
    if trained_in != settings.dtype:
        raise SettingError("dtype", f"{output_dir} holds a run trained in {trained_in}; resume it with {{setting}} {trained_in}")
    if len(resume["rng"]) != context.world_size:
        raise ZssegError(
            f"the checkpoint in {output_dir} was written by {counted(len(resume['rng']), 'process', 'processes')}; "
            f"resume with the same number, not {context.world_size}"
        )
    start = int(resume["step"])
    planned = int(resume.get("max_iters", settings.max_iters))
    if planned != settings.max_iters:
        # The learning rate follows a schedule over max_iters: another length would make the
        # result neither the run that was started nor a fresh run of the new length.
        state = "finished" if start >= planned else f"stopped at step {start}"
        raise SettingError(
            "max_iters",
            f"{output_dir} holds a run of {counted(planned, 'step')} ({state}); {{setting}} {settings.max_iters} would change "
            f"its learning-rate schedule: resume with {{setting}} {planned}, or train the longer run in a new {{output_dir}}",
            "output_dir",
        )
    if start > settings.max_iters:  # a checkpoint from before runs recorded their length
        raise SettingError("max_iters", f"{output_dir} already holds a checkpoint at step {start}, past {{setting}} {settings.max_iters}")
    return resume, start


class _Log:
    """The run's log (one JSON line per logged step, on the main process) and its progress bar."""

    def __init__(self, path: Path, task: TrainingTask, settings: LoopSettings, context: Distributed, start: int, progress: bool):
        self.path, self.task, self.settings, self.context = path, task, settings, context
        if context.is_main:
            _trim_log(path, start)
        self.last: dict | None = None
        self.bar = Progress(settings.max_iters, "training", "step", initial=start, enabled=progress and context.is_main)
        self.clock = time.perf_counter()

    def write(self, done: int, total: torch.Tensor, terms: dict[str, torch.Tensor], lr: float, grad_norm: float) -> None:
        values = _average({"loss": float(total.detach()), **{k: float(v) for k, v in terms.items()}}, self.context)
        now = time.perf_counter()
        self.last = {
            "step": done,
            **{k: round(v, 6) for k, v in values.items()},
            "lr": lr,
            "grad_norm": round(grad_norm, 6),
            "seconds_per_step": round((now - self.clock) / self.settings.log_every, 4),
        }
        self.clock = now
        if self.context.is_main:
            with open(self.path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"software": SOFTWARE, **self.last}) + "\n")
            self.bar.set_postfix({k: f"{values[k]:.3f}" for k in ("loss", *self.task.postfix_terms) if k in values})


def _checkpoint(output_dir: Path, task: TrainingTask, settings: LoopSettings, context: Distributed, device: torch.device, done: int,
                optimizer, scheduler) -> None:
    """Every process's RNG state gathered, and the checkpoint of step `done` written by the main one."""
    rng = _gather(context, torch.get_rng_state())
    cuda_rng = _gather(context, torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
    if context.is_main:
        _save_checkpoint(output_dir, {
            "step": done,
            "model": task.module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng,
            "cuda_rng": cuda_rng,
            "dtype": settings.dtype,
            "signature": json.dumps(task.signature),
            "max_iters": settings.max_iters,
        })
    _barrier(context)


__all__ = ["AUTOCAST", "BatchSource", "LOG_NAME", "LoopSettings", "step_batches", "TrainingResult", "TrainingTask", "check_output_dir", "checkpoints", "run_record", "run_training"]
