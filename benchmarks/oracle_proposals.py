"""Oracle mIoU of the training-free proposal generators at several proposal counts K.

The paper's Table 5/6 question, asked on the real benchmark samples in ../shared/data: how good
are proposals that nobody trained? Each proposal takes the ground-truth class it overlaps most
(`zsseg.evaluation.runner.OraclePredictor`), so the score measures the masks alone; no CLIP is used.

    python benchmarks/oracle_proposals.py --counts 10 25 50 100 200

Generators return their masks best first, and keeping the first K of the K_max list is exactly
what the generator returns with max_proposals=K (duplicate removal is greedy in rank order), so
each image's proposals are made once and scored at every K. Any cell equals
`zsseg eval --dataset D --oracle --proposals G --max-proposals K`. The time per image is
proposal generation plus oracle scoring at K_max, on one process.
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
from zsseg.evaluation.predictors import OraclePredictor, oracle_labels  # noqa: E402
from zsseg.evaluation.metrics import ConfusionMatrix, compute_metrics  # noqa: E402
from zsseg.proposals import build_proposal_generator  # noqa: E402
from zsseg.catalogue import DEFAULT_MAX_SIZE  # noqa: E402

DEFAULT_SETS = ["coco-stuff:val", "ade20k-150:val", "cityscapes:train", "camvid:val"]


def score(dataset, generator_name: str, counts: list[int], limit: int | None, max_size: int) -> tuple[dict[int, float], float, int]:
    oracle = OraclePredictor(build_proposal_generator(generator_name, max_proposals=max(counts)), dataset.num_classes, max_size)
    matrices = {k: ConfusionMatrix(dataset.num_classes) for k in counts}
    n = len(dataset) if limit is None else min(limit, len(dataset))
    busy = 0.0
    for index in range(n):
        image, label = dataset.load_image(index), dataset.load_label(index)
        clock = time.perf_counter()
        masks, small_label = oracle.propose(image, label)
        predictions = {k: oracle_labels(masks[:k], small_label, dataset.num_classes, label.shape) for k in counts}
        busy += time.perf_counter() - clock
        for k, prediction in predictions.items():
            matrices[k].update(label, prediction)
        print(f"  {dataset.name} {generator_name} {index + 1}/{n}", file=sys.stderr, end="\r")
    return {k: compute_metrics(m).mIoU for k, m in matrices.items()}, busy / n, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--sets", nargs="+", default=DEFAULT_SETS, help="DATASET:SPLIT pairs")
    parser.add_argument("--generators", nargs="+", default=["selective-search", "contour-hierarchy"])
    parser.add_argument("--counts", nargs="+", type=int, default=[10, 25, 50, 100, 200])
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set")
    parser.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE)
    args = parser.parse_args()
    counts = sorted(set(args.counts))

    header = "| dataset | images | generator | " + " | ".join(f"K={k}" for k in counts) + " | s / image |"
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for entry in args.sets:
        name, _, split = entry.partition(":")
        dataset = load_dataset(name, args.data_root, split or "val")
        for generator in args.generators:
            mious, seconds, n = score(dataset, generator, counts, args.limit, args.max_size)
            cells = " | ".join(f"{mious[k]:.1f}" for k in counts)
            rows.append(f"| {name} {dataset.split} | {n} | {generator} | {cells} | {seconds:.1f} |")
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
