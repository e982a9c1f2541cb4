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

`--whole-process` times what a user pays instead: `zsseg segment --method fast` and `--method
two-stage` (Selective Search K=100, the default `--dtype auto`) as fresh processes, from start
to exit, on one image and on a folder of `--folder-images` images, with the text features
already cached (a second run, as every run after a machine's first). CPU time (user + sys) and
peak memory come from `wait4`; rounds alternate the runs (and `--base`, an earlier revision
run beside this checkout), and the table gives medians:

    python benchmarks/method_speed.py --whole-process --rounds 3 --base fab7252
"""

from __future__ import annotations

import argparse
import statistics
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


def whole_process(args) -> None:
    """fast against two-stage as fresh `zsseg segment` processes (see the module's docstring)."""
    from checkpoint_speed import timed_run
    from same_outputs import extract

    ade = sorted((DATA / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))
    single = DATA / "ADEChallengeData2016" / "images" / "validation" / args.image
    folder = ade[: args.folder_images]
    work = Path(tempfile.mkdtemp(prefix="method-process-"))
    save_vit_b16(work / "clip")
    sources = {"this checkout": None}
    if args.base:
        sources[args.base] = extract(args.base, work / f"base-{args.base}")
    inputs = {"1 image": [single], f"{len(folder)} images": folder}
    runs = [(name, method, count) for name in sources for count in inputs for method in ("fast", "two-stage")]

    def command(method: str, images: list[Path], out: Path) -> list[str]:
        return ["segment", *map(str, images), "--clip", str(work / "clip"), "--vocabulary", "ade20k-150", "--method", method,
                "--out", str(out), "--overwrite"]

    for name, source in sources.items():  # fill each revision's text cache: the timed runs find it warm
        timed_run(source, command("fast", [single], work / "warm"), work / f"cache-{name.replace(' ', '-')}")
    results: dict[tuple, list[tuple[float, float, float]]] = {run: [] for run in runs}
    for round_ in range(args.rounds):
        for name, method, count in runs if round_ % 2 == 0 else runs[::-1]:
            out = work / "out" / f"{name.replace(' ', '-')}-{method}-{count.replace(' ', '-')}"
            cpu, wall, rss, code = timed_run(sources[name], command(method, inputs[count], out), work / f"cache-{name.replace(' ', '-')}")
            if code == 0:
                results[(name, method, count)].append((cpu, wall, rss))
            print(f"round {round_ + 1}: {name}, {method}, {count}: {cpu:.1f} CPU-s, {wall:.1f} s, {rss:.2f} GB", flush=True)

    print(f"\nwhole processes, medians of {args.rounds} rounds; CPU = user + sys; ViT-B/16 (random weights), ade20k-150 "
          f"(text cached), Selective Search K=100, --dtype auto, {single.name} and the first {len(folder)} ADE20K samples\n")
    print("| code | images | fast: CPU-s / wall s / peak GB | two-stage: CPU-s / wall s / peak GB | two-stage / fast (CPU) |")
    print("|---|---|---:|---:|---:|")
    for name in sources:
        for count in inputs:
            cells, cpus = [], []
            for method in ("fast", "two-stage"):
                done = results[(name, method, count)]
                if not done:
                    cells.append("failed")
                    continue
                cpu, wall, rss = (statistics.median(r[i] for r in done) for i in range(3))
                cpus.append(cpu)
                cells.append(f"{cpu:.1f} / {wall:.1f} / {rss:.2f}")
            ratio = f"{cpus[1] / cpus[0]:.1f}x" if len(cpus) == 2 else ""
            print(f"| {name} | {count} | {cells[0]} | {cells[1]} | {ratio} |")
    print(f"\noutputs in {work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2, help="COCO-Stuff val2017 images (default 2)")
    parser.add_argument("--max-size", type=int, default=1024, help="processing size, longer side (default 1024, zsseg's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--whole-process", action="store_true", help="time fresh `zsseg segment` processes instead (fast, two-stage)")
    parser.add_argument("--image", default="ADE_val_00000123.jpg", help="--whole-process: the one image (ADE20K validation)")
    parser.add_argument("--folder-images", type=int, default=8, help="--whole-process: the folder's images (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="--whole-process: rounds (default 3)")
    parser.add_argument("--base", default=None, help="--whole-process: an earlier revision to run beside this checkout")
    args = parser.parse_args()
    if args.whole_process:
        return whole_process(args)
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
