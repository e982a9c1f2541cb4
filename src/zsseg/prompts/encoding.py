"""Prompts: how class names become CLIP text embeddings (the text side of Eq. 1).

A prompt is one of three things, and every command and API that takes one takes any of them
(`load_prompt`):

- a template set by name: "imagenet" (CLIP's 80 templates), "vild" (ViLD's 14), "single" (the
  paper's single prompt, "a sculpture of a {}."), "photo" ("a photo of a {}.");
- one template string, such as "a sculpture of a {}." (the paper's single best);
- a prompt file: the JSON written by `zsseg prompts select` (the best template), or the
  `prompt.json` + `prompt.safetensors` pair written by `zsseg train prompts` (learned context
  vectors, CoOp): pass the file or its folder.

With templates, a class name is put into every template, each prompt is encoded and
L2-normalised, and the class embedding is the L2-normalised mean of those (CLIP's prompt
ensembling). With a learned prompt, the class name's token embeddings follow n learned vectors:
"[SOS] c_1 .. c_n NAME . [EOS]". Embeddings are cached per (model, prompt, name) in memory and,
unless turned off, on disk (`zsseg.prompts.text_cache`), so a vocabulary is encoded once per machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from ..models.base import learned_prompt_tower
from ..models.fingerprints import UnknownTokenizer
from ..models.loading import ClipModel
from ..models.hub import read_json
from ..errors import SettingError, ZssegError
from .templates import IMAGENET_TEMPLATES, PHOTO_TEMPLATE, SINGLE_TEMPLATE, TEMPLATE_SETS, VILD_TEMPLATES  # noqa: F401
from .text_cache import TextFeatureCache
from ..data.vocabulary import Vocabulary
from ..outputs.writers import SOFTWARE, write_atomically

log = logging.getLogger("zsseg")

PROMPT_FORMAT = "zsseg-prompt/1"
PROMPT_JSON = "prompt.json"
PROMPT_TENSORS = "prompt.safetensors"

def resolve_templates(templates: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A template set by name ("imagenet", "vild", "single", "photo") or an explicit list of templates."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        templates = (templates,)
    templates = tuple(templates)
    if not templates:
        raise ZssegError("the template list is empty")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ZssegError(
                f"template '{template}' must contain '{{}}' exactly once (or name a set: {', '.join(TEMPLATE_SETS)})"
            )
    return templates


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


class Prompt:
    """What turns class names into text embeddings: `TemplatePrompt` or `LearnedPrompt`."""

    kind: str

    @property
    def identity(self) -> str:
        """A hash of what determines the embeddings (with the CLIP): the text-cache key."""
        raise NotImplementedError

    def describe(self) -> dict:
        """A JSON-serialisable record of this prompt (for result files and trained models)."""
        raise NotImplementedError

    def check_clip(self, clip: ClipModel) -> None:
        """Raise if this prompt cannot be used with `clip`."""

    def check_lengths(self, clip: ClipModel, names: list[str]) -> None:
        """Raise if a name, in this prompt, exceeds CLIP's context."""

    def encode(self, clip: ClipModel, names: list[str]) -> torch.Tensor:
        """`[N, D]` float32 L2-normalised class embeddings, without gradients."""
        raise NotImplementedError


@dataclass(frozen=True)
class TemplatePrompt(Prompt):
    """Hand-written templates, ensembled by averaging.

    Attributes:
        templates: each with one "{}" for the class name.
        name: how the user named them: a set name, the template itself, or the file.
    """

    templates: tuple[str, ...]
    name: str
    kind = "templates"

    @property
    def identity(self) -> str:
        return _sha256(b"templates\n", "\n".join(self.templates).encode("utf-8"))

    def describe(self) -> dict:
        record: dict = {"kind": self.kind, "name": self.name}
        if self.name not in TEMPLATE_SETS:
            record["templates"] = list(self.templates)
        return record

    def check_lengths(self, clip: ClipModel, names: list[str]) -> None:
        longest = max(self.templates, key=len)
        counts = clip.token_counts([longest.format(n) for n in names])
        for name, count in zip(names, counts):
            if count > clip.context_length:
                raise ZssegError(
                    f"class name '{name[:60]}{'...' if len(name) > 60 else ''}' is too long: "
                    f"with its prompt it is {count} tokens, CLIP's context is {clip.context_length}"
                )

    def encode(self, clip: ClipModel, names: list[str]) -> torch.Tensor:
        if not names:
            return torch.empty(0, clip.embed_dim)
        prompts = [t.format(n) for n in names for t in self.templates]
        per_prompt = clip.encode_text(prompts).view(len(names), len(self.templates), -1)
        return F.normalize(per_prompt.mean(dim=1), dim=-1).cpu()


@dataclass(eq=False)
class LearnedPrompt(Prompt):
    """CoOp context vectors learned with a frozen CLIP (`zsseg train prompts`).

    Attributes:
        context: `[n, W]` float32, the vectors put before the class name's tokens.
        probe: `[64, W]` float32, rows of the token embedding table of the CLIP it was trained
            with (`ClipModel.token_probe`): another CLIP is refused.
        info: the CLIP it was trained against, its class list and training settings.
        source: the file it was read from, for messages.
        signals: `[4, W]` float32 or None: the vectors for the start token, the ".", the end
            token and the padding, where they are stored with the prompt (the reference code
            keeps copies made at build time); None: CLIP's own token embeddings.
        suffix: `[m, W]` float32 or None: vectors after the class name's tokens, before the
            "." (the reference's `PROMPT_SHAPE` (n, m) with m > 0; zsseg learns none).
    """

    context: torch.Tensor
    probe: torch.Tensor
    info: dict = field(default_factory=dict)
    source: str = "(in memory)"
    signals: torch.Tensor | None = None
    suffix: torch.Tensor | None = None
    kind = "learned"

    @property
    def identity(self) -> str:
        parts = [self.context] if self.signals is None else [self.context, self.signals]
        if self.suffix is not None:
            parts.append(self.suffix)
        data = [p.detach().float().cpu().contiguous() for p in parts]
        return _sha256(b"learned\n", *(str(tuple(d.shape)).encode() + d.numpy().tobytes() for d in data))

    @property
    def suffix_length(self) -> int:
        return 0 if self.suffix is None else int(self.suffix.shape[0])

    def describe(self) -> dict:
        record = {"kind": self.kind, "source": self.source, "context_length": int(self.context.shape[0])}
        if self.suffix_length:
            record["suffix_length"] = self.suffix_length
        return {**record, "identity": self.identity[:16], **{k: self.info[k] for k in ("clip", "dataset", "protocol") if k in self.info}}

    def check_clip(self, clip: ClipModel) -> None:
        mine = learned_prompt_tower(clip).token_probe()
        width_ok = self.context.shape[1] == mine.shape[1] and self.probe.shape == mine.shape
        scale = float(mine.abs().max()) or 1.0
        if not width_ok or not torch.allclose(self.probe, mine, rtol=1e-2, atol=1e-2 * scale):
            raise SettingError(
                "clip",
                f"the learned prompt {self.source} was trained with CLIP '{self.info.get('clip', '?')}', whose token "
                f"embeddings differ from this CLIP's ('{clip.source}'); pass that CLIP ({{setting}}) or learn a prompt for this one",
            )

    def check_lengths(self, clip: ClipModel, names: list[str]) -> None:
        learned_prompt_tower(clip).context_rows(names, int(self.context.shape[0]), self.suffix_length)

    @torch.no_grad()
    def encode(self, clip: ClipModel, names: list[str], batch_size: int = 256) -> torch.Tensor:
        if not names:
            return torch.empty(0, clip.embed_dim)
        tower = learned_prompt_tower(clip)
        return torch.cat([tower.encode_with_context(self.context, names[i : i + batch_size], self.signals, self.suffix).cpu()
                          for i in range(0, len(names), batch_size)])


PromptLike = str | Path | Prompt | tuple[str, ...] | list[str]


def load_prompt(value: PromptLike) -> Prompt:
    """A prompt from what a user gives: a template set name, one template with "{}", a list of
    templates, a prompt file (JSON, or a learned prompt's JSON or safetensors) or its folder."""
    if isinstance(value, Prompt):
        return value
    if isinstance(value, (tuple, list)):
        return TemplatePrompt(resolve_templates(value), name="custom")
    text = str(value)
    if not text.strip():
        raise ZssegError(f"the prompt is empty; give a template set ({', '.join(TEMPLATE_SETS)}), a template with '{{}}', or a prompt file")
    if text in TEMPLATE_SETS:
        return TemplatePrompt(TEMPLATE_SETS[text], name=text)
    path = Path(text).expanduser()
    if "{}" in text and not path.exists():
        return TemplatePrompt(resolve_templates(text), name=text)
    if path.is_dir():
        path = path / PROMPT_JSON
        if not path.is_file():
            raise ZssegError(f"prompt folder {value} has no {PROMPT_JSON} (the output folder of `zsseg train prompts`)")
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise ZssegError(
            f"prompt '{text}' is neither a template set ({', '.join(TEMPLATE_SETS)}), a template with '{{}}' "
            f"for the class name, nor an existing prompt file or folder"
        )
    return _read_prompt_file(path)


def _read_prompt_file(path: Path) -> Prompt:
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != PROMPT_FORMAT:
        raise ZssegError(f"{path} is not a zsseg prompt file (no \"format\": \"{PROMPT_FORMAT}\")")
    try:
        if data["kind"] == TemplatePrompt.kind:
            return TemplatePrompt(resolve_templates(data["templates"]), name=str(path))
        if data["kind"] == LearnedPrompt.kind:
            name = str(data["tensors"])
            if Path(name).name != name or name in ("", ".", ".."):
                raise ZssegError(f"{path}: \"tensors\" must name a file beside it, not '{name[:60]}'")
            tensors_path = path.with_name(name)
            return LearnedPrompt(**_read_tensors(tensors_path, data), info=data["info"], source=str(path))
    except (KeyError, TypeError) as error:
        raise ZssegError(f"{path} is an incomplete prompt file: {error}") from None
    raise ZssegError(f"{path}: unknown prompt kind '{data.get('kind')}'")


def _read_tensors(path: Path, data: dict) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as error:
        raise ZssegError(f"cannot read the learned prompt's vectors {path}: {str(error).splitlines()[0]}") from None
    context, probe = tensors.get("context"), tensors.get("probe")
    if context is None or probe is None or context.ndim != 2 or probe.ndim != 2 or context.shape[1] != probe.shape[1]:
        raise ZssegError(f"{path} does not hold a learned prompt (tensors 'context' [n, W] and 'probe' [64, W])")
    if context.shape[0] != data.get("context_length", context.shape[0]):
        raise ZssegError(f"{path} holds {context.shape[0]} context vectors, its JSON says {data.get('context_length')}")
    return {"context": context.float(), "probe": probe.float()}


def prompt_record(prompt: Prompt) -> tuple[dict, dict[str, torch.Tensor]]:
    """A prompt as (JSON record, tensors), to be stored inside another file (trained proposals)."""
    if isinstance(prompt, LearnedPrompt):
        record = {"kind": prompt.kind, "context_length": int(prompt.context.shape[0]), "info": prompt.info, "source": prompt.source}
        tensors = {"context": prompt.context.detach().float().cpu().contiguous(), "probe": prompt.probe.contiguous()}
        for name in ("signals", "suffix"):
            if getattr(prompt, name) is not None:
                tensors[name] = getattr(prompt, name).detach().float().cpu().contiguous()
        return record, tensors
    assert isinstance(prompt, TemplatePrompt)
    return {"kind": prompt.kind, "name": prompt.name, "templates": list(prompt.templates)}, {}


def prompt_from_record(record: dict | str, tensors: dict[str, torch.Tensor]) -> Prompt:
    """The inverse of `prompt_record` (a bare string is a template set's name, as older files hold)."""
    if isinstance(record, str):
        return load_prompt(record)
    if record.get("kind") == LearnedPrompt.kind:
        signals, suffix = (tensors[name].float() if name in tensors else None for name in ("signals", "suffix"))
        return LearnedPrompt(tensors["context"].float(), tensors["probe"].float(), record.get("info", {}), record.get("source", "?"),
                             signals, suffix)
    return TemplatePrompt(resolve_templates(record["templates"]), name=record.get("name", "custom"))


def save_template_prompt(path: Path, prompt: TemplatePrompt, details: dict) -> None:
    """Write templates as a prompt file (JSON) that `--prompt` takes, atomically."""
    data = {"software": SOFTWARE, "format": PROMPT_FORMAT, "kind": prompt.kind, "templates": list(prompt.templates), **details}
    write_atomically([path], [lambda f: f.write((json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))])


def save_learned_prompt(folder: Path, prompt: LearnedPrompt) -> tuple[Path, Path]:
    """Write `prompt.safetensors` (context vectors, token probe) and `prompt.json` (the CLIP,
    class list and training settings) together, atomically."""
    from safetensors.torch import save

    tensors = {"context": prompt.context.detach().float().cpu().contiguous(), "probe": prompt.probe.float().contiguous()}
    data = {"software": SOFTWARE, "format": PROMPT_FORMAT, "kind": prompt.kind, "tensors": PROMPT_TENSORS,
            "context_length": int(prompt.context.shape[0]), "info": prompt.info}
    targets = [folder / PROMPT_TENSORS, folder / PROMPT_JSON]
    write_atomically(targets, [
        lambda f: f.write(save(tensors, metadata={"format": PROMPT_FORMAT})),
        lambda f: f.write((json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8")),
    ])
    return targets[0], targets[1]


@dataclass
class VocabularyEmbedding:
    """Text side of Eq. 1 for one vocabulary.

    Attributes:
        features: `[S, D]` float32, one L2-normalised embedding per synonym.
        synonym_class: `[S]` int64, the class index of each synonym row.
        num_classes: C.
    """

    features: torch.Tensor
    synonym_class: torch.Tensor
    num_classes: int

    def class_logits(self, image_features: torch.Tensor, temperature: float) -> torch.Tensor:
        """`[N, C]` logits: temperature x cosine, max over each class's synonyms."""
        sims = temperature * image_features @ self.features.T  # [N, S]
        logits = sims.new_full((sims.shape[0], self.num_classes), float("-inf"))
        index = self.synonym_class.to(sims.device).expand_as(sims)
        return logits.scatter_reduce(1, index, sims, reduce="amax", include_self=True)


def synonym_rows(vocabulary: Vocabulary) -> tuple[list[str], torch.Tensor]:
    """Every synonym of `vocabulary`, in order, and `[1, S]` the class index of each."""
    synonyms = [s for cls in vocabulary.classes for s in cls]
    owner = [i for i, cls in enumerate(vocabulary.classes) for _ in cls]
    return synonyms, torch.tensor(owner, dtype=torch.long).unsqueeze(0)


class PromptEncoder:
    """Encodes class names with a prompt, caching one embedding per name.

    Args:
        clip: the CLIP whose text tower encodes.
        prompt: anything `load_prompt` takes (default: the 80 ImageNet templates).
        cache: the disk cache: True for the default place, a `TextFeatureCache`, or False/None
            to encode everything afresh (results are the same either way).
    """

    def __init__(self, clip: ClipModel, prompt: PromptLike = "imagenet", cache: TextFeatureCache | bool | None = True):
        self.clip = clip
        self.prompt = load_prompt(prompt)
        self.prompt.check_clip(clip)
        self.disk = TextFeatureCache() if cache is True else (cache or None)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def templates(self) -> tuple[str, ...] | None:
        """The templates, for a template prompt (None for a learned one)."""
        return self.prompt.templates if isinstance(self.prompt, TemplatePrompt) else None

    def check_lengths(self, names: list[str]) -> None:
        """Raise if a name, put in the prompt, exceeds CLIP's context."""
        self.prompt.check_lengths(self.clip, names)

    def _disk_key(self) -> tuple[str, str] | None:
        """The disk cache's (model, prompt) key, or None without a disk cache. A tokenizer that
        cannot be identified (a custom object) turns the disk cache off, with one warning:
        features keyed without it could be another tokenizer's."""
        if self.disk is None:
            return None
        try:
            return self.clip.text_cache_key(self.disk), self.prompt.identity
        except UnknownTokenizer as error:
            log.warning("zsseg: not using the text-feature cache: %s (results are the same without it)", error)
            self.disk = None
            return None

    def encode_names(self, names: list[str]) -> torch.Tensor:
        """`[N, D]` float32 class embeddings, in the order of `names`."""
        missing = list(dict.fromkeys(n for n in names if n not in self._cache))
        if missing:
            stored: dict[str, torch.Tensor] = {}
            key = self._disk_key()
            if key is not None:
                stored = {k: v for k, v in self.disk.get(*key, missing).items() if v.numel() == self.clip.embed_dim}
            fresh = [n for n in missing if n not in stored]
            if fresh:  # names found in the cache were encoded, so they fit; the tokenizer is read only for new ones
                self.check_lengths(fresh)
            encoded = dict(zip(fresh, self.prompt.encode(self.clip, fresh))) if fresh else {}
            if encoded and key is not None:
                self.disk.put(*key, encoded)
            self._cache.update(stored)
            self._cache.update(encoded)
        if not names:
            return torch.empty(0, self.clip.embed_dim)
        return torch.stack([self._cache[n] for n in names])

    def encode_vocabulary(self, vocabulary: Vocabulary) -> VocabularyEmbedding:
        synonyms, owner = synonym_rows(vocabulary)
        return VocabularyEmbedding(
            features=self.encode_names(synonyms).to(self.clip.device),
            synonym_class=owner,
            num_classes=len(vocabulary),
        )


__all__ = [
    "IMAGENET_TEMPLATES",
    "LearnedPrompt",
    "PHOTO_TEMPLATE",
    "Prompt",
    "PromptEncoder",
    "SINGLE_TEMPLATE",
    "TEMPLATE_SETS",
    "TemplatePrompt",
    "VILD_TEMPLATES",
    "VocabularyEmbedding",
    "load_prompt",
    "resolve_templates",
    "save_learned_prompt",
    "save_template_prompt",
]
