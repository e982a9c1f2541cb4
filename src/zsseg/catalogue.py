"""What zsseg offers, by name, with its defaults: methods and the options each takes, proposal
generators and their traits, precisions, dense modes, protocols.

Torch-free, so that the command line's parser (`--help`, the listings, a usage error) is ready
at once; the modules that implement these take their names, defaults and declarations from
here, so there is one place to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ZssegError

DEFAULT_CLIP = "openai/clip-vit-base-patch16"  # the paper's ViT-B/16
TEMPERATURE = 100.0  # Eq. 1; CLIP's own learned logit scale also converges to 100.
DTYPE_NAMES = ("fp32", "bf16", "fp16")  # CLIP's floating-point precisions (`zsseg.models.loading.DTYPES`)
# What --dtype takes for CLIP: those, int8 (dynamic quantisation of the image tower's linear
# layers, CPU) and auto (`zsseg.models.precision.resolve_precision`: bf16 where the hardware has it natively).
PRECISIONS = ("auto", *DTYPE_NAMES, "int8")
DEFAULT_SAM = "facebook/sam-vit-base"

DENSE_MODES = ("plain", "sclip")
DEFAULT_OVERLAP = 2 / 3  # the paper's code: TEST.SLIDING_WINDOW, 224 tiles, overlap 2/3

DEFAULT_PROPOSALS = "selective-search"
DEFAULT_MAX_SIZE = 1024
DEFAULT_MAX_MASKS = 1000  # `zsseg classify`: masks refused above this (each one is a CLIP crop)
# The benchmarks `zsseg eval` reads (`zsseg.data.datasets.DATASETS` describes each): named here so that
# the command line's parser imports no dataset code (numpy, PIL) for `zsseg --help`.
DATASET_NAMES = ("coco-stuff", "ade20k-150", "ade20k-847", "pascal-context-59", "pascal-context-459", "voc-20", "voc-21",
                 "cityscapes", "camvid")
# Who labels: the ensemble, CLIP alone (Eq. 1 / dense CLIP), or the trained network alone.
CLASSIFIERS = ("ensemble", "clip", "network")
ENSEMBLE_WEIGHT = 0.8  # lambda of the ensemble with a proposal network's classifier (the paper's)
FCN_ENSEMBLE_WEIGHT = 0.7  # lambda of the FCN + dense CLIP ensemble (the reference's per-pixel configs)

PROTOCOLS = ("cross-dataset", "zero-shot")
MIOU_RULES = ("gt-or-predicted", "gt")
DEFAULT_REJECT_THRESHOLD = 0.0  # the reference's PSEUDO_REJECT_THRESHOLD

#: Flag and use of each option a method may or may not take, for the one message that refuses
#: an option a method does not take ("--overlap is for dense-clip and fcn, not --method fast").
OPTIONS = {
    "proposals": ("--proposals", "the proposal methods (two-stage, fast)"),
    "max_proposals": ("--max-proposals", "the proposal methods (two-stage, fast)"),
    "proposal_weights": ("--proposal-weights", "the proposal methods (two-stage, fast)"),
    "mask_threshold": ("--mask-threshold", "the proposal methods (two-stage, fast)"),
    "test_size": ("--test-size", "the proposal methods (two-stage, fast)"),
    "crop": ("--mask-fill, --mask-expand-ratio, --mask-matting and --no-crop-resize", "Eq. 1's crops (--method two-stage)"),
    "fcn": ("--fcn-weights", "--method fcn"),
    "dense_mode": ("--dense-mode", "the methods with dense CLIP features (fast, dense-clip, fcn)"),
    "overlap": ("--overlap", "the methods with sliding windows (dense-clip, fcn)"),
    "ensemble_weight": ("--ensemble-weight", "maskformer proposals or --method fcn"),
    "classifier": ("--classifier", "maskformer proposals or --method fcn"),
}

PROPOSAL_OPTIONS = frozenset({"proposals", "max_proposals", "proposal_weights", "mask_threshold", "test_size",
                              "ensemble_weight", "classifier"})


@dataclass(frozen=True)
class MethodDeclaration:
    """A segmentation method as the command line sees it (`zsseg.methods` implements it)."""

    name: str
    options: frozenset  # the `OPTIONS` it takes
    per_pixel: bool = False  # labels pixels, with no proposals


METHODS = {
    method.name: method
    for method in (
        MethodDeclaration("two-stage", PROPOSAL_OPTIONS | {"crop"}),
        MethodDeclaration("fast", PROPOSAL_OPTIONS | {"dense_mode"}),
        MethodDeclaration("dense-clip", frozenset({"dense_mode", "overlap"}), per_pixel=True),
        MethodDeclaration("fcn", frozenset({"fcn", "dense_mode", "overlap", "ensemble_weight", "classifier"}), per_pixel=True),
    )
}
PER_PIXEL_METHODS = tuple(name for name, method in METHODS.items() if method.per_pixel)


def check_options(method, given: dict[str, object], context: str = "") -> None:
    """Refuse, in one line, an option `method` (anything with a `name` and `options`) does not
    take. `given` maps option names (keys of `OPTIONS`) to whether they were set; `context`
    qualifies the method ("with selective-search proposals")."""
    for option, value in given.items():
        if value and option not in method.options:
            flag, use = OPTIONS[option]
            what = f"--method {method.name}" + (f" {context}" if context else "")
            raise ZssegError(f"{flag} {'are' if ' and ' in flag else 'is'} for {use}, not {what}")


@dataclass(frozen=True)
class GeneratorDeclaration:
    """A proposal generator as the command line sees it (`zsseg.proposals` implements it)."""

    name: str
    needs_ground_truth: bool = False  # proposals from the label map (oracle experiments)
    pretrained: bool = False  # loads a pretrained model, named as NAME:MODEL


MASKFORMER = "maskformer"  # the trained proposal network (`zsseg train proposals`)

GENERATORS = {
    generator.name: generator
    for generator in (
        GeneratorDeclaration("selective-search"),
        GeneratorDeclaration("contour-hierarchy"),
        GeneratorDeclaration("ground-truth", needs_ground_truth=True),
        GeneratorDeclaration(MASKFORMER),
        GeneratorDeclaration("sam", pretrained=True),
        GeneratorDeclaration("mask2former", pretrained=True),
    )
}


def parse_generator(spec: str) -> tuple[str, str | None]:
    """"NAME" or "NAME:MODEL" (a hub id or folder, for the generators that load a pretrained
    model: sam, mask2former) -> (NAME, MODEL or None), checked against the registry."""
    name, colon, model = spec.partition(":")
    if name not in GENERATORS:
        raise ZssegError(f"unknown proposal generator '{name}'; available: {', '.join(GENERATORS)}")
    if colon and not model:
        raise ZssegError(f"'{spec}' names no model after the colon; give {name}:HUB_ID or {name}:FOLDER")
    if model and not GENERATORS[name].pretrained:
        pretrained = ", ".join(n for n, generator in GENERATORS.items() if generator.pretrained)
        raise ZssegError(f"the '{name}' proposals load no pretrained model, so '{spec}' is not a generator; NAME:MODEL is for {pretrained}")
    return name, model or None
