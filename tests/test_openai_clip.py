"""CLIP weights in OpenAI's layout (zsseg.models.openai_clip): the converted transformers model equals
OpenAI's architecture, computed here in plain torch, and the authors' recorded outputs."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch
from torch.nn import functional as F

from conftest import SHARED, TOKENIZER
from zsseg.tiny_clip import openai_clip_state as openai_state
from zsseg import ZssegError
from zsseg.models.openai_clip import clip_from_openai_state, is_openai_clip_state, openai_to_transformers, openai_vit_config

REFERENCE = os.environ.get("ZSSEG_REFERENCE_PARITY", str(SHARED / "reference-parity"))
PREFIX = "clip_adapter.clip_model."
TINY = dict(width=128, layers=2, patch=32, image=64, text_width=128, text_layers=2, context=77, vocab=49408, embed=16)


# OpenAI's CLIP written out in plain torch, independently of transformers: sequences are
# [L, N, W] as nn.MultiheadAttention takes them, the activation is QuickGELU, norms use eps 1e-5.

def _norm(x, s, name):
    return F.layer_norm(x, x.shape[-1:], s[f"{name}.weight"], s[f"{name}.bias"], 1e-5)


def _blocks(x, s, tower, mask=None):
    width = x.shape[-1]
    i = 0
    while f"{tower}.{i}.ln_1.weight" in s:
        b = f"{tower}.{i}"
        h = _norm(x, s, f"{b}.ln_1")
        x = x + F.multi_head_attention_forward(
            h, h, h, width, width // 64, s[f"{b}.attn.in_proj_weight"], s[f"{b}.attn.in_proj_bias"], None, None, False, 0.0,
            s[f"{b}.attn.out_proj.weight"], s[f"{b}.attn.out_proj.bias"], training=False, need_weights=False, attn_mask=mask)[0]
        h = F.linear(_norm(x, s, f"{b}.ln_2"), s[f"{b}.mlp.c_fc.weight"], s[f"{b}.mlp.c_fc.bias"])
        x = x + F.linear(h * torch.sigmoid(1.702 * h), s[f"{b}.mlp.c_proj.weight"], s[f"{b}.mlp.c_proj.bias"])
        i += 1
    return x


def openai_image_features(s, pixels):
    """`[N, D]` image embeddings (not normalised) of normalised pixels `[N, 3, S, S]`."""
    patch = s["visual.conv1.weight"].shape[-1]
    x = F.conv2d(pixels, s["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)  # [N, grid^2, W]
    x = torch.cat([s["visual.class_embedding"].expand(len(x), 1, -1), x], dim=1) + s["visual.positional_embedding"]
    x = _blocks(_norm(x, s, "visual.ln_pre").transpose(0, 1), s, "visual.transformer.resblocks").transpose(0, 1)
    return _norm(x[:, 0], s, "visual.ln_post") @ s["visual.proj"]


def openai_text_features(s, ids):
    """`[N, D]` text embeddings (not normalised) of token ids `[N, context]`, zero-padded as
    OpenAI's tokenize pads them; the end-of-text token is the highest id."""
    context = s["positional_embedding"].shape[0]
    causal = torch.full((context, context), float("-inf")).triu(1)
    x = s["token_embedding.weight"][ids] + s["positional_embedding"]
    x = _norm(_blocks(x.transpose(0, 1), s, "transformer.resblocks", causal).transpose(0, 1), s, "ln_final")
    return x[torch.arange(len(ids)), ids.argmax(dim=-1)] @ s["text_projection"]


def openai_ids(clip, texts):
    ids = torch.zeros(len(texts), clip.context_length, dtype=torch.long)
    for i, row in enumerate(clip.tokenizer(texts)["input_ids"]):
        ids[i, : len(row)] = torch.tensor(row)
    return ids


@pytest.fixture(scope="module")
def tiny_state():
    return openai_state(**TINY)


@pytest.fixture(scope="module")
def tiny_clip(tiny_state):
    if not (TOKENIZER / "vocab.json").is_file():
        pytest.fail(f"CLIP tokenizer files not found under {TOKENIZER}; set ZSSEG_TEST_TOKENIZER")
    return clip_from_openai_state(tiny_state, TOKENIZER, source="tiny-openai")


TEXTS = ["a photo of a cat.", "a sculpture of a sky-other.", "grass", "a photo of a very very long and winding road."]


def test_converted_model_equals_openais_architecture(tiny_state, tiny_clip):
    # float32 with different summation orders (sdpa vs nn.MultiheadAttention's kernels) gives
    # ~1e-6 on unit vectors of 16 components (values ~0.25); a port error (GELU for QuickGELU,
    # q and k swapped, a missing transpose, the wrong pooled row) is 1e-2 or more (see below).
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image = F.normalize(openai_image_features(tiny_state, pixels), dim=-1)
        text = F.normalize(openai_text_features(tiny_state, openai_ids(tiny_clip, TEXTS)), dim=-1)
    assert (tiny_clip.encode_images(pixels) - image).abs().max() < 1e-5
    # encode_text pads to the longest text with the end token and masks; OpenAI pads with 0 to 77.
    assert (tiny_clip.encode_text(TEXTS) - text).abs().max() < 1e-5
    # The four texts and three images are told apart: the comparison above is not trivial.
    assert (text @ text.T).fill_diagonal_(0).max() < 0.99 and (image @ image.T).fill_diagonal_(0).max() < 0.99


def test_the_tolerance_catches_a_wrong_activation(tiny_state):
    clip = clip_from_openai_state(tiny_state, TOKENIZER, source="tiny-openai")
    for layer in clip.model.text_model.encoder.layers:
        layer.mlp.activation_fn = torch.nn.GELU()
    with torch.no_grad():
        text = F.normalize(openai_text_features(tiny_state, openai_ids(clip, TEXTS)), dim=-1)
    assert (clip.encode_text(TEXTS) - text).abs().max() > 1e-3


def test_clip_model_fields(tiny_state, tiny_clip):
    assert (tiny_clip.image_size, tiny_clip.context_length, tiny_clip.embed_dim, tiny_clip.source) == (64, 77, 16, "tiny-openai")
    assert tiny_clip.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert not tiny_clip.model.training and tiny_clip.dtype == torch.float32
    assert tiny_clip.model.logit_scale.item() == pytest.approx(math.log(100.0))
    assert torch.equal(tiny_clip.model.visual_projection.weight, tiny_state["visual.proj"].T)
    bf16 = clip_from_openai_state(tiny_state, TOKENIZER, source="tiny-openai", dtype="bf16")
    assert bf16.dtype == torch.bfloat16 and bf16.encode_images(torch.zeros(1, 3, 64, 64)).dtype == torch.float32


def test_config_from_shapes():
    config = openai_vit_config(openai_state(**{**TINY, "patch": 16, "image": 224, "width": 192, "layers": 3}))
    vision, text = config.vision_config, config.text_config
    assert (vision.patch_size, vision.image_size, vision.hidden_size, vision.num_attention_heads) == (16, 224, 192, 3)
    assert (vision.num_hidden_layers, vision.intermediate_size, vision.num_channels) == (3, 768, 3)
    assert (text.hidden_size, text.num_attention_heads, text.num_hidden_layers, text.intermediate_size) == (128, 2, 2, 512)
    assert (text.vocab_size, text.max_position_embeddings, config.projection_dim) == (49408, 77, 16)
    assert vision.hidden_act == text.hidden_act == "quick_gelu" and vision.layer_norm_eps == text.layer_norm_eps == 1e-5
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (49406, 49407, 49407)


def test_only_keys_under_the_prefix_are_read(tiny_state):
    state = {**{PREFIX + k: v for k, v in tiny_state.items()}, "sem_seg_head.predictor.weight": torch.zeros(2)}
    assert is_openai_clip_state(state, PREFIX) and not is_openai_clip_state(state)
    assert not is_openai_clip_state({"weight": torch.zeros(1)})
    converted = openai_to_transformers(state, PREFIX)
    q, k, v = tiny_state["transformer.resblocks.1.attn.in_proj_weight"].chunk(3)
    assert torch.equal(converted["text_model.encoder.layers.1.self_attn.k_proj.weight"], k)
    assert torch.equal(converted["text_projection.weight"], tiny_state["text_projection"].T)
    assert len(converted) == len(tiny_state) + 2 * 2 * (TINY["layers"] + TINY["text_layers"])  # in_proj: 1 -> 3
    # The integers of OpenAI's TorchScript archives are dropped, as its own build_model does.
    assert openai_to_transformers({**tiny_state, "context_length": torch.tensor(77)}).keys() == converted.keys()


def _error(state, prefix=""):
    with pytest.raises(ZssegError) as error:
        openai_to_transformers(state, prefix)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_an_unknown_or_missing_key_is_named(tiny_state):
    state = {PREFIX + k: v for k, v in tiny_state.items()}
    extra = _error({**state, PREFIX + "visual.transformer.resblocks.0.attn.bias_k": torch.zeros(1, 1, 128)}, PREFIX)
    assert f"'{PREFIX}visual.transformer.resblocks.0.attn.bias_k'" in extra
    missing = dict(state)
    del missing[PREFIX + "transformer.resblocks.1.ln_2.bias"]
    assert f"lacks '{PREFIX}transformer.resblocks.1.ln_2.bias'" in _error(missing, PREFIX)
    # A gap in the blocks is the missing block's tensors, not one layer less.
    gap = {k: v for k, v in tiny_state.items() if not k.startswith("visual.transformer.resblocks.0.")}
    assert "lacks 'visual.transformer.resblocks.0." in _error(gap)
    assert "holds no tensor under 'nope.'" in _error(state, "nope.")


def test_a_resnet_tower_goes_to_zsseg_modified_resnet(tiny_state):
    """A ResNet image tower is read by zsseg.models.resnet_clip, whose strict loader names what an
    incomplete one lacks (the full round trip is in tests/test_clip_families.py)."""
    resnet = {k: v for k, v in tiny_state.items() if not k.startswith("visual.")}
    resnet.update({"visual.conv1.weight": torch.zeros(32, 3, 3, 3), "visual.layer1.0.conv1.weight": torch.zeros(64, 32, 1, 1),
                   "visual.attnpool.positional_embedding": torch.zeros(50, 2048)})
    assert is_openai_clip_state(resnet)
    assert _error(resnet).startswith("this OpenAI CLIP state has a ResNet image tower")  # not a ViT to convert
    with pytest.raises(ZssegError, match=r"^the CLIP ResNet state has no block in 'visual\.layer2'$"):
        clip_from_openai_state(resnet, TOKENIZER, source="resnet")


def test_a_tensor_of_the_wrong_shape_is_named(tiny_state):
    state = {**tiny_state, "visual.transformer.resblocks.1.mlp.c_proj.weight": torch.zeros(128, 100)}
    with pytest.raises(ZssegError, match=r"'visual\.transformer\.resblocks\.1\.mlp\.c_proj\.weight' has shape \(128, 100\)"):
        clip_from_openai_state(state, TOKENIZER, source="bad")


def test_tokenizer_sources(tiny_state, tiny_clip, tmp_path, monkeypatch):
    saved = tmp_path / "saved"
    tiny_clip.tokenizer.save_pretrained(saved)  # a full tokenizer folder (tokenizer.json), read by AutoTokenizer
    for tokenizer in (saved, tiny_clip.tokenizer):
        clip = clip_from_openai_state(tiny_state, tokenizer, source="x")
        assert clip.tokenizer("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    # Folders are checked when the CLIP loads; the tokenizer itself is read when first used.
    with pytest.raises(ZssegError, match="holds no CLIP tokenizer"):
        clip_from_openai_state(tiny_state, tmp_path, source="x")
    with pytest.raises(ZssegError, match="CLIP tokenizer folder not found"):
        clip_from_openai_state(tiny_state, str(tmp_path / "nope" / "tok"), source="x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    clip = clip_from_openai_state(tiny_state, "openai/clip-vit-base-patch16", source="x")
    with pytest.raises(ZssegError, match=r"not in the local Hugging Face cache.*\(tokenizer clip-tokenizer\)"):
        clip.encode_text(["a photo of a cat."])


def test_bad_dtype_and_device(tiny_state):
    with pytest.raises(ZssegError, match="unknown dtype"):
        clip_from_openai_state(tiny_state, TOKENIZER, source="x", dtype="int8")
    with pytest.raises(ZssegError, match="is not a device"):
        clip_from_openai_state(tiny_state, TOKENIZER, source="x", device="nonsense")


def test_authors_clip_reproduces_their_recorded_outputs():
    """Case D3 of the reference data: the paper's code fed 5 region crops to OpenAI's ViT-B/16
    (seeded weights) and encoded 5 class prompts; ours must give the same numbers."""
    from safetensors.torch import load_file

    folder = os.path.abspath(REFERENCE)
    if not os.path.isfile(os.path.join(folder, "caseD3_clip_adapter.safetensors")):
        pytest.skip(f"no reference data at {folder} (set ZSSEG_REFERENCE_PARITY)")
    spec = importlib.util.spec_from_file_location("reference_weights", os.path.join(folder, "weights.py"))
    weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights)
    # Each tensor is a function of (seed, name, shape): the CLIP's alone is the same as in the full state dict.
    keys = weights.read_keys(os.path.join(folder, "keys-coco-stuff-156-single-prompt.txt"))
    state = {name: weights.make_tensor(name, shape, seed=0) for name, shape, _ in keys
             if name.startswith(PREFIX) or name == "clip_adapter.non_object_embedding"}
    clip = clip_from_openai_state(state, TOKENIZER, source="reference", prefix=PREFIX)
    no_object = F.normalize(state.pop("clip_adapter.non_object_embedding"), dim=-1)
    del state
    recorded = load_file(os.path.join(folder, "caseD3_clip_adapter.safetensors"))
    text = recorded["text_features"]
    assert torch.allclose(text[5:], no_object)  # the same weights as the reference's
    # Unit vectors of 512 components (~0.04): float32 summation order gives ~1e-7.
    names = ["person", "giraffe", "grass", "tree", "sky-other"]
    assert (clip.encode_text([f"a sculpture of a {name}." for name in names]) - text[:5]).abs().max() < 1e-5
    # Logits are 100 x cosine, values up to 7: measured 3e-6 here (float32 through 12 layers); a
    # port error is 1e-2 or more.
    logits = 100 * clip.encode_images(recorded["region_crops"]) @ text.T
    assert (logits - recorded["region_logits"]).abs().max() < 1e-4
