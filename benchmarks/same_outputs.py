"""Whether this checkout labels images and scores benchmarks exactly as an earlier revision did.

A refactoring must not change what zsseg computes. This script runs the same commands with the
code of two revisions, in separate processes and on images the tests do not use, and compares
what they wrote: the label maps pixel for pixel, the overlays, and every score of an evaluation
(timings and the records of settings aside, whose format may change).

    python benchmarks/same_outputs.py                 # this checkout against ab3b743
    python benchmarks/same_outputs.py --base HEAD~3 --keep /tmp/same

Both revisions run from this checkout's Python environment, the earlier one from its source
extracted with `git archive` (PYTHONPATH first), on one small random CLIP (and a small random
network in the authors' checkpoint format) that both load from the same folder. The cases:
two-stage, fast and dense-clip segmentation with Selective Search; classify of instance masks;
eval on ADE20K-150 (the CLIP pipeline and the oracle) and on COCO-Stuff's zero-shot split with
the checkpoint's ensemble. Each prints identical or the first difference; the exit status is 1
if any case differs or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from samples import DATA, TOKENIZER, save_tiny_clip, save_tiny_reference_checkpoint  # noqa: E402

# Images no test reads: the last ones of their folders.
COCO = sorted((DATA / "coco" / "val2017").glob("*.jpg"))[-2:]
ADE = sorted((DATA / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))[-3:]
CLASSES = "person; cat; dog; car; tree; grass; sky; building; road; wall"
# The results in an evaluation's JSON (the rest records how it ran, in a format that may change).
RESULTS = ("dataset", "split", "protocol", "mIoU", "fwIoU", "pAcc", "mAcc", "classes_in_mean", "miou_rule", "mIoU_seen",
           "mIoU_unseen", "hIoU", "evaluation_sets", "per_class_iou", "per_class_acc", "num_images", "skipped_images")


def extract(revision: str, folder: Path) -> Path:
    """The source tree of `revision` (its src/ folder), from this repository."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def held_out_data_root(folder: Path) -> Path:
    """A data root holding only the held-out images (links), in the benchmarks' layouts."""
    ade = folder / "ADEChallengeData2016"
    for sub, suffix in (("images", ".jpg"), ("annotations", ".png")):
        target = ade / sub / "validation"
        target.mkdir(parents=True)
        for image in ADE:
            source = DATA / "ADEChallengeData2016" / sub / "validation" / (image.stem + suffix)
            (target / source.name).symlink_to(source)
    for sub, suffix in (("val2017", ".jpg"), ("stuffthingmaps_detectron2/val2017", ".png")):
        target = folder / "coco" / sub
        target.mkdir(parents=True)
        for image in COCO:
            (target / (image.stem + suffix)).symlink_to(DATA / "coco" / sub / (image.stem + suffix))
    return folder


def instance_masks(folder: Path) -> tuple[Path, Path]:
    """An ADE image and an instance-id PNG of its ground-truth segments (one id per class)."""
    import numpy as np
    from PIL import Image

    image = ADE[0]
    label = np.array(Image.open(DATA / "ADEChallengeData2016" / "annotations" / "validation" / (image.stem + ".png")))
    ids = np.zeros(label.shape, np.uint8)
    for new, value in enumerate(v for v in np.unique(label) if v != 0):
        ids[label == value] = new + 1
    path = folder / "instances.png"
    Image.fromarray(ids).save(path)
    return image, path


def cases(work: Path, clip: Path, checkpoint: Path) -> dict[str, list[str]]:
    """Each case's command line (after `zsseg`); OUT is replaced by the case's output path."""
    data = str(work / "data")
    image, masks = instance_masks(work)
    common = ["--clip", str(clip), "--dtype", "fp32", "--no-text-cache"]
    segment = ["segment", *map(str, COCO + ADE[:1]), "--classes", CLASSES, *common, "--out", "OUT"]
    return {
        "segment two-stage": [*segment, "--max-proposals", "12"],
        "segment fast": [*segment, "--max-proposals", "12", "--method", "fast"],
        "segment dense-clip": [*segment, "--method", "dense-clip", "--max-size", "320"],
        "classify instance masks": ["classify", str(image), "--masks", str(masks), "--classes", CLASSES, *common, "--out", "OUT"],
        "eval ade20k-150": ["eval", "--dataset", "ade20k-150", "--data-root", data, "--max-proposals", "12", *common,
                            "--output", "OUT/eval.json", "--save-predictions", "OUT/predictions", "--quiet"],
        "eval ade20k-150 oracle": ["eval", "--dataset", "ade20k-150", "--data-root", data, "--oracle", "--max-proposals", "30",
                                   "--output", "OUT/eval.json", "--quiet"],
        "eval coco-stuff zero-shot, checkpoint ensemble": [
            "eval", "--dataset", "coco-stuff", "--protocol", "zero-shot", "--data-root", data, "--proposals", "maskformer",
            "--proposal-weights", str(checkpoint), "--tokenizer", str(TOKENIZER), "--test-size", "160", "--no-text-cache",
            "--output", "OUT/eval.json", "--save-predictions", "OUT/predictions", "--quiet"],
    }


def run(source: Path, args: list[str], out: Path, cache: Path) -> subprocess.CompletedProcess:
    out.mkdir(parents=True)
    args = [a.replace("OUT", str(out)) for a in args]
    env = {**os.environ, "PYTHONPATH": str(source), "ZSSEG_CACHE_DIR": str(cache), "ZSSEG_PIPELINE": "0"}
    return subprocess.run([sys.executable, "-m", "zsseg", *args], capture_output=True, text=True, env=env, timeout=3600)


def outputs(folder: Path) -> dict[str, object]:
    """What a case wrote: each PNG's pixels and each evaluation's results, by relative path."""
    import numpy as np
    from PIL import Image

    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.suffix == ".png":
            found[name] = np.asarray(Image.open(path))
        elif path.name == "eval.json":
            report = json.loads(path.read_text())
            found[name] = {k: report.get(k) for k in RESULTS}
    return found


def difference(mine: dict, theirs: dict) -> str | None:
    """None where both wrote the same files with the same contents, else the first difference."""
    import numpy as np

    if mine.keys() != theirs.keys():
        return f"files differ: {sorted(set(mine) ^ set(theirs))[:4]}"
    for name in mine:
        a, b = mine[name], theirs[name]
        if isinstance(a, np.ndarray):
            if a.shape != b.shape or not np.array_equal(a, b):
                changed = int((a != b).sum()) if a.shape == b.shape else "all"
                return f"{name}: {changed} pixels differ"
        elif a != b:
            keys = [k for k in a if a.get(k) != b.get(k)] + [k for k in b if k not in a]
            return f"{name}: {', '.join(keys[:6])} differ"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="ab3b743", help="the earlier revision (default ab3b743)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the outputs in this new folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zsseg-same-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    base = extract(args.base, work / "base")
    clip = save_tiny_clip(work / "tiny-clip")
    checkpoint = save_tiny_reference_checkpoint(work / "model_final.pth", learned_prompt=(4, 0))
    held_out_data_root(work / "data")
    versions = {args.base: base, "this checkout": ROOT / "src"}
    print(f"{'case':48s} {'result'}")
    failed = 0
    for name, command in cases(work, clip, checkpoint).items():
        found = {}
        for label, source in versions.items():
            out = work / name.replace(" ", "_").replace(",", "") / label.replace(" ", "_")
            result = run(source, command, out, work / "cache" / label.replace(" ", "_"))
            if result.returncode not in (0, 1):
                found = None
                failed += 1
                print(f"{name:48s} failed with {label}: {(result.stderr.strip().splitlines() or ['?'])[-1][:120]}")
                break
            found[label] = outputs(out)
        if found is None:
            continue
        different = difference(*found.values())
        failed += different is not None
        count = sum(1 for value in found["this checkout"].values())
        print(f"{name:48s} {'identical' if different is None else 'DIFFERENT: ' + different} ({count} files compared)")
    print(f"outputs in {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
