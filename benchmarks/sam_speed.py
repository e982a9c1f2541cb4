"""Seconds per image of SAM's automatic mask generation, stage by stage, beside Selective Search.

    python benchmarks/sam_speed.py --images 1

SAM is the full-size ViT-B architecture (transformers' `SamConfig()` defaults, the
architecture of facebook/sam-vit-base: 1024 input, 12 layers of width 768) with random weights,
saved to a temporary folder and loaded through `--proposals sam:FOLDER`'s path. Random weights
time the same computation as trained ones, except in how many masks pass the filters: a random
SAM predicts IoUs near 0, so with segment-anything's defaults almost nothing passes and the
decoder's post-processing and the suppression are cheap. The "filters off" row lets every one
of the 32 x 32 x 3 masks through (the most work those stages can do); a trained SAM lies in
between. Images: the first N COCO-Stuff val samples, at the pipeline's default size (longer side
1024); one process, no warm-up run, on whatever this machine is. Figures are wall-clock seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA  # noqa: E402  (where the real samples and the tokenizer are)

from zsseg.data.datasets import load_dataset  # noqa: E402
from zsseg.data.images import bounded_size, resize_image  # noqa: E402
from zsseg.proposals import build_proposal_generator  # noqa: E402
from zsseg.catalogue import DEFAULT_MAX_SIZE  # noqa: E402

FILTERS_OFF = dict(pred_iou_thresh=-float("inf"), stability_score_thresh=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from transformers import SamConfig, SamModel

    dataset = load_dataset("coco-stuff", DATA, "val")
    images = []
    for index in range(args.images):
        image = dataset.load_image(index)
        images.append(resize_image(image, bounded_size(image.shape[0], image.shape[1], DEFAULT_MAX_SIZE)))
    sizes = sorted({f"{i.shape[1]}x{i.shape[0]}" for i in images})
    print(f"{len(images)} COCO-Stuff val images ({', '.join(sizes)}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}\n")

    rows = []
    clock = time.perf_counter()
    selective = build_proposal_generator("selective-search", max_proposals=100)
    for image in images:
        selective.generate(image)
    baseline = (time.perf_counter() - clock) / len(images)
    rows.append(("Selective Search", {}, baseline, None))
    print(f"Selective Search: {baseline:.1f} s / image", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        SamModel(SamConfig()).save_pretrained(folder)
        for label, options in (("SAM ViT-B, segment-anything's defaults", {}), ("SAM ViT-B, filters off", FILTERS_OFF)):
            generator = build_proposal_generator(f"sam:{folder}", max_proposals=100, device=args.device, **options)
            stages: dict[str, float] = {}
            kept = []
            clock = time.perf_counter()
            for image in images:
                kept.append(len(generator.generate(image)))
                for stage, seconds in generator.timings.items():
                    stages[stage] = stages.get(stage, 0.0) + seconds / len(images)
            rows.append((label, stages, (time.perf_counter() - clock) / len(images), kept))
            print(f"{label}: {rows[-1][2]:.1f} s / image", flush=True)

    print("| generator | encoder | decoder (1024 points, filters) | suppression | total s / image | x Selective Search | masks kept |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, stages, total, kept in rows:
        cells = [f"{stages[s]:.2f}" if s in stages else "" for s in ("encoder", "decoder", "suppression")]
        ratio = f"{total / baseline:.1f}x"
        print(f"| {label} | {' | '.join(cells)} | {total:.2f} | {ratio} | {'' if kept is None else kept} |")


if __name__ == "__main__":
    main()
