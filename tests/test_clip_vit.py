"""zsseg's own CLIP ViT (`zsseg.models.clip_vit`) against transformers' `CLIPModel`, which it
replaces: the same weights give the same features, through the public loading path."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from zsseg.models.clip_vit import ClipNet, ClipSpec, TextNet, TextSpec, VisionSpec, build_clip, weight_shapes
from zsseg.errors import ZssegError

TOL = dict(rtol=1e-5, atol=1e-5)


def _transformers_model(folder):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny CLIP folder (real BPE tokenizer), loaded by zsseg and by transformers."""
    from conftest import TOKENIZER
    from zsseg import load_clip
    from zsseg.tiny_clip import save_tiny_clip

    folder = save_tiny_clip(tmp_path_factory.mktemp("clip"), tokenizer=TOKENIZER, seed=3)
    return load_clip(str(folder)), _transformers_model(folder)


def test_image_features_equal_transformers(pair):
    ours, theirs = pair
    assert isinstance(ours.model, ClipNet)
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = F.normalize(theirs.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    torch.testing.assert_close(ours.encode_images(pixels), expected, **TOL)


def test_resized_position_embeddings_equal_transformers(pair):
    """Another input size: the position grid resized bicubically, as transformers does (the
    reference's 244 x 224 prompt-learning crops, dense CLIP's larger windows)."""
    ours, theirs = pair
    for size in [(256, 256), (224, 256)]:
        pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = theirs.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True).pooler_output
        torch.testing.assert_close(ours.encode_images(pixels), F.normalize(expected, dim=-1), **TOL)


def test_dense_features_equal_transformers_hidden_states(pair):
    """Dense CLIP reads the last layer's patch tokens through post_layernorm and the projection."""
    ours, theirs = pair
    pixels = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hidden = theirs.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        expected = theirs.visual_projection(theirs.vision_model.post_layernorm(hidden[:, 1:]))
    dense = ours.dense_features(pixels)  # [1, D, 10, 10]
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), expected, **TOL)


def test_text_features_equal_transformers_with_and_without_padding(pair):
    ours, theirs = pair
    tokenizer = ours.tokenizer
    for texts in (["a photo of a cat."], ["a photo of a cat.", "sky", "a photo of a potted plant next to a wall."]):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            expected = theirs.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
        torch.testing.assert_close(ours.encode_text(texts), F.normalize(expected, dim=-1), **TOL)


def test_learned_context_equals_transformers_through_the_same_hook(pair):
    """CoOp's vectors go in through a forward pre-hook on the text embeddings, as with transformers."""
    from zsseg.models.base import ClipTextTower

    ours, theirs = pair
    context = torch.randn(4, ours.token_width, generator=torch.Generator().manual_seed(4))
    names = ["cat", "potted plant"]
    mirror = type(ours)(model=theirs, tokenizer=ours.tokenizer, source="transformers", image_size=ours.image_size,
                        image_mean=ours.image_mean, image_std=ours.image_std, context_length=ours.context_length)
    with torch.no_grad():
        torch.testing.assert_close(ClipTextTower.encode_with_context(ours, context, names),
                                   ClipTextTower.encode_with_context(mirror, context, names), **TOL)


def test_legacy_end_token_id_pools_at_the_largest_id(tmp_path):
    """Configs written before transformers fixed eos_token_id say 2: the tower then pools at the
    largest id (CLIP's end of text), as transformers does."""
    from conftest import TOKENIZER
    from zsseg import load_clip
    from zsseg.tiny_clip import save_tiny_clip

    folder = save_tiny_clip(tmp_path / "clip", tokenizer=TOKENIZER, seed=5)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    ours, theirs = load_clip(str(folder)), _transformers_model(folder)
    assert ours.model.text_model.eos_token_id == 2
    texts = ["a photo of a cat.", "wall"]
    batch = ours.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = theirs.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
    torch.testing.assert_close(ours.encode_text(texts), F.normalize(expected, dim=-1), **TOL)


def test_gelu_towers_equal_transformers(tmp_path):
    """open_clip models trained without QuickGELU use the exact GELU."""
    from transformers import CLIPModel

    from conftest import TOKENIZER
    from zsseg import load_clip
    from zsseg.tiny_clip import save_tiny_clip, tiny_clip_config

    folder = save_tiny_clip(tmp_path / "clip", tokenizer=TOKENIZER)
    config = tiny_clip_config(vocab_size=49408)
    config.text_config.hidden_act = config.vision_config.hidden_act = "gelu"
    torch.manual_seed(6)
    CLIPModel(config).save_pretrained(folder)
    ours, theirs = load_clip(str(folder)), _transformers_model(folder)
    assert ours.model.vision_model.encoder.layers[0].mlp.activation_fn.__class__ is torch.nn.GELU
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = theirs.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(ours.encode_images(pixels), F.normalize(expected, dim=-1), **TOL)


def test_spec_defaults_are_transformers_defaults():
    """A config.json that leaves values out gets what transformers would give them."""
    from transformers import CLIPConfig

    spec, theirs = ClipSpec.from_transformers({"model_type": "clip"}), CLIPConfig()
    for ours, config in ((spec.text_config, theirs.text_config), (spec.vision_config, theirs.vision_config)):
        for name, value in ours.to_dict().items():
            assert getattr(config, name) == value, name
    assert spec.projection_dim == theirs.projection_dim


def test_early_config_dicts_override_the_sections():
    spec = ClipSpec.from_transformers({"text_config": {"hidden_size": 64}, "text_config_dict": {"hidden_size": 128,
                                       "num_attention_heads": 4}, "vision_config_dict": {"patch_size": 16}})
    assert spec.text_config.hidden_size == 128 and spec.vision_config.patch_size == 16


@pytest.mark.parametrize("spec", [
    ClipSpec(TextSpec(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100,
                      max_position_embeddings=20, projection_dim=24),
             VisionSpec(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4, image_size=64,
                        patch_size=16, projection_dim=24), 24),
    TextSpec(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100,
             max_position_embeddings=20, projection_dim=24),
])
def test_weight_shapes_are_the_modules_own(spec):
    with torch.device("meta"):
        model = ClipNet(spec) if isinstance(spec, ClipSpec) else TextNet(spec)
    assert weight_shapes(spec) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_build_clip_names_the_first_misfit():
    spec = TextSpec(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=10,
                    max_position_embeddings=5, projection_dim=4)
    tensors = {k: torch.zeros(shape) for k, shape in weight_shapes(spec).items()}
    model = build_clip(spec, tensors)
    assert model.text_model.embeddings.token_embedding.weight.data_ptr() == tensors["text_model.embeddings.token_embedding.weight"].data_ptr()
    with pytest.raises(ZssegError, match="lack 'text_projection.weight'"):
        build_clip(spec, {k: v for k, v in tensors.items() if k != "text_projection.weight"})
    with pytest.raises(ZssegError, match="have no place for 'extra'"):
        build_clip(spec, {**tensors, "extra": torch.zeros(1)})
    with pytest.raises(ZssegError, match=r"'text_projection.weight' has shape \[3, 8\]"):
        build_clip(spec, {**tensors, "text_projection.weight": torch.zeros(3, 8)})


@pytest.mark.parametrize("values, message", [
    ({"hidden_size": -5}, "hidden_size must be a positive integer"),
    ({"hidden_size": 60, "num_attention_heads": 8}, "not a multiple of its 8 attention heads"),
    ({"hidden_act": "nope"}, "hidden_act 'nope' is not one CLIP uses"),
    ({"num_hidden_layers": "x"}, "num_hidden_layers must be a positive integer"),
])
def test_bad_spec_values_are_one_line(values, message):
    with pytest.raises(ZssegError, match=message):
        TextSpec.from_dict(values)


def test_loading_imports_no_transformers_modelling(clip_dir):
    """The point of the port: a run that finds its text features cached never imports
    transformers (2-3 CPU-s of imports); the tokenizer is read only when text is encoded."""
    import subprocess
    import sys

    code = ("import sys; from zsseg import load_clip; clip = load_clip(sys.argv[1]); clip.encode_images(__import__('torch')"
            ".zeros(1, 3, 224, 224)); print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers')); "
            "clip.encode_text(['a cat']); print('modeling_clip' in str(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(clip_dir)], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "False"
