"""How far bf16 and int8 CLIP move zsseg's labels from fp32: the share of pixels with the same
label, and the mIoU of each, on CamVid val (the shared samples), with ground-truth proposals
(Eq. 1 on the true segments: the classifier alone) and with Selective Search (K=100).

    python benchmarks/proxy_clip.py --output benchmarks/out/proxy-clip    # a trained CLIP (about 11 min)
    python benchmarks/precision_agreement.py --clip benchmarks/out/proxy-clip --tower
    python benchmarks/precision_agreement.py --tower-only --precisions int8   # the tower alone, int8 with and without its fold

A random CLIP's labels carry no signal, so agreement needs a trained model: the proxy CLIP
(benchmarks/proxy_clip.py). Its figures are proxy-CLIP figures, never comparable with the
paper's. CPU seconds are per image, for the whole `Segmenter.segment` (proposals included); on a
CPU without native bf16, bf16 is emulated and slow: its time says nothing of a CPU with AMX.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA  # noqa: E402

from zsseg import Segmenter, load_clip  # noqa: E402
from zsseg.models.precision import native_bf16  # noqa: E402
from zsseg.data.datasets import load_dataset  # noqa: E402
from zsseg.evaluation.metrics import ConfusionMatrix  # noqa: E402


def tower_speed(precisions: list[str], crops: int = 32, repeats: int = 2, unfolded: bool = False) -> None:
    """CPU-ms per crop of a full-size CLIP ViT-B/16 image tower (random weights: time does not
    depend on them) in fp32 and each precision, with the cosine of its embeddings to fp32's.
    `unfolded`: also int8 without `fold_quick_gelu` (what `--dtype int8` did before it)."""
    import tempfile

    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast

    from samples import TOKENIZER
    from zsseg.models.int8 import quantise_linears

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        CLIPModel(CLIPConfig(vision_config=dict(patch_size=16, image_size=224))).save_pretrained(folder)
        CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt")).save_pretrained(folder)
        pixels = torch.randn(crops, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        reference = baseline = None
        print(f"ViT-B/16 image tower, batches of {crops} crops, {torch.get_num_threads()} torch threads")
        for precision in ["fp32", *precisions, *(["int8-unfolded"] if unfolded else [])]:
            if precision == "int8-unfolded":
                clip = load_clip(folder)
                quantise_linears(clip.image_tower())  # int8 without fold_quick_gelu
            else:
                clip = load_clip(folder, dtype=precision)
            clip.encode_images(pixels[:4])  # warm-up
            start = time.process_time()
            for _ in range(repeats):
                features = clip.encode_images(pixels)
            per_crop = 1000 * (time.process_time() - start) / repeats / crops
            reference = features if reference is None else reference
            baseline = baseline or per_crop  # fp32 comes first
            cosine = float((features * reference).sum(dim=-1).min())
            print(f"  {precision:13s} {per_crop:7.0f} CPU-ms/crop  {baseline / per_crop:5.2f}x  min cosine to fp32 {cosine:.5f}", flush=True)


def run(clip_folder: Path, precision: str, proposals: str, dataset, count: int) -> tuple[list[np.ndarray], float, float]:
    """Label maps of the first `count` images, CPU seconds per image, and mIoU (%)."""
    clip = load_clip(str(clip_folder), dtype=precision)
    segmenter = Segmenter(clip=clip, proposals=proposals, max_proposals=100, text_cache=False)
    labels, confusion = [], ConfusionMatrix(dataset.num_classes)
    segmenter.prepare(dataset.vocabulary)
    truth = dataset.load_label(0)  # warm-up: the first pass pays one-time costs (kernel selection, allocations)
    segmenter.segment(dataset.load_image(0), dataset.vocabulary, ground_truth=truth if proposals == "ground-truth" else None)
    start = time.process_time()
    for index in range(count):
        truth = dataset.load_label(index)
        result = segmenter.segment(dataset.load_image(index), dataset.vocabulary,
                                   ground_truth=truth if proposals == "ground-truth" else None)
        labels.append(result.label_map)
        confusion.update(truth, result.label_map)
    seconds = (time.process_time() - start) / count
    counts = confusion.counts
    tp = np.diag(counts[:, : dataset.num_classes]).astype(float)
    union = counts.sum(axis=1) + counts[:, : dataset.num_classes].sum(axis=0) - tp
    present = counts.sum(axis=1) > 0
    return labels, seconds, float(100 * (tp[present] / union[present]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=None, help="a trained CLIP folder (the proxy CLIP; needed unless --tower-only)")
    parser.add_argument("--images", type=int, default=20, help="the first N CamVid val images (default 20)")
    parser.add_argument("--precisions", nargs="+", default=["int8", "bf16"])
    parser.add_argument("--proposals", nargs="+", default=["ground-truth", "selective-search"])
    parser.add_argument("--tower", action="store_true", help="also time a full-size ViT-B/16 image tower in each precision")
    parser.add_argument("--tower-only", action="store_true",
                        help="time the tower (with int8 also without its quick-GELU fold) and stop: no CamVid, no --clip needed")
    args = parser.parse_args()
    if args.tower or args.tower_only:
        tower_speed([p for p in args.precisions if p != "bf16" or native_bf16()], unfolded=args.tower_only)
    if args.tower_only:
        return
    if args.clip is None:
        parser.error("--clip is needed (a trained CLIP folder such as the proxy CLIP), unless --tower-only")
    dataset = load_dataset("camvid", DATA, "val")
    count = min(args.images, len(dataset))
    print(f"CamVid val, first {count} images; proxy CLIP {args.clip}; this CPU has native bf16: {native_bf16()}")
    print(f"{'proposals':17s} {'precision':9s} {'same label':>10s} {'mIoU':>6s} {'fp32 mIoU':>9s} {'CPU s/img':>9s} {'vs fp32':>7s}")
    for proposals in args.proposals:
        reference, reference_seconds, reference_miou = run(args.clip, "fp32", proposals, dataset, count)
        print(f"{proposals:17s} {'fp32':9s} {100.0:9.2f}% {reference_miou:6.2f} {reference_miou:9.2f} {reference_seconds:9.2f} {1.0:6.2f}x")
        for precision in args.precisions:
            labels, seconds, miou = run(args.clip, precision, proposals, dataset, count)
            same = sum(int((a == b).sum()) for a, b in zip(labels, reference)) / sum(a.size for a in reference)
            print(f"{proposals:17s} {precision:9s} {100 * same:9.2f}% {miou:6.2f} {reference_miou:9.2f} {seconds:9.2f} "
                  f"{reference_seconds / seconds:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
