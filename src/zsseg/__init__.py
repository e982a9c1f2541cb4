"""zsseg: open-vocabulary semantic segmentation with CLIP (Xu et al., ECCV 2022).

The pipeline follows the data: image -> mask proposals (`zsseg.proposals`) -> CLIP region
classification (`zsseg.region_classification`, Eq. 1) -> assembly (`zsseg.assembly`, Eq. 2)
-> label map -> writers (`zsseg.writers`). Masks that already exist (`zsseg.mask_files`) skip
the first stage (`zsseg.mask_labelling`).
"""

import importlib

from .version import __version__

# Names are imported on first use (PEP 562), so that `import zsseg` and the start of the `zsseg`
# command are light: a Ctrl-C while torch loads is then caught by the command (zsseg.console).
_EXPORTS = {
    "UNLABELED": "assembly", "assemble": "assembly", "assemble_labels": "assembly",
    "DEFAULT_CLIP": "clip", "ClipModel": "clip", "load_clip": "clip",
    "ZssegError": "errors",
    "DatasetCheck": "preparation", "PreparationReport": "preparation", "check_dataset": "preparation", "prepare_dataset": "preparation",
    "MaskSet": "mask_files", "read_masks": "mask_files", "MaskLabels": "mask_labelling", "classify_masks": "mask_labelling",
    "TEMPLATE_SETS": "prompts", "LearnedPrompt": "prompts", "Prompt": "prompts", "PromptEncoder": "prompts",
    "TemplatePrompt": "prompts", "load_prompt": "prompts",
    "GENERATORS": "proposals", "ProposalGenerator": "proposals", "build_proposal_generator": "proposals",
    "RegionClassifier": "region_classification", "RegionScores": "region_classification", "crop_regions": "region_classification",
    "SegmentationResult": "segmenter", "Segmenter": "segmenter",
    "PRESETS": "vocabulary", "Vocabulary": "vocabulary",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'zsseg' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "DEFAULT_CLIP",
    "GENERATORS",
    "PRESETS",
    "TEMPLATE_SETS",
    "UNLABELED",
    "ClipModel",
    "DatasetCheck",
    "LearnedPrompt",
    "MaskLabels",
    "MaskSet",
    "PreparationReport",
    "Prompt",
    "PromptEncoder",
    "ProposalGenerator",
    "RegionClassifier",
    "RegionScores",
    "SegmentationResult",
    "Segmenter",
    "TemplatePrompt",
    "Vocabulary",
    "ZssegError",
    "__version__",
    "assemble",
    "assemble_labels",
    "build_proposal_generator",
    "check_dataset",
    "classify_masks",
    "crop_regions",
    "load_clip",
    "load_prompt",
    "prepare_dataset",
    "read_masks",
]
