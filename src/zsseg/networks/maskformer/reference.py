"""The authors' checkpoints: a detectron2 `model_final.pth` of the reference code's zero-shot
MaskFormer (MendelXu/zsseg.baseline), loaded as zsseg's proposal network.

    trained = load_reference_checkpoint("model_final.pth", tokenizer="clip-tokenizer/")
    trained.model, trained.clip, trained.prompt   # the network, its CLIP, its (learned) prompt

Such a file holds, under its `model` entry, the reference model's state dict:

- `backbone.*`, `sem_seg_head.*`: the network (R101c backbone, pixel decoder, transformer
  predictor with its MLP class head). Their names map to zsseg's by `NETWORK_KEYS`;
- `clip_adapter.clip_model.*`: the CLIP (OpenAI's layout) that encodes both the class prompts
  and Eq. 1's crops; converted to transformers' layout (`zsseg.models.openai_clip`);
- `clip_adapter.non_object_embedding`: the learned "no object" embedding;
- `clip_adapter.prompt_learner.*` where the prompt was learned: 16 context vectors and the
  start / dot / end / pad token vectors the reference stored at build time;
- `clip_adapter.pixel_mean/std` and `criterion.empty_weight`: constants, checked;
  `empty_weight`'s length gives the training classes (156: COCO-Stuff's seen classes);
- `_region_clip_adapter.*`, where the model was built with `SEPERATE_ADAPTER` (its VOC
  zero-shot configs): a second adapter for Eq. 1 alone, with its own CLIP and, where learned,
  its own prompt. Its no-object embedding and constants are unused by the reference's inference
  (Eq. 1 drops the no-object column) and checked like the first adapter's.

The architecture is read from the tensors' shapes; the attention heads (8) and the res5
multi-grid dilations (1, 2, 4 with the DeepLab stem) are the reference configs' values, which
shapes do not show. Every key must be mapped and every expected key present, else a one-line
error names it and nothing is loaded. Files are read as tensors only: `.pth` with
`torch.load(weights_only=True)`, `.pkl` with an unpickler that admits numpy arrays alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...models.base import learned_prompt_tower
from ...models.loading import CLIP_MEAN, CLIP_STD, ClipModel
from ...errors import ZssegError
from ...data.vocabulary import Vocabulary
from .config import ModelConfig
from .model import MaskFormer
from .resnet import DEPTHS, RESNETS, read_detectron2_pickle

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl")
ADAPTER = "clip_adapter."
REGION_ADAPTER = "_region_clip_adapter."  # `ZeroShotMaskFormer._region_clip_adapter`, with SEPERATE_ADAPTER
CLIP_PREFIX = ADAPTER + "clip_model."
PROMPT_PREFIX = ADAPTER + "prompt_learner."
# The reference's test configs for its COCO-trained networks (Base-COCOStuff164K-171.yaml).
TEST_SIZE = 640

# (pattern, replacement) over the reference's names; a replacement may be a function of the match.
Rule = tuple[str, "str | Callable[[re.Match], str]"]
NETWORK_KEYS: tuple[Rule, ...] = (
    (r"backbone\.(.+)", r"backbone.\1"),
    (r"sem_seg_head\.pixel_decoder\.adapter_(\d)\.weight", lambda m: f"pixel_decoder.lateral.{int(m[1]) - 1}.0.weight"),
    (r"sem_seg_head\.pixel_decoder\.adapter_(\d)\.norm\.(weight|bias)", lambda m: f"pixel_decoder.lateral.{int(m[1]) - 1}.1.{m[2]}"),
    (r"sem_seg_head\.pixel_decoder\.layer_4\.weight", "pixel_decoder.top.0.weight"),
    (r"sem_seg_head\.pixel_decoder\.layer_4\.norm\.(weight|bias)", r"pixel_decoder.top.1.\1"),
    (r"sem_seg_head\.pixel_decoder\.layer_(\d)\.weight", lambda m: f"pixel_decoder.output.{int(m[1]) - 1}.0.weight"),
    (r"sem_seg_head\.pixel_decoder\.layer_(\d)\.norm\.(weight|bias)", lambda m: f"pixel_decoder.output.{int(m[1]) - 1}.1.{m[2]}"),
    (r"sem_seg_head\.pixel_decoder\.mask_features\.(weight|bias)", r"pixel_decoder.mask_features.\1"),
    (r"sem_seg_head\.predictor\.transformer\.decoder\.layers\.(\d+)\.self_attn\.(.+)", r"predictor.layers.\1.self_attn.\2"),
    (r"sem_seg_head\.predictor\.transformer\.decoder\.layers\.(\d+)\.multihead_attn\.(.+)", r"predictor.layers.\1.cross_attn.\2"),
    (r"sem_seg_head\.predictor\.transformer\.decoder\.layers\.(\d+)\.linear1\.(.+)", r"predictor.layers.\1.ffn.0.\2"),
    (r"sem_seg_head\.predictor\.transformer\.decoder\.layers\.(\d+)\.linear2\.(.+)", r"predictor.layers.\1.ffn.3.\2"),
    (r"sem_seg_head\.predictor\.transformer\.decoder\.layers\.(\d+)\.norm([123])\.(.+)",
     lambda m: f"predictor.layers.{m[1]}.norms.{int(m[2]) - 1}.{m[3]}"),
    (r"sem_seg_head\.predictor\.transformer\.decoder\.norm\.(.+)", r"predictor.norm.\1"),
    (r"sem_seg_head\.predictor\.(query_embed|input_proj)\.(.+)", r"predictor.\1.\2"),
    (r"sem_seg_head\.predictor\.(mask_embed|class_embed)\.layers\.(\d+)\.(.+)", lambda m: f"predictor.{m[1]}.{2 * int(m[2])}.{m[3]}"),
)
#: Keys that are not weights of the network: checked constants, the CLIP, the prompt.
CONSTANT_KEYS = ("criterion.empty_weight", "clip_adapter.pixel_mean", "clip_adapter.pixel_std")
PROMPT_KEYS = ("prefix_prompt", "start_signal", "dot_signal", "end_signal", "pad_signal")
#: Vectors after the class name, where the prompt's shape has a suffix (`PROMPT_SHAPE` (n, m), m > 0).
SUFFIX_KEY = "suffix_prompt"


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a detectron2 checkpoint (`{"model": state, ...}` or the state itself),
    as tensors; anything but tensors, numbers and strings is refused."""
    from ...models.fingerprints import note_weight_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise ZssegError(f"checkpoint not found: {path}")
    note_weight_file(path)
    if path.suffix == ".pkl":
        return read_detectron2_pickle(path.read_bytes(), str(path), strip_prefix=None)
    from ...models.hub import load_torch_file

    content = load_torch_file(path, "keep only the weights: torch.save({'model': torch.load(path, weights_only=False)['model']}, "
                                    "'weights.pth') where you trust the file")
    state = content.get("model", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not state:
        raise ZssegError(f"{path} holds no state dict (a detectron2 checkpoint has a 'model' entry)")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ZssegError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
    return dict(state)


def _count(state: dict, pattern: str) -> int:
    found = {int(m[1]) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _backbone_name(state: dict[str, torch.Tensor], source: str) -> str:
    stem = "deeplab" if "backbone.stem.conv3.weight" in state else "basic"
    blocks = tuple(_count(state, rf"backbone\.res{s}\.(\d+)\.") for s in (2, 3, 4, 5))
    for name, spec in RESNETS.items():
        if spec.stem == stem and spec.blocks == blocks and spec.bottleneck:
            return name
    depth = next((d for d, b in DEPTHS.items() if b == blocks), None)
    raise ZssegError(f"{source}: its backbone (a {stem}-stem ResNet with {blocks} blocks, depth {depth}) is not one zsseg builds")


def model_config(state: dict[str, torch.Tensor], source: str) -> ModelConfig:
    """The network's architecture, from the shapes of the reference's tensors."""
    head = "sem_seg_head.predictor."
    try:
        query = state[head + "query_embed.weight"]
        class_layers = _count(state, r"sem_seg_head\.predictor\.class_embed\.layers\.(\d+)\.weight")
        return ModelConfig(
            backbone=_backbone_name(state, source),
            hidden_dim=int(query.shape[1]),
            num_queries=int(query.shape[0]),
            decoder_layers=_count(state, r"sem_seg_head\.predictor\.transformer\.decoder\.layers\.(\d+)\."),
            heads=8,
            feedforward_dim=int(state[head + "transformer.decoder.layers.0.linear1.weight"].shape[0]),
            conv_dim=int(state["sem_seg_head.pixel_decoder.layer_1.weight"].shape[0]),
            mask_dim=int(state["sem_seg_head.pixel_decoder.mask_features.weight"].shape[0]),
            embed_dim=int(state[head + f"class_embed.layers.{class_layers - 1}.weight"].shape[0]),
            class_head_hidden=int(state[head + "class_embed.layers.0.weight"].shape[0]),
            class_head_layers=class_layers,
        )
    except KeyError as error:
        raise ZssegError(f"{source} is not a checkpoint of the reference's zero-shot MaskFormer: no {error.args[0]}") from None


def network_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """zsseg's names for the network's tensors (everything but the CLIP, prompt and constants)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name.startswith((CLIP_PREFIX, PROMPT_PREFIX, REGION_ADAPTER)) or name in CONSTANT_KEYS:
            continue
        if name == "clip_adapter.non_object_embedding":
            out["void_embedding"] = value.reshape(-1)
            continue
        for pattern, replacement in NETWORK_KEYS:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, replacement, name) if isinstance(replacement, str) else replacement(re.fullmatch(pattern, name))] = value
                break
        else:
            raise ZssegError(f"{source}: key {name} is not one of the reference model's (zsseg maps each key; nothing was loaded)")
    return out


def _check_constants(state: dict[str, torch.Tensor], source: str) -> int:
    """Check the constant buffers; the number of training classes (from `empty_weight`)."""
    for name in CONSTANT_KEYS:
        if name not in state:
            raise ZssegError(f"{source}: no {name} (a reference checkpoint holds every buffer; nothing was loaded)")
    adapters = (ADAPTER, REGION_ADAPTER) if any(k.startswith(REGION_ADAPTER) for k in state) else (ADAPTER,)
    for adapter in adapters:
        for name, wanted in ((adapter + "pixel_mean", CLIP_MEAN), (adapter + "pixel_std", CLIP_STD)):
            if name not in state:
                raise ZssegError(f"{source}: no {name} (a reference checkpoint holds every buffer; nothing was loaded)")
            if not torch.allclose(state[name].reshape(-1).double(), 255 * torch.tensor(wanted, dtype=torch.float64), atol=1e-3):
                raise ZssegError(f"{source}: {name} is {state[name].reshape(-1).tolist()}, not 255 x CLIP's normalisation")
    weight = state["criterion.empty_weight"].reshape(-1)
    if weight.numel() < 2 or not torch.all(weight[:-1] == 1):
        raise ZssegError(f"{source}: criterion.empty_weight is not [1, ..., 1, no-object weight]")
    return weight.numel() - 1


def training_vocabulary(num_classes: int, source: str) -> tuple[str, str, Vocabulary]:
    """(dataset, protocol, classes) of a reference network from its number of training classes,
    the classes named as the reference names them."""
    from ...evaluation.reference_settings import benchmark_settings
    from ...data.datasets import DATASETS

    for dataset in ("coco-stuff", "voc-20"):
        names = benchmark_settings(dataset, "zero-shot").vocabulary().names
        unseen = {Vocabulary.preset(DATASETS[dataset].vocabulary).names.index(n) for n in DATASETS[dataset].unseen}
        if num_classes == len(names) - len(unseen):
            return dataset, "zero-shot", Vocabulary.verbatim([n for i, n in enumerate(names) if i not in unseen])
        if num_classes == len(names):
            return dataset, "cross-dataset", Vocabulary.verbatim(names)
    raise ZssegError(f"{source}: trained on {num_classes} classes, which is neither COCO-Stuff's (171, 156 seen) nor VOC's (20, 15 seen)")


def learned_prompt(state: dict[str, torch.Tensor], clip: ClipModel, source: str, prefix: str = PROMPT_PREFIX):
    """The learned prompt under `prefix` (CoOp vectors before, and after, the class name, and the
    stored token vectors), or None."""
    from ...prompts.encoding import LearnedPrompt

    parts = _under(state, prefix)
    if not parts:
        return None
    unknown = sorted(set(parts) - set(PROMPT_KEYS) - {SUFFIX_KEY})
    if unknown:
        raise ZssegError(f"{source}: {prefix}{unknown[0]} is not a part of the reference's learned prompt")
    missing = [k for k in PROMPT_KEYS[1:] if k not in parts]
    if missing:
        raise ZssegError(f"{source}: no {prefix}{missing[0]} (a learned prompt needs all of {', '.join(PROMPT_KEYS[1:])})")
    signals = torch.cat([parts[k].reshape(1, -1) for k in PROMPT_KEYS[1:]]).float()
    width = signals.shape[1]
    context, suffix = (parts[k].float() if k in parts else torch.empty(0, width) for k in ("prefix_prompt", SUFFIX_KEY))
    return LearnedPrompt(context, learned_prompt_tower(clip).token_probe(), {"clip": clip.source, "checkpoint": source},
                         source=f"{source} ({prefix.rstrip('.')})", signals=signals, suffix=suffix if len(suffix) else None)


def _under(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _adapter_clip(tensors: dict[str, torch.Tensor], tokenizer, source: str, device, precision: str, files: list) -> ClipModel:
    """An adapter's CLIP (OpenAI's layout) converted to transformers', at `precision` (resolved:
    "fp32", "bf16", "fp16" or "int8"); `files`: the checkpoint's identity, for the text
    fingerprint's memo (`zsseg.models.fingerprints`)."""
    from ...models.openai_clip import DEFAULT_TOKENIZER, clip_from_openai_state

    clip = clip_from_openai_state(tensors, tokenizer or DEFAULT_TOKENIZER, source=source, device=device,
                                  dtype="fp32" if precision == "int8" else precision)
    clip.note_weight_files(files)
    if precision == "int8":
        clip.quantize_image_tower()
    return clip


def same_text_tower(one: ClipModel, other: ClipModel) -> bool:
    """Whether two CLIPs' text towers hold the same weights, in the same dtypes (then they give
    the same text features, which is all a network's classifier takes from its CLIP)."""
    mine, theirs = one.text_state(), other.text_state()
    return mine.keys() == theirs.keys() and all(
        mine[k].dtype == theirs[k].dtype and mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k].to(mine[k].device))
        for k in mine)


def load_reference_checkpoint(path: str | Path, device: str | torch.device = "cpu", clip=None, tokenizer=None,
                              precision: str = "fp32"):
    """An authors' checkpoint as a `TrainedProposals`, with the CLIP it holds (else `clip`: a
    `ClipModel`, hub id or folder, default ViT-B/16), its learned prompt (else its configs'
    templates: ViLD's for COCO-Stuff, the released cross-dataset model's; "a sculpture of a {}."
    for VOC), and a separate region adapter's CLIP and prompt for Eq. 1 where it has one.

    The CLIPs it holds are loaded at `precision` ("auto" as `resolve_precision` says). A loaded
    `clip` whose text tower is the one the checkpoint holds takes its place, so that one CLIP is
    in memory, not two."""
    from ...models.fingerprints import reading_weight_files
    from ...models.loading import DEFAULT_CLIP, load_clip
    from ...models.precision import resolve_precision
    from ...prompts.encoding import PromptEncoder, load_prompt
    from .weights import TrainedProposals

    source = str(path)
    with reading_weight_files() as files:
        state = read_checkpoint(path)
    num_classes = _check_constants(state, source)
    config = model_config(state, source)
    weights = network_state(state, source)
    with torch.device("meta"):
        expected = MaskFormer(config).state_dict()
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise ZssegError(f"{source}: no tensor for the network's {missing[0]} ({len(missing)} missing; nothing was loaded)")
    for name, value in weights.items():
        if name not in expected:
            raise ZssegError(f"{source}: {name} has no place in the network")
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ZssegError(f"{source}: {name} is {tuple(value.shape)}, the network's is {tuple(expected[name].shape)}")
    model = MaskFormer(config)
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    dataset, protocol, classes = training_vocabulary(num_classes, source)

    own = _under(state, CLIP_PREFIX)
    precision = resolve_precision(precision, device)
    if own:
        given = clip if isinstance(clip, ClipModel) else None
        # int8 quantises the image tower only: the text towers compare before it is paid for
        clip_model = _adapter_clip(own, tokenizer, f"{source}#clip", device, "fp32" if given and precision == "int8" else precision, files)
        if given is not None and same_text_tower(clip_model, given):
            clip_model = given
        elif given is not None and precision == "int8":
            clip_model.quantize_image_tower()
    else:
        clip_model = clip if isinstance(clip, ClipModel) else load_clip(clip or DEFAULT_CLIP, device=device, dtype=precision)
    if clip_model.embed_dim != config.embed_dim:
        raise ZssegError(f"{source}: the network's classifier is {config.embed_dim}-d, the CLIP's text embeddings "
                         f"{clip_model.embed_dim}-d ('{clip_model.source}')")
    # Without learned vectors the prompt is in the config, not the state: its VOC configs' predefined
    # "a sculpture of a {}.", or ViLD's templates, the released cross-dataset COCO-Stuff model's.
    prompt = learned_prompt(state, clip_model, source) or load_prompt("single" if dataset == "voc-20" else "vild")
    region_clip = region_prompt = None
    if any(k.startswith(REGION_ADAPTER) for k in state):  # SEPERATE_ADAPTER: Eq. 1 has its own CLIP and prompt
        tensors = _under(state, REGION_ADAPTER + "clip_model.")
        same = tensors.keys() == own.keys() and all(torch.equal(tensors[k], own[k]) for k in tensors)
        region_clip = clip_model if not tensors or same else _adapter_clip(tensors, tokenizer, f"{source}#region_clip", device,
                                                                             precision, files)
        # A predefined region prompt is in the config, not the state: the config's default, which --prompt overrides.
        region_prompt = learned_prompt(state, region_clip, source, REGION_ADAPTER + "prompt_learner.") or load_prompt("single")
        known = ("clip_model.", "prompt_learner.", "non_object_embedding", "pixel_mean", "pixel_std")
        for name in state:
            if name.startswith(REGION_ADAPTER) and not name[len(REGION_ADAPTER):].startswith(known):
                raise ZssegError(f"{source}: key {name} is not one of the reference model's (zsseg maps each key; nothing was loaded)")
    info = {"format": "reference checkpoint", "source": source, "clip": clip_model.source, "dataset": dataset,
            "protocol": protocol, "train": {"test_size": TEST_SIZE}}
    return TrainedProposals(model=model.to(device).eval(), text=None, class_names=classes.names, info=info, prompt=prompt,
                            clip=clip_model, text_factory=lambda: PromptEncoder(clip_model, prompt, cache=False).encode_vocabulary(classes),
                            region_clip=region_clip, region_prompt=region_prompt)


def is_reference_checkpoint(path: str | Path) -> bool:
    """Whether `path` names a checkpoint file of the reference code (by its suffix)."""
    path = Path(path)
    return path.suffix in CHECKPOINT_SUFFIXES and not path.is_dir()


__all__ = ["NETWORK_KEYS", "is_reference_checkpoint", "load_reference_checkpoint", "model_config", "network_state", "read_checkpoint"]
