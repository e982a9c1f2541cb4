"""Class-agnostic mask proposals: `[K, H, W]` float masks for an image, behind one interface.

    generator = build_proposal_generator("selective-search", max_proposals=100)
    generator = build_proposal_generator("maskformer", weights="out/")  # trained: zsseg train proposals
    generator = build_proposal_generator("sam")                           # facebook/sam-vit-base
    generator = build_proposal_generator("mask2former:facebook/mask2former-swin-large-coco-panoptic")
    masks = generator.generate(image)  # image: HWC uint8 RGB
"""

from __future__ import annotations

import dataclasses

from ..catalogue import parse_generator
from ..errors import SettingError
from .base import ProposalConfig, ProposalGenerator, select_masks
from .contour_hierarchy import ContourHierarchy, ContourHierarchyConfig
from .ground_truth import GroundTruthConfig, GroundTruthProposals
from .hierarchy import MergeTree
from .maskformer import MaskFormerConfig, MaskFormerProposals
from .query_masks import QueryMaskConfig, QueryMaskProposals
from .sam import SamConfig, SamProposals
from .selective_search import SelectiveSearch, SelectiveSearchConfig

GENERATORS: dict[str, type[ProposalGenerator]] = {
    SelectiveSearch.name: SelectiveSearch,
    ContourHierarchy.name: ContourHierarchy,
    GroundTruthProposals.name: GroundTruthProposals,
    MaskFormerProposals.name: MaskFormerProposals,
    SamProposals.name: SamProposals,
    QueryMaskProposals.name: QueryMaskProposals,
}


def proposal_config(spec: str, **settings) -> ProposalConfig:
    """The settings of the generator `spec` names ("NAME" or "NAME:MODEL"), with `settings`
    (its `Config`'s fields) in place of the defaults."""
    name, model = parse_generator(spec)
    if model is not None:
        settings["model"] = model
    config = GENERATORS[name].Config
    unknown = sorted(set(settings) - {field.name for field in dataclasses.fields(config)})
    if unknown:
        raise SettingError(unknown[0], f"{{setting}} is not a setting of the {name} proposals")
    return config(**settings)


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
    "ContourHierarchyConfig",
    "GroundTruthConfig",
    "GroundTruthProposals",
    "MaskFormerConfig",
    "MaskFormerProposals",
    "MergeTree",
    "ProposalConfig",
    "ProposalGenerator",
    "QueryMaskConfig",
    "QueryMaskProposals",
    "SamConfig",
    "SamProposals",
    "SelectiveSearch",
    "SelectiveSearchConfig",
    "build_proposal_generator",
    "proposal_config",
    "parse_generator",
    "select_masks",
]
