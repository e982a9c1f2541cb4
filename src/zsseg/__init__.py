"""zsseg: open-vocabulary semantic segmentation with CLIP (Xu et al., ECCV 2022).

The pipeline follows the data: image -> mask proposals (`zsseg.proposals`) -> CLIP region
classification (`zsseg.classification.regions`, Eq. 1) -> assembly (`zsseg.assembly`, Eq. 2)
-> label map -> writers (`zsseg.outputs.writers`). Masks that already exist (`zsseg.data.mask_files`) skip
the first stage (`zsseg.classification.masks`).
"""

from .exports import lazy
from .version import __version__

# Names are imported on first use (PEP 562), so that `import zsseg` and the start of the `zsseg`
# command are light: a Ctrl-C while torch loads is then caught by the command (zsseg.console).
EXPORTS = {
    "UNLABELED": "assembly", "assemble": "assembly", "assemble_labels": "assembly",
    "DEFAULT_CLIP": "models.loading", "ClipModel": "models.base", "load_clip": "models.loading",
    "ZssegError": "errors",
    "DatasetCheck": "data.preparation", "PreparationReport": "data.preparation", "check_dataset": "data.preparation",
    "prepare_dataset": "data.preparation",
    "MaskSet": "data.mask_files", "read_masks": "data.mask_files", "classify_masks": "classification.masks",
    "TEMPLATE_SETS": "prompts.templates", "LearnedPrompt": "prompts.encoding", "Prompt": "prompts.encoding",
    "PromptEncoder": "prompts.encoding", "TemplatePrompt": "prompts.encoding", "load_prompt": "prompts.encoding",
    "GENERATORS": "proposals", "ProposalGenerator": "proposals", "build_proposal_generator": "proposals",
    "CropConfig": "classification.regions", "RegionClassifier": "classification.regions", "RegionScores": "classification.regions",
    "crop_regions": "classification.regions",
    "SegmentationResult": "results", "Segmenter": "segmenter", "SegmenterConfig": "config", "load_config": "config",
    "ClipConfig": "models.loading", "RegionConfig": "classification.regions", "EnsembleConfig": "methods.base",
    "DenseConfig": "classification.dense", "SizeConfig": "data.images",
    "evaluate": "evaluation.runner", "EvaluationReport": "evaluation.runner", "segment_folder": "runs.folder",
    "FolderReport": "runs.folder", "write_result": "outputs.writers",
    "PRESETS": "data.vocabulary", "Vocabulary": "data.vocabulary",
}
__getattr__, __dir__ = lazy(__name__, EXPORTS)

__all__ = [
    "DEFAULT_CLIP",
    "GENERATORS",
    "PRESETS",
    "TEMPLATE_SETS",
    "UNLABELED",
    "ClipConfig",
    "ClipModel",
    "CropConfig",
    "DatasetCheck",
    "DenseConfig",
    "EnsembleConfig",
    "EvaluationReport",
    "FolderReport",
    "LearnedPrompt",
    "MaskSet",
    "PreparationReport",
    "Prompt",
    "PromptEncoder",
    "ProposalGenerator",
    "RegionClassifier",
    "RegionConfig",
    "RegionScores",
    "SegmentationResult",
    "Segmenter",
    "SegmenterConfig",
    "SizeConfig",
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
    "evaluate",
    "load_clip",
    "load_config",
    "load_prompt",
    "prepare_dataset",
    "read_masks",
    "segment_folder",
    "write_result",
]
