"""Oracle mIoU of the learned proposals before and after training, and the training loss curve.

    zsseg train proposals --dataset coco-stuff --data-root ../shared/data --protocol zero-shot \\
        --config tiny --clip CLIP --output-dir runs/tiny-coco
    python benchmarks/maskformer_proposals.py --run runs/tiny-coco

"Before" is the network the run started from: the same config and seed, no training step
(written to a temporary folder through the same `save_proposals` path). Both are scored with
the oracle (`zsseg.evaluation.runner.OraclePredictor`: each proposal takes the ground-truth class it
overlaps most), on the first --limit images of each set, so the numbers sit beside the
training-free generators' in docs/benchmarks.md (same images, same protocol).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA  # noqa: E402  (where the real samples and the tokenizer are)

from zsseg.data.datasets import load_dataset  # noqa: E402
from zsseg.evaluation.predictors import OraclePredictor  # noqa: E402
from zsseg.evaluation.runner import evaluate_predictor  # noqa: E402
from zsseg.networks.maskformer.model import build_model  # noqa: E402
from zsseg.networks.maskformer.weights import load_proposals, save_proposals  # noqa: E402
from zsseg.proposals import MaskFormerProposals  # noqa: E402


def untrained_copy(run: Path, folder: Path) -> Path:
    """The run's starting network, saved like a trained one."""
    trained = load_proposals(run)
    start = build_model(trained.model.config, seed=int(trained.info["train"]["seed"]))
    if trained.info.get("backbone_weights"):
        print(f"note: the run started from backbone weights {trained.info['backbone_weights']}; "
              "'before' here is the random-init network", file=sys.stderr)
    save_proposals(folder, start, trained.train_text, trained.class_names, trained.info)
    return folder


def loss_curve(run: Path, every: int) -> list[dict]:
    """Mean loss terms over each block of `every` steps of the run's log."""
    groups: dict[int, list[dict]] = {}
    for entry in map(json.loads, (run / "log.jsonl").read_text().splitlines()):
        groups.setdefault((entry["step"] - 1) // every, []).append(entry)
    return [
        {"steps": f"{block * every + 1}-{entries[-1]['step']}",
         **{key: sum(e[key] for e in entries) / len(entries) for key in ("loss", "ce", "focal", "dice")}}
        for block, entries in sorted(groups.items())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="--output-dir of `zsseg train proposals`")
    parser.add_argument("--sets", nargs="+", default=["coco-stuff:val", "ade20k-150:val"])
    parser.add_argument("--limit", type=int, default=30, help="images per set (default 30, as the training-free table)")
    parser.add_argument("--max-size", type=int, default=1024)
    parser.add_argument("--curve-every", type=int, default=100, help="steps per row of the loss curve")
    args = parser.parse_args()

    print(f"loss curve of {args.run} (mean of the logged steps, weighted terms unscaled):")
    print(f"{'steps':>10s} {'loss':>8s} {'ce':>7s} {'focal':>7s} {'dice':>7s}")
    for row in loss_curve(args.run, args.curve_every):
        print(f"{row['steps']:>10s} {row['loss']:8.3f} {row['ce']:7.3f} {row['focal']:7.4f} {row['dice']:7.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        networks = {"untrained": untrained_copy(args.run, Path(tmp)), "trained": args.run}
        print(f"\noracle mIoU, first {args.limit} images per set, every query a proposal:")
        print(f"{'set':18s} {'network':10s} {'mIoU':>6s} {'pAcc':>6s} {'s/img':>6s}")
        for spec in args.sets:
            name, split = spec.split(":")
            dataset = load_dataset(name, DATA, split)
            for label, weights in networks.items():
                predictor = OraclePredictor(MaskFormerProposals(weights), dataset.num_classes, args.max_size)
                start = time.perf_counter()
                report = evaluate_predictor(dataset, predictor, limit=args.limit, progress=False)
                seconds = (time.perf_counter() - start) / report.num_images
                print(f"{spec:18s} {label:10s} {report.metrics.mIoU:6.2f} {report.metrics.pAcc:6.2f} {seconds:6.2f}", flush=True)


if __name__ == "__main__":
    main()
