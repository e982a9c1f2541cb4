"""Small random vision-language models, saved in the formats a user's download has: to try every
command without a hub or weights, and for tests and benchmarks.

    python -m zsseg.tiny_clip tiny-clip                    # a transformers CLIP folder, and a picture
    zsseg segment tiny-clip/example.jpg --classes "cat; car; wall" --clip tiny-clip --out outputs

    python -m zsseg.tiny_clip tiny-rn --family open-clip-resnet   # open_clip's layout, ResNet tower
    python -m zsseg.tiny_clip tiny-sig --family siglip            # transformers SigLIP

Their labels mean nothing (the weights are random), but everything runs as it does with a real
model: the same loading path, tokenisation conventions, context length and output formats. The
CLIP families take CLIP's real BPE files where given (`--tokenizer DIR` with vocab.json and
merges.txt: real token ids); without them they carry a character-level tokenizer in CLIP's
format (its 512 single-character tokens and its two special ones), so that nothing needs to be
downloaded. open_clip folders carry no tokenizer, as on the hub: load them with `--tokenizer`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
REAL_VOCABULARY = 49408  # CLIP's BPE vocabulary; its last two ids are the start and end tokens


def _byte_characters() -> list[str]:
    """CLIP's (GPT-2's) printable stand-ins for the 256 byte values, in its vocabulary's order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    characters, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return [chr(c) for c in characters]


def save_character_tokenizer(folder: Path) -> tuple[Path, Path]:
    """CLIP's tokenizer files (vocab.json, merges.txt) with no merges: each character of a word is
    a token, the last one with CLIP's end-of-word mark; ids 512 and 513 start and end a text."""
    characters = _byte_characters()
    vocabulary = {c: i for i, c in enumerate(characters)}
    vocabulary.update({c + "</w>": 256 + i for i, c in enumerate(characters)})
    vocabulary.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


def tiny_clip_config(image_size: int = 224, vocab_size: int = REAL_VOCABULARY):
    """A 2-layer, 64-wide CLIP (both towers), 32-d embeddings, with the start and end tokens at
    the last two ids of a `vocab_size` vocabulary (CLIP's real one: 49408)."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=vocab_size - 2,
                         eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=32),
        projection_dim=32,
        logit_scale_init_value=math.log(100.0),  # CLIP's trained value, so logits match Eq. 1
    )


def save_tiny_clip(folder: Path, tokenizer: Path | str | None = None, image_size: int = 224, seed: int = 0,
                   example: bool = False) -> Path:
    """A random CLIP saved as a transformers checkpoint folder (what `--clip` takes) with a
    tokenizer: CLIP's real BPE files from `tokenizer` (a folder with vocab.json and merges.txt),
    else the character-level one. `example` also writes example.jpg, a picture to segment."""
    import torch

    from .models.hub import quiet_transformers

    folder = Path(folder)
    if tokenizer is None:
        vocab, merges = save_character_tokenizer(folder / "character-tokenizer")
    else:
        vocab, merges = Path(tokenizer) / "vocab.json", Path(tokenizer) / "merges.txt"
        if not vocab.is_file() or not merges.is_file():
            raise FileNotFoundError(f"{tokenizer} holds no vocab.json and merges.txt (CLIP's BPE files)")
    with quiet_transformers():  # transformers' notes (torchvision missing) and its shard-writing bar
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

        fast = CLIPTokenizerFast(str(vocab), str(merges))
        torch.manual_seed(seed)
        model = CLIPModel(tiny_clip_config(image_size, len(fast))).eval()
        model.save_pretrained(folder)
        fast.save_pretrained(folder)
        CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    if tokenizer is None:
        for path in (vocab, merges):
            path.unlink()
        vocab.parent.rmdir()
    if example:
        save_example_image(folder / "example.jpg")
    return folder


def save_example_image(path: Path, width: int = 480, height: int = 320) -> Path:
    """A picture to segment: sky, a road, a tree and a car, drawn from shapes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (135, 185, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, int(height * 0.6), width, height], fill=(90, 90, 95))
    draw.rectangle([int(width * 0.72), int(height * 0.25), int(width * 0.76), int(height * 0.62)], fill=(100, 70, 40))
    draw.ellipse([int(width * 0.62), int(height * 0.05), int(width * 0.86), int(height * 0.38)], fill=(40, 130, 50))
    draw.rounded_rectangle([int(width * 0.15), int(height * 0.48), int(width * 0.5), int(height * 0.72)], radius=18, fill=(200, 30, 30))
    for x in (0.22, 0.43):
        draw.ellipse([int(width * (x - 0.05)), int(height * 0.66), int(width * (x + 0.05)), int(height * 0.8)], fill=(20, 20, 20))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=92)
    return path


def openai_clip_state(width: int = 128, layers: int = 2, patch: int = 32, image: int = 64, text_width: int = 128, text_layers: int = 2,
                      context: int = 77, vocab: int = REAL_VOCABULARY, embed: int = 16, seed: int = 0, visual: bool = True) -> dict:
    """A random ViT CLIP in OpenAI's layout, from explicit shapes (norm scales near 1 and non-zero
    biases, so that every tensor counts in the output); `visual=False` leaves out the image tower
    (for a ResNet one from `random_openai_resnet_state`)."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=None):
        scale = shape[-1] ** -0.5 if scale is None else scale
        return torch.randn(shape, generator=generator) * scale

    def tower(name: str, w: int) -> dict:
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


def random_openai_resnet_state(config, seed: int = 0, prefix: str = "visual.") -> dict:
    """A random CLIP ResNet state dict in OpenAI's layout (fp32, CPU), for tests and benchmarks:
    the same `seed` gives the same tensors. Scaled so that activations stay of order 1 through
    the network (He-normal convolutions, batch norm statistics near the identity, projections
    with std 1/sqrt(fan-in)), so that comparisons are not dominated by overflow or vanishing.
    Includes the `num_batches_tracked` counters (0), as a saved torch model has them.

        state = random_openai_resnet_state(ResNetConfig((1, 1, 1, 1), width=8, output_dim=16, image_size=64))
    """
    import torch

    from .models.modified_resnet import meta_model

    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    def uniform(shape, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    state = {}
    for key, meta in meta_model(config).state_dict().items():
        shape, name = meta.shape, key.rsplit(".", 1)[-1]
        if name == "num_batches_tracked":
            tensor = torch.zeros((), dtype=torch.long)
        elif meta.dim() == 4:  # convolutions
            tensor = normal(shape, (2 / (shape[1] * shape[2] * shape[3])) ** 0.5)
        elif key.startswith("attnpool."):
            fan_in = shape[-1] if meta.dim() == 2 else config.embed_dim
            tensor = normal(shape, fan_in**-0.5) if name != "bias" else normal(shape, 0.02)
        elif name == "running_var":
            tensor = uniform(shape, 0.5, 1.5)
        elif name == "weight":  # batch norm scale; the residual branch's last one smaller, as in training
            tensor = uniform(shape, 0.1, 0.3) if key.endswith("bn3.weight") and key.startswith("layer") else uniform(shape, 0.5, 1.5)
        else:  # batch norm bias and running_mean
            tensor = normal(shape, 0.1)
        state[prefix + key] = tensor
    return state


def save_tiny_open_clip(folder: Path, tower: str = "vit", seed: int = 0, image_size: int = 224, quick_gelu: bool = True) -> Path:
    """A random CLIP in open_clip's hub layout (what `hf download timm/resnet50_clip.openai
    --local-dir DIR` gives: open_clip_config.json and open_clip_model.safetensors, no tokenizer),
    with an OpenAI-layout ViT (`tower="vit"`, patch 32) or ResNet (`tower="resnet"`, one block
    per stage, width 16) image tower; 16-d embeddings and CLIP's real vocabulary size."""
    from safetensors.torch import save_file

    from .models.modified_resnet import ResNetConfig

    if tower == "vit":
        state = openai_clip_state(width=64, layers=2, patch=32, image=image_size, text_width=64, embed=16, seed=seed)
        vision = {"image_size": image_size, "layers": 2, "width": 64, "patch_size": 32}
    elif tower == "resnet":
        state = openai_clip_state(text_width=64, embed=16, seed=seed, visual=False)
        state.update(random_openai_resnet_state(ResNetConfig((1, 1, 1, 1), 16, 16, image_size), seed=seed))
        vision = {"image_size": image_size, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None}
    else:
        raise ValueError(f"tower must be 'vit' or 'resnet', got {tower!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    config = {
        "model_cfg": {"embed_dim": 16, "quick_gelu": quick_gelu, "vision_cfg": vision,
                      "text_cfg": {"context_length": 77, "vocab_size": REAL_VOCABULARY, "width": 64, "heads": 1, "layers": 2}},
        "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bicubic", "resize_mode": "shortest"},
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
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    from .models.hub import quiet_transformers

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
    folder = Path(folder)
    with quiet_transformers():
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


def save_tiny_reference_checkpoint(path: Path, keys_file: Path, seed: int = 0, region_adapter: bool = False,
                                   region_clip_seed: int | None = None, learned_prompt: tuple[int, int] | None = None,
                                   paper_size: bool = False) -> Path:
    """A small random checkpoint in the authors' format (detectron2's `{"model": state}`,
    `model_final.pth`): the reference's key names, read from a key list of its state dict
    (tab-separated name, shape, dtype; the reference-parity data has them), for a network with the
    paper's R101c backbone and a small head (32-wide, 2 decoder layers, 10 queries), and a tiny
    OpenAI-layout CLIP (32-d embeddings) under `clip_adapter.clip_model`. Load it with CLIP's
    real tokenizer (`--tokenizer DIR`).

    Args:
        region_adapter: add the separate region adapter of the reference's SEPERATE_ADAPTER
            configs (`_region_clip_adapter.*`), with a learned prompt (8 vectors before the name,
            2 after) and a CLIP of its own when `region_clip_seed` is given (else a copy of the first).
        learned_prompt: (n, m) learned vectors before and after the name for the first adapter
            (`clip_adapter.prompt_learner.*`); None: no learned prompt (a cross-dataset model).
        paper_size: the paper's shapes instead (a 256-wide, 6-layer decoder with 100 queries, and
            a ViT-B/16 CLIP with 512-d embeddings), seeded: the same work per image as the
            authors' model, for timing.
    """
    import re

    import torch

    from .networks.maskformer.config import ModelConfig
    from .networks.maskformer.model import MaskFormer
    from .networks.maskformer.reference import NETWORK_KEYS

    torch.manual_seed(seed)
    if paper_size:
        config = ModelConfig()
        shapes = dict(width=768, layers=12, patch=16, image=224, text_width=512, text_layers=12, embed=512)
    else:
        config = ModelConfig(hidden_dim=32, num_queries=10, decoder_layers=2, feedforward_dim=64, conv_dim=32, mask_dim=32,
                             embed_dim=32, class_head_hidden=64)
        shapes = dict(width=64, layers=2, patch=32, image=224, text_width=64, embed=32)
    embed, text_width = shapes["embed"], shapes["text_width"]
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
    clip = openai_clip_state(**shapes, seed=seed)
    mean = 255 * torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = 255 * torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def adapter(prefix: str, clip_state: dict, prompt: tuple[int, int] | None) -> None:
        state.update({f"{prefix}clip_model.{k}": v for k, v in clip_state.items()})
        state[f"{prefix}non_object_embedding"] = torch.randn(1, embed, generator=generator) * 0.2
        state[f"{prefix}pixel_mean"], state[f"{prefix}pixel_std"] = mean.clone(), std.clone()
        if prompt is not None:
            before, after = prompt
            learned = {"prefix_prompt": torch.randn(before, text_width, generator=generator) * 0.02}
            if after:
                learned["suffix_prompt"] = torch.randn(after, text_width, generator=generator) * 0.02
            for signal in ("start_signal", "dot_signal", "end_signal", "pad_signal"):
                learned[signal] = torch.randn(1, text_width, generator=generator) * 0.5
            state.update({f"{prefix}prompt_learner.{k}": v for k, v in learned.items()})

    adapter("clip_adapter.", clip, learned_prompt)
    if region_adapter:
        other = clip if region_clip_seed is None else openai_clip_state(**shapes, seed=region_clip_seed)
        adapter("_region_clip_adapter.", {k: v.clone() for k, v in other.items()}, (8, 2))
    state["criterion.empty_weight"] = torch.cat([torch.ones(156), torch.tensor([0.1])])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


def save_checkpoint_clip(checkpoint: Path, target: Path) -> Path:
    """The CLIP an authors' checkpoint holds, alone, as a safetensors file in OpenAI's layout (what
    `--clip` takes): to give a checkpoint's own CLIP beside it."""
    from safetensors.torch import save_file

    from .networks.maskformer.reference import CLIP_PREFIX, read_checkpoint

    state = read_checkpoint(checkpoint)
    save_file({k[len(CLIP_PREFIX):]: v.contiguous() for k, v in state.items() if k.startswith(CLIP_PREFIX)}, str(target))
    return Path(target)


FAMILIES = {
    "clip": lambda folder, tokenizer: save_tiny_clip(folder, tokenizer, example=True),
    "open-clip-vit": lambda folder, tokenizer: save_tiny_open_clip(folder, "vit"),
    "open-clip-resnet": lambda folder, tokenizer: save_tiny_open_clip(folder, "resnet"),
    "siglip": lambda folder, tokenizer: save_tiny_siglip(folder),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zsseg.tiny_clip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to save it (a new or empty folder)")
    parser.add_argument("--family", choices=list(FAMILIES), default="clip", help="the model family and format (default clip)")
    parser.add_argument("--tokenizer", type=Path, default=None, metavar="DIR",
                        help="CLIP's BPE files (vocab.json, merges.txt) for the clip family (default: a character-level tokenizer)")
    args = parser.parse_args(argv)
    if args.folder.exists() and (not args.folder.is_dir() or any(args.folder.iterdir())):
        parser.error(f"{args.folder} exists and is not an empty folder")
    try:
        print(FAMILIES[args.family](args.folder, args.tokenizer))
    except FileNotFoundError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
