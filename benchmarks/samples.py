"""Where the benchmarks (and the tests) find the real data samples and CLIP's tokenizer, and a
small random CLIP saved with that tokenizer: the library alone, no pytest.

    from samples import DATA, TOKENIZER, save_tiny_clip

`DATA` is `$ZSSEG_TEST_DATA`, else `shared/data` beside the checkout; `TOKENIZER` is
`$ZSSEG_TEST_TOKENIZER`, else `shared/clip-tokenizer` (CLIP's BPE files: `vocab.json`,
`merges.txt`). Both are read in place, never copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = Path(os.environ.get("ZSSEG_TEST_DATA", SHARED / "data"))
TOKENIZER = Path(os.environ.get("ZSSEG_TEST_TOKENIZER", SHARED / "clip-tokenizer"))


def tiny_clip_config(image_size: int = 224):
    """A 2-layer, 64-wide CLIP (both towers) with CLIP's real vocabulary and token ids."""
    import numpy as np
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=32),
        projection_dim=32,
        logit_scale_init_value=float(np.log(100.0)),  # CLIP's trained value, so logits match Eq. 1
    )


def save_tiny_clip(folder: Path, image_size: int = 224, seed: int = 0) -> Path:
    """A random CLIP with CLIP's real tokenizer, saved as a checkpoint folder (what `--clip`
    takes): it runs everything zsseg does, with meaningless predictions."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    if not (TOKENIZER / "vocab.json").is_file():
        raise FileNotFoundError(f"CLIP tokenizer files not found under {TOKENIZER}; set ZSSEG_TEST_TOKENIZER")
    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config(image_size)).eval()
    model.save_pretrained(folder)
    CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt")).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def openai_clip_state(width=128, layers=2, patch=32, image=64, text_width=128, text_layers=2, context=77, vocab=49408,
                      embed=16, seed=0, visual=True):
    """A random ViT CLIP in OpenAI's layout, from explicit shapes (norm scales near 1 and
    non-zero biases, so that every tensor counts in the output); `visual=False` leaves out the
    image tower (for a ResNet one from `zsseg.modified_resnet.random_openai_resnet_state`)."""
    import math

    import torch

    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=None):
        scale = shape[-1] ** -0.5 if scale is None else scale
        return torch.randn(shape, generator=g) * scale

    def tower(name, w):
        return {
            f"{name}.attn.in_proj_weight": rand(3 * w, w), f"{name}.attn.in_proj_bias": rand(3 * w, scale=0.1),
            f"{name}.attn.out_proj.weight": rand(w, w), f"{name}.attn.out_proj.bias": rand(w, scale=0.1),
            f"{name}.ln_1.weight": 1 + rand(w, scale=0.1), f"{name}.ln_1.bias": rand(w, scale=0.1),
            f"{name}.mlp.c_fc.weight": rand(4 * w, w), f"{name}.mlp.c_fc.bias": rand(4 * w, scale=0.1),
            f"{name}.mlp.c_proj.weight": rand(w, 4 * w), f"{name}.mlp.c_proj.bias": rand(w, scale=0.1),
            f"{name}.ln_2.weight": 1 + rand(w, scale=0.1), f"{name}.ln_2.bias": rand(w, scale=0.1),
        }

    state = {
        "positional_embedding": rand(context, text_width, scale=0.1),
        "text_projection": rand(text_width, embed, scale=text_width ** -0.5),
        "logit_scale": torch.tensor(math.log(100.0)),
        "visual.class_embedding": rand(width),
        "visual.positional_embedding": rand((image // patch) ** 2 + 1, width, scale=0.1),
        "visual.proj": rand(width, embed, scale=width ** -0.5),
        "visual.conv1.weight": rand(width, 3, patch, patch, scale=(3 * patch * patch) ** -0.5),
        "visual.ln_pre.weight": 1 + rand(width, scale=0.1), "visual.ln_pre.bias": rand(width, scale=0.1),
        "visual.ln_post.weight": 1 + rand(width, scale=0.1), "visual.ln_post.bias": rand(width, scale=0.1),
        "token_embedding.weight": rand(vocab, text_width, scale=0.5),
        "ln_final.weight": 1 + rand(text_width, scale=0.1), "ln_final.bias": rand(text_width, scale=0.1),
    }
    for i in range(layers):
        state.update(tower(f"visual.transformer.resblocks.{i}", width))
    for i in range(text_layers):
        state.update(tower(f"transformer.resblocks.{i}", text_width))
    return state if visual else {k: v for k, v in state.items() if not k.startswith("visual.")}


def save_tiny_reference_checkpoint(path: Path, keys_file: Path, seed: int = 0, region_adapter: bool = False,
                                   region_clip_seed: int | None = None, learned_prompt: tuple[int, int] | None = None) -> Path:
    """A small random checkpoint in the authors' format (detectron2's `{"model": state}`,
    `model_final.pth`): the reference's key names, read from a key list of
    ../shared/reference-parity, for a network with the paper's R101c backbone and a small head
    (32-wide, 2 decoder layers, 10 queries), and a tiny OpenAI-layout CLIP (32-d embeddings) under
    `clip_adapter.clip_model`. Load it with CLIP's tokenizer (`--tokenizer TOKENIZER`).

    Args:
        region_adapter: add the separate region adapter of the reference's SEPERATE_ADAPTER
            configs (`_region_clip_adapter.*`), with a learned prompt (8 vectors before the name,
            2 after) and a CLIP of its own when `region_clip_seed` is given (else a copy of the first).
        learned_prompt: (n, m) learned vectors before and after the name for the first adapter
            (`clip_adapter.prompt_learner.*`); None: no learned prompt (a cross-dataset model).
    """
    import re

    import torch

    from zsseg.maskformer.config import ModelConfig
    from zsseg.maskformer.model import MaskFormer
    from zsseg.maskformer.reference import NETWORK_KEYS

    torch.manual_seed(seed)
    config = ModelConfig(hidden_dim=32, num_queries=10, decoder_layers=2, feedforward_dim=64, conv_dim=32, mask_dim=32, embed_dim=32,
                         class_head_hidden=64)
    ours = MaskFormer(config).state_dict()
    state = {}
    for line in Path(keys_file).read_text().splitlines():
        name = line.split("\t")[0]
        for pattern, replacement in NETWORK_KEYS:
            match = re.fullmatch(pattern, name)
            if match:
                mine = re.sub(pattern, replacement, name) if isinstance(replacement, str) else replacement(match)
                if mine in ours:
                    state[name] = ours[mine].clone()
                break
    generator = torch.Generator().manual_seed(seed)
    clip = openai_clip_state(width=64, layers=2, patch=32, image=224, text_width=64, embed=32, seed=seed)
    mean = 255 * torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = 255 * torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def adapter(prefix: str, clip_state: dict, prompt: tuple[int, int] | None) -> None:
        state.update({f"{prefix}clip_model.{k}": v for k, v in clip_state.items()})
        state[f"{prefix}non_object_embedding"] = torch.randn(1, 32, generator=generator) * 0.2
        state[f"{prefix}pixel_mean"], state[f"{prefix}pixel_std"] = mean.clone(), std.clone()
        if prompt is not None:
            before, after = prompt
            learned = {"prefix_prompt": torch.randn(before, 64, generator=generator) * 0.02}
            if after:
                learned["suffix_prompt"] = torch.randn(after, 64, generator=generator) * 0.02
            for signal in ("start_signal", "dot_signal", "end_signal", "pad_signal"):
                learned[signal] = torch.randn(1, 64, generator=generator) * 0.5
            state.update({f"{prefix}prompt_learner.{k}": v for k, v in learned.items()})

    adapter("clip_adapter.", clip, learned_prompt)
    if region_adapter:
        other = clip if region_clip_seed is None else openai_clip_state(width=64, layers=2, patch=32, image=224, text_width=64,
                                                                         embed=32, seed=region_clip_seed)
        adapter("_region_clip_adapter.", {k: v.clone() for k, v in other.items()}, (8, 2))
    state["criterion.empty_weight"] = torch.cat([torch.ones(156), torch.tensor([0.1])])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


def save_tiny_open_clip(folder: Path, tower: str = "vit", seed: int = 0, image_size: int = 224, quick_gelu: bool = True) -> Path:
    """A random CLIP in open_clip's hub layout (what `hf download timm/resnet50_clip.openai
    --local-dir DIR` gives: open_clip_config.json and open_clip_model.safetensors, no tokenizer),
    with an OpenAI-layout ViT (`tower="vit"`, patch 32) or ResNet (`tower="resnet"`, one block
    per stage, width 16) image tower; 16-d embeddings."""
    import json

    from safetensors.torch import save_file

    from zsseg.modified_resnet import ResNetConfig, random_openai_resnet_state

    if tower == "vit":
        state = openai_clip_state(width=64, layers=2, patch=32, image=image_size, text_width=64, embed=16, seed=seed)
        vision_cfg = {"image_size": image_size, "layers": 2, "width": 64, "patch_size": 32}
    elif tower == "resnet":
        state = openai_clip_state(text_width=64, embed=16, seed=seed, visual=False)
        config = ResNetConfig((1, 1, 1, 1), 16, 16, image_size)
        state.update(random_openai_resnet_state(config, seed=seed))
        vision_cfg = {"image_size": image_size, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None}
    else:
        raise ValueError(f"tower must be 'vit' or 'resnet', got {tower!r}")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    config = {
        "model_cfg": {"embed_dim": 16, "quick_gelu": quick_gelu, "vision_cfg": vision_cfg,
                      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder


# The words of zsseg's prompt templates and the benchmark class names that the tiny SigLIP's
# word-level tokenizer knows; any other word is its unknown token (meaningless, as the weights are).
_SIGLIP_WORDS = ("a an the of in on at with and or photo picture image rendering sculpture drawing painting cropped close-up "
                 "bright dark good bad clean dirty large small big nice weird cool black white plastic toy itap origami "
                 "blurry pixelated jpeg corrupted tattoo embroidered graffiti video game hard to see there is this it "
                 "my one person cat dog car road sky tree building wall floor grass sidewalk sofa couch lamp table . ,")


def save_tiny_siglip(folder: Path, seed: int = 0, image_size: int = 224) -> Path:
    """A random SigLIP (transformers' `SiglipModel`: 2 layers, 32 wide, 64-token context) with a
    small word-level tokenizer of SigLIP's conventions (lower-cased, "</s>" ending and padding),
    saved as a checkpoint folder with its preprocessor_config.json (mean and std 0.5, bicubic)."""
    import json

    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in _SIGLIP_WORDS.split():
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="</s>", eos_token="</s>")
    config = SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(vocab) + 8, max_position_embeddings=64, pad_token_id=1, eos_token_id=1, bos_token_id=None),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=32),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():  # a trained SigLIP's scale and bias (t = exp(4.7) ~ 110, b ~ -12.7)
        model.logit_scale.fill_(4.7)
        model.logit_bias.fill_(-12.7)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": image_size, "width": image_size},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, indent=2))
    return folder
