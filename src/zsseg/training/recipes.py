"""Training recipes: what `zsseg train proposals|fcn|prompts` trains with, as JSON files.

    recipe = load_recipe("proposals", "paper")             # a built-in recipe, by name
    recipe = load_recipe("proposals", "my-recipe.json")     # a file of the same format
    recipe = load_recipe("proposals", "runs/zs/proposals.json")  # what a finished run trained with
    train_proposals(dataset, recipe, clip, Path("out"))

A recipe pairs an architecture (`model`: the proposal network's `ModelConfig`, the FCN's
`FcnModelConfig`; none for prompt learning) with training settings (`train`: `TrainConfig`,
`SolverConfig`, `PromptTrainConfig`). The built-in ones are files in `zsseg/training/recipes/`:
the paper's (`paper`, `paper-voc`) and smaller ones for CPU runs and tests. Every trained
output records the recipe it ran (overrides included) under "config", so it can be run again.
Torch-free: `zsseg configs` and the command line read the recipes before any model loads.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingError, ZssegError
from ..networks.fcn_config import FcnModelConfig
from ..networks.maskformer.config import ModelConfig, SolverConfig, TrainConfig
from .prompt_config import PromptTrainConfig

#: What each kind of training is configured with: (architecture, training settings).
KINDS: dict[str, tuple[type | None, type]] = {
    "proposals": (ModelConfig, TrainConfig),
    "fcn": (FcnModelConfig, SolverConfig),
    "prompts": (None, PromptTrainConfig),
}
BUILT_IN = Path(__file__).resolve().parent / "recipes"


@dataclass(frozen=True)
class Recipe:
    """One training recipe (see the module docstring).

    Attributes:
        kind: "proposals", "fcn" or "prompts".
        name: the built-in recipe's name, or the name the file gives ("custom" if none).
        description: one line, for `zsseg configs`.
        model: the architecture (None for prompts).
        train: the training settings.
    """

    kind: str
    name: str
    description: str
    model: object | None
    train: object

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "description": self.description,
                "model": None if self.model is None else dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict, source: object = "the recipe") -> "Recipe":
        """A recipe from its JSON (`to_dict`); unknown or misplaced fields are errors naming `source`."""
        if not isinstance(data, dict):
            raise ZssegError(f"{source}: a recipe is a JSON object, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ZssegError(f"{source}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
        unknown = sorted(set(data) - {"kind", "name", "description", "model", "train"})
        if unknown:
            raise ZssegError(f"{source}: unknown recipe field '{unknown[0]}' (a recipe has kind, name, description, model and train)")
        model_class, train_class = KINDS[kind]
        model = None if model_class is None else _dataclass(model_class, data.get("model") or {}, f"{source}: model")
        if model_class is None and data.get("model"):
            raise ZssegError(f"{source}: a {kind} recipe has no model")
        train = _dataclass(train_class, data.get("train") or {}, f"{source}: train")
        return cls(kind, str(data.get("name") or "custom"), str(data.get("description") or ""), model, train)

    def with_train(self, **changes) -> "Recipe":
        """This recipe with some training settings changed (None leaves one as it is)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes)) if changes else self


def _dataclass(cls: type, values: object, where: str):
    if not isinstance(values, dict):
        raise ZssegError(f"{where} must be a JSON object, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ZssegError(f"{where}: unknown setting '{unknown[0]}'; the settings are {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ZssegError(f"{where}: {error}") from None


def built_in_recipes(kind: str) -> dict[str, Recipe]:
    """The built-in recipes of `kind`, by name, the paper's first."""
    if kind not in KINDS:
        raise ZssegError(f"unknown kind of training '{kind}'; choose one of {', '.join(KINDS)}")
    recipes = [_read(path, kind) for path in sorted((BUILT_IN / kind).glob("*.json"))]
    recipes.sort(key=lambda recipe: (not recipe.name.startswith("paper"), recipe.name))
    return {recipe.name: recipe for recipe in recipes}


def recipe_names(kind: str) -> list[str]:
    """The names of the built-in recipes of `kind` (without reading them)."""
    names = sorted(path.stem for path in (BUILT_IN / kind).glob("*.json"))
    return sorted(names, key=lambda name: (not name.startswith("paper"), name))


def load_recipe(kind: str, spec: str | Path) -> Recipe:
    """The recipe `spec` names: a built-in recipe's name, a recipe file, or the JSON a trained
    run wrote (its "config" member: proposals.json, fcn.json, prompt.json)."""
    if kind not in KINDS:
        raise ZssegError(f"unknown kind of training '{kind}'; choose one of {', '.join(KINDS)}")
    text = str(spec)
    built_in = BUILT_IN / kind / f"{text}.json"
    if "/" not in text and "\\" not in text and not text.endswith(".json"):
        if not built_in.is_file():
            raise SettingError("config", f"unknown {{setting}} '{text}': give a recipe file, or one of the built-in recipes: "
                               f"{', '.join(recipe_names(kind))}")
        return _read(built_in, kind)
    path = Path(text).expanduser()
    if path.is_dir():
        raise SettingError("config", f"{{setting}} {path} is a folder; give a recipe file (JSON), or a trained run's JSON")
    if not path.is_file():
        raise SettingError("config", f"{{setting}} {path}: no such file")
    return _read(path, kind)


def _read(path: Path, kind: str) -> Recipe:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ZssegError(f"cannot read the recipe {path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "kind" not in data:
        data = data["config"]  # a trained run's JSON
    recipe = Recipe.from_dict(data, path)
    if recipe.kind != kind:
        raise ZssegError(f"{path} is a recipe for training {recipe.kind}, not {kind}")
    return recipe


__all__ = ["KINDS", "Recipe", "built_in_recipes", "load_recipe", "recipe_names"]
