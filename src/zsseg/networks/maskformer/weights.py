"""The trained proposal network on disk: `proposals.safetensors` beside `proposals.json`.

The safetensors file holds the network's weights and the frozen CLIP text embeddings of the
classes it was trained on (`text.features`, `text.synonym_class`); the JSON file holds the
architecture, the training settings and vocabulary, and the CLIP the text embeddings came from.
Loading reads tensors only (safetensors): nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ...models.hub import read_json
from ...errors import ZssegError, one_line
from ...prompts.encoding import Prompt, VocabularyEmbedding, prompt_from_record, prompt_record
from ...data.vocabulary import Vocabulary
from ...outputs.writers import SOFTWARE, write_atomically
from .config import model_config_from_dict
from .model import MaskFormer

WEIGHTS_NAME = "proposals.safetensors"
CONFIG_NAME = "proposals.json"
FORMAT = "zsseg-maskformer-proposals/2"  # /1: before the reference architecture (R101c, MLP class head)


@dataclass
class TrainedProposals:
    """A trained network with what is needed to use it.

    Attributes:
        model: the network, in eval mode.
        text: text embeddings of the training classes (ranks queries by objectness), or None
            until `text_factory` makes them (`train_text`).
        class_names: the training classes (synonyms joined by ", ").
        info: the rest of proposals.json (clip, dataset, protocol, steps, train config, and
            for a self-trained network `self_training`: its pseudo-labels and class split).
        prompt: the prompt the classifier was trained with.
        clip: the CLIP that came with the weights (an authors' checkpoint holds its own), or
            None (a zsseg network names its CLIP in `info["clip"]`).
        region_clip, region_prompt: Eq. 1's own CLIP and learned prompt, where an authors'
            checkpoint has a separate adapter for it (`SEPERATE_ADAPTER`); else None.
    """

    model: MaskFormer
    text: VocabularyEmbedding | None
    class_names: list[str]
    info: dict
    prompt: Prompt | None = None
    clip: object | None = None
    text_factory: Callable[[], VocabularyEmbedding] | None = None
    region_clip: object | None = None
    region_prompt: Prompt | None = None

    @property
    def train_text(self) -> VocabularyEmbedding:
        """Text embeddings of the training classes: stored with a zsseg network; for an
        authors' checkpoint, encoded on first use (only the oracle's ranking and checks need them)."""
        if self.text is None:
            self.text = self.text_factory()
        return self.text

    @property
    def vocabulary(self) -> Vocabulary:
        """The training classes, with their synonyms."""
        return Vocabulary.from_names(self.class_names)

    @property
    def self_training(self) -> dict | None:
        """For a network trained on pseudo-labels (`zsseg pseudo-label`): where they came from
        (dataset, split, folder) and the seen/unseen split; None otherwise."""
        return self.info.get("self_training")

    @property
    def seen_class_names(self) -> list[str]:
        """The classes that count as "seen" in the ensemble: the training classes, except that a
        self-trained network, which has learned the unseen classes from its own pseudo-labels,
        keeps its original seen classes (as the reference code, whose ensemble follows the
        dataset's seen/unseen split)."""
        record = self.self_training
        return list(record["seen_classes"]) if record else self.class_names

    @property
    def test_size(self) -> int:
        return int(self.info["train"]["test_size"])

    @property
    def training_prompt(self) -> Prompt:
        """The prompt whose text embeddings the classifier was trained against."""
        if self.prompt is None:
            self.prompt = prompt_from_record(self.info["train"].get("prompt", "imagenet"), {})
        return self.prompt


@dataclass(frozen=True)
class NetworkFiles:
    """How one kind of trained network is stored: its two file names, its format tag, and what
    it is and which command writes it (named in error messages)."""

    weights: str
    config: str
    format: str
    kind: str
    command: str


PROPOSAL_FILES = NetworkFiles(WEIGHTS_NAME, CONFIG_NAME, FORMAT, "proposal-network", "zsseg train proposals")


def save_network(folder: Path, files: NetworkFiles, model: torch.nn.Module, model_config: dict, train_text: VocabularyEmbedding,
                 class_names: list[str], info: dict, prompt: Prompt) -> tuple[Path, Path]:
    """Write a network's weights (with the text embeddings of its training classes and its
    prompt's tensors) and its JSON config, atomically and together: neither is replaced unless
    both were written. The prompt is stored with it (a learned prompt's vectors too), so the
    files are all that inference needs."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["text.features"] = train_text.features.detach().cpu().float().contiguous()
    tensors["text.synonym_class"] = train_text.synonym_class.reshape(-1).cpu().contiguous()
    record, prompt_tensors = prompt_record(prompt)
    tensors.update({f"prompt.{k}": v for k, v in prompt_tensors.items()})
    config = {"software": SOFTWARE, "format": files.format, "model": model_config, "class_names": class_names,
              **info, "prompt": record}
    targets = [folder / files.weights, folder / files.config]
    write_atomically(
        targets,
        [
            lambda f: f.write(save(tensors, metadata={"format": files.format})),
            lambda f: f.write((json.dumps(config, indent=1) + "\n").encode("utf-8")),
        ],
    )
    return targets[0], targets[1]


def save_proposals(
    folder: Path, model: MaskFormer, train_text: VocabularyEmbedding, class_names: list[str], info: dict, prompt: Prompt
) -> tuple[Path, Path]:
    """`save_network` for the proposal network."""
    return save_network(folder, PROPOSAL_FILES, model, asdict(model.config), train_text, class_names, info, prompt)


def resolve_weights(path: str | Path, files: NetworkFiles = PROPOSAL_FILES) -> tuple[Path, Path]:
    """(weights file, config file) for a folder holding both or for the weights file itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        weights = path / files.weights
        if not weights.is_file():
            raise ZssegError(f"{path} holds no {files.weights}; give the output folder of `{files.command}` or the file itself")
    elif path.is_file():
        weights = path
    else:
        raise ZssegError(f"weights not found: {path}")
    config = weights.with_suffix(".json")
    if not config.is_file():
        raise ZssegError(f"{weights} has no {config.name} beside it (written with the weights by `{files.command}`)")
    return weights, config


@dataclass
class StoredNetwork:
    """What `read_network` returns: the JSON (less model and class_names), the model config,
    the model's tensors, and the training classes with their text embeddings and prompt."""

    info: dict
    model_config: dict
    state: dict
    class_names: list[str]
    text: VocabularyEmbedding
    prompt: Prompt
    weights: Path
    config: Path

    def load_state(self, model: torch.nn.Module) -> None:
        try:
            model.load_state_dict(self.state)
        except RuntimeError as error:
            raise ZssegError(f"{self.weights} does not match {self.config.name}: {str(error).strip().splitlines()[0]}") from None


def read_network(path: str | Path, files: NetworkFiles) -> StoredNetwork:
    """Read what `save_network` wrote, from its folder or the weights file (tensors only:
    nothing is unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config_path = resolve_weights(path, files)
    info = read_json(config_path)
    found = info.get("format") if isinstance(info, dict) else None
    if isinstance(found, str) and found != files.format and found.split("/")[0] == files.format.split("/")[0]:
        raise ZssegError(f"{config_path} was written by an earlier zsseg ({found}), whose network differs from this one's "
                         f"(now the reference architecture); train it again with `{files.command}`")
    if found != files.format:
        raise ZssegError(f"{config_path} is not a zsseg {files.kind} config (format {files.format}, written by `{files.command}`)")
    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError) as error:
        raise ZssegError(f"cannot read {weights}: {one_line(error)}") from None
    try:
        model_config = dict(info.pop("model"))
        class_names = list(info.pop("class_names"))
        if not isinstance(info["train"], dict) or int(info["train"]["test_size"]) < 1:  # read later, at inference
            raise ValueError("\"train\" must record the training settings, with a test_size of at least 1")
        if info.get("self_training") is not None:
            list(info["self_training"]["seen_classes"])
        text = VocabularyEmbedding(
            features=tensors["text.features"].float(),
            synonym_class=tensors["text.synonym_class"].long().reshape(1, -1),
            num_classes=len(class_names),
        )
        prompt = prompt_from_record(info.get("prompt") or info["train"].get("prompt") or info["train"].get("templates", "imagenet"),
                                    {k[len("prompt.") :]: v for k, v in tensors.items() if k.startswith("prompt.")})
    except Exception as error:  # whatever a damaged or edited config raises (KeyError, AttributeError, ...)
        raise ZssegError(f"{weights} does not match {config_path.name}: {one_line(error)}") from None
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return StoredNetwork(info, model_config, state, class_names, text, prompt, weights, config_path)


def load_proposals(path: str | Path, device: str | torch.device = "cpu") -> TrainedProposals:
    """Load what `save_proposals` wrote, from its folder or the weights file."""
    stored = read_network(path, PROPOSAL_FILES)
    model = MaskFormer(model_config_from_dict(stored.model_config, stored.config))
    stored.load_state(model)
    return TrainedProposals(model=model.to(device).eval(), text=stored.text, class_names=stored.class_names,
                            info=stored.info, prompt=stored.prompt)
