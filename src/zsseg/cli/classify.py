"""`zsseg classify`: label masks you already have (SAM's output, an annotation tool's export, a
`zsseg segment` JSON) with your class names: Eq. 1 on each mask, Eq. 2 over all of them.

One image and its masks (`zsseg.data.mask_files` reads them); into --out, all or none, what
`zsseg segment` writes (STEM.png, STEM_overlay.png, STEM.json) and STEM_masks.json: each input
mask with its id, area, box, RLE, class probabilities and label. Every check (vocabulary,
prompt, image, masks, outputs) runs before CLIP loads; a failure is one line, status 2, and
nothing is written, not even --out.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalogue import DEFAULT_MAX_MASKS
from ..errors import ZssegError, counted
from .arguments import at_least, chosen_vocabulary, clip_option, dtype_option, vocabulary_options
from .outputs import check_output_folder, input_files, interrupted_status, remove_if_empty

if TYPE_CHECKING:  # the mask readers and writers import numpy, PIL and pycocotools: not for `zsseg --help`
    from ..data.mask_files import MaskSet
    from ..data.vocabulary import Vocabulary

MASKS_SUFFIX = "_masks"  # STEM_masks.json


def add_parser(commands) -> None:
    classify = commands.add_parser("classify", help="label masks you already have (SAM, COCO, PNG, NumPy) with your class names")
    classify.add_argument("image", metavar="IMAGE", help="the image the masks belong to")
    classify.add_argument("--masks", required=True, type=Path, metavar="MASKS",
                          help="the masks: a folder of binary PNGs (one mask each), an instance-id PNG, a COCO annotation JSON, "
                          "SAM's JSON (coco_rle or binary_mask), a JSON `zsseg segment` or `zsseg classify` wrote, or a "
                          ".npy / .npz of [K, H, W] (see docs/classify.md)")
    vocabulary_options(classify)
    classify.add_argument("--out", required=True, type=Path,
                          help="output folder (created when the outputs are written); never one of the inputs' own files")
    classify.add_argument("--image-id", type=image_id, default=None, metavar="ID",
                          help="the image whose annotations a COCO file gives (needed when it holds several images): a "
                          "whole number, or a string id; quote a string id of digits as JSON ('\"1\"') where the file also "
                          "has the number")
    classify.add_argument("--max-masks", type=at_least(1), default=DEFAULT_MAX_MASKS,
                          help=f"refuse more masks than this (default {DEFAULT_MAX_MASKS}): each one is a CLIP crop, and a "
                          "wrong file (a photo read as an instance map) should stop at once")
    clip_option(classify, "the vision-language model")
    classify.add_argument("--prompt", default=None, metavar="PROMPT",
                          help="how class names are prompted: imagenet (default), vild, single, photo, one template such as "
                          "'a sculpture of a {}.', or a prompt file or folder")
    classify.add_argument("--no-text-cache", action="store_true", help="encode the class names afresh, without the disk cache of text features")
    classify.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    dtype_option(classify)
    classify.add_argument("--batch-size", type=at_least(1), default=32, help="crops per CLIP forward pass (default 32)")
    classify.add_argument("--overwrite", action="store_true",
                          help="replace existing files in --out that zsseg did not write (files zsseg wrote are always replaced)")
    classify.set_defaults(run=run)


def image_id(text: str) -> int | str:
    """--image-id: 397133 is a number; '"1"' (JSON's quotes) the string "1"; anything else a string."""
    import json

    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a quoted string id") from None
        return value
    try:
        return int(text)
    except ValueError:
        return text


@dataclass
class _Plan:
    """What to classify and where it goes, after every check that needs no model."""

    vocabulary: Vocabulary
    image: object  # HWC uint8 array
    masks: MaskSet
    stem: str
    targets: list[Path]
    inputs: frozenset[Path]


def output_targets(out: Path, stem: str) -> list[Path]:
    """The four files `zsseg classify` writes for an image STEM."""
    from ..outputs.writers import output_paths

    return [*output_paths(out, stem), out / f"{stem}{MASKS_SUFFIX}.json"]


def _mask_files(path: Path) -> list[Path]:
    """The files the masks were read from (a folder's files), which no output may replace."""
    if path.is_dir():
        return [p for p in path.iterdir() if p.is_file()]
    return [path]


def _plan(args: argparse.Namespace) -> _Plan:
    from ..data.images import read_image
    from ..data.mask_files import read_masks
    from ..outputs.writers import check_target, remove_stale_temporaries
    from .models import check_prompt

    vocabulary = chosen_vocabulary(args)
    check_prompt(args)
    image = read_image(args.image)
    masks = read_masks(args.masks, image.shape[0], image.shape[1], image_id=args.image_id, max_masks=args.max_masks)
    stem = Path(args.image).stem
    inputs = input_files(args, [Path(args.image), *_mask_files(args.masks)])
    targets = output_targets(args.out, stem)
    check_output_folder(args.out, "--out")
    for target in targets:
        check_target(target, inputs, args.overwrite)
    remove_stale_temporaries(args.out, targets)
    return _Plan(vocabulary, image, masks, stem, targets, inputs)


def run(args: argparse.Namespace) -> int:
    """Classify the masks and write the four outputs; Ctrl-C leaves nothing behind."""
    from ..outputs.writers import check_target, write_outputs

    plan = _plan(args)
    created = not args.out.exists()
    try:
        classifier = _classifier(args)
        from ..classification.masks import classify_masks

        labels = classify_masks(classifier, plan.image, plan.masks, plan.vocabulary, progress=True)
        settings = _settings(classifier, args, plan.masks)
        for target in plan.targets:  # again: a file may have appeared while CLIP ran
            check_target(target, plan.inputs, args.overwrite)
        write_outputs(args.out, plan.stem, plan.image, labels.label_map, labels.class_names, str(args.image), settings,
                      extra_json={MASKS_SUFFIX: masks_record(plan.masks, labels, str(args.image), settings)})
    except KeyboardInterrupt as error:
        remove_if_empty(args.out, created)
        print("zsseg: interrupted: nothing written", file=sys.stderr)
        return interrupted_status(error)
    except OSError as error:
        remove_if_empty(args.out, created)
        raise ZssegError(f"cannot write outputs to {args.out}: {error.strerror or error}") from None
    present = len(set(labels.label_map[labels.label_map >= 0].ravel().tolist()))
    passed = (f"; in {args.masks}, {counted(plan.masks.passed_over, 'entry', 'entries')} that are not PNG masks passed over"
              if plan.masks.passed_over else "")
    print(f"zsseg: {plan.masks.describe()} classified, {present} of {counted(len(labels.class_names), 'class', 'classes')} "
          f"present; outputs in {args.out}{passed}", file=sys.stderr)
    return 0


def _classifier(args: argparse.Namespace):
    from ..models.loading import load_clip
    from ..classification.regions import RegionClassifier
    from ..segmenter import DEFAULT_PROMPT

    clip = load_clip(args.clip, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer)
    return RegionClassifier(clip, prompt=args.prompt or DEFAULT_PROMPT, batch_size=args.batch_size, text_cache=not args.no_text_cache)


def _settings(classifier, args: argparse.Namespace, masks: MaskSet) -> dict:
    """What made the labels, as JSON values (recorded in STEM.json and STEM_masks.json)."""
    from ..outputs.writers import SOFTWARE

    clip = classifier.clip
    return {
        "zsseg": SOFTWARE,
        "method": "classify",
        "clip": clip.source,
        "clip_text": clip.text_fingerprint()[:16],
        "dtype": str(clip.dtype).removeprefix("torch."),
        "prompt": classifier.prompts.prompt.describe(),
        "masks": str(args.masks),
        "mask_format": masks.format,
        "image_id": masks.image_id,
    }


def masks_record(masks: MaskSet, labels, source: str, settings: dict) -> dict:
    """STEM_masks.json (zsseg's mark is added when written): per input mask its id, area, COCO
    box [x, y, w, h], COCO RLE (the mask's pixels exactly), every class's Eq. 1 probability in
    vocabulary order, and its arg-max class."""
    names = labels.class_names
    entries = []
    for k, (mask_id, area, box) in enumerate(zip(masks.ids, masks.areas(), masks.boxes())):
        best = int(labels.labels[k])
        entries.append({"id": mask_id, "area": area, "bbox": box, "rle": masks.rle_json(k), "label": names[best],
                        "label_index": best, "probs": [float(p) for p in labels.probs[k]]})
    return {"image": source, "height": masks.height, "width": masks.width, "vocabulary": list(names),
            "masks_source": str(masks.source), "mask_format": masks.format, "image_id": masks.image_id,
            "settings": settings, "masks": entries}
