"""How often a trained proposal network gives several queries the same binarised mask: the CLIP
passes that Eq. 1 saves by encoding each distinct crop once (`zsseg.classification.regions.distinct_masks`).

    python benchmarks/repeated_masks.py runs/tiny-coco
    python benchmarks/repeated_masks.py runs/tiny-coco --images 30 --thresholds 0.5 0.4 0.3

The images are the first N COCO-Stuff val2017 samples and the first N ADE20K validation ones, at
the network's processing size (its test size, the longer side at most 1024). For each threshold
it prints the queries kept (non-empty once binarised), the distinct masks among them, and the
share of CLIP passes saved (1 - distinct / kept, over all images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="a trained network: the output folder of `zsseg train proposals`, or a model_final.pth")
    parser.add_argument("--images", type=int, default=30, help="the first N images of each dataset (default 30)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.4, 0.3])
    args = parser.parse_args()

    from zsseg.classification.regions import distinct_masks
    from zsseg.data.images import read_image, resize_image
    from zsseg.proposals import MaskFormerProposals

    network = MaskFormerProposals(args.weights)
    sets = {"COCO-Stuff val2017": sorted((DATA / "coco" / "val2017").glob("*.jpg"))[: args.images],
            "ADE20K validation": sorted((DATA / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))[: args.images]}
    print(f"{args.weights}: {network.model.config.num_queries} queries")
    print("| dataset | threshold | images | queries kept (mean) | distinct (mean) | CLIP passes saved | images with a repeat |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, paths in sets.items():
        counts = {t: [0, 0, 0] for t in args.thresholds}  # kept, distinct, images with a repeat
        for path in paths:
            image = read_image(path)
            image = resize_image(image, network.proposal_size(*image.shape[:2], 1024))
            masks, _ = network.predict(image)
            for threshold in args.thresholds:
                binary = masks > threshold
                kept = binary[binary.flatten(1).any(dim=1)]
                distinct = len(distinct_masks(kept)[0])
                counts[threshold][0] += len(kept)
                counts[threshold][1] += distinct
                counts[threshold][2] += distinct < len(kept)
        for threshold, (kept, distinct, repeats) in counts.items():
            saved = f"{100 * (1 - distinct / kept):.1f}%" if kept else "no mask kept"
            print(f"| {name} | {threshold} | {len(paths)} | {kept / len(paths):.2f} | {distinct / len(paths):.2f} | {saved} | {repeats} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
