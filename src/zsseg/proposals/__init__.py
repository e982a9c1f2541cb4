"""Class-agnostic mask proposals: `[K, H, W]` float masks for an image, behind one interface.

    generator = build_proposal_generator("selective-search", max_proposals=100)
    generator = build_proposal_generator("maskformer", weights="out/")  # trained: zsseg train proposals
    generator = build_proposal_generator("sam")                           # facebook/sam-vit-base
    generator = build_proposal_generator("mask2former:facebook/mask2former-swin-large-coco-panoptic")
    masks = generator.generate(image)  # image: HWC uint8 RGB
"""

from __future__ import annotations

from ..catalogue import parse_generator
from .base import ProposalGenerator, select_masks
from .contour_hierarchy import ContourHierarchy
from .ground_truth import GroundTruthProposals
from .hierarchy import MergeTree
from .maskformer import MaskFormerProposals
from .query_masks import QueryMaskProposals
from .sam import SamProposals
from .selective_search import SelectiveSearch

GENERATORS: dict[str, type[ProposalGenerator]] = {
    SelectiveSearch.name: SelectiveSearch,
    ContourHierarchy.name: ContourHierarchy,
    GroundTruthProposals.name: GroundTruthProposals,
    MaskFormerProposals.name: MaskFormerProposals,
    SamProposals.name: SamProposals,
    QueryMaskProposals.name: QueryMaskProposals,
}


def build_proposal_generator(name: str, **options) -> ProposalGenerator:
    """A generator by registry name ("NAME" or "NAME:MODEL", see `parse_generator`), with its
    keyword options (e.g. max_proposals)."""
    name, model = parse_generator(name)
    if model is not None:
        options["model"] = model
    return GENERATORS[name](**options)


__all__ = [
    "GENERATORS",
    "ContourHierarchy",
    "GroundTruthProposals",
    "MaskFormerProposals",
    "MergeTree",
    "ProposalGenerator",
    "QueryMaskProposals",
    "SamProposals",
    "SelectiveSearch",
    "build_proposal_generator",
    "parse_generator",
    "select_masks",
]
