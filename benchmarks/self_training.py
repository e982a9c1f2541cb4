"""Self-training with the proxy CLIP, CPU-sized (proxy-CLIP figures): train -> pseudo-label ->
retrain -> evaluate, each step one `zsseg` command (the shipped path), timed.

    python benchmarks/proxy_clip.py --output benchmarks/out/proxy-clip
    python benchmarks/self_training.py --clip benchmarks/out/proxy-clip

1. `zsseg train proposals` (tiny config, --steps) on the 156 seen classes of COCO-Stuff train
   into --zero-shot (default --work-dir/zero-shot); a finished run there is reused (the
   command then returns at once), such as the accuracy table's benchmarks/out/maskformer-zs.
2. `zsseg pseudo-label` of those training images with that network + the proxy CLIP
   (ensemble, lambda 0.8) at --reject-threshold.
3. `zsseg train proposals --pseudo-labels` with the same settings and seed.
4. `zsseg eval --protocol zero-shot` of both networks on the first --limit val2017 images,
   which neither run saw; the figure is hIoU on val, seen/unseen beside it.

Prints a Markdown table and writes --work-dir/self-training-tTHRESHOLD.json. The proxy CLIP was trained
here on a few hundred images: these numbers check the method's machinery and are never
comparable with the paper's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def zsseg(*args: str, threads: int) -> float:
    """Run one zsseg command (its output shown), return its wall time; stop on failure."""
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "zsseg", *args], env=env)
    if proc.returncode != 0:
        sys.exit(f"self_training.py: `zsseg {' '.join(args)}` failed with status {proc.returncode}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, required=True, help="the proxy CLIP folder (benchmarks/proxy_clip.py)")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "out" / "self-training")
    parser.add_argument("--zero-shot", type=Path, default=None, help="the zero-shot run's folder (default WORK_DIR/zero-shot)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each network (default 1500)")
    parser.add_argument("--reject-threshold", type=float, default=0.0, help="of the pseudo-labels (default 0.0, the reference's)")
    parser.add_argument("--limit", type=int, default=100, help="val images scored (default 100: all the samples)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per command (default 2)")
    args = parser.parse_args()

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    zero_shot = args.zero_shot or work / "zero-shot"
    data = ["--dataset", "coco-stuff", "--data-root", str(args.data_root)]
    train = ["train", "proposals", *data, "--protocol", "zero-shot", "--config", "tiny", "--clip", str(args.clip),
             "--backbone-weights", "none", "--max-iters", str(args.steps)]
    labels = work / f"pseudo-labels-t{args.reject_threshold:g}"
    retrained = work / f"self-trained-t{args.reject_threshold:g}"
    seconds = {
        "train": zsseg(*train, "--output-dir", str(zero_shot), threads=args.threads),
        "pseudo_label": zsseg("pseudo-label", *data, "--clip", str(args.clip), "--proposal-weights", str(zero_shot),
                              "--reject-threshold", str(args.reject_threshold), "--output-dir", str(labels), threads=args.threads),
        "retrain": zsseg(*train, "--pseudo-labels", str(labels), "--output-dir", str(retrained), threads=args.threads),
    }
    reports = {}
    for name, weights in (("zero-shot", zero_shot), ("self-trained", retrained)):
        output = work / f"eval-{weights.name}.json"
        seconds[f"eval_{name}"] = zsseg("eval", *data, "--split", "val", "--protocol", "zero-shot", "--limit", str(args.limit),
                                        "--clip", str(args.clip), "--proposals", "maskformer", "--proposal-weights", str(weights),
                                        "--output", str(output), "--quiet", threads=args.threads)
        reports[name] = json.loads(output.read_text())
    manifest = json.loads((labels / "pseudo-labels.json").read_text())

    print(f"\nProxy-CLIP figures, not comparable with the paper's. COCO-Stuff val, first {args.limit} images, zero-shot; "
          f"tiny config, {args.steps} steps each, reject threshold {args.reject_threshold:g}.\n")
    print("| network | mIoU(seen) | mIoU(unseen) | hIoU | mIoU | pAcc |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, report in reports.items():
        cells = [report.get(k) for k in ("mIoU_seen", "mIoU_unseen", "hIoU", "mIoU", "pAcc")]
        print(f"| {name} | " + " | ".join("n/a" if v is None else f"{v:.2f}" for v in cells) + " |")
    pixels, check = manifest["pixels"], manifest["diagnostic"]
    total = max(1, pixels["total"])
    print(f"\npseudo-labels: {100 * pixels['seen_ground_truth'] / total:.1f}% seen ground truth, "
          f"{100 * sum(pixels['pseudo_labels'].values()) / total:.1f}% unseen pseudo-labels, {100 * pixels['ignored'] / total:.1f}% ignored; "
          f"diagnostic on train pixels whose ground truth is unseen: mIoU {check['mIoU_unseen']:.2f}, accuracy {check['accuracy']:.1f}%")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    (work / f"self-training-t{args.reject_threshold:g}.json").write_text(json.dumps({
        "note": "proxy-CLIP figures, not comparable with the paper's",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": seconds, "pseudo_labels": {"pixels": pixels, "diagnostic": check},
        "eval": reports,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
