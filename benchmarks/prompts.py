"""How well each prompt classifies ground-truth segments, seen and unseen, on train and val.

    python benchmarks/prompts.py --clip benchmarks/out/proxy-clip \\
        --prompts imagenet "a sculpture of a {}." benchmarks/out/prompts/best-template.json benchmarks/out/prompts/learned

A finer instrument than mIoU for comparing prompts: every (image, class) ground-truth segment is
cropped as Eq. 1 crops a proposal and encoded once per split; each prompt then classifies all
of them over the dataset's full vocabulary (as `zsseg eval` does), and the mean class accuracy
is reported over the seen and over the unseen classes. Comparing a learned prompt's gain on the
train split's seen classes (where it was fitted) with its gain on val, and on unseen classes,
shows whether it overfits. Train-split figures are a diagnostic, never a result.

`--training-stream N` also classifies the first N crops of `zsseg train prompts`' own training
stream (its `cpu` config: sampled per class, augmented), over the training classes, as the
loss sees them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def mean_class_accuracy(right: torch.Tensor, targets: torch.Tensor, classes: set[int]) -> float | None:
    present = [c for c in targets.unique().tolist() if c in classes]
    if not present:
        return None
    return 100 * sum(float(right[targets == c].mean()) for c in present) / len(present)


def main(argv: list[str] | None = None) -> dict:
    from zsseg import load_clip
    from zsseg.data.datasets import load_dataset
    from zsseg.prompts.selection import segment_features
    from zsseg.prompts.encoding import PromptEncoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--prompts", nargs="+", required=True)
    parser.add_argument("--dataset", default="coco-stuff")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--protocol", default=None, help="for --training-stream (default: zero-shot where the dataset has a split)")
    parser.add_argument("--training-stream", type=int, default=0, metavar="N")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "out" / "prompts" / "segment-accuracy.json")
    args = parser.parse_args(argv)

    clip = load_clip(args.clip)
    rows = []
    for split in args.splits:
        dataset = load_dataset(args.dataset, args.data_root, split)
        unseen = set(dataset.unseen)
        seen = set(range(dataset.num_classes)) - unseen
        features, targets = segment_features(dataset, clip, list(range(dataset.num_classes)), progress=False)
        for prompt in args.prompts:
            text = PromptEncoder(clip, prompt).encode_vocabulary(dataset.vocabulary)
            right = (text.class_logits(features, 100.0).argmax(dim=1) == targets).float()
            rows.append({"split": split, "prompt": prompt, "segments": len(targets),
                         "accuracy": 100 * float(right.mean()),
                         "seen_mean_class_accuracy": mean_class_accuracy(right, targets, seen),
                         "unseen_mean_class_accuracy": mean_class_accuracy(right, targets, unseen)})
    if args.training_stream:
        rows += training_stream_rows(clip, args)
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"proxy-CLIP figures if --clip is the proxy; {args.dataset}, segments classified over all {dataset.num_classes} classes")
    print("| split | prompt | segments | accuracy | mean class acc (seen) | mean class acc (unseen) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        if r["split"] == "training stream":
            print(f"| training stream ({r['protocol']}) | {r['prompt']} | {r['segments']} | {r['accuracy']:.2f} | | |")
            continue
        print(f"| {r['split']} | {r['prompt']} | {r['segments']} | {r['accuracy']:.2f} | "
              f"{fmt(r['seen_mean_class_accuracy'])} | {fmt(r['unseen_mean_class_accuracy'])} |")
    result = {"command": " ".join(["python", "benchmarks/prompts.py"] + (argv if argv is not None else sys.argv[1:])), "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def training_stream_rows(clip, args: argparse.Namespace) -> list[dict]:
    """Accuracy of each prompt on the first N augmented crops that prompt learning trains on."""
    from zsseg.data.datasets import load_dataset
    from zsseg.training.prompt_learning import PromptTask
    from zsseg.training.recipes import load_recipe
    from zsseg.prompts.encoding import PromptEncoder

    dataset = load_dataset(args.dataset, args.data_root, "train")
    protocol = args.protocol or ("zero-shot" if dataset.unseen else "cross-dataset")
    task = PromptTask(dataset, load_recipe("prompts", "cpu"), clip, protocol, torch.device("cpu"), progress=False)
    crops, targets = task.data.batch(list(range(args.training_stream)))
    features = clip.encode_images(crops)
    rows = []
    for prompt in args.prompts:
        text = PromptEncoder(clip, prompt).encode_vocabulary(task.vocabulary)
        right = (text.class_logits(features, 100.0).argmax(dim=1) == targets).float()
        rows.append({"split": "training stream", "protocol": protocol, "prompt": prompt, "segments": len(targets),
                     "accuracy": 100 * float(right.mean()), "seen_mean_class_accuracy": None, "unseen_mean_class_accuracy": None})
    return rows


if __name__ == "__main__":
    main()
