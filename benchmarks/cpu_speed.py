"""CPU costs around CLIP that a user meets on every run: start-up of the command line, Selective
Search proposals (and the share of it spent choosing masks), and writing the outputs of a
12-megapixel photo.

Only public entry points are timed (the `zsseg` command, `build_proposal_generator`,
`write_outputs`), so the same script measures any earlier version of zsseg: point PYTHONPATH at
that version's `src` to get the "before" figures.

    python benchmarks/cpu_speed.py
    PYTHONPATH=/path/to/older/checkout/src python benchmarks/cpu_speed.py
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per start-up figure (default 3)")
    parser.add_argument("--images", type=int, default=4, help="COCO val photos for the proposals (default 4)")
    args = parser.parse_args()
    import zsseg

    print(f"zsseg from {Path(zsseg.__file__).parent}")
    start_up(args.repeats)
    proposals(args.images)
    writing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
