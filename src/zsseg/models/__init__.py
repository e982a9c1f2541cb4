"""Vision-language models: one interface (`ClipModel`) for every family zsseg runs, and one
loading path (`load_clip`) for hub ids, folders and files: transformers' CLIP and SigLIP, OpenAI's
and open_clip's layouts (ViTs renamed to transformers' layout, ResNets as `ModifiedResNet`). CLIP
ViTs run on zsseg's own modules (`clip_vit`), which compute what transformers' `CLIPModel` does
without importing its modelling code."""

from ..exports import lazy

EXPORTS = {"ClipModel": "base", "TransformersClip": "base", "load_clip": "loading", "DEFAULT_CLIP": "loading", "resolve_precision": "precision"}
__getattr__, __dir__ = lazy(__name__, EXPORTS)
__all__ = sorted(EXPORTS)
