"""Images per second of `zsseg segment` on a folder of real images, with 1 process and with N
processes under torchrun (CPU, gloo), and their ratio.

Each run is the command a user types, timed from launch to exit, so start-up (imports, loading
the model, encoding the vocabulary) is in it; `--images` sets how much work it is amortised over.
One process uses torch's default threads; under torchrun each process gets
`OMP_NUM_THREADS=threads // N` (torchrun's own default is 1). The outputs of the runs are compared
file by file: sharding changes nothing but speed.

    python benchmarks/segment_scale.py --images 24 --processes 1 2
    python benchmarks/segment_scale.py --clip openai/clip-vit-base-patch16 --images 200 --processes 1 2 4 --device cuda

Without `--clip`, a small random CLIP (benchmarks/samples.py) is used: the timings are then of
the proposal generator and the plumbing more than of CLIP, which is the case to look at on a CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA, save_tiny_clip  # noqa: E402


def segment(processes: int, images: list[Path], out: Path, args: argparse.Namespace) -> float:
    """Seconds of one `zsseg segment` run over `images` (symlinked into one folder)."""
    command = ["segment", str(images[0].parent), "--vocabulary", "coco-stuff-171", "--clip", args.clip,
               "--proposals", args.proposals, "--max-proposals", str(args.max_proposals), "--device", args.device,
               "--out", str(out)]
    env = dict(os.environ)
    if processes == 1:
        launch = [sys.executable, "-m", "zsseg"]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                  "--no-python", sys.executable, "-m", "zsseg"]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes)) if args.device == "cpu" else "1"
    started = time.perf_counter()
    proc = subprocess.run(launch + command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="how many COCO val2017 samples (default 24)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="world sizes to time (default 1 2)")
    parser.add_argument("--clip", help="a CLIP hub id or folder (default: a small random CLIP)")
    parser.add_argument("--proposals", default="selective-search")
    parser.add_argument("--max-proposals", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (NCCL, one GPU per process)")
    args = parser.parse_args()
    sources = sorted((DATA / "coco" / "val2017").glob("*.jpg"))[: args.images]
    if len(sources) < args.images:
        raise SystemExit(f"only {len(sources)} COCO val2017 samples under {DATA}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.clip is None:
            args.clip = str(save_tiny_clip(tmp / "tiny-clip"))
        folder = tmp / "photos"
        folder.mkdir()
        for source in sources:
            (folder / source.name).symlink_to(source)
        print(f"zsseg segment on {len(sources)} COCO val2017 images, {args.proposals} K={args.max_proposals}, "
              f"CLIP {args.clip}, {args.device}, {os.cpu_count()} CPU cores")
        print(f"{'processes':>9} | {'seconds':>8} | {'images/s':>8} | {'x 1 process':>11}")
        first = None
        reference = None
        for processes in args.processes:
            out = tmp / f"out-{processes}"
            seconds = segment(processes, sorted(folder.iterdir()), out, args)
            rate = len(sources) / seconds
            first = first or rate
            print(f"{processes:>9} | {seconds:>8.1f} | {rate:>8.3f} | {rate / first:>10.2f}x", flush=True)
            labels = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".png" and not p.stem.endswith("_overlay")}
            if reference is None:
                reference = labels
            elif labels != reference:
                differing = sum(labels.get(name) != data for name, data in reference.items())
                print(f"          ({differing} of {len(reference)} label maps differ from the first run's: "
                      "thread counts change float sums, which can flip a near-tie)")


if __name__ == "__main__":
    main()
