"""The body of benchmarks/gpu_check.sh (which first checks that CUDA is there): each CUDA path
of zsseg, timed, then one table.

1. the tests marked `cuda`;
2. `zsseg segment --device cuda --dtype bf16`, once per method (two-stage with the network
   trained in 3, fast, dense-clip, fcn with a 20-step FCN), on two real images;
3. 50 steps of `zsseg train proposals --config paper` at batch 8 on COCO-Stuff's samples
   (random backbone: no download), 4 workers, its step time from log.jsonl;
4. `zsseg eval` under torchrun on NCCL, two processes (one per GPU; one process where there is
   one GPU, since NCCL takes one GPU per process), with that network;
5. throughput with a full-size random CLIP ViT-B/16 in bf16: crops/s of Eq. 1, images/s of
   two-stage with the 100-query network (K = 100).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from samples import DATA, save_tiny_clip  # noqa: E402
from stage_timing import save_vit_b16  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS: list[tuple[str, str, float, str]] = []


def step(name: str, command: list[str], detail=lambda out: "") -> bool:
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - started
    ok = proc.returncode == 0
    text = proc.stdout + proc.stderr
    shown = detail(text) if ok else (text.strip().splitlines() or ["(no output)"])[-1][:120]
    ROWS.append((name, "ok" if ok else f"FAILED ({proc.returncode})", seconds, shown))
    return ok


def zsseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "zsseg", *args]


def throughput(clip_dir: Path, network: Path) -> None:
    import numpy as np
    import torch

    from zsseg import RegionClassifier, Segmenter, load_clip
    from zsseg.data.images import read_image
    from zsseg.proposals import MaskFormerProposals

    clip = load_clip(str(clip_dir), device="cuda", dtype="bf16")
    image = read_image(sorted((DATA / "coco" / "val2017").glob("*.jpg"))[0])
    masks = np.zeros((100, *image.shape[:2]), bool)
    for k in range(100):
        y, x = (k * 37) % (image.shape[0] - 64), (k * 53) % (image.shape[1] - 64)
        masks[k, y : y + 64, x : x + 64] = True
    classifier = RegionClassifier(clip, batch_size=100)
    names = ["cat", "dog", "car", "wall", "floor", "person", "tree", "sky"]
    classifier.classify(image, masks, names)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        classifier.classify(image, masks, names)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    ROWS.append(("Eq. 1 crops/s (ViT-B/16 bf16)", "ok", seconds, f"{1000 / seconds:.0f} crops/s"))
    segmenter = Segmenter(clip=clip, proposals=MaskFormerProposals(network, device="cuda", dtype="bf16"), max_size=640)
    images = [read_image(p) for p in sorted((DATA / "coco" / "val2017").glob("*.jpg"))[:10]]
    segmenter.segment(images[0], names)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for item in images:
        segmenter.segment(item, names)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    ROWS.append(("two-stage images/s (K=100)", "ok", seconds, f"{len(images) / seconds:.2f} images/s"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="keep the outputs here (default: a temporary folder)")
    args = parser.parse_args()
    import torch

    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    tiny = save_tiny_clip(out / "tiny-clip")
    vit = out / "vit-b16"
    save_vit_b16(vit)
    images = [str(p) for p in sorted((DATA / "coco" / "val2017").glob("*.jpg"))[:2]]
    classes = "cat; car; person; wall; floor; sky; tree; table"
    gpu = ["--device", "cuda"]

    step("pytest -m cuda", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests/test_cuda.py"],
         lambda text: [line for line in text.splitlines() if "passed" in line or "failed" in line][-1:][0] if "passed" in text else "")
    net = out / "paper-50"
    step("train proposals --config paper, 50 steps, batch 8",
         zsseg("train", "proposals", "--dataset", "coco-stuff", "--data-root", str(DATA), "--config", "paper", "--clip", str(tiny),
               "--backbone-weights", "none", "--max-iters", "50", "--batch-size", "8", "--log-every", "10", "--workers", "4",
               *gpu, "--output-dir", str(net)),
         lambda text: "s/step " + ", ".join(str(json.loads(line)["seconds_per_step"]) for line in (net / "log.jsonl").read_text().splitlines()[1:]))
    fcn = out / "fcn"
    step("train fcn --config cpu, 20 steps", zsseg("train", "fcn", "--dataset", "coco-stuff", "--data-root", str(DATA), "--config", "cpu",
                                                   "--clip", str(tiny), "--max-iters", "20", *gpu, "--output-dir", str(fcn)))
    for method, extra in (("two-stage", ["--proposals", "maskformer", "--proposal-weights", str(net)]), ("fast", ["--proposals", "selective-search"]),
                          ("dense-clip", []), ("fcn", ["--fcn-weights", str(fcn)])):
        step(f"segment --method {method} (bf16)", zsseg("segment", *images, "--classes", classes, "--clip", str(tiny), "--method", method,
                                                         *extra, *gpu, "--dtype", "bf16", "--out", str(out / f"segment-{method}")))
    processes = min(2, gpus)
    step(f"eval under torchrun, {processes} process(es), NCCL",
         [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "zsseg", "eval",
          "--dataset", "coco-stuff", "--data-root", str(DATA), "--protocol", "zero-shot", "--clip", str(tiny), "--proposals", "maskformer",
          "--proposal-weights", str(net), "--limit", "8", *gpu, "--dtype", "bf16", "--output", str(out / "eval.json")],
         lambda text: f"{json.loads((out / 'eval.json').read_text())['num_images']} images" + ("" if gpus > 1 else "; one GPU: one process"))
    started = time.perf_counter()
    try:
        throughput(vit, net)
    except Exception as error:  # a table row, not a traceback: the other rows still print
        ROWS.append(("throughput", f"FAILED ({type(error).__name__})", time.perf_counter() - started, str(error)[:120]))

    print(f"\nzsseg GPU check on {torch.cuda.get_device_name(0)} ({gpus} GPU(s)), torch {torch.__version__}, outputs in {out}\n")
    print("| check | result | seconds | detail |\n|---|---|---|---|")
    for name, result, seconds, detail in ROWS:
        print(f"| {name} | {result} | {seconds:.1f} | {detail} |")
    sys.exit(0 if all(r[1] == "ok" for r in ROWS) else 1)


if __name__ == "__main__":
    main()
