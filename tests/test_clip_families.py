"""Every CLIP family zsseg loads, each built tiny and random and loaded through `load_clip` /
`--clip` as a user's download would be: open_clip hub folders with OpenAI-layout ViT and ResNet
towers, bare OpenAI-layout state-dict files, and transformers' SigLIP."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from conftest import DATA, TOKENIZER, run
from zsseg.tiny_clip import save_tiny_open_clip, save_tiny_siglip
from test_openai_clip import TEXTS, openai_ids, openai_image_features, openai_text_features
from zsseg import PromptEncoder, RegionClassifier, Segmenter, Vocabulary, ZssegError, load_clip
from zsseg.models.int8 import Int8Linear
from zsseg.models.modified_resnet import modified_resnet_from_state
from zsseg.models.openai_clip import read_tensor_file
from zsseg.models.resnet_clip import ResNetClip
from zsseg.models.siglip import SiglipClip


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        "vit": save_tiny_open_clip(root / "vit", "vit"),
        "resnet": save_tiny_open_clip(root / "resnet", "resnet"),
        "resnet-other": save_tiny_open_clip(root / "resnet-other", "resnet", seed=1),
        "siglip": save_tiny_siglip(root / "siglip"),
    }


def _state(folder):
    return read_tensor_file(folder / "open_clip_model.safetensors")


def test_open_clip_vit_folder_equals_openais_architecture(folders):
    """The folder's ViT, converted to transformers' CLIP, against OpenAI's CLIP written out in plain
    torch (tests/test_openai_clip.py): float32 summed in another order (sdpa against
    nn.MultiheadAttention) differs by ~1e-6 on unit vectors; a port error is 1e-2 or more."""
    clip = load_clip(str(folders["vit"]), tokenizer=str(TOKENIZER))
    state = _state(folders["vit"])
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image = F.normalize(openai_image_features(state, pixels), dim=-1)
        text = F.normalize(openai_text_features(state, openai_ids(clip, TEXTS)), dim=-1)
    assert type(clip).__name__ == "TransformersClip" and clip.model.config.vision_config.hidden_act == "quick_gelu"
    assert (clip.encode_images(pixels) - image).abs().max() < 1e-5
    assert (clip.encode_text(TEXTS) - text).abs().max() < 1e-5
    assert (image @ image.T).fill_diagonal_(0).max() < 0.99  # three images told apart: the check is not trivial


def test_open_clip_config_gives_activation_and_preprocessing(folders, tmp_path):
    folder = tmp_path / "gelu"
    save_tiny_open_clip(folder, "vit", quick_gelu=False)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["preprocess_cfg"].update(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], interpolation="bilinear")
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    gelu = load_clip(str(folder), tokenizer=str(TOKENIZER))
    quick = load_clip(str(folders["vit"]), tokenizer=str(TOKENIZER))
    assert gelu.model.config.text_config.hidden_act == "gelu"  # LAION-trained open_clip models use plain GELU
    assert gelu.image_mean == (0.5, 0.5, 0.5) and gelu.image_std == (0.25, 0.25, 0.25) and gelu.interpolation == "bilinear"
    assert (gelu.encode_text(TEXTS[:2]) - quick.encode_text(TEXTS[:2])).abs().max() > 1e-3  # same weights, other activation


def test_open_clip_config_gives_attention_heads_and_the_folder_gives_the_tokenizer(tmp_path, monkeypatch):
    """ViT-H/14-style configs give 80-channel heads (head_width) and the text tower's heads; timm's
    open_clip repos carry CLIP's BPE files, used before CLIP's hub tokenizer (here: offline)."""
    import shutil

    folder = save_tiny_open_clip(tmp_path / "heads", "vit")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["head_width"] = 16
    config["model_cfg"]["text_cfg"]["heads"] = 2
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER / name, folder / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    clip = load_clip(str(folder))  # no --tokenizer, no hub: the folder's own files
    assert clip.model.config.vision_config.num_attention_heads == 4 and clip.model.config.text_config.num_attention_heads == 2
    assert clip.tokenizer("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    default = load_clip(str(folders_vit_copy(tmp_path, folder)), tokenizer=str(TOKENIZER))  # same weights, 64-channel heads
    assert (clip.encode_text(TEXTS[:2]) - default.encode_text(TEXTS[:2])).abs().max() > 1e-4


def folders_vit_copy(tmp_path, folder):
    """`folder` with its config's head settings removed."""
    import shutil

    copy = tmp_path / "default-heads"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"].pop("head_width")
    config["model_cfg"]["text_cfg"]["heads"] = 1
    (copy / "open_clip_config.json").write_text(json.dumps(config))
    return copy


def test_resnet_clip_equals_its_parts(folders):
    """The ResNet CLIP's text features are OpenAI's text transformer (plain torch, as above), and its
    image features zsseg's ModifiedResNet (proven equal to OpenAI's in tests/test_modified_resnet.py)."""
    clip = load_clip(str(folders["resnet"]), tokenizer=str(TOKENIZER))
    state = _state(folders["resnet"])
    assert isinstance(clip, ResNetClip) and clip.family == "openai-resnet" and clip.image_size == 224
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        text = F.normalize(openai_text_features(state, openai_ids(clip, TEXTS)), dim=-1)
        image = F.normalize(modified_resnet_from_state(state)(pixels), dim=-1)
    assert (clip.encode_text(TEXTS) - text).abs().max() < 1e-5
    assert torch.allclose(clip.encode_images(pixels), image, atol=1e-6)
    # MaskCLIP's dense cells: one per 32 pixels, in the joint space; SCLIP is a ViT's alone.
    assert clip.dense_features(pixels).shape == (2, 16, 7, 7) and clip.dense_stride == 32
    with pytest.raises(ZssegError, match=r"^dense_mode 'sclip' needs a ViT image tower; this openai-resnet model"):
        Segmenter(clip=clip, method="dense-clip", dense_mode="sclip")


def test_resnet_input_size_comes_from_the_attention_pool(tmp_path):
    """RN50x4 is trained at 288 and RN50x16 at 384: the size is read from the pool's grid."""
    clip = load_clip(str(save_tiny_open_clip(tmp_path / "rn96", "resnet", image_size=96)), tokenizer=str(TOKENIZER))
    assert clip.image_size == 96
    crops, _ = RegionClassifier(clip, text_cache=False).crops(torch.zeros(3, 50, 70), torch.ones(1, 50, 70))
    assert crops.shape == (1, 3, 96, 96)


def test_bare_state_file_is_the_same_model_as_its_folder(folders, tmp_path):
    state = _state(folders["resnet"])
    save_file(state, str(tmp_path / "rn.safetensors"))
    torch.save(state, tmp_path / "rn.pt")
    reference = load_clip(str(folders["resnet"]), tokenizer=str(TOKENIZER))
    for name in ("rn.safetensors", "rn.pt"):
        clip = load_clip(str(tmp_path / name), tokenizer=str(TOKENIZER))
        assert clip.weights_fingerprint() == reference.weights_fingerprint()
        assert clip.text_fingerprint() == reference.text_fingerprint()


def test_learned_prompts_work_with_clip_text_towers_and_are_refused_elsewhere(folders):
    resnet = load_clip(str(folders["resnet"]), tokenizer=str(TOKENIZER))
    names = ["cat", "potted plant"]
    # With no context vectors, "[SOS] NAME . [EOS]" is the plain text "NAME.": the same tower and pooling.
    plain = resnet.encode_text([f"{n}." for n in names])
    assert torch.allclose(resnet.encode_with_context(torch.zeros(0, resnet.token_width), names), plain, atol=1e-6)
    context = torch.randn(4, resnet.token_width, generator=torch.Generator().manual_seed(0), requires_grad=True)
    resnet.encode_with_context(context, names).sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0  # CoOp can learn through it
    siglip = load_clip(str(folders["siglip"]))
    from zsseg.models.base import LearnedPromptTower, learned_prompt_tower

    assert isinstance(resnet, LearnedPromptTower) and not isinstance(siglip, LearnedPromptTower)
    with pytest.raises(ZssegError, match=r"^learned prompts need CLIP's text tower; this siglip model .* takes template prompts "
                                         r"only \(prompt imagenet, vild, or a template\)$"):
        learned_prompt_tower(siglip)
    with pytest.raises(ZssegError, match="learned prompts need CLIP's text tower"):
        from zsseg.training.prompt_learning import PromptLearner

        PromptLearner(siglip, 4, 0.02, 0)


def test_text_cache_keys_on_the_loaded_weights(folders, tmp_path, monkeypatch):
    """Two ResNet CLIPs of one architecture but other text weights never share cached text features."""
    monkeypatch.setenv("ZSSEG_CACHE_DIR", str(tmp_path / "cache"))
    first = load_clip(str(folders["resnet"]), tokenizer=str(TOKENIZER))
    second = load_clip(str(folders["resnet-other"]), tokenizer=str(TOKENIZER))
    assert first.text_fingerprint() != second.text_fingerprint()
    vocabulary = Vocabulary.parse("cat; sofa, couch; wall")
    a = PromptEncoder(first, "imagenet").encode_vocabulary(vocabulary).features
    b = PromptEncoder(second, "imagenet").encode_vocabulary(vocabulary).features
    assert not torch.allclose(a, b, atol=1e-3)
    assert torch.allclose(b, PromptEncoder(second, "imagenet", cache=False).encode_vocabulary(vocabulary).features, atol=1e-6)


class _NotATensor:
    pass


def test_checkpoints_holding_anything_but_tensors_are_refused(folders, tmp_path):
    state = _state(folders["vit"])
    torch.save({**state, "evil": _NotATensor()}, tmp_path / "object.pt")
    with pytest.raises(ZssegError, match=r"object\.pt holds objects other than tensors \(.*_NotATensor\), which zsseg does not unpickle"):
        load_clip(str(tmp_path / "object.pt"), tokenizer=str(TOKENIZER))
    torch.save({**state, "epoch": 3}, tmp_path / "number.pt")
    with pytest.raises(ZssegError, match=r"number\.pt: 'epoch' is a int, not a tensor"):
        load_clip(str(tmp_path / "number.pt"), tokenizer=str(TOKENIZER))
    # A file that unpickles arbitrary code when loaded the trusting way is never executed.
    (tmp_path / "payload.bin").write_bytes(pickle.dumps(_NotATensor()))
    with pytest.raises(ZssegError, match="payload.bin"):
        load_clip(str(tmp_path / "payload.bin"), tokenizer=str(TOKENIZER))


def test_torchscript_archives_are_refused_with_the_conversion(tmp_path):
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "ViT-B-16.pt"))
    with pytest.raises(ZssegError) as error:
        load_clip(str(tmp_path / "ViT-B-16.pt"))
    message = str(error.value)
    assert "\n" not in message and "is a TorchScript archive" in message and "torch.jit.load(" in message
    assert "save_file(" in message and "clip.safetensors" in message


def test_open_clip_folders_that_are_not_openai_layout_are_refused(folders, tmp_path):
    folder = tmp_path / "timm"
    save_tiny_open_clip(folder, "vit")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"] = {"timm_model_name": "vit_base_patch16_siglip_224"}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ZssegError, match=r"an open_clip model with a timm or Hugging Face tower \('vit_base_patch16_siglip_224'\)"):
        load_clip(str(folder))
    (folder / "open_clip_model.safetensors").unlink()
    config["model_cfg"]["vision_cfg"] = {"layers": 2}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ZssegError, match=r"has open_clip_config\.json but no weights"):
        load_clip(str(folder))


def test_siglip_text_and_scores(folders):
    clip = load_clip(str(folders["siglip"]))
    assert isinstance(clip, SiglipClip) and clip.image_mean == (0.5, 0.5, 0.5) and clip.context_length == 64
    assert clip.temperature == pytest.approx(math.exp(4.7), rel=1e-6) and clip.logit_bias == pytest.approx(-12.7)
    # As SigLIP was trained: lower-cased, padded with "</s>" to the whole context, no mask, last position pooled.
    assert torch.equal(clip.encode_text(["A Photo of a CAT."]), clip.encode_text(["a photo of a cat."]))
    ids = clip.tokenizer(["a photo of a cat."], padding="max_length", max_length=64)["input_ids"]
    with torch.no_grad():
        hidden = clip.model.text_model(input_ids=torch.tensor(ids)).last_hidden_state
        expected = F.normalize(clip.model.text_model.head(hidden[:, -1]), dim=-1)
    assert torch.allclose(clip.encode_text(["a photo of a cat."]), expected, atol=1e-6)
    # Eq. 1's softmax at SigLIP's own scale: the bias cancels; the sigmoids stay available.
    cos = torch.tensor([[0.1, 0.12, 0.05]])
    assert torch.allclose(clip.sigmoid_probabilities(cos), torch.sigmoid(math.exp(4.7) * cos - 12.7), atol=1e-6)
    assert RegionClassifier(clip, text_cache=False).temperature == clip.temperature
    with pytest.raises(ZssegError, match=r"^this siglip model .* has no dense features \(SigLIP pools with an attention head.*; use method two-stage$"):
        Segmenter(clip=clip, method="dense-clip")


def test_siglip_sentencepiece_tokenizer_without_the_package_is_one_line(folders, monkeypatch):
    """SigLIP (v1) ships a SentencePiece tokenizer; without the package transformers raises
    ImportError, which becomes the install hint."""
    import transformers

    def missing(*args, **kwargs):
        raise ImportError("\nSiglipTokenizer requires the SentencePiece library but it was not found in your environment.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", missing)
    with pytest.raises(ZssegError, match=r'^the tokenizer of .* needs sentencepiece, which is not installed: pip install "zsseg\[siglip\]"$'):
        load_clip(str(folders["siglip"]))


@pytest.mark.parametrize("family, extra", [
    ("resnet", ["--tokenizer", str(TOKENIZER)]),
    ("vit", ["--tokenizer", str(TOKENIZER), "--method", "dense-clip"]),
    ("siglip", []),
])
def test_zsseg_eval_runs_with_every_family(folders, tmp_path, family, extra):
    """`zsseg eval --clip DIR` on the shared ADE20K samples, end to end (random weights: the score
    is meaningless, but it is a real mIoU of real predictions, with the model recorded)."""
    out = tmp_path / "scores.json"
    proposals = [] if "dense-clip" in extra else ["--max-proposals", "6"]
    result = run(["eval", "--dataset", "ade20k-150", "--data-root", str(DATA), "--limit", "2", "--clip", str(folders[family]),
                  "--max-size", "160", "--output", str(out), "--quiet", *proposals, *extra])
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    config = report["config"]
    assert report["num_images"] == 2 and 0 <= report["mIoU"] <= 100 and config["clip"]["source"] == str(folders[family])
    assert config["models"]["clip"]["source"] == str(folders[family])
    assert config["method"] == ("dense-clip" if "dense-clip" in extra else "two-stage")


def test_int8_quantises_the_image_tower_and_auto_follows_the_hardware(folders, monkeypatch):
    """--dtype int8: the image tower's linear layers become dynamically quantised int8 (text stays
    float32, so the text cache and fingerprint are fp32's); auto is bf16 only where the CPU has
    AMX, for every method."""
    from zsseg.models import precision as clip_module

    fp32 = load_clip(str(folders["vit"]), tokenizer=str(TOKENIZER))
    int8 = load_clip(str(folders["vit"]), tokenizer=str(TOKENIZER), dtype="int8")
    assert fp32.precision == "fp32" and int8.precision == "int8" and int8.text_fingerprint() == fp32.text_fingerprint()
    assert any(isinstance(m, Int8Linear) for m in int8.model.vision_model.modules())
    assert not any(type(m) is torch.nn.Linear for m in int8.model.vision_model.modules())  # the projection stays float
    assert not any(isinstance(m, Int8Linear) for m in int8.model.text_model.modules())
    pixels = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    a, b = fp32.encode_images(pixels), int8.encode_images(pixels)
    assert not torch.equal(a, b) and (a * b).sum(dim=-1).min() > 0.99  # close, and really another computation
    assert int8.dense_features(pixels[:1]).shape == fp32.dense_features(pixels[:1]).shape
    assert Segmenter(clip=int8).record()["models"]["clip"]["precision"] == "int8"
    monkeypatch.setattr(clip_module, "amx_bf16", lambda: True)
    assert clip_module.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(clip_module, "amx_bf16", lambda: False)
    assert clip_module.resolve_precision("auto", "cpu") == clip_module.AUTO_FALLBACK
    assert load_clip(str(folders["vit"]), tokenizer=str(TOKENIZER), dtype="auto").precision == clip_module.AUTO_FALLBACK
    common = dict(clip=str(folders["vit"]), tokenizer=str(TOKENIZER), dtype="auto", text_cache=False)
    assert Segmenter(**common, method="fast").clip.precision == Segmenter(**common, method="two-stage").clip.precision == "int8"
    assert Segmenter(**common, method="fast").record()["models"]["clip"]["precision"] == "int8"
    monkeypatch.setattr(clip_module, "amx_bf16", lambda: True)
    assert Segmenter(**common, method="fast").clip.precision == "bf16"
    with pytest.raises(ZssegError, match="unknown dtype 'int4'"):
        load_clip(str(folders["vit"]), dtype="int4")


def test_folding_quick_gelu_keeps_the_function_and_int8_uses_it(folders):
    """The int8 tower's MLPs compute fc2(quick_gelu(fc1(x))) as (fc2 / 1.702)(silu((1.702 fc1)(x))):
    the same function up to float32 rounding, one activation pass instead of three."""
    from zsseg.models.base import fold_quick_gelu
    from zsseg.models.clip_vit import QuickGELU

    fp32 = load_clip(str(folders["vit"]), tokenizer=str(TOKENIZER))
    folded = load_clip(str(folders["vit"]), tokenizer=str(TOKENIZER))
    layers = len(folded.model.vision_model.encoder.layers)
    assert fold_quick_gelu(folded.image_tower()) == layers and fold_quick_gelu(folded.image_tower()) == 0  # once only
    assert all(isinstance(layer.mlp.activation_fn, QuickGELU) for layer in folded.model.text_model.encoder.layers)
    pixels = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    a, b = fp32.encode_images(pixels), folded.encode_images(pixels)
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=1e-5)
    int8 = load_clip(str(folders["vit"]), tokenizer=str(TOKENIZER), dtype="int8")
    assert all(isinstance(layer.mlp.activation_fn, torch.nn.SiLU) for layer in int8.model.vision_model.encoder.layers)
