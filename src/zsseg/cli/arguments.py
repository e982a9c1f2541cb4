"""The command line's shared argument groups and value types, and which model flags each method
takes (`zsseg.catalogue`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

from ..catalogue import (
    CLASSIFIERS, DATASET_NAMES, DEFAULT_BATCH_SIZE, DEFAULT_CLIP, DEFAULT_MASK_THRESHOLD, DEFAULT_MAX_PROPOSALS, DEFAULT_MAX_SIZE,
    DEFAULT_PROPOSALS, DEFAULT_SAM, DENSE_MODES, ENSEMBLE_WEIGHT, FCN_ENSEMBLE_WEIGHT, GENERATORS, METHODS, PRECISIONS, PROTOCOLS,
    parse_generator,
)
from ..errors import ZssegError
from ..data.vocabulary import PRESETS, Vocabulary


USABLE_PROPOSALS = [name for name, cls in GENERATORS.items() if not cls.needs_ground_truth]


PRETRAINED_PROPOSALS = [name for name, cls in GENERATORS.items() if cls.pretrained]


def proposals_type(allowed: list[str]) -> Callable[[str], str]:
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


def at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum` (and <= `maximum`); argparse names the flag in
    its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


SEED = at_least(0, 2**32 - 1)  # numpy's and torch's seeds are unsigned 32-bit
PORT = at_least(1, 65535)


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def fraction(include_one: bool) -> Callable[[str], float]:
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


unit_interval = fraction(include_one=True)


overlap_fraction = fraction(include_one=False)


def vocabulary_options(parser: argparse.ArgumentParser) -> None:
    """The vocabulary, given one of three ways (`segment`, `classify`), or by --config's record."""
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument("--classes", help='class names: "cat; sofa, couch; wall" (";" between classes, "," between synonyms)')
    vocab.add_argument("--vocabulary", choices=list(PRESETS), help="a built-in benchmark vocabulary")
    vocab.add_argument("--vocabulary-file", type=Path, help="text file, one class per line, synonyms separated by commas")


def chosen_vocabulary(args: argparse.Namespace, recorded: Vocabulary | None = None) -> Vocabulary:
    """The vocabulary `vocabulary_options` gave, read and checked; else the one --config's
    file records (`recorded`)."""
    if args.classes is not None:
        return Vocabulary.parse(args.classes)
    if args.vocabulary is not None:
        return Vocabulary.preset(args.vocabulary)
    if args.vocabulary_file is not None:
        return Vocabulary.from_file(args.vocabulary_file)
    if recorded is not None:
        return recorded
    raise ZssegError("give the class names: --classes, --vocabulary or --vocabulary-file (or --config with a file that records them)")


def training_data_options(parser: argparse.ArgumentParser, protocol_help: str, split: bool = True,
                           protocols: list[str] = list(PROTOCOLS), paper_voc: bool = False) -> None:
    """The training data: a benchmark, where it is, its split (unless fixed), and the protocol.
    With `paper_voc` (the commands with a `paper-voc` config) the split's default is left to
    `training_split`."""
    parser.add_argument("--dataset", required=True, choices=list(DATASET_NAMES), help="training benchmark (coco-stuff, voc-20, ...)")
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding the datasets (default $DETECTRON2_DATASETS, else ./datasets)")
    if split and paper_voc:
        parser.add_argument("--split", default=None, help="dataset split (default train; for voc-20/voc-21 under --config paper-voc, "
                            "train_aug: the 10,582 SBD-augmented images in SegmentationClassAug, as the paper)")
    elif split:
        parser.add_argument("--split", default="train", help="dataset split (default train)")
    parser.add_argument("--protocol", default="zero-shot", choices=protocols, help=protocol_help)


def recipe_option(parser: argparse.ArgumentParser, kind: str, output: str) -> None:
    """`--config NAME|FILE`: a built-in recipe of `zsseg train KIND`, a recipe file, or a trained run's JSON."""
    from ..training.recipes import recipe_names

    parser.add_argument("--config", default="paper", metavar="NAME|FILE",
                        help=f"the recipe: a built-in one ({', '.join(recipe_names(kind))}; default paper; `zsseg configs` "
                        f"describes them), a recipe file of the same format (docs/configuration.md), or the {output} of a "
                        "trained run, to train it again; the flags below override it")


def network_training_options(parser: argparse.ArgumentParser, kind: str, files: str, backbone_note: str = "") -> None:
    """The flags of `zsseg train proposals` and `zsseg train fcn`: data, recipe, the CLIP and
    prompt of the text classifier, the backbone's weights, the loop, and where it all goes."""
    from ..training.recipes import recipe_names

    training_data_options(parser, "zero-shot: learn the seen classes only, ignoring unseen pixels (default); cross-dataset: all classes",
                          paper_voc="paper-voc" in recipe_names(kind))
    recipe_option(parser, kind, f"{files}.json")
    clip_option(parser, "CLIP whose text embeddings are the classifier")
    parser.add_argument("--prompt", default=None, metavar="PROMPT",
                        help="prompt of the classifier's text embeddings: imagenet (default), vild, single, a template with {}, "
                        "or a prompt file/folder (`zsseg prompts select`, `zsseg train prompts`: learn the prompt first); stored with the weights")
    parser.add_argument("--backbone-weights", default=None,
                        help="ImageNet weights of the ResNet backbone: a detectron2 .pkl (file or URL), or a transformers ResNet hub id or folder (default: the config's, R-103.pkl for paper); "
                        f"'none' for random weights{backbone_note}")
    training_loop_options(parser, "images")
    parser.add_argument("--crop-size", type=at_least(32), default=None, help="square training crop, a multiple of 32 (default: the config's)")
    parser.add_argument("--output-dir", required=True, type=Path, help=f"checkpoints, log.jsonl, and the final {files}.safetensors + {files}.json")
    parser.add_argument("--no-text-cache", action="store_true", help="encode the class names afresh, without the disk cache of text features")


def training_split(args: argparse.Namespace, recipe: str) -> str:
    """--split, else the training split of --dataset under the recipe named `recipe`: the
    paper's VOC recipes train on VOC's SBD-augmented set (`train_aug`), everything else on `train`."""
    if getattr(args, "split", None) is not None:
        return args.split
    return "train_aug" if args.dataset in ("voc-20", "voc-21") and recipe == "paper-voc" else "train"


def training_loop_options(parser: argparse.ArgumentParser, samples: str) -> None:
    """The flags of `zsseg.training.loop.run_training`, shared by every `zsseg train`."""
    parser.add_argument("--max-iters", type=at_least(1), default=None, help="training steps (default: the config's)")
    parser.add_argument("--batch-size", type=at_least(1), default=None, help=f"{samples} per step over all processes (default: the config's)")
    parser.add_argument("--checkpoint-every", type=at_least(1), default=None, help="steps between checkpoints (default: the config's)")
    parser.add_argument("--log-every", type=at_least(1), default=None, help="steps between log lines (default: the config's)")
    parser.add_argument("--seed", type=SEED, default=None, help="random seed, 0..4294967295 (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda (each torchrun process takes its LOCAL_RANK's GPU) (default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                        help="fp32 (default, as the reference trained), or bf16 autocast of the forward pass (weights and optimiser stay fp32)")
    workers_option(parser, f"processes that make the training {samples} ahead of each step")


def workers_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--workers", type=at_least(0), default=None,
                        help=f"DataLoader {what} (default 4 on cuda, else 0: the main process)")


def pipeline_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                        help=f"{what} one image at a time (by default the next image is read and its proposals and crops "
                        "made while CLIP works on this one: the same outputs, sooner; also $ZSSEG_PIPELINE=0)")


def worker_count(args: argparse.Namespace) -> int:
    """--workers, else the reference's 4 on a GPU and none on the CPU (where the cores compute)."""
    if args.workers is not None:
        return args.workers
    return 4 if str(args.device).startswith("cuda") else 0


CLIP_FORMS = ("a hub id or folder (transformers' CLIP or SigLIP, or open_clip's layout such as timm/resnet50_clip.openai), "
              "or an OpenAI-layout state-dict file (.safetensors/.pt)")


def dtype_option(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """--dtype: CLIP's precision."""
    parser.set_defaults(default_dtype=default)  # the command's, where neither --dtype nor --config gives one
    parser.add_argument("--dtype", default=None, choices=list(PRECISIONS),
                        help="CLIP precision: auto (bf16 on a GPU and on CPUs with AMX, int8 on other CPUs), fp32, bf16, fp16, or "
                        f"int8 (the image tower's linear layers quantised; CPU); bf16 also autocasts a maskformer's network (default {default})")


def tokenizer_option(parser: argparse.ArgumentParser) -> None:
    """--tokenizer: CLIP's BPE tokenizer for checkpoints that carry none."""
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="CLIP's tokenizer for checkpoints that carry none (OpenAI and open_clip files and folders, the CLIP "
                        f"inside an authors' checkpoint): a folder with vocab.json and merges.txt, or a hub id (default {DEFAULT_CLIP}'s)")


def clip_option(parser: argparse.ArgumentParser, what: str = "the CLIP") -> None:
    """--clip with its default (ViT-B/16) and --tokenizer."""
    parser.add_argument("--clip", default=DEFAULT_CLIP, help=f"{what}: {CLIP_FORMS} (default {DEFAULT_CLIP})")
    tokenizer_option(parser)


def model_options(parser: argparse.ArgumentParser, proposals: list[str], dtype: str = "auto") -> None:
    """The flags that choose and run the models, one for each setting (`zsseg.config.OPTIONS`),
    and --config. A flag left out leaves the setting to --config's file, else to zsseg's default;
    `dtype` is this command's default precision ("auto" for labelling your images; "fp32" where
    the paper's numbers are at stake: eval, pseudo-labels)."""
    config_option(parser)
    parser.add_argument("--clip", default=None,
                        help=f"the vision-language model: {CLIP_FORMS} (default: the CLIP inside an authors' checkpoint given "
                        f"as --proposal-weights, else {DEFAULT_CLIP})")
    tokenizer_option(parser)
    parser.add_argument("--method", default=None, choices=list(METHODS),
                        help="two-stage: proposals + CLIP on each (Eq. 1, the paper's; default); fast: the same proposals, each "
                        "classified by pooling dense CLIP features (one CLIP pass, an approximation of Eq. 1); dense-clip: every "
                        "pixel by CLIP's patch features (training-free FCN baseline); fcn: a trained FCN (--fcn-weights) + dense CLIP")
    parser.add_argument("--proposals", default=None, type=proposals_type(proposals), metavar="GENERATOR",
                        help=f"mask proposal generator: {', '.join(p for p in proposals if p not in PRETRAINED_PROPOSALS)}; "
                        f"sam or sam:MODEL, SAM's automatic masks (default {DEFAULT_SAM}, or any SAM, SlimSAM or SAM-HQ hub id or "
                        "folder); mask2former:MODEL, the query masks of a pretrained MaskFormer, Mask2Former or OneFormer "
                        f"(default {DEFAULT_PROPOSALS}); each generator's own settings go in a --config file")
    parser.add_argument("--dense-mode", default=None, choices=list(DENSE_MODES),
                        help="dense CLIP's patch features (fast, dense-clip, fcn): plain, as the paper's (default); sclip: SCLIP's "
                        "correlative self-attention in the last layer, which makes them local")
    parser.add_argument("--overlap", type=overlap_fraction, default=None,
                        help="overlap of dense CLIP's sliding 224 windows, in [0, 1) (dense-clip, fcn; default 2/3, the paper's code)")
    parser.add_argument("--fcn-weights", type=Path, default=None, metavar="PATH",
                        help="trained FCN for --method fcn: the --output-dir of `zsseg train fcn` or its fcn.safetensors")
    parser.add_argument("--max-proposals", type=at_least(1), default=None,
                        help=f"masks per image (default {DEFAULT_MAX_PROPOSALS}; all segments for ground-truth)")
    parser.add_argument("--prompt", default=None, metavar="PROMPT",
                        help="how class names are prompted: imagenet (CLIP's 80 templates), vild, single (the paper's 'a sculpture of a {}.'), photo ('a photo of a {}.'), one template such as "
                        "'a sculpture of a {}.', or a prompt file or folder (`zsseg prompts select`, `zsseg train prompts`); "
                        "default: the prompt a maskformer was trained with, else imagenet (eval: the benchmark's, see docs/evaluation.md)")
    parser.add_argument("--network-prompt", default=None, metavar="PROMPT",
                        help="the prompt of a trained network's own text classifier (maskformer, fcn), in --prompt's forms "
                        "(default: the one it was trained with; eval: the benchmark's)")
    parser.add_argument("--mask-threshold", type=fraction(include_one=False), default=None,
                        help=f"Eq. 1 binarises each mask at this value before cropping (default {DEFAULT_MASK_THRESHOLD}; eval: the benchmark's)")
    crop_options(parser)
    parser.add_argument("--test-size", type=at_least(32), default=None, metavar="PIXELS",
                        help="shorter side images are processed at, longer side at most --max-size (default: a maskformer's test size, "
                        "else the image's own; eval: the benchmark's)")
    parser.add_argument("--no-text-cache", action="store_true", help="encode the class names afresh, without the disk cache of text features")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cpu)")
    dtype_option(parser, dtype)
    parser.add_argument("--max-size", type=at_least(32), default=None,
                        help=f"longer side images are processed at, at most (default {DEFAULT_MAX_SIZE}; eval: the benchmark's); "
                        "outputs are full size")
    parser.add_argument("--batch-size", type=at_least(1), default=None, help=f"crops per CLIP forward pass (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--proposal-weights", type=Path, default=None, metavar="PATH",
                        help="trained proposal network for --proposals maskformer: the --output-dir of `zsseg train proposals`, its "
                        "proposals.safetensors, or an authors' checkpoint (model_final.pth)")
    parser.add_argument("--ensemble-weight", type=unit_interval, default=None,
                        help=f"lambda of the maskformer + CLIP ensemble (default {ENSEMBLE_WEIGHT}, eval: the benchmark's; "
                        f"{FCN_ENSEMBLE_WEIGHT} for the fcn + dense CLIP one): seen classes p_net^l * p_clip^(1-l), unseen the reverse; "
                        "with maskformer, 0 is CLIP alone (--classifier clip), as the reference's weight at or below 0")
    parser.add_argument("--classifier", default=None, choices=list(CLASSIFIERS),
                        help="who labels the maskformer's masks or the fcn's pixels: the ensemble (default), clip alone or the network "
                        "alone (ablations)")


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="the settings of an earlier run: a JSON file zsseg wrote (an output's, an evaluation's, a pseudo-label "
                        "folder's), or a configuration file; flags given beside it override it (docs/configuration.md)")


def crop_options(parser: argparse.ArgumentParser) -> None:
    """How Eq. 1 crops a mask beyond its threshold: the reference's other crop settings, for its
    ablations (`zsseg.classification.regions.CropConfig`)."""
    parser.add_argument("--mask-fill", default=None, choices=["mean", "zero"],
                        help="what Eq. 1 puts behind a mask: mean, CLIP's pixel mean (the paper's; default), or zero (black)")
    parser.add_argument("--mask-expand-ratio", type=positive_number, default=None, metavar="R",
                        help="scale each mask's box by R about its centre before cropping (default 1)")
    parser.add_argument("--mask-matting", action="store_true", default=None,
                        help="blend each pixel with the fill by the mask's own value, not its binarised one")
    parser.add_argument("--no-crop-resize", dest="resize_crops", action="store_false", default=None,
                        help="encode each crop at its own size, one at a time, instead of resized to CLIP's input")


#: Each setting (`zsseg.config.OPTIONS`) and the argument that gives it, where the names differ.
SETTING_ARGUMENTS = {"fcn": "fcn_weights", "text_cache": "no_text_cache"}
SETTINGS = ("method", "clip", "tokenizer", "device", "dtype", "proposals", "max_proposals", "proposal_weights", "prompt", "network_prompt",
            "batch_size", "text_cache", "mask_threshold", "mask_fill", "mask_expand_ratio", "mask_matting", "resize_crops",
            "ensemble_weight", "classifier", "dense_mode", "overlap", "max_size", "test_size", "fcn")


def given_settings(args: argparse.Namespace) -> dict:
    """The settings the command line gives (a flag left out gives none)."""
    settings = {}
    for setting in SETTINGS:
        value = getattr(args, SETTING_ARGUMENTS.get(setting, setting), None)
        if setting == "text_cache":
            value = False if value else None
        if value is not None:
            settings[setting] = str(value) if isinstance(value, Path) else value
    return settings
