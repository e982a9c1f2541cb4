"""Prompts: how class names become CLIP text embeddings: template sets, one template, or learned
context vectors (`encoding`), a disk cache of text features, and choosing the best template."""

from ..exports import lazy

EXPORTS = {"load_prompt": "encoding", "PromptEncoder": "encoding", "Prompt": "encoding", "TemplatePrompt": "encoding", "LearnedPrompt": "encoding", "TEMPLATE_SETS": "templates"}
__getattr__, __dir__ = lazy(__name__, EXPORTS)
__all__ = sorted(EXPORTS)
