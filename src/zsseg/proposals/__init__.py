"""Class-agnostic mask proposals: `[K, H, W]` float masks for an image, behind one interface.

    generator = build_proposal_generator("selective-search", max_proposals=100)
    generator = build_proposal_generator("maskformer", weights="out/")  # trained: zsseg train proposals
    masks = generator.generate(image)  # image: HWC uint8 RGB
"""

from __future__ import annotations

from ..errors import ZssegError
from .base import ProposalGenerator, select_masks
from .contour_hierarchy import ContourHierarchy
from .ground_truth import GroundTruthProposals
from .hierarchy import MergeTree
from .maskformer import MaskFormerProposals
from .selective_search import SelectiveSearch

GENERATORS: dict[str, type[ProposalGenerator]] = {
    SelectiveSearch.name: SelectiveSearch,
    ContourHierarchy.name: ContourHierarchy,
    GroundTruthProposals.name: GroundTruthProposals,
    MaskFormerProposals.name: MaskFormerProposals,
}


def build_proposal_generator(name: str, **options) -> ProposalGenerator:
    """A generator by registry name, with its keyword options (e.g. max_proposals)."""
    if name not in GENERATORS:
        raise ZssegError(f"unknown proposal generator '{name}'; available: {', '.join(GENERATORS)}")
    return GENERATORS[name](**options)


__all__ = [
    "GENERATORS",
    "ContourHierarchy",
    "GroundTruthProposals",
    "MaskFormerProposals",
    "MergeTree",
    "ProposalGenerator",
    "SelectiveSearch",
    "build_proposal_generator",
    "select_masks",
]
