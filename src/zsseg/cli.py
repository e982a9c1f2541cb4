"""Command line: `zsseg segment`, `zsseg eval`, `zsseg train proposals|prompts`, `zsseg pseudo-label`, `zsseg prompts select`, ...

Exit status: 0 on success, 1 when some images failed (the others are written), 2 when nothing
could run or an evaluation stopped (bad arguments, vocabulary, model, dataset or output
path). Errors are one line each. `zsseg eval`, `zsseg train ...` and `zsseg pseudo-label` also run under
`torchrun --no-python zsseg ...`.
"""

from __future__ import annotations

import argparse
import copy
import contextlib
import importlib
import io
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable

from .clip import DEFAULT_CLIP, DTYPES
from .datasets import DATASETS, IGNORE, PROTOCOLS, SegmentationDataset, load_dataset, unseen_classes
from .errors import ZssegError
from .metrics import MIOU_RULES
from .images import IMAGE_EXTENSIONS, read_image
from .prompts import TEMPLATE_SETS, load_prompt
from .prompt_learning import PROMPT_CONFIGS
from .proposals import GENERATORS, MaskFormerProposals, ProposalGenerator, build_proposal_generator, parse_generator
from .proposals.sam import DEFAULT_SAM
from .fcn import FCN_CONFIGS
from .maskformer.config import CONFIGS
from .dense_clip import DEFAULT_OVERLAP, DENSE_MODES
from .methods import METHODS as METHOD_CLASSES, check_options
from .segmenter import CLASSIFIERS, DEFAULT_MAX_SIZE, DEFAULT_PROPOSALS, ENSEMBLE_WEIGHT, FCN_ENSEMBLE_WEIGHT, METHODS, PER_PIXEL_METHODS, Segmenter
from .self_training import DEFAULT_REJECT_THRESHOLD
from .version import __version__
from .vocabulary import PRESETS, Vocabulary
from .writers import check_target, output_paths, write_json, write_outputs, written_by_zsseg

DEFAULT_MAX_PROPOSALS = 100
USABLE_PROPOSALS = [name for name, cls in GENERATORS.items() if not cls.needs_ground_truth]
PRETRAINED_PROPOSALS = [name for name, cls in GENERATORS.items() if cls.pretrained]
# The demo offers the pretrained generators only as given at start (`--proposals sam:MODEL`):
# offering them all would download every default model (SAM is 375 MB) for a page that may
# never use them.
DEMO_PROPOSALS = [name for name in USABLE_PROPOSALS if name not in PRETRAINED_PROPOSALS]


def _proposals_type(allowed: list[str]) -> Callable[[str], str]:
    """argparse type of --proposals: NAME or NAME:MODEL (`parse_generator`), NAME among `allowed`."""

    def parse(value: str) -> str:
        name = value.partition(":")[0]
        if name not in allowed:
            known = "unknown proposal generator" if name not in GENERATORS else "this command cannot use the proposal generator"
            raise argparse.ArgumentTypeError(f"{known} '{name}'; choose from {', '.join(allowed)}")
        try:
            parse_generator(value)
        except ZssegError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    return parse


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum` (argparse names the flag in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _fraction(include_one: bool) -> Callable[[str], float]:
    """argparse type: a number in [0, 1], or [0, 1) unless `include_one`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not (0.0 <= value <= 1.0 if include_one else 0.0 <= value < 1.0):
            raise argparse.ArgumentTypeError(f"must be in [0, 1{']' if include_one else ')'}, got {text}")
        return value

    return parse


_unit_interval = _fraction(include_one=True)
_overlap = _fraction(include_one=False)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the problem, and where the full usage is."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Version(argparse.Action):
    """`--version`, printed like every other output: a full disk (`> /dev/full`) is an error."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            _output([f"zsseg {__version__}"])
        except ZssegError as error:
            parser.exit(2, f"zsseg: error: {error}\n")
        parser.exit(0)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zsseg", description="Open-vocabulary semantic segmentation with CLIP.")
    parser.add_argument("--version", action=_Version, help="print zsseg's version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    segment = commands.add_parser("segment", help="label every pixel of images with your class names")
    segment.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    vocab = segment.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", help='class names: "cat; sofa, couch; wall" (";" between classes, "," between synonyms)')
    vocab.add_argument("--vocabulary", choices=list(PRESETS), help="a built-in benchmark vocabulary")
    vocab.add_argument("--vocabulary-file", type=Path, help="text file, one class per line, synonyms separated by commas")
    _model_options(segment, USABLE_PROPOSALS)
    segment.add_argument("--out", required=True, type=Path,
                         help="output folder (created when the first output is written); never one of the inputs' own files")
    segment.add_argument("--overwrite", action="store_true",
                         help="replace existing files in --out that zsseg did not write (files zsseg wrote are always replaced)")

    evaluate = commands.add_parser(
        "eval",
        help="score on a benchmark: mIoU, fwIoU, pAcc, mAcc (and seen/unseen/hIoU)",
        description="Evaluate on a benchmark split. Under torchrun (torchrun --nproc_per_node N --no-python zsseg eval ...) "
        "the images are sharded across the processes and the scores equal a single process's.",
    )
    evaluate.add_argument("--dataset", required=True, choices=list(DATASETS), help="benchmark (layouts: docs/datasets.md)")
    evaluate.add_argument("--data-root", type=Path, default=None, help="folder holding the datasets (default $DETECTRON2_DATASETS, else ./datasets)")
    evaluate.add_argument("--split", default="val", help="dataset split (default val)")
    evaluate.add_argument("--limit", type=_at_least(1), default=None, help="evaluate the first N images only")
    evaluate.add_argument("--skip-missing-labels", action="store_true",
                          help="leave out images whose label map is missing or unreadable, and report how many (default: an error)")
    evaluate.add_argument("--protocol", default="cross-dataset", choices=list(PROTOCOLS),
                          help="cross-dataset, or zero-shot: also mIoU over seen and unseen classes and hIoU (coco-stuff, voc-20, voc-21)")
    evaluate.add_argument("--oracle", action="store_true",
                          help="each proposal takes the ground-truth class it overlaps most: scores the proposals alone, no CLIP")
    _model_options(evaluate, list(GENERATORS))
    evaluate.add_argument("--class-names", default="reference", choices=["reference", "zsseg"],
                          help="reference: the class strings of the reference code, each put whole into the prompt (default); "
                          "zsseg: the built-in vocabulary of the same name, split into synonyms")
    evaluate.add_argument("--seen-classes", default=None, choices=["split", "none", "names"],
                          help="which classes the ensemble with a trained network takes as seen: split, the benchmark's zero-shot "
                          "seen classes; none, every class unseen; names, those the network was trained on (default: the benchmark's)")
    evaluate.add_argument("--miou-rule", default=MIOU_RULES[0], choices=list(MIOU_RULES),
                          help="what mIoU divides by: the classes present in the ground truth or the predictions (the reference's; "
                          "default), or in the ground truth only")
    evaluate.add_argument("--output", type=Path, default=None, help="write the scores as JSON to this file")
    evaluate.add_argument("--save-predictions", type=Path, default=None, metavar="DIR",
                          help="write each prediction as DIR/IMAGE_NAME.png (class indices; 255 = unlabelled); DIR may not be "
                          "inside the dataset's folders, and only files zsseg wrote are replaced")
    evaluate.add_argument("--quiet", action="store_true", help="print only the summary, not the per-class table")

    train = commands.add_parser("train", help="train the proposal network (MaskFormer with a CLIP-text classifier), the FCN baseline or a prompt")
    trainers = train.add_subparsers(dest="what", metavar="WHAT")
    proposals = trainers.add_parser(
        "proposals",
        help="train MaskFormer proposals on a benchmark's training split",
        description="Train the paper's proposal network on the seen classes (zero-shot) or all classes (cross-dataset). "
        "Rerunning the same command resumes from the newest checkpoint in --output-dir. Under torchrun "
        "(torchrun --nproc_per_node N --no-python zsseg train proposals ...) each process takes its share of every batch.",
    )
    _network_training_options(proposals, CONFIGS, "proposals",
                              "; for the clip backbone, 'none' skips CLIP's image weights")
    proposals.add_argument("--loss-pixels", default=None, choices=["all", "labelled"],
                           help="pixels the mask losses and the matching see: all, ignored ones (unseen classes, void, padding) as "
                           "negatives of every mask, as the reference (default); labelled: the ignored ones count nowhere")
    proposals.add_argument("--pseudo-labels", type=Path, default=None, metavar="DIR",
                           help="self-training: train on the labels `zsseg pseudo-label` wrote to DIR for this --dataset/--split "
                           "(seen ground truth + unseen pseudo-labels), learning every class (zero-shot protocol)")

    fcn = trainers.add_parser(
        "fcn",
        help="train the paper's FCN baseline: per-pixel embeddings scored against CLIP text",
        description="Train the paper's retrained FCN (ResNet + FPN, per-pixel embeddings, 100 x cosine with frozen CLIP text "
        "embeddings, cross-entropy on the seen classes, unseen and void pixels ignored). Rerunning the same command resumes. "
        "Under torchrun each process takes its share of every batch. Then: zsseg segment|eval --method fcn --fcn-weights OUT.",
    )
    _network_training_options(fcn, FCN_CONFIGS, "fcn")

    prompts = trainers.add_parser(
        "prompts",
        help="learn a prompt (CoOp context vectors) with a frozen CLIP on a benchmark's training split",
        description="Learn context vectors put before every class name, on Eq. 1 crops of the ground-truth segments of the seen "
        "classes (zero-shot) or all classes (cross-dataset), with CLIP frozen. Writes OUT/prompt.safetensors + OUT/prompt.json, "
        "which --prompt OUT takes. Rerunning the same command resumes; torchrun as for proposals.",
    )
    _training_data_options(prompts, "zero-shot: learn on the seen classes only (default); cross-dataset: all")
    prompts.add_argument("--config", default="paper", choices=list(PROMPT_CONFIGS), help="named settings (default paper; `zsseg configs` lists them)")
    prompts.add_argument("--clip", default=DEFAULT_CLIP, help=f"the frozen CLIP (default {DEFAULT_CLIP})")
    prompts.add_argument("--context-length", type=_at_least(1), default=None, help="learned vectors before the class name (default: the config's, 16)")
    prompts.add_argument("--samples-per-class", type=_at_least(0), default=None, help="at most this many samples per class, 0 = all (default: the config's)")
    prompts.add_argument("--temperature", type=float, default=None, help="logit scale of the loss (default: the config's, 100 as in Eq. 1)")
    _training_loop_options(prompts, "crops")
    prompts.add_argument("--output-dir", required=True, type=Path, help="checkpoints, log.jsonl, and the final prompt.safetensors + prompt.json")

    pseudo = commands.add_parser(
        "pseudo-label",
        help="self-training: label the unseen classes of a training split with a trained zero-shot model",
        description="Label each training image for self-training: its seen ground truth is kept, every other pixel takes the "
        "unseen class the model scores highest, or is ignored below --reject-threshold. Writes NAME.png per image in the "
        "dataset's own label encoding and pseudo-labels.json. Rerunning the same command resumes. Under torchrun the "
        "images are sharded. Then: zsseg train proposals ... --pseudo-labels DIR.",
    )
    _training_data_options(pseudo, "zero-shot (the only protocol with unseen classes)", protocols=["zero-shot"])
    _model_options(pseudo, USABLE_PROPOSALS, default_proposals=MaskFormerProposals.name)
    pseudo.add_argument("--reject-threshold", type=_unit_interval, default=DEFAULT_REJECT_THRESHOLD,
                        help="ignore pixels whose unseen-class score (its share of the covering proposals' probability, 0..1) "
                        f"is below this (default {DEFAULT_REJECT_THRESHOLD}, the reference's: label every non-seen pixel)")
    pseudo.add_argument("--limit", type=_at_least(1), default=None, help="label the first N images only (a retrain then uses those)")
    pseudo.add_argument("--output-dir", required=True, type=Path, help="where the label files and pseudo-labels.json go")

    prompt_commands = commands.add_parser("prompts", help="choose the best prompt template on training data")
    prompt_tools = prompt_commands.add_subparsers(dest="what", metavar="WHAT")
    select = prompt_tools.add_parser(
        "select",
        help="score every template of a set, alone, on the training split's seen classes, and write the best",
        description="Score each template alone by the mean class accuracy of Eq. 1 on the ground-truth segments of the "
        "training split's seen classes (all classes for cross-dataset). Never reads validation images or unseen classes. "
        "Prints the ranking and writes the best template as a prompt file that --prompt takes.",
    )
    _training_data_options(select, "zero-shot: seen classes only (default); cross-dataset: all", split=False)
    select.add_argument("--templates", default="imagenet", choices=list(TEMPLATE_SETS), help="the set to choose from (default imagenet, CLIP's 80)")
    select.add_argument("--clip", default=DEFAULT_CLIP, help=f"CLIP hub id or local folder (default {DEFAULT_CLIP})")
    select.add_argument("--limit", type=_at_least(1), default=None, help="use the first N training images only")
    select.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    select.add_argument("--batch-size", type=_at_least(1), default=32, help="crops per CLIP forward pass (default 32)")
    select.add_argument("--no-text-cache", action="store_true", help="encode the class names afresh, without the disk cache of text features")
    select.add_argument("--output", required=True, type=Path, help="the prompt file to write (JSON), with the whole ranking")

    demo = commands.add_parser(
        "demo",
        help="a web page for segmenting your own photos (needs: pip install \"zsseg[demo]\")",
        description="Serve a Gradio page: upload an image, type class names or pick a built-in vocabulary, choose the method, "
        "proposals and K, and get the overlay, the classes present with their share of the pixels, and the label PNG and "
        "JSON. CLIP loads once; the model flags below set what the page starts with. Uploads are bounded in bytes and pixels, "
        "requests run one at a time, and the page reads no path from its users (limits: the README's Web demo section).",
    )
    _model_options(demo, USABLE_PROPOSALS)
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to your network)")
    demo.add_argument("--port", type=_at_least(1), default=7860, help="port to serve on (default 7860)")

    commands.add_parser("configs", help="list the named configs of `zsseg train proposals`, `zsseg train fcn` and `zsseg train prompts`")
    commands.add_parser("vocabularies", help="list the built-in vocabularies")
    commands.add_parser("datasets", help="list the benchmarks `zsseg eval` reads")
    return parser


def _training_data_options(parser: argparse.ArgumentParser, protocol_help: str, split: bool = True,
                           protocols: list[str] = list(PROTOCOLS)) -> None:
    """The training data: a benchmark, where it is, its split (unless fixed), and the protocol."""
    parser.add_argument("--dataset", required=True, choices=list(DATASETS), help="training benchmark (coco-stuff, voc-20, ...)")
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding the datasets (default $DETECTRON2_DATASETS, else ./datasets)")
    if split:
        parser.add_argument("--split", default="train", help="dataset split (default train)")
    parser.add_argument("--protocol", default="zero-shot", choices=protocols, help=protocol_help)


def _network_training_options(parser: argparse.ArgumentParser, configs: dict, files: str, backbone_note: str = "") -> None:
    """The flags of `zsseg train proposals` and `zsseg train fcn`: data, config, the CLIP and
    prompt of the text classifier, the backbone's weights, the loop, and where it all goes."""
    _training_data_options(parser, "zero-shot: learn the seen classes only, ignoring unseen pixels (default); cross-dataset: all classes")
    parser.add_argument("--config", default="paper", choices=list(configs), help="named architecture + training config (default paper; `zsseg configs` lists them)")
    parser.add_argument("--clip", default=DEFAULT_CLIP, help=f"CLIP whose text embeddings are the classifier (default {DEFAULT_CLIP})")
    parser.add_argument("--prompt", default=None, metavar="PROMPT",
                        help="prompt of the classifier's text embeddings: imagenet (default), vild, single, a template with {}, "
                        "or a prompt file/folder (`zsseg prompts select`, `zsseg train prompts`: learn the prompt first); stored with the weights")
    parser.add_argument("--backbone-weights", default=None,
                        help="ImageNet weights of the ResNet backbone: hub id or folder (default: the config's, e.g. microsoft/resnet-101); "
                        f"'none' for random weights{backbone_note}")
    _training_loop_options(parser, "images")
    parser.add_argument("--crop-size", type=_at_least(32), default=None, help="square training crop, a multiple of 32 (default: the config's)")
    parser.add_argument("--output-dir", required=True, type=Path, help=f"checkpoints, log.jsonl, and the final {files}.safetensors + {files}.json")
    parser.add_argument("--no-text-cache", action="store_true", help="encode the class names afresh, without the disk cache of text features")


def _training_loop_options(parser: argparse.ArgumentParser, samples: str) -> None:
    """The flags of `zsseg.training.run_training`, shared by every `zsseg train`."""
    parser.add_argument("--max-iters", type=_at_least(1), default=None, help="training steps (default: the config's)")
    parser.add_argument("--batch-size", type=_at_least(1), default=None, help=f"{samples} per step over all processes (default: the config's)")
    parser.add_argument("--checkpoint-every", type=_at_least(1), default=None, help="steps between checkpoints (default: the config's)")
    parser.add_argument("--log-every", type=_at_least(1), default=None, help="steps between log lines (default: the config's)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda (each torchrun process takes its LOCAL_RANK's GPU) (default cpu)")


def _model_options(parser: argparse.ArgumentParser, proposals: list[str], default_proposals: str = DEFAULT_PROPOSALS) -> None:
    parser.add_argument("--clip", default=None,
                        help=f"CLIP hub id or local folder (default: the CLIP inside an authors' checkpoint given as --proposal-weights, "
                        f"else {DEFAULT_CLIP})")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="CLIP's tokenizer for the CLIP inside an authors' checkpoint: a folder with vocab.json and merges.txt, "
                        f"or a hub id (default {DEFAULT_CLIP}'s)")
    parser.add_argument("--method", default="two-stage", choices=list(METHODS),
                        help="two-stage: proposals + CLIP on each (Eq. 1, the paper's; default); fast: the same proposals, each "
                        "classified by pooling dense CLIP features (one CLIP pass, an approximation of Eq. 1); dense-clip: every "
                        "pixel by CLIP's patch features (training-free FCN baseline); fcn: a trained FCN (--fcn-weights) + dense CLIP")
    parser.add_argument("--proposals", default=None, type=_proposals_type(proposals), metavar="GENERATOR",
                        help=f"mask proposal generator: {', '.join(p for p in proposals if p not in PRETRAINED_PROPOSALS)}; "
                        f"sam or sam:MODEL, SAM's automatic masks (default {DEFAULT_SAM}, or any SAM, SlimSAM or SAM-HQ hub id or "
                        "folder); mask2former:MODEL, the query masks of a pretrained MaskFormer, Mask2Former or OneFormer "
                        f"(default {default_proposals})")
    parser.set_defaults(default_proposals=default_proposals)
    parser.add_argument("--dense-mode", default="plain", choices=list(DENSE_MODES),
                        help="dense CLIP's patch features (fast, dense-clip, fcn): plain, as the paper's; sclip: SCLIP's correlative "
                        "self-attention in the last layer, which makes them local")
    parser.add_argument("--overlap", type=_overlap, default=DEFAULT_OVERLAP,
                        help="overlap of dense CLIP's sliding 224 windows, in [0, 1) (dense-clip, fcn; default 2/3, the paper's code)")
    parser.add_argument("--fcn-weights", type=Path, default=None, metavar="PATH",
                        help="trained FCN for --method fcn: the --output-dir of `zsseg train fcn` or its fcn.safetensors")
    parser.add_argument("--max-proposals", type=_at_least(1), default=None, help="masks per image (default 100; all segments for ground-truth)")
    parser.add_argument("--prompt", default=None, metavar="PROMPT",
                        help="how class names are prompted: imagenet (CLIP's 80 templates), vild, single (the paper's 'a sculpture of a {}.'), photo ('a photo of a {}.'), one template such as "
                        "'a sculpture of a {}.', or a prompt file or folder (`zsseg prompts select`, `zsseg train prompts`); "
                        "default: the prompt a maskformer was trained with, else imagenet (eval: the benchmark's, see docs/evaluation.md)")
    parser.add_argument("--network-prompt", default=None, metavar="PROMPT",
                        help="the prompt of a trained network's own text classifier (maskformer, fcn), in --prompt's forms "
                        "(default: the one it was trained with; eval: the benchmark's)")
    parser.add_argument("--mask-threshold", type=_fraction(include_one=False), default=None,
                        help="Eq. 1 binarises each mask at this value before cropping (default 0.5; eval: the benchmark's)")
    parser.add_argument("--test-size", type=_at_least(32), default=None, metavar="PIXELS",
                        help="shorter side images are processed at, longer side at most --max-size (default: a maskformer's test size, "
                        "else the image's own; eval: the benchmark's)")
    parser.add_argument("--no-text-cache", action="store_true", help="encode the class names afresh, without the disk cache of text features")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="CLIP precision (default fp32)")
    parser.add_argument("--max-size", type=_at_least(32), default=None,
                        help=f"longer side images are processed at, at most (default {DEFAULT_MAX_SIZE}; eval: the benchmark's); "
                        "outputs are full size")
    parser.add_argument("--batch-size", type=_at_least(1), default=32, help="crops per CLIP forward pass (default 32)")
    parser.add_argument("--proposal-weights", type=Path, default=None, metavar="PATH",
                        help="trained proposal network for --proposals maskformer: the --output-dir of `zsseg train proposals`, its "
                        "proposals.safetensors, or an authors' checkpoint (model_final.pth)")
    parser.add_argument("--ensemble-weight", type=_unit_interval, default=None,
                        help=f"lambda of the maskformer + CLIP ensemble (default {ENSEMBLE_WEIGHT}, eval: the benchmark's; "
                        f"{FCN_ENSEMBLE_WEIGHT} for the fcn + dense CLIP one): seen classes p_net^l * p_clip^(1-l), unseen the reverse")
    parser.add_argument("--classifier", default="ensemble", choices=list(CLASSIFIERS),
                        help="who labels the maskformer's masks or the fcn's pixels: the ensemble (default), clip alone or the network "
                        "alone (ablations)")


# The argument and its value when not given, of each option a method may or may not take
# (`zsseg.methods.OPTIONS`).
METHOD_FLAGS = {
    "proposals": ("proposals", None),
    "max_proposals": ("max_proposals", None),
    "proposal_weights": ("proposal_weights", None),
    "mask_threshold": ("mask_threshold", None),
    "test_size": ("test_size", None),
    "fcn": ("fcn_weights", None),
    "dense_mode": ("dense_mode", "plain"),
    "overlap": ("overlap", DEFAULT_OVERLAP),
    "ensemble_weight": ("ensemble_weight", None),
    "classifier": ("classifier", "ensemble"),
}


def _method_flags(args: argparse.Namespace) -> dict[str, bool]:
    """Which of the options a method may or may not take the command line gives."""
    return {option: getattr(args, dest) != unset for option, (dest, unset) in METHOD_FLAGS.items()}


def _for_method(args: argparse.Namespace, method: str) -> argparse.Namespace:
    """`args` without the options `method` does not take (the demo offers several methods)."""
    takes = METHOD_CLASSES[method].options
    return argparse.Namespace(**{**vars(args), "method": method,
                                 **{dest: unset for option, (dest, unset) in METHOD_FLAGS.items() if option not in takes}})


def _check_method_flags(args: argparse.Namespace) -> None:
    """A flag the chosen method does not take is an error now, before any model loads."""
    check_options(METHOD_CLASSES[args.method], _method_flags(args))
    if args.method == "fcn" and args.fcn_weights is None:
        raise ZssegError("--method fcn needs --fcn-weights (the --output-dir of `zsseg train fcn`)")


def _proposal_generator(args: argparse.Namespace, device: str) -> ProposalGenerator:
    method = args.method
    spec = args.proposals or args.default_proposals
    name, _ = parse_generator(spec)
    options = {} if args.max_proposals is None else {"max_proposals": args.max_proposals}
    if GENERATORS[name].pretrained:
        if args.proposal_weights is not None:
            raise ZssegError(f"--proposal-weights is for --proposals maskformer; give a pretrained {name} model as --proposals {name}:MODEL")
        options["device"] = device
    if name == MaskFormerProposals.name:
        if args.proposal_weights is None:
            raise ZssegError("--proposals maskformer needs --proposal-weights (the --output-dir of `zsseg train proposals`)")
        options.update(weights=args.proposal_weights, device=device, clip=args.clip, tokenizer=args.tokenizer)
    else:
        for flag, value in (("--proposal-weights", args.proposal_weights), ("--ensemble-weight", args.ensemble_weight),
                            ("--tokenizer", args.tokenizer)):
            if value is not None and not (method == "fcn" and flag == "--ensemble-weight"):
                raise ZssegError(f"{flag} is for --proposals maskformer, not {name}")
    if GENERATORS[name].needs_ground_truth:
        options["ignore_index"] = IGNORE
    elif "max_proposals" not in options:
        options["max_proposals"] = DEFAULT_MAX_PROPOSALS
    return build_proposal_generator(spec, **options)


def _segmenter(args: argparse.Namespace, device: str, proposals: ProposalGenerator) -> Segmenter:
    return Segmenter(
        clip=args.clip,
        proposals=proposals,
        prompt=args.prompt,
        network_prompt=args.network_prompt,
        device=device,
        dtype=args.dtype,
        max_size=DEFAULT_MAX_SIZE if args.max_size is None else args.max_size,
        test_size=args.test_size,
        mask_threshold=0.5 if args.mask_threshold is None else args.mask_threshold,
        batch_size=args.batch_size,
        ensemble_weight=args.ensemble_weight,
        classifier=args.classifier,
        text_cache=not args.no_text_cache,
        method=args.method,
        dense_mode=args.dense_mode,
        overlap=args.overlap,
        fcn=args.fcn_weights,
    )


def _collect_images(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Image files named directly or found (non-recursively) in folders, each once (by resolved
    path, in the order given); plus per-input errors. In a folder, label maps and overlays that
    zsseg wrote are not inputs, so segmenting a folder into itself twice works."""
    images: dict[Path, Path] = {}
    failures = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not written_by_zsseg(p))
            except OSError as error:
                failures.append(f"{path}: cannot read the folder: {error.strerror or error}")
                continue
            if not found:
                failures.append(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif path.exists():
            found = [path]
        else:
            found = []
            failures.append(f"{path}: no such file or folder")
        for image in found:
            images.setdefault(image.resolve(), image)
    return list(images.values()), failures


def _inputs(args: argparse.Namespace, images: list[Path] = ()) -> frozenset[Path]:
    """Every file the command reads (resolved): images, the vocabulary file, and the files of
    the CLIP, proposal-weight and FCN folders. No output may be one of them, even with --overwrite."""
    files = [*images, getattr(args, "vocabulary_file", None)]
    prompt = getattr(args, "prompt", None)
    prompt = Path(prompt) if prompt is not None and Path(prompt).expanduser().exists() else None
    spec = getattr(args, "proposals", None)
    pretrained = parse_generator(spec)[1] if spec else None
    for model in (getattr(args, "clip", None), getattr(args, "proposal_weights", None), getattr(args, "fcn_weights", None), prompt, pretrained):
        path = Path(model).expanduser() if model is not None else None
        if path is not None and path.is_dir():
            files.extend(p for p in path.iterdir() if p.is_file())
        elif path is not None and path.is_file():
            files.extend([path, path.with_suffix(".json"), path.with_suffix(".safetensors")])
    return frozenset(Path(f).resolve() for f in files if f is not None)


def _check_outputs(images: list[Path], out: Path, overwrite: bool, inputs: frozenset[Path]) -> None:
    """Before any work: no two images write the same file, no output is an input, and no
    existing file that zsseg did not write is replaced (unless `overwrite`)."""
    _check_output_folder(out, "--out")
    owner: dict[str, Path] = {}
    for image in images:
        for target in output_paths(out, image.stem):
            if target.name in owner:
                raise ZssegError(f"{owner[target.name]} and {image} would both write {target.name}; rename one or run them separately")
            owner[target.name] = image
            check_target(target, inputs, overwrite)


def _check_output_folder(folder: Path, flag: str) -> None:
    """`folder` is a folder, or can be made as one, and is writable. Creates nothing: outputs
    make their folder when they are written."""
    if folder.is_symlink() and not folder.exists():
        raise ZssegError(f"{flag} {folder} is a symbolic link to nothing (dangling, or a loop)")
    if folder.exists() and not folder.is_dir():
        raise ZssegError(f"{flag} {folder} exists and is not a folder")
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ZssegError(f"{flag} {folder} is not writable: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ZssegError(f"{flag} {folder} is not writable: {error.strerror or error}") from None


def _vocabulary(args: argparse.Namespace) -> Vocabulary:
    if args.classes is not None:
        return Vocabulary.parse(args.classes)
    if args.vocabulary is not None:
        return Vocabulary.preset(args.vocabulary)
    return Vocabulary.from_file(args.vocabulary_file)


def _check_prompt(args: argparse.Namespace) -> None:
    """A misspelt prompt or a broken prompt file is an error before any model loads."""
    for flag in ("prompt", "network_prompt"):
        if getattr(args, flag, None) is not None and not getattr(args, "oracle", False):
            load_prompt(getattr(args, flag))


def _segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    vocabulary = _vocabulary(args)
    _check_prompt(args)
    _check_method_flags(args)
    images, failures = _collect_images(args.inputs)
    inputs = _inputs(args, images)
    _check_outputs(images, args.out, args.overwrite, inputs)
    created = not args.out.exists()
    done = 0
    if images:
        segmenter = _segmenter(args, args.device, _proposal_generator(args, args.device))
        segmenter.prepare(vocabulary)
        try:
            for path in tqdm(images, desc="segmenting", unit="image", disable=None):
                try:
                    image = read_image(path)
                    result = segmenter.segment(image, vocabulary)
                    for target in output_paths(args.out, path.stem):  # again: a file may have appeared since
                        check_target(target, inputs, args.overwrite)
                    write_outputs(args.out, path.stem, image, result.label_map, result.class_names, str(path))
                    done += 1
                except ZssegError as error:
                    failures.append(str(error))
                except OSError as error:
                    failures.append(f"{path}: cannot write outputs to {args.out}: {error.strerror or error}")
        except KeyboardInterrupt:
            _report(failures)
            where = f"; their outputs are in {args.out}" if done else ""
            print(f"zsseg: interrupted: {done} of {len(images)} image(s) segmented, {len(failures)} failed{where}", file=sys.stderr)
            return 130
        finally:
            if created and args.out.is_dir() and not any(args.out.iterdir()):
                args.out.rmdir()  # made for an output that then failed: leave nothing behind
    _report(failures)
    where = f"; outputs in {args.out}" if done else ""
    print(f"zsseg: {done} image(s) segmented, {len(failures)} failed{where}", file=sys.stderr)
    return 1 if failures else 0


def _report(failures: list[str]) -> None:
    for failure in failures:
        print(f"zsseg: {failure}", file=sys.stderr)


def _check_json_output(path: Path, flag: str, dataset: SegmentationDataset, inputs: frozenset[Path]) -> None:
    """Fail before a long run, not after it, if the JSON cannot or may not be written."""
    if path.is_dir():
        raise ZssegError(f"{flag} {path} is a folder; give a file name such as {path / 'scores.json'}")
    if not path.parent.is_dir():
        raise ZssegError(f"{flag} folder {path.parent} does not exist")
    dataset.check_outside(path, flag)
    _check_output_folder(path.parent, flag)
    check_target(path, inputs, advice=f"give another {flag} file")


def _benchmark_args(args: argparse.Namespace, dataset: SegmentationDataset) -> tuple[argparse.Namespace, dict]:
    """The command line with each model setting it leaves open taken from the benchmark's row
    of `zsseg.benchmarks.SETTINGS` (the reference code's test settings), and a record of every
    setting and where it came from."""
    from .benchmarks import benchmark_settings

    row = benchmark_settings(dataset.name, args.protocol)
    per_pixel = args.method in PER_PIXEL_METHODS
    network = not per_pixel and parse_generator(args.proposals or args.default_proposals)[0] == MaskFormerProposals.name
    preset = row.segmenter_options(network or args.method == "fcn")
    if args.method == "fcn":
        preset["ensemble_weight"] = None  # the FCN's own lambda (FCN_ENSEMBLE_WEIGHT), as the reference's per-pixel config
    takes = METHOD_CLASSES[args.method].options | {"max_size", "prompt", "network_prompt"}
    chosen = {key: preset[key] if getattr(args, key) is None and key in takes else getattr(args, key)
              for key in ("test_size", "max_size", "mask_threshold", "ensemble_weight", "prompt", "network_prompt")}
    seen = args.seen_classes or row.seen
    record = {
        "benchmark_settings": row.source,
        "test_size": [chosen["test_size"], chosen["max_size"]],
        "mask_threshold": None if per_pixel else chosen["mask_threshold"],
        "seen_classes": seen,
        "seen_flags": row.seen_flags(dataset.unseen, dataset.num_classes, seen),
        "class_names": row.class_names if args.class_names == "reference" else dataset.vocabulary.name,
        "miou_rule": args.miou_rule,
    }
    return argparse.Namespace(**{**vars(args), **chosen}), record


def _evaluate(args: argparse.Namespace) -> int:
    from .benchmarks import benchmark_settings
    from .distributed import init_distributed, shutdown_distributed
    from .evaluation import ClipPredictor, OraclePredictor, check_prediction_folder, evaluate

    if args.oracle and args.method != "two-stage":
        raise ZssegError(f"--oracle scores proposals alone, with no classifier; --method {args.method} does not apply")
    dataset = load_dataset(args.dataset, args.data_root, args.split, skip_missing_labels=args.skip_missing_labels)
    unseen_classes(dataset, args.protocol)
    _check_prompt(args)
    if not args.oracle:
        _check_method_flags(args)
    args, recorded = _benchmark_args(args, dataset)
    vocabulary = benchmark_settings(dataset.name, args.protocol).vocabulary() if args.class_names == "reference" else dataset.vocabulary
    inputs = _inputs(args)
    if args.output is not None:
        _check_json_output(args.output, "--output", dataset, inputs)
    if args.save_predictions is not None:
        _check_output_folder(args.save_predictions, "--save-predictions")
        check_prediction_folder(dataset, args.save_predictions, args.limit)
    context = init_distributed(args.device)
    try:
        generator = _proposal_generator(args, context.device)
        if args.oracle:
            predictor = OraclePredictor(generator, dataset.num_classes, args.max_size, args.test_size)
        else:
            predictor = ClipPredictor(_segmenter(args, context.device, generator), vocabulary, seen=recorded["seen_flags"])
        per_pixel = args.method in PER_PIXEL_METHODS and not args.oracle
        proposals = None if per_pixel else args.proposals or args.default_proposals
        segmenter = None if args.oracle else predictor.segmenter
        network = getattr(segmenter, "network_prompts", None)
        settings = {
            "oracle": args.oracle,
            "method": None if args.oracle else args.method,
            "proposals": proposals,
            "proposal_model": getattr(generator, "source", None) if not per_pixel else None,
            "proposal_weights": None if args.proposal_weights is None else str(args.proposal_weights),
            "fcn_weights": None if args.fcn_weights is None else str(args.fcn_weights),
            "dense_mode": args.dense_mode if args.method != "two-stage" and not args.oracle else None,
            "overlap": args.overlap if per_pixel else None,
            "ensemble_weight": segmenter.ensemble_weight if network is not None else None,
            "classifier": args.classifier if (proposals == MaskFormerProposals.name or args.method == "fcn") and not args.oracle else None,
            "max_proposals": None if per_pixel else generator.max_proposals,
            "self_training": generator.trained.self_training if isinstance(generator, MaskFormerProposals) else None,
            "clip": None if args.oracle else segmenter.clip.source,
            "prompt": None if args.oracle else segmenter.classifier.prompts.prompt.describe(),
            "network_prompt": None if network is None else network.prompt.describe(),
            **{k: v for k, v in recorded.items() if k != "seen_flags"},
            "seen_classes": recorded["seen_classes"] if network is not None else None,
            "mask_threshold": recorded["mask_threshold"] if not args.oracle else None,
            "dtype": None if args.oracle else args.dtype,
            "max_size": args.max_size,
            "data_root": str(dataset.root),
            "zsseg_version": __version__,
        }
        report = evaluate(
            dataset,
            predictor,
            protocol=args.protocol,
            limit=args.limit,
            context=context,
            save_predictions=args.save_predictions,
            settings=settings,
            skip_unreadable_labels=args.skip_missing_labels,
            miou_rule=args.miou_rule,
            class_names=vocabulary.names,
        )
    finally:
        shutdown_distributed()
    if context.is_main:
        _output(report.summary() if args.quiet else report.table().splitlines())
        if args.output is not None:
            check_target(args.output, inputs, advice="give another --output file")
            write_json(args.output, report.as_dict())
            print(f"zsseg: wrote {args.output}", file=sys.stderr)
    return 0


def _train_config(args: argparse.Namespace, config):
    """A named config (`NamedConfig` or `FcnConfig`) with the command line's training overrides."""
    from dataclasses import replace

    overrides = {
        key: getattr(args, key)
        for key in ("max_iters", "batch_size", "crop_size", "checkpoint_every", "log_every", "seed", "loss_pixels")
        if getattr(args, key, None) is not None
    }
    _check_prompt(args)  # a bad prompt is an error now, not after the dataset is read
    if args.prompt is not None:
        overrides["prompt"] = args.prompt
    return replace(config, train=replace(config.train, **overrides))


def _backbone_weights(args: argparse.Namespace, backbone: str) -> str | None:
    from .maskformer.resnet import RESNETS

    if args.backbone_weights is None:
        return "clip" if backbone == "clip" else RESNETS[backbone].imagenet_weights
    return None if args.backbone_weights.lower() == "none" else args.backbone_weights


def _train(args: argparse.Namespace) -> int:
    from .maskformer.config import named_config
    from .maskformer.training import check_output_dir, train_proposals

    config = _train_config(args, named_config(args.config))
    weights = _backbone_weights(args, config.model.backbone)
    labels = {}

    def check(dataset: SegmentationDataset) -> None:
        if args.pseudo_labels is not None:
            from .pseudo_labels import load_pseudo_labels

            if args.protocol != "zero-shot":
                raise ZssegError("--pseudo-labels is for the zero-shot protocol (--protocol zero-shot)")
            labels["pseudo_labels"] = load_pseudo_labels(args.pseudo_labels, dataset)

    return _run_training(
        args, check_output_dir,
        lambda dataset, clip, context: train_proposals(dataset, config, clip, args.output_dir, args.protocol, weights, context,
                                                       text_cache=not args.no_text_cache, **labels),
        lambda result: f"weights in {result.weights}" + (" (self-trained)" if labels else ""),
        check,
    )


def _train_fcn(args: argparse.Namespace) -> int:
    from .fcn import check_output_dir, fcn_config, train_fcn

    config = _train_config(args, fcn_config(args.config))
    weights = _backbone_weights(args, config.model.backbone)
    return _run_training(
        args, check_output_dir,
        lambda dataset, clip, context: train_fcn(dataset, config, clip, args.output_dir, args.protocol, weights, context,
                                                 text_cache=not args.no_text_cache),
        lambda result: f"weights in {result.weights}; use them with --method fcn --fcn-weights {args.output_dir}",
    )


def _train_prompts(args: argparse.Namespace) -> int:
    from .prompt_learning import check_output_dir, prompt_config, prompt_config_with, train_prompts

    config = prompt_config_with(prompt_config(args.config), **{
        key: getattr(args, key)
        for key in ("context_length", "samples_per_class", "temperature", "max_iters", "batch_size", "checkpoint_every", "log_every", "seed")
    })
    return _run_training(
        args, check_output_dir,
        lambda dataset, clip, context: train_prompts(dataset, config, clip, args.output_dir, args.protocol, context),
        lambda result: f"pass --prompt {args.output_dir}",
    )


def _run_training(args: argparse.Namespace, check_output_dir: Callable[[Path], None], train: Callable, done: Callable,
                  check: Callable[[SegmentationDataset], None] = lambda dataset: None) -> int:
    """What every `zsseg train` does around its training: the dataset, the checks of
    --output-dir (and `check` of the dataset) before any model loads, torchrun, and the
    closing line."""
    from .clip import load_clip
    from .distributed import init_distributed, shutdown_distributed

    dataset = load_dataset(args.dataset, args.data_root, args.split)
    unseen_classes(dataset, args.protocol)  # before CLIP loads: a protocol the dataset lacks
    dataset.check_outside(args.output_dir, "--output-dir")
    _check_output_folder(args.output_dir, "--output-dir")
    check_output_dir(args.output_dir)
    check(dataset)
    context = init_distributed(args.device)
    try:
        result = train(dataset, load_clip(args.clip, device=context.device), context)
    finally:
        shutdown_distributed()
    if context.is_main:
        resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
        loss = f", last loss {result.last_log['loss']:.4f}" if result.last_log else ""
        print(f"zsseg: trained {result.steps} steps{resumed}{loss}; {done(result)}", file=sys.stderr)
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from .distributed import init_distributed, shutdown_distributed
    from .self_training import pseudo_label

    if args.method in PER_PIXEL_METHODS:
        raise ZssegError(f"pseudo-labels are made from proposals (--method two-stage or fast), not --method {args.method}")
    _check_method_flags(args)
    dataset = load_dataset(args.dataset, args.data_root, args.split)
    _check_prompt(args)
    dataset.check_outside(args.output_dir, "--output-dir")
    _check_output_folder(args.output_dir, "--output-dir")
    context = init_distributed(args.device)
    try:
        segmenter = _segmenter(args, context.device, _proposal_generator(args, context.device))
        settings = {
            "proposal_weights": None if args.proposal_weights is None else str(args.proposal_weights),
            "clip": segmenter.clip.source,
            "prompt": segmenter.classifier.prompts.prompt.describe(),
            "dtype": args.dtype,
            "data_root": str(dataset.root),
            "zsseg_version": __version__,
        }
        report = pseudo_label(dataset, segmenter, args.output_dir, protocol=args.protocol, reject_threshold=args.reject_threshold,
                              limit=args.limit, context=context, settings=settings)
    finally:
        shutdown_distributed()
    if context.is_main:
        _output(report.summary())
        print(f"zsseg: pseudo-labels in {args.output_dir}; train on them with "
              f"`zsseg train proposals ... --pseudo-labels {args.output_dir}`", file=sys.stderr)
    return 0


def _select_prompt(args: argparse.Namespace) -> int:
    from .clip import load_clip
    from .prompt_selection import TRAINING_SPLIT, select_template
    from .prompts import save_template_prompt

    dataset = load_dataset(args.dataset, args.data_root, TRAINING_SPLIT)
    unseen_classes(dataset, args.protocol)
    inputs = _inputs(args)
    _check_json_output(args.output, "--output", dataset, inputs)
    clip = load_clip(args.clip, device=args.device)
    selection = select_template(dataset, clip, args.protocol, args.templates, args.limit, args.batch_size,
                                text_cache=not args.no_text_cache)
    _output(selection.table().splitlines())
    check_target(args.output, inputs, advice="give another --output file")
    save_template_prompt(args.output, selection.best, {"clip": args.clip, "template_set": args.templates, **selection.as_dict()})
    print(f"zsseg: best template '{selection.ranking[0].template}'; wrote {args.output} (pass --prompt {args.output})", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Serve the web demo until Ctrl-C. Everything that can fail (gradio missing, CLIP, the
    page's initial settings, the port) fails before the page is served, in one line."""
    try:
        importlib.import_module("gradio")  # the optional extra: nothing else imports it
    except ImportError as error:
        if (error.name or "").split(".")[0] == "gradio":
            raise ZssegError('the web demo needs gradio, which is not installed: pip install "zsseg[demo]"') from None
        raise ZssegError(f'gradio cannot be imported ({error}); reinstall it: pip install "zsseg[demo]"') from None
    from .clip import load_clip
    from .demo import Demo, example_images

    _check_prompt(args)
    clip = load_clip(args.clip or DEFAULT_CLIP, device=args.device, dtype=args.dtype)
    page = Demo(_demo_segmenters(args, clip), list(METHODS), DEMO_PROPOSALS, method=args.method,
                proposal=None if args.method in PER_PIXEL_METHODS else args.proposals or args.default_proposals,
                max_proposals=args.max_proposals or DEFAULT_MAX_PROPOSALS, max_size=args.max_size or DEFAULT_MAX_SIZE,
                examples=example_images())
    for reason in page.left_out:
        print(f"zsseg: not offered on the page: {reason}", file=sys.stderr)
    try:
        server = page.launch(args.host, args.port, block=False)
    except OSError as error:
        raise ZssegError(f"cannot serve on {args.host}:{args.port}: {error}") from None
    print(f"zsseg: the demo is at http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    try:
        threading.Event().wait()
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # Gradio's "Closing server running on port: ..."
            server.close()
    return 0


def _demo_segmenters(args: argparse.Namespace, clip) -> Callable[[str, str | None, int | None], Segmenter]:
    """Builds the page's segmenter for (method, proposals, K) as `zsseg segment` would with
    those flags (and the others as given), around the one loaded `clip`. The weights flags
    apply where they belong, so that the page can switch between a trained network and the
    training-free generators. A generator that loads a network (maskformer, sam, mask2former)
    loads it once: the segmenters for other K take a copy that shares it."""
    networks: dict[str, ProposalGenerator] = {}

    def generator(settings: argparse.Namespace) -> ProposalGenerator:
        spec = settings.proposals or settings.default_proposals
        name, _ = parse_generator(spec)
        if settings.method in PER_PIXEL_METHODS or not (GENERATORS[name].pretrained or name == MaskFormerProposals.name):
            return _proposal_generator(settings, args.device)
        if spec not in networks:
            networks[spec] = _proposal_generator(settings, args.device)
        shared = copy.copy(networks[spec])
        shared.max_proposals = settings.max_proposals or DEFAULT_MAX_PROPOSALS
        return shared

    def make(method: str, proposals: str | None, max_proposals: int | None) -> Segmenter:
        trained = proposals == MaskFormerProposals.name or method == "fcn"
        settings = _for_method(argparse.Namespace(**{
            **vars(args),
            "clip": clip,
            "proposals": proposals,
            "max_proposals": max_proposals,
            "proposal_weights": args.proposal_weights if proposals == MaskFormerProposals.name else None,
            "ensemble_weight": args.ensemble_weight if trained else None,
            "classifier": args.classifier if trained else "ensemble",
        }), method)
        return _segmenter(settings, args.device, generator(settings))

    return make


def _run(args: argparse.Namespace) -> int:
    if args.command == "vocabularies":
        _output(f"{name:20s} {len(Vocabulary.preset(name)):4d} classes  {description}" for name, description in PRESETS.items())
        return 0
    if args.command == "datasets":
        _output(
            f"{name:20s} splits {'/'.join(spec.splits):18s} {spec.description}"
            + (f", zero-shot {len(spec.unseen)} unseen" if spec.unseen else "")
            for name, spec in DATASETS.items()
        )
        return 0
    if args.command == "configs":
        _output(
            [f"zsseg train proposals --config {name:14s} {config.description}" for name, config in CONFIGS.items()]
            + [f"zsseg train fcn --config {name:20s} {config.description}" for name, config in FCN_CONFIGS.items()]
            + [f"zsseg train prompts --config {name:16s} {config.description}" for name, config in PROMPT_CONFIGS.items()]
        )
        return 0
    if args.command == "eval":
        return _evaluate(args)
    if args.command == "train":
        return {"proposals": _train, "fcn": _train_fcn, "prompts": _train_prompts}[args.what](args)
    if args.command == "prompts":
        return _select_prompt(args)
    if args.command == "pseudo-label":
        return _pseudo_label(args)
    if args.command == "demo":
        return _demo(args)
    return _segment(args)


def _output(lines: Iterable[str]) -> None:
    """Print results to standard output. A closed pipe propagates (main stops quietly); any
    other write error (a full disk, `> /dev/full`) is a one-line error."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise ZssegError(f"cannot write to standard output: {error.strerror or error}") from None


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)  # inside: `--version | head -0` is a closed pipe too
        if args.command is None:
            print("zsseg: error: give a command: segment, demo, eval, train, pseudo-label, prompts, vocabularies, datasets or configs (see `zsseg --help`)", file=sys.stderr)
            return 2
        if args.command == "train" and args.what is None:
            print("zsseg train: error: say what to train: `zsseg train proposals ...`, `zsseg train fcn ...` or `zsseg train prompts ...` (see their --help)", file=sys.stderr)
            return 2
        if args.command == "prompts" and args.what is None:
            print("zsseg prompts: error: say what to do: `zsseg prompts select ...` (see `zsseg prompts select --help`)", file=sys.stderr)
            return 2
        return _run(args)
    except ZssegError as error:
        rank = os.environ.get("RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
        print(f"zsseg: error{f' (process {rank})' if rank else ''}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zsseg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output has gone (`zsseg vocabularies | head -1`): stop quietly, as
        # Unix tools do. Point stdout at /dev/null so that the final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status of a tool that the signal stopped


if __name__ == "__main__":
    sys.exit(main())
