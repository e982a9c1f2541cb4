"""Train a small proxy CLIP on ground-truth segment crops, so that accuracy has a signal offline.

    python benchmarks/proxy_clip.py --output benchmarks/out/proxy-clip

Real CLIP weights cannot be had on these machines, and a random CLIP scores mIoU 0. This
script trains a small CLIP-format model here, on the labelled *train* samples in
`../shared/data` (COCO-Stuff train2017, all 171 classes, and CamVid train, 11 classes), and
saves it as a Hugging Face CLIP folder with CLIP's real tokenizer, so that `zsseg.load_clip`
and `--clip DIR` load it like any checkpoint. Its figures are proxy-CLIP figures: they say
whether the method works as a method, and are never comparable with the paper's.

- Crops: each ground-truth segment (one mask per class present, as `--proposals
  ground-truth`) through `zsseg.crop_regions`, exactly Eq. 1's crop. They are made once; each
  step applies a random resized crop (area 0.5-1, aspect 3/4-4/3) and a horizontal flip to
  them, with the background kept at the pixel mean.
- Text: each class name (a random synonym) in a random one of the 80 ImageNet templates,
  encoded by the model's own text tower every step.
- Loss: cross-entropy of the crops' image features against the prompted class embeddings of
  their dataset's vocabulary, scaled by a learned logit scale initialised as CLIP's (1/0.07)
  and capped at 100 as CLIP's.
- Held out: a seeded `--holdout` fraction of each dataset's train images is never trained on;
  its crops give the top-1 accuracy reported (through `RegionClassifier`, that is Eq. 1 with
  the 80-template averaged class embeddings, as `zsseg eval` does), beside chance.

Writes OUTPUT/ (the CLIP folder) and OUTPUT/training.json (settings, curve, accuracy).
Seeded: the same command and --threads give the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA, TOKENIZER  # noqa: E402  (where the real samples and the tokenizer are)

from zsseg import RegionClassifier, crop_regions, load_clip  # noqa: E402
from zsseg.models.loading import CLIP_MEAN, CLIP_STD  # noqa: E402
from zsseg.data.datasets import IGNORE, SegmentationDataset, load_dataset  # noqa: E402
from zsseg.data.images import image_tensor  # noqa: E402
from zsseg.prompts.encoding import IMAGENET_TEMPLATES  # noqa: E402
from zsseg.proposals import GroundTruthProposals  # noqa: E402
from zsseg.data.vocabulary import Vocabulary  # noqa: E402

DATASETS = ("coco-stuff", "camvid")  # train splits only
CLIP_LOGIT_SCALE_INIT = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class ModelSize:
    """The proxy's architecture: a ViT image tower and a transformer text tower."""

    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 192
    vision_layers: int = 4
    text_width: int = 128
    text_layers: int = 3
    heads: int = 4
    embed_dim: int = 128


def clip_config(size: ModelSize):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(hidden_size=size.text_width, intermediate_size=4 * size.text_width,
                         num_hidden_layers=size.text_layers, num_attention_heads=size.heads,
                         vocab_size=49408, max_position_embeddings=77,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=size.vision_width, intermediate_size=4 * size.vision_width,
                           num_hidden_layers=size.vision_layers, num_attention_heads=size.heads,
                           image_size=size.image_size, patch_size=size.patch_size),
        projection_dim=size.embed_dim,
        logit_scale_init_value=CLIP_LOGIT_SCALE_INIT,
    )


@dataclass
class Crops:
    """Eq. 1 crops of one dataset's ground-truth segments."""

    name: str
    vocabulary: Vocabulary
    pixels: torch.Tensor  # [N, 3, S, S] float16, normalised, background 0 (= the mean)
    labels: torch.Tensor  # [N] int64 class index
    images: int


def segment_crops(dataset: SegmentationDataset, indices: list[int], size: int) -> Crops:
    """One crop per (image, class present), made by `crop_regions` as Eq. 1 makes them."""
    generator = GroundTruthProposals(ignore_index=IGNORE)
    pixels, labels = [], []
    for index in indices:
        image, label = dataset.load_image(index), dataset.load_label(index)
        masks = generator.segments(label)
        classes = [int(c) for c in np.unique(label) if c >= 0]  # the order segments() uses
        crops, keep = crop_regions(image_tensor(image), masks, size, CLIP_MEAN, CLIP_STD)
        pixels.append(crops.half())
        labels.extend(c for c, k in zip(classes, keep.tolist()) if k)
    return Crops(dataset.name, dataset.vocabulary, torch.cat(pixels), torch.tensor(labels), len(indices))


def split_images(count: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, held-out) image indices."""
    order = np.random.default_rng(seed).permutation(count).tolist()
    cut = max(1, round(count * holdout)) if holdout > 0 else 0
    return sorted(order[cut:]), sorted(order[:cut])


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop (area 0.5-1, aspect 3/4-4/3) and horizontal flip of `[B, 3, S, S]`
    crops; what falls outside is 0, the pixel mean after normalising, as Eq. 1's background."""
    b = pixels.shape[0]
    u = torch.rand(b, 5, generator=generator)
    area = 0.5 + 0.5 * u[:, 0]
    aspect = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1])
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (1 - width) * (2 * u[:, 2] - 1)
    ty = (1 - height) * (2 * u[:, 3] - 1)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = height, ty
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def image_features(model, pixels: torch.Tensor) -> torch.Tensor:
    pooled = model.vision_model(pixel_values=pixels).pooler_output
    return F.normalize(model.visual_projection(pooled), dim=-1)


def text_features(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    pooled = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
    return F.normalize(model.text_projection(pooled), dim=-1)


def sampled_prompts(vocabulary: Vocabulary, rng: random.Random) -> list[str]:
    """One prompt per class: a random synonym in a random ImageNet template."""
    return [rng.choice(IMAGENET_TEMPLATES).format(rng.choice(synonyms)) for synonyms in vocabulary.classes]


def held_out_accuracy(classifier: RegionClassifier, crops: Crops) -> dict:
    """Top-1 accuracy of Eq. 1 (80-template class embeddings) on held-out crops, with chance."""
    text = classifier.embed_vocabulary(crops.vocabulary)
    features = classifier.encode_crops(crops.pixels.float())
    predicted = classifier.scores(features, text)[0].argmax(dim=1)
    counts = torch.bincount(crops.labels, minlength=len(crops.vocabulary))
    return {
        "crops": len(crops.labels),
        "images": crops.images,
        "top1": 100.0 * float((predicted == crops.labels).float().mean()),
        "chance_uniform": 100.0 / len(crops.vocabulary),
        "chance_majority": 100.0 * float(counts.max()) / len(crops.labels),
        "classes_present": int((counts > 0).sum()),
    }


def save(model, folder: Path, size: ModelSize) -> None:
    from transformers import CLIPImageProcessor, CLIPTokenizerFast

    model.save_pretrained(folder)
    CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt")).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": size.image_size}, crop_size={"height": size.image_size, "width": size.image_size},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(folder)


def evaluate_saved(folder: Path, held_out: list[Crops]) -> dict:
    """Held-out accuracy of the saved folder, loaded through `load_clip` as `zsseg eval` loads it."""
    classifier = RegionClassifier(load_clip(str(folder)))
    return {crops.name: held_out_accuracy(classifier, crops) for crops in held_out if len(crops.labels)}


def train(args: argparse.Namespace) -> dict:
    from transformers import CLIPModel, CLIPTokenizerFast

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = ModelSize(vision_width=args.vision_width, vision_layers=args.vision_layers,
                     text_width=args.text_width, text_layers=args.text_layers, embed_dim=args.embed_dim)
    started = time.perf_counter()
    train_crops, held_out = [], []
    for name in DATASETS:
        dataset = load_dataset(name, args.data_root, "train")
        count = len(dataset) if args.images is None else min(args.images, len(dataset))
        fit, keep_out = split_images(count, args.holdout, args.seed)
        train_crops.append(segment_crops(dataset, fit, size.image_size))
        held_out.append(segment_crops(dataset, keep_out, size.image_size))
        print(f"{name}: {len(fit)} train images ({len(train_crops[-1].labels)} crops), "
              f"{len(keep_out)} held out ({len(held_out[-1].labels)} crops)", flush=True)
    crop_seconds = time.perf_counter() - started

    model = CLIPModel(clip_config(size))
    tokenizer = CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt"))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    generator = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed)

    curve, window = [], []
    model.train()
    train_started = time.perf_counter()
    for step in range(1, args.steps + 1):
        prompts = [sampled_prompts(c.vocabulary, rng) for c in train_crops]
        text = text_features(model, tokenizer, [p for group in prompts for p in group])
        scale = model.logit_scale.exp()
        losses, offset = [], 0
        for crops, group in zip(train_crops, prompts):
            pick = torch.randint(len(crops.labels), (args.batch_size,), generator=generator)
            features = image_features(model, augment(crops.pixels[pick].float(), generator))
            logits = scale * features @ text[offset : offset + len(group)].T
            losses.append(F.cross_entropy(logits, crops.labels[pick]))
            offset += len(group)
        loss = sum(losses) / len(losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        window.append([float(x.detach()) for x in [loss] + losses])
        if step % args.log_every == 0 or step == args.steps:
            mean = np.mean(window, axis=0).tolist()
            entry = {"step": step, "loss": mean[0], **{f"loss_{c.name}": v for c, v in zip(train_crops, mean[1:])},
                     "logit_scale": float(model.logit_scale.detach().exp()), "lr": schedule.get_last_lr()[0],
                     "seconds": time.perf_counter() - train_started}
            curve.append(entry)
            window = []
            print(f"step {step}/{args.steps}: loss {entry['loss']:.3f} "
                  + " ".join(f"{c.name} {v:.3f}" for c, v in zip(train_crops, mean[1:]))
                  + f", scale {entry['logit_scale']:.1f}, {entry['seconds']:.0f} s", flush=True)
    train_seconds = time.perf_counter() - train_started

    model.eval()
    args.output.mkdir(parents=True, exist_ok=True)
    save(model, args.output, size)
    accuracy = evaluate_saved(args.output, held_out)
    for name, acc in accuracy.items():
        print(f"held-out {name}: top-1 {acc['top1']:.1f}% on {acc['crops']} crops of {acc['images']} images "
              f"({len(next(c for c in held_out if c.name == name).vocabulary)}-way; chance {acc['chance_uniform']:.1f}% "
              f"uniform, {acc['chance_majority']:.1f}% majority class)")
    result = {
        "command": " ".join(["python", "benchmarks/proxy_clip.py"] + sys.argv[1:]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": vars(size),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {c.name: {"train_images": c.images, "train_crops": len(c.labels)} for c in train_crops},
        "crop_seconds": crop_seconds,
        "train_seconds": train_seconds,
        "threads": torch.get_num_threads(),
        "curve": curve,
        "held_out": accuracy,
    }
    (args.output / "training.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output} (training {train_seconds / 60:.1f} min, crops {crop_seconds:.0f} s)")
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "out" / "proxy-clip",
                   help="CLIP folder to write (default benchmarks/out/proxy-clip, git-ignored)")
    p.add_argument("--data-root", type=Path, default=DATA, help="the real samples (default ../shared/data)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32, help="crops per dataset per step")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--holdout", type=float, default=0.15, help="fraction of each train split held out for accuracy")
    p.add_argument("--images", type=int, default=None, help="use only the first N train images of each dataset (tests)")
    p.add_argument("--vision-width", type=int, default=192)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (results depend on it; 1 is robust when the cores are shared)")
    return p


if __name__ == "__main__":
    train(parser().parse_args())
