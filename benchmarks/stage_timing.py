"""Seconds per image spent in each stage of `zsseg segment`, with a full-size CLIP ViT-B/16.

Random weights (real ones cannot be downloaded here) give the same timings as trained ones.
The model is saved with CLIP's real tokenizer and loaded through `zsseg.load_clip`, the path
users take. Images are real benchmark samples from ../shared/data.

    python benchmarks/stage_timing.py --images 3 --dtypes fp32 bf16

Text encoding is paid once per vocabulary (then cached) and is reported apart.
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

from samples import DATA, TOKENIZER  # noqa: E402  (where the real samples and the tokenizer are)

STAGES = ["image_loading", "proposals", "crops", "image_encoding", "assembly", "writing"]


def save_vit_b16(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast

    config = CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16),
        projection_dim=512,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt")).save_pretrained(folder)


def real_images(count: int) -> list[Path]:
    pools = [sorted((DATA / "coco" / "val2017").glob("*.jpg")), sorted((DATA / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))]
    picked = []
    while len(picked) < count and any(pools):
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(pool.pop(0))
    return picked


def main() -> None:
    from zsseg import Segmenter, Vocabulary, load_clip
    from zsseg.data.images import read_image
    from zsseg.outputs.writers import write_outputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--proposals", default="selective-search")
    parser.add_argument("--max-proposals", type=int, default=100)
    parser.add_argument("--vocabulary", default="voc-20")
    parser.add_argument("--prompt", default="imagenet")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    images = real_images(args.images)
    vocabulary = Vocabulary.preset(args.vocabulary)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{len(images)} real images, proposals={args.proposals} (K<={args.max_proposals}), "
          f"vocabulary={args.vocabulary} ({len(vocabulary)} classes), prompt={args.prompt}")
    with tempfile.TemporaryDirectory() as tmp:
        save_vit_b16(Path(tmp) / "clip")
        for dtype in args.dtypes:
            clip = load_clip(str(Path(tmp) / "clip"), device=args.device, dtype=dtype)
            segmenter = Segmenter(clip=clip, proposals=args.proposals, prompt=args.prompt, max_proposals=args.max_proposals,
                                  text_cache=False)  # text encoding is measured, not read back
            start = time.perf_counter()
            segmenter.prepare(vocabulary)
            text_seconds = time.perf_counter() - start
            totals = dict.fromkeys(STAGES, 0.0)
            crops = 0
            for path in images:
                start = time.perf_counter()
                image = read_image(path)
                totals["image_loading"] += time.perf_counter() - start
                result = segmenter.segment(image, vocabulary)
                for stage in STAGES:
                    totals[stage] += result.timings.get(stage, 0.0)
                crops += len(result.masks)
                start = time.perf_counter()
                write_outputs(Path(tmp), path.stem, image, result.label_map, result.class_names, str(path))
                totals["writing"] += time.perf_counter() - start
            whole = sum(totals.values())
            print(f"\n== ViT-B/16 {dtype}: text encoding {text_seconds:.1f} s once for "
                  f"{len(vocabulary)} classes, prompt {args.prompt}; "
                  f"{crops / len(images):.0f} crops per image")
            print(f"{'stage':16s} {'s/image':>9s} {'share':>7s}")
            for stage in STAGES:
                print(f"{stage:16s} {totals[stage] / len(images):9.3f} {100 * totals[stage] / whole:6.1f}%")
            print(f"{'total':16s} {whole / len(images):9.3f}")
            print(f"CLIP image encoding: {crops / max(totals['image_encoding'], 1e-9):.1f} crops/s")


if __name__ == "__main__":
    main()
