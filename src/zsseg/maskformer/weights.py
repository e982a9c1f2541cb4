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

import torch

from ..clip import read_json
from ..errors import ZssegError
from ..prompts import Prompt, VocabularyEmbedding, prompt_from_record, prompt_record
from ..vocabulary import Vocabulary
from ..writers import SOFTWARE, write_atomically
from .config import ModelConfig, model_config_from_dict
from .model import MaskFormer

WEIGHTS_NAME = "proposals.safetensors"
CONFIG_NAME = "proposals.json"
FORMAT = "zsseg-maskformer-proposals/1"


@dataclass
class TrainedProposals:
    """A trained network with what is needed to use it.

    Attributes:
        model: the network, in eval mode.
        train_text: text embeddings of the training classes (ranks queries by objectness).
        class_names: the training classes (synonyms joined by ", "); at inference these
            classes count as "seen" in the ensemble.
        info: the rest of proposals.json (clip, dataset, protocol, steps, train config).
        prompt: the prompt the classifier was trained with.
    """

    model: MaskFormer
    train_text: VocabularyEmbedding
    class_names: list[str]
    info: dict

    @property
    def vocabulary(self) -> Vocabulary:
        """The training classes, with their synonyms."""
        return Vocabulary.from_names(self.class_names)

    @property
    def test_size(self) -> int:
        return int(self.info["train"]["test_size"])

    prompt: Prompt | None = None

    @property
    def training_prompt(self) -> Prompt:
        """The prompt whose text embeddings the classifier was trained against."""
        if self.prompt is None:
            self.prompt = prompt_from_record(self.info["train"].get("prompt", "imagenet"), {})
        return self.prompt


def save_proposals(
    folder: Path, model: MaskFormer, train_text: VocabularyEmbedding, class_names: list[str], info: dict, prompt: Prompt
) -> tuple[Path, Path]:
    """Write both files atomically (together: neither is replaced unless both were written).
    The prompt the classifier was trained with is stored with it (a learned prompt's vectors
    too), so the weights are all that inference needs."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["text.features"] = train_text.features.detach().cpu().float().contiguous()
    tensors["text.synonym_class"] = train_text.synonym_class.reshape(-1).cpu().contiguous()
    record, prompt_tensors = prompt_record(prompt)
    tensors.update({f"prompt.{k}": v for k, v in prompt_tensors.items()})
    config = {"software": SOFTWARE, "format": FORMAT, "model": asdict(model.config), "class_names": class_names,
              **info, "prompt": record}
    targets = [folder / WEIGHTS_NAME, folder / CONFIG_NAME]
    write_atomically(
        targets,
        [
            lambda f: f.write(save(tensors, metadata={"format": FORMAT})),
            lambda f: f.write((json.dumps(config, indent=1) + "\n").encode("utf-8")),
        ],
    )
    return targets[0], targets[1]


def resolve_weights(path: str | Path) -> tuple[Path, Path]:
    """(weights file, config file) for a folder holding both or for the weights file itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise ZssegError(f"{path} holds no {WEIGHTS_NAME}; give the --output-dir of `zsseg train proposals` or the file itself")
    elif path.is_file():
        weights = path
    else:
        raise ZssegError(f"proposal weights not found: {path}")
    config = weights.with_suffix(".json")
    if not config.is_file():
        raise ZssegError(f"{weights} has no {config.name} beside it (written with the weights by `zsseg train proposals`)")
    return weights, config


def load_proposals(path: str | Path, device: str | torch.device = "cpu") -> TrainedProposals:
    """Load what `save_proposals` wrote, from its folder or the weights file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config_path = resolve_weights(path)
    info = read_json(config_path)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ZssegError(f"{config_path} is not a zsseg proposal-network config (format {FORMAT})")
    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError) as error:
        raise ZssegError(f"cannot read {weights}: {error}") from None
    try:
        config: ModelConfig = model_config_from_dict(info.pop("model"))
        class_names = list(info.pop("class_names"))
        model = MaskFormer(config)
        state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(state)
        text = VocabularyEmbedding(
            features=tensors["text.features"].float(),
            synonym_class=tensors["text.synonym_class"].long().reshape(1, -1),
            num_classes=len(class_names),
        )
        prompt = prompt_from_record(info.get("prompt") or info["train"].get("prompt") or info["train"].get("templates", "imagenet"),
                                    {k[len("prompt.") :]: v for k, v in tensors.items() if k.startswith("prompt.")})
    except (KeyError, TypeError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[0]
        raise ZssegError(f"{weights} does not match {config_path.name}: {detail}") from None
    return TrainedProposals(model=model.to(device).eval(), train_text=text, class_names=class_names, info=info, prompt=prompt)
