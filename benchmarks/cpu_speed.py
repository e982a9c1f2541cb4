"""Everything a CPU user waits for, in one run: what this CPU computes CLIP's matrix products
with, start-up of the command line, an image under each method in fp32 and in `--dtype auto`
(the default of `segment`), the cost of one CLIP pass on a crop and on a dense window,
Selective Search proposals (and the share spent choosing masks), writing the outputs of a
12-megapixel photo, Eq. 2 at 4000x3000 with 171 and 847 classes (`assembly_speed.py`, run from
here), and a folder of photos segmented with the next image prepared while CLIP works on this
one (pipelined, the default) or one image at a time (`--no-pipeline`).

Every figure is wall and CPU seconds; each comparison (fp32 against auto, sequential against
pipelined, the assembly before and now) is made within the same run.

    python benchmarks/cpu_speed.py                      # all sections, about 25 minutes on 2 cores
    python benchmarks/cpu_speed.py --sections capability per-image passes
    PYTHONPATH=/path/to/older/checkout/src python benchmarks/cpu_speed.py --sections start-up proposals writing

The start-up, proposals and writing sections use public entry points only (the `zsseg` command,
`build_proposal_generator`, `write_outputs`), so they measure any earlier version of zsseg too.
The per-image, passes and folder sections use a full-size ViT-B/16 CLIP with random weights (saved
to a temporary folder with CLIP's tokenizer, as `stage_timing.py` does): its timings are a real
CLIP's, its labels are not (agreement between precisions is measured with a trained proxy CLIP by
`precision_agreement.py`).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA  # noqa: E402


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def _rate(function, flops: float, repeats: int = 10) -> tuple[float, float]:
    """(GFLOP/s of wall time, GFLOP/s per CPU second) of `function`, after one warm-up call."""
    function()
    start_cpu, start = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        function()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return flops * repeats / wall / 1e9, flops * repeats / cpu / 1e9


def capability() -> None:
    """What CLIP's matrix products run at here: one ViT-B/16 MLP product (8 crops' tokens), in
    fp32, bf16 and int8 (dynamic quantisation, as `--dtype int8` does), and what auto picks."""
    import torch

    from zsseg.models.int8 import Int8Linear
    from zsseg.models.precision import cpu_flags, native_bf16, resolve_precision

    model, flags = _cpu_model(), cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")
    print(f"CPU: {model}, {os.cpu_count()} logical cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"kernels for {torch.backends.cpu.get_cpu_capability()}")
    print("  flags: " + ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted))
    print(f"  native bf16: {'yes' if native_bf16() else 'no'}; --dtype auto on this CPU is {resolve_precision('auto', 'cpu')}")
    tokens, width, hidden = 8 * 197, 768, 3072
    flops = 2 * tokens * width * hidden
    x = torch.randn(tokens, width)
    linear = torch.nn.Linear(width, hidden)
    with torch.no_grad():
        rates = {"fp32": _rate(lambda: linear(x), flops)}
        quantised = Int8Linear(linear)  # what --dtype int8 runs (torch's dynamic int8 kernel)
        rates["int8 (dynamic)"] = _rate(lambda: quantised(x), flops)
        low, xb = torch.nn.Linear(width, hidden).to(torch.bfloat16), x.to(torch.bfloat16)
        rates["bf16"] = _rate(lambda: low(xb), flops, repeats=2)
    print(f"  one {tokens}x{width} @ {width}x{hidden} product (a ViT-B/16 MLP layer on 8 crops):")
    for name, (wall, cpu) in rates.items():
        print(f"    {name:15s} {wall:7.1f} GFLOP/s wall, {cpu:6.1f} per CPU second: {cpu / rates['fp32'][1]:5.2f}x fp32's rate")


def start_up(repeats: int) -> None:
    print(f"start-up: median wall seconds of {repeats} fresh processes (`python -m zsseg.cli ...`)")
    for argv in (["--version"], ["--help"], ["segment", "--help"], ["vocabularies"]):
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "zsseg.cli", *argv], stdout=subprocess.DEVNULL, check=True)
            walls.append(time.perf_counter() - start)
        print(f"  zsseg {' '.join(argv):16s} {statistics.median(walls):6.2f} s")


def proposals(count: int) -> None:
    import numpy as np
    from PIL import Image

    import zsseg.proposals.selective_search as selective_search
    from zsseg.proposals import build_proposal_generator

    choosing = []
    original = selective_search.select_masks

    def timed(*args, **kwargs):  # the mask selection inside the generator
        start = time.process_time()
        kept = original(*args, **kwargs)
        choosing.append(time.process_time() - start)
        return kept

    selective_search.select_masks = timed
    images = sorted((DATA / "coco" / "val2017").glob("*.jpg"))[:count]
    generator = build_proposal_generator("selective-search", max_proposals=100)
    start = time.process_time()
    for path in images:
        generator(np.asarray(Image.open(path).convert("RGB")))
    total = time.process_time() - start
    selective_search.select_masks = original
    print(f"Selective Search K=100 on {len(images)} COCO val photos: {total:.2f} CPU s, of which choosing masks {sum(choosing):.2f}")


def writing() -> None:
    import numpy as np

    from zsseg.data.vocabulary import Vocabulary
    from zsseg.outputs.writers import write_outputs

    names = Vocabulary.preset("ade20k-150").names
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(-1, 150, (30, 40)), np.ones((100, 100), dtype=np.int64)).astype(np.int32)
    image = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        start_cpu, start = time.process_time(), time.perf_counter()
        write_outputs(Path(folder), "photo", image, labels, names, "photo.jpg")
        cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    print(f"write_outputs of a 4000x3000 label map ({len(np.unique(labels[labels >= 0]))} classes present): "
          f"{cpu:.2f} CPU s, {wall:.2f} s wall")


def _timed_segment(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds (the process and its threads) of one `zsseg segment` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zsseg", "segment", *argv], env=env, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _vit_b16(folder: Path) -> Path:
    from stage_timing import save_vit_b16

    save_vit_b16(folder / "clip")
    return folder / "clip"


def _seconds(function) -> tuple[float, float, object]:
    start_cpu, start = time.process_time(), time.perf_counter()
    value = function()
    return time.perf_counter() - start, time.process_time() - start_cpu, value


PER_IMAGE = (("two-stage, Selective Search K=100", dict(method="two-stage", proposals="selective-search", max_proposals=100)),
             ("fast, Selective Search K=100", dict(method="fast", proposals="selective-search", max_proposals=100)),
             ("dense-clip (plain)", dict(method="dense-clip")))


def per_image() -> None:
    """One COCO photo through `Segmenter.segment` under each method, fp32 against auto, after a
    warm-up image; the vocabulary's text features are computed before the clock starts."""
    import numpy as np
    import torch

    from zsseg import Segmenter, Vocabulary, load_clip
    from zsseg.models.precision import resolve_precision
    from zsseg.data.images import read_image

    photo = sorted((DATA / "coco" / "val2017").glob("*.jpg"))[0]
    image = read_image(photo)
    vocabulary = Vocabulary.preset("voc-20")
    auto = resolve_precision("auto", "cpu")
    print(f"one image: COCO val {photo.name} ({image.shape[1]}x{image.shape[0]}), voc-20, random-weight ViT-B/16, "
          f"{torch.get_num_threads()} torch threads; auto = {auto} here")
    print(f"  {'method':34s} {'fp32 wall':>9s} {'CPU s':>7s} {'auto wall':>9s} {'CPU s':>7s} {'CPU ratio':>9s} {'same labels':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        path = _vit_b16(Path(tmp))
        os.environ["ZSSEG_CACHE_DIR"] = str(Path(tmp) / "cache")  # the text features, encoded once
        clips = {dtype: load_clip(str(path), dtype=dtype) for dtype in ("fp32", "auto")}
        for name, options in PER_IMAGE:
            figures, labels = {}, {}
            for dtype, clip in clips.items():
                segmenter = Segmenter(clip=clip, **options)
                prepared = segmenter.prepare(vocabulary)
                warm = {**options, "max_proposals": 4} if "max_proposals" in options else options
                Segmenter(clip=clip, **warm).segment(image, prepared)
                wall, cpu, result = _seconds(lambda: segmenter.segment(image, prepared))
                figures[dtype], labels[dtype] = (wall, cpu), result.label_map
            same = float(np.mean(labels["fp32"] == labels["auto"])) * 100
            (fw, fc), (aw, ac) = figures["fp32"], figures["auto"]
            print(f"  {name:34s} {fw:9.2f} {fc:7.2f} {aw:9.2f} {ac:7.2f} {fc / ac:8.2f}x {same:10.2f}%")
    print("  (same labels: random weights; the agreement that matters is precision_agreement.py's, with a trained CLIP)")


def passes() -> None:
    """CLIP's image tower on crops (Eq. 1) against dense windows of the same size (fast mode,
    dense CLIP), per pass, in batches of 2 and 8: the dense path should cost what a crop costs.
    Then where a pass's time goes (torch.profiler, 8 crops), in fp32 and int8: the matrix
    products against everything else, the bound on what fusing the rest (torch.compile) can gain."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from zsseg import load_clip

    with tempfile.TemporaryDirectory() as tmp:
        path = str(_vit_b16(Path(tmp)))
        clip = load_clip(path)
        print("one pass of a random-weight ViT-B/16 at 224x224, CPU seconds per crop or window (median of 3 batches)")
        for batch in (2, 8):
            pixels = torch.randn(batch, 3, 224, 224)
            row = []
            for name, function in (("crop (encode_images)", lambda: clip.encode_images(pixels)),
                                   ("dense window (dense_features)", lambda: clip.dense_features(pixels))):
                with torch.no_grad():
                    function()
                    cpu = statistics.median(_seconds(function)[1] for _ in range(3))
                row.append(f"{name} {cpu / batch:.3f}")
            print(f"  batch {batch}: " + ", ".join(row))
        pixels = torch.randn(8, 3, 224, 224)
        for dtype in ("fp32", "int8"):
            model = clip if dtype == "fp32" else load_clip(path, dtype="int8")
            with torch.no_grad():
                model.encode_images(pixels)
                with profile(activities=[ProfilerActivity.CPU]) as profiled:
                    model.encode_images(pixels)
            ops = {event.key: event.self_cpu_time_total for event in profiled.key_averages()}
            total = sum(ops.values())
            product = {key for key in ops if key in ("aten::addmm", "aten::mm", "aten::bmm") or "linear" in key}
            rest = sorted(((t, key) for key, t in ops.items() if t / total > 0.03 and key not in product), reverse=True)
            print(f"  {dtype}, 8 crops: matrix products {sum(ops[key] for key in product) / total:.0%} of the time; then "
                  + ", ".join(f"{key} {t / total:.0%}" for t, key in rest))


def assembly() -> None:
    """`assembly_speed.py --classes 171 847` (each way in its own process, for its peak memory)."""
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "assembly_speed.py"), "--classes", "171", "847"], check=True)


def folder(count: int) -> None:
    """`zsseg segment` on a folder of `count` COCO photos, pipelined and sequential. Each run pays
    start-up (imports, loading CLIP) once; a run on the first photo alone measures it, and the
    per-image figures after start-up are (run - that run) / (count - 1)."""
    photos = sorted((DATA / "coco" / "val2017").glob("*.jpg"))[:count]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _vit_b16(tmp)
        (tmp / "photos").mkdir()
        (tmp / "one").mkdir()
        for photo in photos:
            shutil.copy(photo, tmp / "photos" / photo.name)
        shutil.copy(photos[0], tmp / "one" / photos[0].name)
        env = {**os.environ, "ZSSEG_CACHE_DIR": str(tmp / "cache")}  # text encoded once, by the warm-up

        def segment(inputs: str, out: str, *extra: str) -> tuple[float, float]:
            return _timed_segment([str(tmp / inputs), "--vocabulary", "voc-20", "--clip", str(tmp / "clip"),
                                   "--proposals", "selective-search", "--max-proposals", "100", "--out", str(tmp / out), *extra], env)

        segment("one", "warm-up")
        one = segment("one", "one")
        runs = {"sequential": segment("photos", "sequential", "--no-pipeline"), "pipelined": segment("photos", "pipelined")}
        same = all((tmp / "sequential" / name.name).read_bytes() == name.read_bytes() for name in (tmp / "pipelined").iterdir())
    print(f"folder of {len(photos)} COCO val photos, `zsseg segment`, random-weight ViT-B/16, Selective Search K=100, voc-20 "
          f"(start-up and 1 photo: {one[0]:.1f} s wall, {one[1]:.1f} CPU s)")
    for mode, (wall, cpu) in runs.items():
        print(f"  {mode:10s} {wall / len(photos):5.2f} s wall, {cpu / len(photos):5.2f} CPU s per image; after start-up "
              f"{(wall - one[0]) / (len(photos) - 1):5.2f} s wall, {(cpu - one[1]) / (len(photos) - 1):5.2f} CPU s")
    sequential, pipelined = runs["sequential"][0], runs["pipelined"][0]
    print(f"  sequential / pipelined wall: {sequential / pipelined:.2f}x per image, "
          f"{(sequential - one[0]) / (pipelined - one[0]):.2f}x after start-up; outputs byte-identical: {same}")


SECTIONS = ("capability", "start-up", "per-image", "passes", "proposals", "writing", "assembly", "folder")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per start-up figure (default 3)")
    parser.add_argument("--images", type=int, default=4, help="COCO val photos for the proposals (default 4)")
    parser.add_argument("--folder-images", type=int, default=10, help="COCO val photos in the folder run (default 10)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure (default all)")
    args = parser.parse_args()
    import zsseg

    print(f"zsseg from {Path(zsseg.__file__).parent}")
    run = {"capability": capability, "start-up": lambda: start_up(args.repeats), "per-image": per_image, "passes": passes,
           "proposals": lambda: proposals(args.images), "writing": writing, "assembly": assembly,
           "folder": lambda: folder(max(args.folder_images, 2))}
    for section in SECTIONS:
        if section in args.sections:
            print(f"\n== {section}", flush=True)
            run[section]()
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
