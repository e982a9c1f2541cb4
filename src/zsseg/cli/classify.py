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

from ..catalogue import DEFAULT_BATCH_SIZE, DEFAULT_CLIP, DEFAULT_MAX_MASKS
from ..errors import ZssegError, counted
from .arguments import CLIP_FORMS, at_least, chosen_vocabulary, config_option, dtype_option, tokenizer_option, vocabulary_options
from .outputs import interrupted_status

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
    config_option(classify)
    classify.add_argument("--clip", default=None, help=f"the vision-language model: {CLIP_FORMS} (default {DEFAULT_CLIP})")
    tokenizer_option(classify)
    classify.add_argument("--prompt", default=None, metavar="PROMPT",
                          help="how class names are prompted: imagenet (default), vild, single, photo, one template such as "
                          "'a sculpture of a {}.', or a prompt file or folder")
    classify.add_argument("--no-text-cache", action="store_true", help="encode the class names afresh, without the disk cache of text features")
    classify.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cpu)")
    dtype_option(classify)
    classify.add_argument("--batch-size", type=at_least(1), default=None, help=f"crops per CLIP forward pass (default {DEFAULT_BATCH_SIZE})")
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
    config: object  # the SegmenterConfig
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
    from ..config import SegmenterConfig, check_prompts
    from ..data.images import read_image
    from ..data.mask_files import read_masks
    from ..outputs.safety import check_output_folder, model_paths, protected_files
    from ..outputs.writers import check_target, remove_stale_temporaries
    from .models import base_config, settings

    config, recorded = base_config(args)
    vocabulary = chosen_vocabulary(args, recorded)
    config = SegmenterConfig.from_options(config, **settings(args))
    check_prompts(config)
    image = read_image(args.image)
    masks = read_masks(args.masks, image.shape[0], image.shape[1], image_id=args.image_id, max_masks=args.max_masks)
    stem = Path(args.image).stem
    inputs = protected_files([args.image, *_mask_files(args.masks), args.vocabulary_file, args.config], model_paths(config))
    targets = output_targets(args.out, stem)
    check_output_folder(args.out, "out")
    for target in targets:
        check_target(target, inputs, args.overwrite)
    remove_stale_temporaries(args.out, targets)
    return _Plan(vocabulary, config, image, masks, stem, targets, inputs)


def run(args: argparse.Namespace) -> int:
    """Classify the masks and write the four outputs; Ctrl-C leaves nothing behind."""
    from ..outputs.safety import remove_if_empty
    from ..outputs.writers import check_target, write_outputs
    from ..segmenter import Segmenter

    plan = _plan(args)
    created = not args.out.exists()
    try:
        segmenter = Segmenter(plan.config)
        result = segmenter.classify(plan.image, plan.masks, plan.vocabulary)
        record = {**segmenter.record(plan.vocabulary), "masks": {"source": str(args.masks), "format": plan.masks.format,
                                                               "image_id": plan.masks.image_id}}
        for target in plan.targets:  # again: a file may have appeared while CLIP ran
            check_target(target, plan.inputs, args.overwrite)
        write_outputs(args.out, plan.stem, plan.image, result.label_map, result.class_names, str(args.image), record,
                      extra_json={MASKS_SUFFIX: masks_record(plan.masks, result, str(args.image), record)})
    except KeyboardInterrupt as error:
        remove_if_empty(args.out, created)
        print("zsseg: interrupted: nothing written", file=sys.stderr)
        return interrupted_status(error)
    except OSError as error:
        remove_if_empty(args.out, created)
        raise ZssegError(f"cannot write outputs to {args.out}: {error.strerror or error}") from None
    present = len(set(result.label_map[result.label_map >= 0].ravel().tolist()))
    passed = (f"; in {args.masks}, {counted(plan.masks.passed_over, 'entry', 'entries')} that are not PNG masks passed over"
              if plan.masks.passed_over else "")
    print(f"zsseg: {plan.masks.describe()} classified, {present} of {counted(len(result.class_names), 'class', 'classes')} "
          f"present; outputs in {args.out}{passed}", file=sys.stderr)
    return 0


def masks_record(masks: MaskSet, result, source: str, record: dict) -> dict:
    """STEM_masks.json (zsseg's mark is added when written): per input mask its id, area, COCO
    box [x, y, w, h], COCO RLE (the mask's pixels exactly), every class's Eq. 1 probability in
    vocabulary order, and its arg-max class."""
    names = result.class_names
    probs = result.region_probs.numpy()
    entries = []
    for k, (mask_id, area, box) in enumerate(zip(masks.ids, masks.areas(), masks.boxes())):
        best = int(probs[k].argmax())
        entries.append({"id": mask_id, "area": area, "bbox": box, "rle": masks.rle_json(k), "label": names[best],
                        "label_index": best, "probs": [float(p) for p in probs[k]]})
    return {"image": source, "height": masks.height, "width": masks.width, "vocabulary": list(names),
            "masks_source": str(masks.source), "mask_format": masks.format, "image_id": masks.image_id,
            "config": record, "masks": entries}
