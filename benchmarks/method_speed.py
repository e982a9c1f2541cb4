"""Seconds per image of each method of `Segmenter`, with a full-size CLIP ViT-B/16, in one run.

Random weights (real ones cannot be downloaded here) give the same timings as trained ones. The
CLIP is saved with its real tokenizer and loaded through `zsseg.load_clip`; the FCN is the
`paper` config (ResNet-101 + FPN) with random weights, saved and loaded as `zsseg train fcn`
writes it. Images are real COCO-Stuff val2017 samples; vocabulary COCO-Stuff's 171 classes
(text encoded once before timing, as the cache does). Each method segments the same images:

- two-stage, Selective Search K=100 (Eq. 1 on each proposal: the faithful path, the baseline);
- fast, the same proposals, mask pooling of dense CLIP (at most two 224 windows);
- dense-clip, plain and SCLIP, sliding 224 windows (overlap 2/3) at --max-size;
- fcn (the network alone, and its ensemble with dense CLIP).

    python benchmarks/method_speed.py --images 2
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
from stage_timing import save_vit_b16  # noqa: E402


def save_random_fcn(folder: Path, clip) -> None:
    """The `paper` FCN with random weights, written as `zsseg train fcn` writes it."""
    from dataclasses import asdict, replace

    from zsseg.networks.fcn import FCN_FILES, build_fcn
    from zsseg.training.recipes import load_recipe
    from zsseg.networks.maskformer.weights import save_network
    from zsseg.prompts.encoding import PromptEncoder, load_prompt
    from zsseg.data.vocabulary import Vocabulary

    config = load_recipe("fcn", "paper")
    model = build_fcn(replace(config.model, embed_dim=clip.embed_dim), seed=0)
    prompt = load_prompt("single")
    names = Vocabulary.preset("coco-stuff-171")
    text = PromptEncoder(clip, prompt, cache=False).encode_vocabulary(names)
    info = {"clip": clip.source, "dataset": "coco-stuff", "protocol": "cross-dataset", "steps": 0, "train": asdict(config.train)}
    folder.mkdir(parents=True, exist_ok=True)
    save_network(folder, FCN_FILES, model, asdict(model.config), text, names.names, info, prompt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2, help="COCO-Stuff val2017 images (default 2)")
    parser.add_argument("--max-size", type=int, default=1024, help="processing size, longer side (default 1024, zsseg's)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from zsseg import Segmenter, load_clip
    from zsseg.data.images import read_image
    from zsseg.proposals import build_proposal_generator
    from zsseg.data.vocabulary import Vocabulary

    images = [read_image(p) for p in sorted((DATA / "coco" / "val2017").glob("*.jpg"))[: args.images]]
    vocabulary = Vocabulary.preset("coco-stuff-171")
    with tempfile.TemporaryDirectory() as tmp:
        save_vit_b16(Path(tmp) / "clip")
        clip = load_clip(str(Path(tmp) / "clip"))
        save_random_fcn(Path(tmp) / "fcn", clip)
        proposals = build_proposal_generator("selective-search", max_proposals=100)
        methods = {
            "two-stage, Selective Search K=100 (Eq. 1)": dict(proposals=proposals),
            "fast, Selective Search K=100 (mask pooling)": dict(proposals=proposals, method="fast"),
            "dense-clip, plain": dict(method="dense-clip"),
            "dense-clip, sclip": dict(method="dense-clip", dense_mode="sclip"),
            "fcn alone (R101 + FPN)": dict(method="fcn", fcn=Path(tmp) / "fcn", classifier="network"),
            "fcn + dense CLIP ensemble": dict(method="fcn", fcn=Path(tmp) / "fcn"),
        }
        rows = []
        for name, options in methods.items():
            segmenter = Segmenter(clip=clip, prompt="single", max_size=args.max_size, **options)
            segmenter.prepare(vocabulary)  # text encoding is paid once per vocabulary: not timed
            windows = segmenter.dense.forwards
            started = time.perf_counter()
            stages: dict[str, float] = {}
            for image in images:
                result = segmenter.segment(image, vocabulary)
                for stage, seconds in result.timings.items():
                    stages[stage] = stages.get(stage, 0.0) + seconds / len(images)
            seconds = (time.perf_counter() - started) / len(images)
            rows.append((name, seconds, (segmenter.dense.forwards - windows) / len(images), stages))
            print(f"{name}: {seconds:.2f} s/image", flush=True)
    baseline = rows[0][1]
    print(f"\n{len(images)} COCO-Stuff val2017 images, max size {args.max_size}, {torch.get_num_threads()} threads, "
          f"ViT-B/16 (random weights), 171 classes\n")
    print("| method | s / image | speed-up over two-stage | dense CLIP windows / image | largest stages (s / image) |")
    print("|---|---:|---:|---:|---|")
    for name, seconds, windows, stages in rows:
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])[:3])
        print(f"| {name} | {seconds:.2f} | {baseline / seconds:.1f}x | {windows:g} | {top} |")


if __name__ == "__main__":
    main()
