"""zsseg: open-vocabulary semantic segmentation with CLIP (Xu et al., ECCV 2022).

The pipeline follows the data: image -> mask proposals (`zsseg.proposals`) -> CLIP region
classification (`zsseg.region_classification`, Eq. 1) -> assembly (`zsseg.assembly`, Eq. 2)
-> label map -> writers (`zsseg.writers`).
"""

from .assembly import UNLABELED, assemble, assemble_labels
from .clip import DEFAULT_CLIP, ClipModel, load_clip
from .errors import ZssegError
from .prompts import TEMPLATE_SETS, LearnedPrompt, Prompt, PromptEncoder, TemplatePrompt, load_prompt
from .proposals import GENERATORS, ProposalGenerator, build_proposal_generator
from .region_classification import RegionClassifier, RegionScores, crop_regions
from .segmenter import SegmentationResult, Segmenter
from .version import __version__
from .vocabulary import PRESETS, Vocabulary

__all__ = [
    "DEFAULT_CLIP",
    "GENERATORS",
    "PRESETS",
    "TEMPLATE_SETS",
    "UNLABELED",
    "ClipModel",
    "LearnedPrompt",
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
    "crop_regions",
    "load_clip",
    "load_prompt",
]
