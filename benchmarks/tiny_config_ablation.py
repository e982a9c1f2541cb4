"""Why the `tiny` config has 20 queries: the runs behind docs/training.md's figures.

    python benchmarks/tiny_clip.py /tmp/tclip
    python benchmarks/tiny_config_ablation.py --variant q100-lr3e-4 --clip /tmp/tclip --output-dir runs/q100 --threads 2
    python benchmarks/tiny_config_ablation.py --variant q20-lr1e-3 --clip /tmp/tclip --output-dir runs/q20 --threads 1

Each variant is the `tiny` config with the overrides below, trained zero-shot on the 100
COCO-Stuff train2017 samples, then scored with the oracle on the first --limit COCO-Stuff val
images, beside the same network before training. Float results depend on the thread count, so
give the same --threads to reproduce a figure exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA  # noqa: E402  (where the real samples and the tokenizer are)
from maskformer_proposals import untrained_copy  # noqa: E402

from zsseg import load_clip  # noqa: E402
from zsseg.data.datasets import load_dataset  # noqa: E402
from zsseg.evaluation.predictors import OraclePredictor  # noqa: E402
from zsseg.evaluation.runner import evaluate_predictor  # noqa: E402
from zsseg.training.recipes import load_recipe  # noqa: E402
from zsseg.training.proposals import train_proposals  # noqa: E402
from zsseg.proposals import MaskFormerProposals  # noqa: E402

VARIANTS = {
    # (model overrides, training overrides, val images scored)
    "q100-lr3e-4": ({"num_queries": 100, "dropout": 0.1},
                    {"max_iters": 2000, "crop_size": 192, "lr": 3e-4, "checkpoint_every": 200}, 30),
    "q20-lr3e-4": ({}, {"max_iters": 1000, "lr": 3e-4, "checkpoint_every": 1000}, 15),
    "q20-lr1e-3": ({}, {"max_iters": 1000, "checkpoint_every": 1000}, 15),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, choices=list(VARIANTS))
    parser.add_argument("--clip", required=True, help="CLIP folder (benchmarks/tiny_clip.py makes one)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, train, limit = VARIANTS[args.variant]
    config = load_recipe("proposals", "tiny")
    config = replace(config, model=replace(config.model, **model), train=replace(config.train, **train))
    train_proposals(load_dataset("coco-stuff", DATA, "train"), config, load_clip(args.clip), args.output_dir, "zero-shot", progress=False)

    log = [json.loads(line) for line in (args.output_dir / "log.jsonl").read_text().splitlines()]
    fifth = len(log) // 5
    for i in range(5):
        chunk = log[i * fifth : (i + 1) * fifth]
        print(f"steps {chunk[0]['step']}-{chunk[-1]['step']}: loss {sum(e['loss'] for e in chunk) / len(chunk):.3f}, "
              f"dice {sum(e['dice'] for e in chunk) / len(chunk):.3f}")
    val = load_dataset("coco-stuff", DATA, "val")
    with tempfile.TemporaryDirectory() as tmp:
        for name, weights in {"untrained": untrained_copy(args.output_dir, Path(tmp)), "trained": args.output_dir}.items():
            report = evaluate_predictor(val, OraclePredictor(MaskFormerProposals(weights), val.num_classes, 1024), limit=limit, progress=False)
            print(f"{args.variant} {name}: oracle mIoU {report.metrics.mIoU:.2f}, pAcc {report.metrics.pAcc:.2f} "
                  f"(first {limit} COCO-Stuff val images)")


if __name__ == "__main__":
    main()
