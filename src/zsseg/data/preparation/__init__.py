"""Preparing the benchmarks from their official downloads, and checking a prepared tree.

    report = prepare_dataset("ade20k-150", ["ADEChallengeData2016.zip"], data_root="datasets")
    print("\\n".join(report.lines()))
    check = check_dataset("ade20k-150", data_root="datasets")
    assert check.usable

`prepare_dataset` writes the layout `zsseg.data.datasets` reads (docs/datasets.md), byte for byte as
the community preparation scripts write it (`conversions` names each), from the archives as
downloaded or the folders they were extracted to (`sources`). It is safe to run again, or after
an interruption: what is done is skipped, nothing is ever replaced (`targets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ...errors import ZssegError
from .checking import OFFICIAL_SIZES, DatasetCheck, SplitCheck, check_dataset
from .jobs import default_workers

__all__ = ["PREPARABLE", "DatasetCheck", "PreparationReport", "SplitCheck", "check_dataset", "default_workers", "prepare_dataset"]

PREPARABLE = tuple(OFFICIAL_SIZES)  # every benchmark `zsseg eval` reads


@dataclass
class PreparationReport:
    """What `prepare_dataset` did: the images of each split now in place, and the files it
    wrote, found already in place (byte for byte what it would write), or left out as the
    community script leaves them out."""

    name: str
    root: Path
    splits: dict[str, int]
    written: int
    kept: int
    omitted: int
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        parts = []
        for split, count in self.splits.items():
            expected = OFFICIAL_SIZES.get(self.name, {}).get(split)
            part = f"{split} {count:,} images"
            if expected:
                part += " (the official split)" if count == expected else f" of the official {expected:,}"
            parts.append(part)
        files = f"{self.written:,} {'file' if self.written == 1 else 'files'} written, {self.kept:,} already in place"
        if self.omitted:
            files += f", {self.omitted:,} left out as the community script does"
        lines = [f"{self.name} prepared under {self.root}: {'; '.join(parts)}; {files}"]
        lines += [f"note: {note}" for note in self.notes]
        return lines


def prepare_dataset(name: str, sources: Iterable[str | Path], data_root: str | Path | None = None, workers: int | None = None,
                    progress: bool = True) -> PreparationReport:
    """Prepare benchmark `name` under `data_root` (default: `$DETECTRON2_DATASETS`, else `./datasets`)
    from `sources`: the official archives (zip, tar, tar.gz, tgz) or the folders they were
    extracted to. `workers` threads read and write, and as many processes convert (default: one
    per CPU; processes may be spawned, so a script calls this under `if __name__ == "__main__":`).
    Raises `ZssegError`, in one line, for a wrong, damaged or incomplete source or a file in the
    way; what was written before stays, complete, and a second run goes on from there."""
    from ..datasets import default_data_root
    from ...outputs.writers import remove_stale_temporaries
    from .jobs import run_jobs
    from .recipes import RECIPES
    from .sources import Sources
    from .targets import Record

    if name not in RECIPES:
        raise ZssegError(f"unknown dataset '{name}'; zsseg prepares {', '.join(RECIPES)}")
    if workers is not None and workers < 1:
        raise ZssegError(f"workers must be at least 1, got {workers}")
    recipe = RECIPES[name]
    root = Path(data_root) if data_root is not None else default_data_root()
    if root.exists() and not root.is_dir():
        raise ZssegError(f"data root {root} exists and is not a folder")
    with Sources(sources) as found:
        plan = recipe.plan(found)
        unused = found.unused(plan.used)
        if unused:
            raise ZssegError(f"{unused[0]} holds none of the files {name} is prepared from ({recipe.needs}); is it the right download?")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ZssegError(f"cannot make the data root {root}: {error.strerror or error}") from None
        record = Record(root, recipe.key)
        by_folder: dict[Path, list[Path]] = {}
        for job in plan.jobs:
            for output in job.outputs:
                target = root / output
                by_folder.setdefault(target.parent, []).append(target)
        for folder, targets in by_folder.items():
            remove_stale_temporaries(folder, targets)  # left by a run that was killed
        tally = run_jobs(plan.jobs, root, record, workers or default_workers(), progress, f"preparing {name}")
    return PreparationReport(name, root, plan.splits, tally.written, tally.kept, tally.omitted, plan.notes)
