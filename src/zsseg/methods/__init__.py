"""The methods `Segmenter` can label pixels with, one class each (`Method`), by name:

- "two-stage" (the default, the paper's): proposals -> CLIP on each masked crop (Eq. 1) -> Eq. 2;
- "fast": the same proposals, each classified by pooling dense CLIP features (one CLIP pass);
- "dense-clip": every pixel from CLIP's patch features (the paper's training-free FCN baseline);
- "fcn": the paper's retrained FCN, ensembled with dense CLIP.

With a trained proposal network (`proposals="maskformer"`), two-stage and fast run inside
`NetworkEnsemble`, which combines the network's own classifier with CLIP's. Adding a method is
one module with a `Method` subclass, one line in `METHODS`, its declaration (whether it labels
pixels) in `zsseg.catalogue.METHODS`, where the command line reads it without loading any
model, and the settings it takes in `zsseg.config`.
"""

from __future__ import annotations

from ..proposals import MaskFormerProposals
from .base import ENSEMBLE_WEIGHT, EnsembleConfig, Method, MethodOutput, Parts, ensemble
from .dense_clip import DenseClipMethod
from .fast import Fast
from .fcn import FCN_ENSEMBLE_WEIGHT, FcnConfig, FcnMethod
from .network import NetworkEnsemble
from .two_stage import TwoStage

METHODS: dict[str, type[Method]] = {method.name: method for method in (TwoStage, Fast, DenseClipMethod, FcnMethod)}


def build_method(name: str, parts: Parts) -> Method:
    """The method `name` on `parts`; two-stage and fast with a trained proposal network inside
    `NetworkEnsemble`, which also runs its classifier ablations."""
    method = METHODS[name](parts)
    if isinstance(method, TwoStage) and isinstance(parts.proposals, MaskFormerProposals):
        return NetworkEnsemble(method)
    return method


__all__ = ["ENSEMBLE_WEIGHT", "FCN_ENSEMBLE_WEIGHT", "METHODS", "EnsembleConfig", "FcnConfig", "Method", "MethodOutput", "NetworkEnsemble",
           "Parts", "build_method", "ensemble"]
