"""Seconds per image to make mask proposals, per generator, on real benchmark samples.

    python benchmarks/proposal_timing.py --generators selective-search --max-proposals 200 --images 3

Images are the first N (sorted by name) of each set in ../shared/data, processed at the
pipeline's default size (longer side at most 1024), one process; image decoding is not timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA  # noqa: E402  (where the real samples and the tokenizer are)

from zsseg.data.datasets import load_dataset  # noqa: E402
from zsseg.data.images import bounded_size, resize_image  # noqa: E402
from zsseg.proposals import build_proposal_generator  # noqa: E402
from zsseg.catalogue import DEFAULT_MAX_SIZE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--sets", nargs="+", default=["ade20k-150:val", "coco-stuff:val"], help="DATASET:SPLIT pairs")
    parser.add_argument("--generators", nargs="+", default=["selective-search", "contour-hierarchy"])
    parser.add_argument("--max-proposals", type=int, default=100)
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args()

    print("| dataset | images | generator | K | s / image |")
    print("|---|---|---|---|---|")
    for entry in args.sets:
        name, _, split = entry.partition(":")
        dataset = load_dataset(name, args.data_root, split or "val")
        n = min(args.images, len(dataset))
        images = []
        for index in range(n):
            image = dataset.load_image(index)
            images.append(resize_image(image, bounded_size(image.shape[0], image.shape[1], DEFAULT_MAX_SIZE)))
        for generator_name in args.generators:
            generator = build_proposal_generator(generator_name, max_proposals=args.max_proposals)
            clock = time.perf_counter()
            for image in images:
                generator.generate(image)
            seconds = (time.perf_counter() - clock) / n
            print(f"| {name} {dataset.split} | {n} | {generator_name} | {args.max_proposals} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
