"""CPU costs around CLIP that a user meets on every run: start-up of the command line, Selective
Search proposals (and the share of it spent choosing masks), writing the outputs of a
12-megapixel photo, and a folder of photos segmented with the next image prepared while CLIP
works on this one (pipelined, the default) or one image at a time (`--no-pipeline`).

Only public entry points are timed (the `zsseg` command, `build_proposal_generator`,
`write_outputs`), so the same script measures any earlier version of zsseg: point PYTHONPATH at
that version's `src` to get the "before" figures.

    python benchmarks/cpu_speed.py
    PYTHONPATH=/path/to/older/checkout/src python benchmarks/cpu_speed.py
    python benchmarks/cpu_speed.py --sections folder --folder-images 10

The folder section uses a full-size ViT-B/16 CLIP with random weights (saved to a temporary
folder with CLIP's tokenizer, as `stage_timing.py` does): its timings are a real CLIP's, its
labels are not.
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

    from zsseg.vocabulary import Vocabulary
    from zsseg.writers import write_outputs

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


def folder(count: int) -> None:
    """`zsseg segment` on a folder of `count` COCO photos, pipelined and sequential. Each run pays
    start-up (imports, loading CLIP) once; a run on the first photo alone measures it, and the
    per-image figures after start-up are (run - that run) / (count - 1)."""
    from stage_timing import save_vit_b16

    photos = sorted((DATA / "coco" / "val2017").glob("*.jpg"))[:count]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_vit_b16(tmp / "clip")
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


SECTIONS = ("start-up", "proposals", "writing", "folder")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per start-up figure (default 3)")
    parser.add_argument("--images", type=int, default=4, help="COCO val photos for the proposals (default 4)")
    parser.add_argument("--folder-images", type=int, default=10, help="COCO val photos in the folder run (default 10)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to measure (default all)")
    args = parser.parse_args()
    import zsseg

    print(f"zsseg from {Path(zsseg.__file__).parent}")
    if "start-up" in args.sections:
        start_up(args.repeats)
    if "proposals" in args.sections:
        proposals(args.images)
    if "writing" in args.sections:
        writing()
    if "folder" in args.sections:
        folder(max(args.folder_images, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
