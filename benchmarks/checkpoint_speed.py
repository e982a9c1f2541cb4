"""The paper's pipeline on an authors' checkpoint, end to end, as a user runs it: CPU time, peak
memory and labels of `zsseg segment` in each precision, against an earlier revision.

    python benchmarks/checkpoint_speed.py                          # this checkout, 3 rounds
    python benchmarks/checkpoint_speed.py --base ab3b743 --rounds 4
    python benchmarks/checkpoint_speed.py --variants default fp32 --image coco/val2017/000000010363.jpg

The checkpoint is `model_final.pth` in the authors' format with the paper's shapes (R101c, a
6-layer decoder with 100 queries, a ViT-B/16 CLIP) and seeded random weights
(`zsseg.tiny_clip.save_tiny_reference_checkpoint(paper_size=True)`): the same work per image as
the released model, and a learned prompt of 16 vectors, as the paper's zero-shot model. The image
is segmented with COCO-Stuff's 171 classes, that prompt and no disk text cache (each run encodes
the vocabulary, as a first run does). `--rounds 0 --keep DIR` only writes the checkpoint and its
CLIP as a file (`benchmarks/reference_speed.md` times the authors' code on them). Each run
is a fresh process; its CPU time (user + sys) and peak RSS come from `wait4`. The variants:

- `default`: no `--dtype`, no `--clip` (the checkpoint's own CLIP, `--dtype auto`);
- `fp32`, `int8`, `bf16`: `--dtype` given;
- `clip-beside`: the checkpoint's CLIP given again as a `--clip` file, no `--dtype`.

The rounds alternate the variants (and the revisions) so that a busy spell of the machine falls
on all of them; the table gives medians. Labels are compared with the fp32 run of the same
revision (share of pixels with the same class).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from same_outputs import extract  # noqa: E402
from samples import DATA, TOKENIZER, save_tiny_reference_checkpoint  # noqa: E402
from zsseg.tiny_clip import save_checkpoint_clip  # noqa: E402

VARIANTS = {
    "default": [],
    "fp32": ["--dtype", "fp32"],
    "int8": ["--dtype", "int8"],
    "bf16": ["--dtype", "bf16"],
    "clip-beside": ["--clip", "{clip}"],
}


def timed_run(source: Path | None, args: list[str], cache: Path) -> tuple[float, float, float, int]:
    """(CPU seconds, wall seconds, peak RSS in GB, exit status) of `python -m zsseg ARGS`."""
    env = {**os.environ, "ZSSEG_CACHE_DIR": str(cache), "ZSSEG_PROGRESS_EVERY": "0"}
    # Byte-compiled modules, as an installed zsseg has them (an environment that sets this would
    # otherwise compile zsseg's sources in every run: 0.07 CPU-s)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "zsseg", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    error = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  failed ({code}): {error.strip().splitlines()[-1] if error.strip() else ''}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1e6, code


def labels(folder: Path, stem: str) -> np.ndarray:
    """The label map of a segment run (its label PNG's ids)."""
    return np.asarray(Image.open(folder / f"{stem}.png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=None, help="an earlier revision to run beside this checkout (git revision)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--base-variants", nargs="+", default=["fp32"], choices=list(VARIANTS),
                        help="the variants run with --base (default: fp32, the reference point)")
    parser.add_argument("--image", default="coco/val2017/000000010363.jpg", help="relative to the data samples")
    parser.add_argument("--keep", type=Path, default=None, help="a folder to keep the checkpoint and outputs in")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="checkpoint-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "model_final.pth"
    if not checkpoint.exists():
        save_tiny_reference_checkpoint(checkpoint, paper_size=True, learned_prompt=(16, 0))
    clip_file = work / "clip.safetensors"
    if not clip_file.exists():
        save_checkpoint_clip(checkpoint, clip_file)
    image = DATA / args.image
    if args.rounds == 0:
        print(f"checkpoint {checkpoint}, its CLIP {clip_file}, image {image}")
        return 0
    sources = {"this checkout": None}
    if args.base:
        sources[args.base] = extract(args.base, work / f"base-{args.base}")
    runs = [(name, variant) for name in sources for variant in (args.variants if sources[name] is None else args.base_variants)]
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {run: [] for run in runs}
    for round_ in range(args.rounds):
        for name, variant in runs if round_ % 2 == 0 else runs[::-1]:
            out = work / "out" / name.replace(" ", "-") / variant
            for stale in out.glob("*"):
                stale.unlink()
            flags = [flag.format(clip=clip_file) for flag in VARIANTS[variant]]
            command = ["segment", str(image), "--proposals", "maskformer", "--proposal-weights", str(checkpoint), "--vocabulary",
                       "coco-stuff-171", "--tokenizer", str(TOKENIZER), "--no-text-cache", "--out", str(out), *flags]
            cpu, wall, rss, code = timed_run(sources[name], command, work / "cache")
            if code == 0:
                results[(name, variant)].append((cpu, wall, rss))
            print(f"round {round_ + 1}: {name}, {variant}: {cpu:.1f} CPU-s, {wall:.1f} s, {rss:.2f} GB", flush=True)

    reference = results.get((args.base, "fp32")) if args.base else results.get(("this checkout", "fp32"))
    base_cpu = statistics.median(r[0] for r in reference) if reference else None
    print(f"\n{image.name}, {args.rounds} rounds, medians; CPU = user + sys of the whole process")
    print("| code | variant | CPU-s | wall s | peak RSS GB | x the reference CPU | same labels as its fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, variant in runs:
        done = results[(name, variant)]
        if not done:
            print(f"| {name} | {variant} | failed | | | | |")
            continue
        cpu, wall, rss = (statistics.median(r[i] for r in done) for i in range(3))
        ratio = f"{cpu / base_cpu:.2f}x" if base_cpu else ""
        folder = work / "out" / name.replace(" ", "-")
        agree = ""
        if (folder / "fp32").is_dir():
            mine, theirs = labels(folder / variant, image.stem), labels(folder / "fp32", image.stem)
            agree = f"{100 * float((mine == theirs).mean()):.2f}%"
        print(f"| {name} | {variant} | {cpu:.1f} | {wall:.1f} | {rss:.2f} | {ratio} | {agree} |")
    print(f"\nthe reference CPU: {'the fp32 run of ' + args.base if args.base else 'the fp32 run'}; outputs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
