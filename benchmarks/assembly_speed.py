"""Eq. 2 at full resolution: labels of a large photo from proposals at the processing size.

Times the assembly step of `zsseg segment` (masks and class probabilities in, full-size label
map out) two ways, each in a fresh process so that peak memory is its own:

- before: what `Segmenter.segment` did until this benchmark was written: the Eq. 2 scores at
  the processing size (`assemble`), then every class's numerator upsampled at every output
  pixel, band by band (`top_by_full_upsampling`);
- now: `assemble_labels`, which upsamples every class only in cells whose corners disagree.

The masks are real: Selective Search proposals of a real photo (../shared/data), made at the
processing size of a 4000x3000 photo (longer side 1024), binarised as Eq. 1 does. The class
probabilities are random and peaked like CLIP's (softmax at temperature 100 over cosines).
Labels must be identical; the script says so or exits 1.

Then the two outputs of `segment` that scale with the photo and the classes present, on the
847-class label map: the JSON's per-class RLE (before: one full-size mask per class; now: the
runs of the label map, once) and the overlay's colours (before: every pixel blended in
floating point; now: a lookup table made by the same arithmetic). Same bytes, or exit 1.

    python benchmarks/assembly_speed.py --classes 171 847
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the plain definitions the fast paths are tested against

from samples import DATA  # noqa: E402

PHOTO = DATA / "coco" / "val2017" / "000000010092.jpg"


def make_inputs(folder: Path, size: tuple[int, int], proposals: int, classes: int, seed: int) -> Path:
    import numpy as np
    import torch

    from zsseg.data.images import resize_image
    from zsseg.proposals import build_proposal_generator

    from PIL import Image

    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    height, width = size
    scale = 1024 / max(height, width)
    small = resize_image(image, (round(height * scale), round(width * scale)))
    masks = build_proposal_generator("selective-search", max_proposals=proposals)(small)
    masks = (masks.float() > 0.5).float()
    g = torch.Generator().manual_seed(seed)
    cosines = torch.nn.functional.normalize(torch.randn(masks.shape[0], 64, generator=g), dim=1) @ \
        torch.nn.functional.normalize(torch.randn(classes, 64, generator=g), dim=1).T
    probs = (100 * cosines).softmax(dim=1)
    path = folder / f"inputs-{classes}.pt"
    torch.save({"masks": masks, "probs": probs, "size": size}, path)
    return path


def run_one(path: str, way: str, out: str) -> None:
    import torch

    from definitions import top_by_full_upsampling
    from zsseg.assembly import assemble, assemble_labels

    data = torch.load(path)
    masks, probs, size = data["masks"], data["probs"], tuple(data["size"])
    start_cpu, start = time.process_time(), time.perf_counter()
    if way == "before":
        assemble(masks, probs)  # the [C, h, w] scores segment() built and did not use
        numerator = torch.einsum("kc,khw->chw", probs, masks)
        labels = top_by_full_upsampling(numerator, masks.sum(dim=0), size)[0]
    else:
        labels = assemble_labels(masks, probs, size=size)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    torch.save(labels.to(torch.int16), out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux: kB)
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak}))


def compare_writing(labels, classes: int) -> bool:
    import numpy as np

    from definitions import blend_by_pixel, class_rles_by_mask
    from zsseg.outputs import writers

    print(f"writing the outputs of the {labels.shape[1]}x{labels.shape[0]} label map ({classes} classes, "
          f"{len(np.unique(labels[labels >= 0]))} present):")
    image = np.random.default_rng(0).integers(0, 256, labels.shape + (3,), dtype=np.uint8)
    colours = writers.palette(classes)
    same = True
    for name, before, now in [("JSON per-class RLE", lambda: class_rles_by_mask(labels), lambda: writers._class_rles(labels)),
                              ("overlay colours", lambda: blend_by_pixel(image, labels, colours, 0.55),
                               lambda: writers._blend(image, labels, colours, 0.55))]:
        figures = []
        for way in (before, now):
            start = time.process_time()
            result = way()
            figures.append((time.process_time() - start, result))
        equal = (np.array_equal(figures[0][1], figures[1][1]) if isinstance(figures[0][1], np.ndarray) else figures[0][1] == figures[1][1])
        same &= bool(equal)
        print(f"{name:>20}: before {figures[0][0]:.2f} CPU s, now {figures[1][0]:.2f} CPU s, "
              f"{figures[0][0] / max(figures[1][0], 1e-9):.1f}x less; {'same bytes' if equal else 'DIFFERENT'}")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[171, 847])
    parser.add_argument("--size", type=int, nargs=2, default=[3000, 4000], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--proposals", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        run_one(*args.run_one)
        return 0
    import torch

    print(f"{args.size[1]}x{args.size[0]} output, {args.proposals} Selective Search proposals of {PHOTO.name} "
          f"at longer side 1024, torch threads {torch.get_num_threads()}")
    print(f"{'classes':>7} {'way':>6} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}")
    identical = True
    with tempfile.TemporaryDirectory() as folder:
        for classes in args.classes:
            path = make_inputs(Path(folder), tuple(args.size), args.proposals, classes, args.seed)
            figures = {}
            for way in ("before", "now"):
                out = str(Path(folder) / f"{way}-{classes}.pt")
                done = subprocess.run([sys.executable, __file__, "--run-one", str(path), way, out],
                                      capture_output=True, text=True, check=True)
                figures[way] = json.loads(done.stdout.strip().splitlines()[-1])
                f = figures[way]
                print(f"{classes:>7} {way:>6} {f['wall']:>8.2f} {f['cpu']:>8.2f} {f['peak_mb']:>8.0f}")
            same = torch.equal(torch.load(Path(folder) / f"before-{classes}.pt"), torch.load(Path(folder) / f"now-{classes}.pt"))
            identical &= same
            before, now = figures["before"], figures["now"]
            print(f"{classes:>7} ratios: {before['wall'] / now['wall']:.1f}x less wall, {before['cpu'] / now['cpu']:.1f}x less CPU, "
                  f"peak memory {before['peak_mb'] / now['peak_mb']:.1f}x lower; labels {'identical' if same else 'DIFFERENT'}")
        labels = torch.load(Path(folder) / f"now-{max(args.classes)}.pt").numpy().astype("int32")
        identical &= compare_writing(labels, max(args.classes))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
