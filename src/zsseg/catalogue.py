"""What zsseg offers, by name, with its defaults: methods, proposal
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
DEFAULT_MAX_PROPOSALS = 100  # K, the masks a generator keeps per image
DEFAULT_DUPLICATE_IOU = 0.95  # a mask overlapping a better one above this IoU is dropped
DEFAULT_MASK_THRESHOLD = 0.5  # Eq. 1 binarises masks at this value (the paper's)
DEFAULT_BATCH_SIZE = 32  # crops per CLIP forward pass
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

@dataclass(frozen=True)
class MethodDeclaration:
    """A segmentation method as the command line sees it (`zsseg.methods` implements it)."""

    name: str
    per_pixel: bool = False  # labels pixels, with no proposals


METHODS = {
    method.name: method
    for method in (
        MethodDeclaration("two-stage"),
        MethodDeclaration("fast"),
        MethodDeclaration("dense-clip", per_pixel=True),
        MethodDeclaration("fcn", per_pixel=True),
    )
}
PER_PIXEL_METHODS = tuple(name for name, method in METHODS.items() if method.per_pixel)


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
