"""Images per second of a training data stream alone (reading, augmentation, targets), through
the same DataLoader as `zsseg train`, with 0 and N worker processes.

    python benchmarks/data_stream.py --config paper --workers 0 2 --steps 12 --batch-size 4
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from samples import DATA  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper", help="named proposal config (default paper)")
    parser.add_argument("--dataset", default="coco-stuff")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    from zsseg.data.datasets import load_dataset, training_classes
    from zsseg.runs.distributed import Distributed
    from zsseg.training.recipes import load_recipe
    from zsseg.training.proposal_data import Augmentation, TrainingSamples
    from zsseg.training.loop import LoopSettings, step_batches

    train = load_recipe("proposals", args.config).train
    dataset = load_dataset(args.dataset, args.data_root, "train")
    samples = TrainingSamples(dataset, training_classes(dataset, "zero-shot"), Augmentation(
        train.crop_size, train.train_min_sizes, train.train_max_size, train.color_aug, train.flip), train.seed)
    print(f"{args.config} stream of {dataset.name} train ({len(samples.kept)} images), {train.crop_size} crops, "
          f"batch {args.batch_size}, {args.steps} steps")
    for workers in args.workers:
        settings = LoopSettings(args.steps, args.batch_size, 0.0, 1, 1, 0, workers=workers)
        started = time.perf_counter()
        count = sum(len(batch[1]) for batch in step_batches(samples, settings, 0, Distributed(), pin=False))
        seconds = time.perf_counter() - started
        print(f"workers {workers}: {count / seconds:.2f} images/s ({count} images in {seconds:.1f} s, start-up included)")


if __name__ == "__main__":
    main()
