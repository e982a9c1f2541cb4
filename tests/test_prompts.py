"""Prompts as values, template selection, prompt learning (CoOp) and the text-feature cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from PIL import Image

from conftest import DATA, TOKENIZER, run, run_here, save_tiny_clip, subset
from zsseg import Segmenter, load_clip
from zsseg.data.datasets import SegmentationDataset
from zsseg.errors import ZssegError
from zsseg.training.recipes import load_recipe
from zsseg.training.proposals import train_proposals
from zsseg.networks.maskformer.weights import load_proposals
from zsseg.training.prompt_learning import PromptTask, augmented_crop, mask_box, sample_segments, train_prompts, warmup_cosine
from zsseg.prompts.selection import select_template
from zsseg.prompts.encoding import (
    IMAGENET_TEMPLATES,
    LearnedPrompt,
    PromptEncoder,
    TemplatePrompt,
    load_prompt,
    save_learned_prompt,
    save_template_prompt,
)
from zsseg.prompts.text_cache import TextFeatureCache

CPU = load_recipe("prompts", "cpu")


def small(**overrides):
    return CPU.with_train(**{"batch_size": 4, "samples_per_class": 2, "log_every": 1, "checkpoint_every": 2, **overrides})


@pytest.fixture(scope="module")
def learned(clip, tmp_path_factory) -> Path:
    """A prompt learned for a few steps on real COCO-Stuff train images (zero-shot)."""
    out = tmp_path_factory.mktemp("learned")
    train_prompts(subset("coco-stuff", "train", 6), small(max_iters=3), clip, out, "zero-shot", progress=False)
    return out


# --- a prompt is a value --------------------------------------------------------------------

def test_every_kind_of_prompt_loads_from_one_value(learned, tmp_path):
    assert load_prompt("imagenet").templates == IMAGENET_TEMPLATES
    assert load_prompt("a sculpture of a {}.").templates == ("a sculpture of a {}.",)
    assert load_prompt(["a {}.", "the {}."]).templates == ("a {}.", "the {}.")
    for value in (learned, learned / "prompt.json", learned / "prompt.safetensors", str(learned)):
        prompt = load_prompt(value)
        assert isinstance(prompt, LearnedPrompt) and prompt.context.shape[0] == CPU.train.context_length
    info = json.loads((learned / "prompt.json").read_text())
    assert info["info"]["clip"] and info["info"]["class_names"] and info["info"]["train"]["lr"] == 0.02
    save_template_prompt(tmp_path / "best.json", TemplatePrompt(("itap of a {}.",), "x"), {"note": 1})
    assert load_prompt(tmp_path / "best.json").templates == ("itap of a {}.",)


@pytest.mark.parametrize("value, message", [
    ("imagenett", "neither a template set"),
    ("a {} and a {}", "exactly once"),
    ("missing/prompt.json", "neither a template set"),
    ("", "the prompt is empty"),
    ("  ", "the prompt is empty"),
])
def test_bad_prompts_are_one_line_errors(value, message):
    with pytest.raises(ZssegError, match=message):
        load_prompt(value)


def test_bad_prompt_files(tmp_path):
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ZssegError, match="not a zsseg prompt file"):
        load_prompt(tmp_path / "other.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZssegError, match="has no prompt.json"):
        load_prompt(tmp_path / "empty")
    (tmp_path / "escape.json").write_text(json.dumps({"format": "zsseg-prompt/1", "kind": "learned", "tensors": "../x.safetensors"}))
    with pytest.raises(ZssegError, match="must name a file beside it"):
        load_prompt(tmp_path / "escape.json")


def test_zero_length_learned_prompt_is_the_plain_class_name(clip):
    names = ["cat", "potted plant", "sky-other-merged", "t-shirt"]
    empty = LearnedPrompt(torch.zeros(0, 64), clip.token_probe())
    plain = clip.encode_text([f"{name}." for name in names])
    assert torch.allclose(empty.encode(clip, names), plain, atol=1e-6)
    assert torch.allclose(PromptEncoder(clip, empty, cache=False).encode_names(names), plain, atol=1e-6)


def test_learned_vectors_before_and_after_the_name_stand_in_for_tokens(clip):
    """A learned prompt puts its vectors where tokens would be: "[SOS] c_1..c_n NAME s_1..s_m .
    [EOS]" (the reference's PROMPT_SHAPE (n, m)). With each vector a real token's embedding and
    the stored start, dot, end and padding vectors CLIP's own, it is that sentence's embedding."""
    table = clip.model.text_model.embeddings.token_embedding.weight.detach()
    tokenizer = clip.tokenizer

    def rows(text: str) -> torch.Tensor:
        return table[tokenizer(text, add_special_tokens=False)["input_ids"]]

    signals = torch.cat([table[[tokenizer.bos_token_id]], rows("."), table[[tokenizer.eos_token_id]], table[[tokenizer.pad_token_id]]])
    prompt = LearnedPrompt(rows("a photo of"), clip.token_probe(), signals=signals, suffix=rows("in the snow"))
    names = ["cat", "potted plant"]
    expected = clip.encode_text([f"a photo of {name} in the snow." for name in names])
    assert torch.allclose(prompt.encode(clip, names), expected, atol=1e-5)
    assert prompt.describe()["suffix_length"] == 3 and prompt.identity != LearnedPrompt(rows("a photo of"), clip.token_probe(),
                                                                                        signals=signals).identity
    with pytest.raises(ZssegError, match="with 6 learned prompt vectors it is 79 tokens"):
        prompt.encode(clip, ["word " * 70])


def test_learned_context_changes_the_embedding_and_carries_gradients(clip):
    context = torch.nn.Parameter(torch.randn(4, 64) * 0.02)
    features = clip.encode_with_context(context, ["cat", "dog"])
    features.sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0
    assert not torch.allclose(features.detach(), clip.encode_text(["cat.", "dog."]), atol=1e-4)


def test_a_prompt_from_another_clip_is_refused(learned, clip_dir, tmp_path, capsys):
    other = load_clip(str(save_tiny_clip(tmp_path / "other", seed=1)))
    with pytest.raises(ZssegError, match="token embeddings differ"):
        PromptEncoder(other, learned)
    proc = run_here(capsys, ["segment", str(DATA / "coco" / "val2017" / "000000010092.jpg"), "--classes", "cat; car",
                             "--clip", str(tmp_path / "other"), "--prompt", str(learned), "--out", str(tmp_path / "out")])
    assert proc.returncode == 2 and "token embeddings differ" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert PromptEncoder(load_clip(str(clip_dir), dtype="bf16"), learned).prompt.context is not None  # same CLIP, lower precision


# --- template selection -----------------------------------------------------------------------

def test_selection_never_reads_val_images_or_unseen_classes(clip, monkeypatch):
    train = subset("coco-stuff", "train", 8)
    unseen = {name for i in train.unseen for name in train.vocabulary.classes[i]}
    read, encoded = [], []
    real_image, real_label = SegmentationDataset.load_image, SegmentationDataset.load_label
    monkeypatch.setattr(SegmentationDataset, "load_image", lambda self, i: read.append((self.split, self.samples[i].image)) or real_image(self, i))
    monkeypatch.setattr(SegmentationDataset, "load_label", lambda self, i: read.append((self.split, self.samples[i].label)) or real_label(self, i))
    real_encode = PromptEncoder.encode_names
    monkeypatch.setattr(PromptEncoder, "encode_names", lambda self, names: encoded.extend(names) or real_encode(self, names))

    selection = select_template(train, clip, "zero-shot", ["a photo of a {}.", "a sculpture of a {}.", "itap of a {}."], progress=False)
    assert read and all(split == "train" and "train2017" in str(path) for split, path in read)
    assert encoded and not unseen & set(encoded)
    assert [s.template for s in selection.ranking] and len(selection.ranking) == 3
    scores = [(s.mean_class_accuracy, s.accuracy) for s in selection.ranking]
    assert scores == sorted(scores, reverse=True) and selection.segments > 0
    with pytest.raises(ZssegError, match="never on 'val'"):
        select_template(subset("coco-stuff", "val", 2), clip, "zero-shot", "single", progress=False)


def test_selection_scores_are_the_accuracy_of_eq1_on_segments(clip):
    """The table is Eq. 1 on the segments: recomputed by hand for one template."""
    from zsseg.prompts.selection import segment_features

    train = subset("coco-stuff", "train", 4)
    selection = select_template(train, clip, "cross-dataset", ["a photo of a {}."], progress=False)
    features, targets = segment_features(train, clip, list(range(train.num_classes)), progress=False)
    text = PromptEncoder(clip, "a photo of a {}.").encode_vocabulary(train.vocabulary)
    right = (text.class_logits(features, 100.0).argmax(1) == targets).float()
    assert selection.ranking[0].accuracy == pytest.approx(100 * float(right.mean()), abs=1e-3)
    per_class = [float(right[targets == c].mean()) for c in targets.unique()]
    assert selection.ranking[0].mean_class_accuracy == pytest.approx(100 * sum(per_class) / len(per_class), abs=1e-3)


def test_select_cli_writes_a_prompt_the_other_commands_take(clip_dir, tmp_path, capsys):
    out = tmp_path / "best.json"
    proc = run(["prompts", "select", "--dataset", "coco-stuff", "--data-root", str(DATA), "--protocol", "zero-shot",
                "--templates", "vild", "--limit", "4", "--clip", str(clip_dir), "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 14 + 2 and "seen classes only" in proc.stdout
    data = json.loads(out.read_text())
    assert data["selected_on"]["split"] == "train" and len(data["ranking"]) == 14
    assert data["templates"] == [data["ranking"][0]["template"]]
    seg = run(["segment", str(DATA / "coco" / "val2017" / "000000010092.jpg"), "--classes", "cat; car", "--clip", str(clip_dir),
               "--prompt", str(out), "--max-proposals", "4", "--max-size", "128", "--out", str(tmp_path / "seg")])
    assert seg.returncode == 0, seg.stderr
    again = run_here(capsys, ["prompts", "select", "--dataset", "coco-stuff", "--data-root", str(DATA), "--limit", "2",
                              "--clip", str(clip_dir), "--output", str(DATA / "coco" / "x.json")])
    assert again.returncode == 2 and "inside the coco-stuff dataset" in again.stderr


# --- prompt learning --------------------------------------------------------------------------

def test_learning_changes_the_context_and_leaves_clip_bit_identical(clip_dir, tmp_path):
    clip = load_clip(str(clip_dir))
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    initial = PromptTask(subset("coco-stuff", "train", 6), small(), clip, "zero-shot", torch.device("cpu"), False).module.context.detach().clone()
    train_prompts(subset("coco-stuff", "train", 6), small(max_iters=4, lr=0.5), clip, tmp_path, "zero-shot", progress=False)
    learned = load_prompt(tmp_path)
    assert learned.context.shape == initial.shape and not torch.allclose(learned.context, initial)
    assert initial.std() == pytest.approx(0.02, rel=0.1)  # N(0, 0.02)
    after = clip.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4] and all(e["software"].startswith("zsseg") for e in log)


def test_learning_lowers_the_loss_on_real_crops(clip, tmp_path):
    config = small(max_iters=30, batch_size=8, samples_per_class=0, lr=2.0, warmup_iters=0, flip=False, min_crop_area=1.0,
                   grad_clip=0.0, checkpoint_every=100)
    train_prompts(subset("camvid", "train", 4), config, clip, tmp_path, "cross-dataset", progress=False)
    losses = [json.loads(line)["ce"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_interrupted_learning_resumes_exactly(clip, tmp_path, monkeypatch):
    dataset = subset("coco-stuff", "train", 6)
    train_prompts(dataset, small(max_iters=5), clip, tmp_path / "whole", "zero-shot", progress=False)

    real_loss = PromptTask.loss
    steps = []

    def dies_at_step_four(self, module, batch, context):
        steps.append(len(steps))
        if len(steps) == 4:  # step index 3, after the step-2 checkpoint and one more step
            raise KeyboardInterrupt
        return real_loss(self, module, batch, context)

    monkeypatch.setattr(PromptTask, "loss", dies_at_step_four)
    with pytest.raises(KeyboardInterrupt):
        train_prompts(dataset, small(max_iters=5), clip, tmp_path / "cut", "zero-shot", progress=False)
    monkeypatch.setattr(PromptTask, "loss", real_loss)
    assert not (tmp_path / "cut" / "prompt.json").exists()
    result = train_prompts(dataset, small(max_iters=5), clip, tmp_path / "cut", "zero-shot", progress=False)
    assert result.resumed_from == 2
    assert torch.equal(load_prompt(tmp_path / "whole").context, load_prompt(tmp_path / "cut").context)
    steps = lambda d: [json.loads(line)["step"] for line in (d / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps(tmp_path / "cut") == steps(tmp_path / "whole") == [1, 2, 3, 4, 5]
    with pytest.raises(ZssegError, match="different run"):
        train_prompts(dataset, small(max_iters=6, context_length=4), clip, tmp_path / "cut", "zero-shot", progress=False)


def test_samples_and_schedule_follow_the_reference():
    found = [(0, [1, 2]), (1, [1]), (2, [1, 3]), (3, [1])]
    assert sample_segments(found, 0, 0) == [(0, 1), (1, 1), (2, 1), (3, 1), (0, 2), (2, 3)]
    capped = sample_segments(found, 2, 0)
    assert [c for _, c in capped] == [1, 1, 2, 3] and capped == sample_segments(found, 2, 0)
    config = load_recipe("prompts", "paper").train
    assert (config.context_length, config.init_std, config.lr, config.weight_decay, config.batch_size) == (16, 0.02, 0.02, 5e-4, 32)
    assert warmup_cosine(0, config) == pytest.approx(0.005) and warmup_cosine(100, config) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 100 / 16000)).item()))
    assert warmup_cosine(config.max_iters, config) == pytest.approx(0.0)
    assert config.temperature == 100.0
    for bad in ({"temperature": 0}, {"temperature": float("nan")}, {"context_length": 0}, {"min_crop_area": 0}, {"samples_per_class": -1}):
        with pytest.raises(ZssegError):
            replace(config, **bad)


def test_the_box_is_cropped_unmasked_with_the_references_edge_clipping():
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:50] = True
    assert mask_box(mask) == (20, 10, 30, 20)
    mask[:, 59] = True  # touches the right edge: expand_box clips the end to W - 1
    assert mask_box(mask) == (20, 0, 39, 39)


def test_augmented_crop_is_the_references():
    """The whole box (min area 1, square box), resized to 244 x 224 with Pillow's bilinear
    filter, normalised, and the pixels outside the class set to CLIP's mean in normalised
    units (not to the mean colour, which would be 0 there)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    label = np.full((60, 80), 7, np.int32)
    label[10:40, 20:50] = 3
    label[10:20, 20:30] = 5  # inside the box, not the class: kept in the crop, then masked
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    crop = augmented_crop(image, label, 3, (244, 224), mean, std, torch.Generator().manual_seed(0), 1.0, False)
    assert crop.shape == (3, 244, 224)
    box = Image.fromarray(image[10:40, 20:50]).resize((224, 244), Image.Resampling.BILINEAR)
    normalised = (torch.from_numpy(np.array(box)).permute(2, 0, 1) / 255.0 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    resized = torch.nn.functional.interpolate(torch.from_numpy(label[10:40, 20:50]).double()[None, None], size=(244, 224), mode="nearest")[0, 0]
    inside = resized == 3
    assert inside.float().mean() == pytest.approx(8 / 9, abs=0.01)
    assert torch.allclose(crop[:, inside], normalised[:, inside], atol=1e-6)
    assert torch.allclose(crop[:, ~inside], torch.tensor(mean)[:, None].expand(3, int((~inside).sum())))
    # A random crop that misses the class gives None: the stream draws another sample.
    corner = np.full((60, 80), 7, np.int32)
    corner[0, 0], corner[30, 40], corner[58, 78] = 3, 3, 3
    misses = [augmented_crop(image, corner, 3, (244, 224), mean, std, torch.Generator().manual_seed(s), 0.08, True) for s in range(20)]
    assert any(m is None for m in misses) and any(m is not None for m in misses)


def test_clip_sees_a_244_by_224_crop_with_bicubic_position_embeddings(tmp_path):
    """ViT-B/16's 244 x 224 crop is 15 x 14 patches: its 14 x 14 position embeddings are resized
    bicubically (align_corners False), as the reference's CLIP does for every input."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast

    from zsseg.models.loading import wrap_clip

    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                           image_size=224, patch_size=16), projection_dim=16)
    tokenizer = CLIPTokenizerFast(str(TOKENIZER / "vocab.json"), str(TOKENIZER / "merges.txt"))
    clip = wrap_clip(CLIPModel(config).eval(), tokenizer, "test")
    pixels = torch.randn(2, 3, 244, 224)
    vision = clip.model.vision_model
    with torch.no_grad():
        patches = vision.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [2, 15 x 14, 32]
        table = vision.embeddings.position_embedding.weight
        grid = torch.nn.functional.interpolate(table[1:].T.reshape(1, 32, 14, 14), size=(15, 14), mode="bicubic", align_corners=False)
        positions = torch.cat([table[:1], grid.reshape(32, -1).T])
        tokens = torch.cat([vision.embeddings.class_embedding.expand(2, 1, 32), patches], dim=1) + positions
        hidden = vision.encoder(inputs_embeds=vision.pre_layrnorm(tokens)).last_hidden_state
        expected = torch.nn.functional.normalize(clip.model.visual_projection(vision.post_layernorm(hidden[:, 0])), dim=-1)
    assert torch.allclose(clip.encode_images(pixels), expected, atol=1e-5)


def test_two_process_torchrun_learning_matches_one_process(clip_dir, tmp_path):
    args = ["train", "prompts", "--dataset", "coco-stuff", "--data-root", str(DATA), "--protocol", "zero-shot", "--config", "cpu",
            "--clip", str(clip_dir), "--max-iters", "2", "--batch-size", "4", "--samples-per-class", "2", "--checkpoint-every", "1"]
    one = run([*args, "--output-dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = run(["--standalone", "--nproc_per_node", "2", "-m", "zsseg", *args, "--output-dir", str(tmp_path / "two")],
              module=("-m", "torch.distributed.run"))
    assert two.returncode == 0, two.stderr
    state = torch.load(tmp_path / "two" / "checkpoint-0000002.pt", weights_only=True)
    assert len(state["rng"]) == 2 and set(state["model"]) == {"context"}  # the vectors only, not CLIP
    assert torch.allclose(load_prompt(tmp_path / "one").context, load_prompt(tmp_path / "two").context, atol=1e-6)


# --- prompts first, then proposals --------------------------------------------------------------

def test_proposals_trained_with_a_learned_prompt_keep_it(learned, clip, tmp_path):
    tiny = load_recipe("proposals", "tiny")
    config = replace(tiny, train=replace(tiny.train, prompt=str(learned), crop_size=128, batch_size=2, max_iters=2))
    train_proposals(subset("coco-stuff", "train", 2), config, clip, tmp_path, "zero-shot", progress=False)
    learned_copy = load_prompt(learned)
    stored = load_proposals(tmp_path).training_prompt
    assert isinstance(stored, LearnedPrompt) and torch.equal(stored.context, learned_copy.context)
    from zsseg.proposals import MaskFormerProposals

    segmenter = Segmenter(clip=clip, proposals=MaskFormerProposals(tmp_path, max_proposals=5), max_size=128)
    assert segmenter.classifier.prompts.prompt.identity == learned_copy.identity  # default: the network's own prompt
    assert segmenter.network_prompts is segmenter.classifier.prompts
    other = Segmenter(clip=clip, proposals=MaskFormerProposals(tmp_path, max_proposals=5), prompt="single", max_size=128)
    assert other.network_prompts.prompt.identity == learned_copy.identity  # the network keeps the prompt it learned with


# --- the text-feature cache ---------------------------------------------------------------------

def test_cache_returns_exactly_what_it_stored_and_a_changed_model_misses(clip_dir, tmp_path, monkeypatch):
    cache = TextFeatureCache(tmp_path / "cache")
    names = ["cat", "dog", "potted plant"]
    first = PromptEncoder(load_clip(str(clip_dir)), "vild", cache=cache).encode_names(names)

    calls = []
    real = TemplatePrompt.encode
    monkeypatch.setattr(TemplatePrompt, "encode", lambda self, clip, n: calls.append(list(n)) or real(self, clip, n))
    again = PromptEncoder(load_clip(str(clip_dir)), "vild", cache=cache).encode_names(names + ["sofa"])
    assert calls == [["sofa"]] and torch.equal(again[:3], first)  # bit-identical, and only the new name encoded

    changed = load_clip(str(clip_dir))
    with torch.no_grad():
        changed.model.text_model.final_layer_norm.weight.mul_(1.5)
    changed._text_fingerprint = None
    calls.clear()
    PromptEncoder(changed, "vild", cache=cache).encode_names(names)
    assert calls == [names]
    calls.clear()
    PromptEncoder(load_clip(str(clip_dir)), "single", cache=cache).encode_names(names)  # another prompt: another key
    assert calls == [names]
    direct = TextFeatureCache(tmp_path / "cache")
    vector = torch.randn(32)
    direct.put("m", "p", {"x": vector})
    assert torch.equal(direct.get("m", "p", ["x", "y"])["x"], vector) and direct.get("m", "q", ["x"]) == {}


def _swapped_tokenizer(folder: Path) -> Path:
    """CLIP's BPE files with the ids of "cat" and "dog" swapped: a tokenizer that passes every check
    and gives other token ids."""
    folder.mkdir()
    vocabulary = json.loads((TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    vocabulary["cat</w>"], vocabulary["dog</w>"] = vocabulary["dog</w>"], vocabulary["cat</w>"]
    (folder / "vocab.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    shutil.copy(TOKENIZER / "merges.txt", folder / "merges.txt")
    return folder


def test_the_cache_key_covers_the_tokenizer_and_the_text_settings(tmp_path):
    """The same text weights with another tokenizer, or with another text configuration, give
    other features: each reads back exactly what it encodes, never another's."""
    folder = save_tiny_clip(tmp_path / "clip")
    gelu = tmp_path / "gelu"
    shutil.copytree(folder, gelu)
    config = json.loads((gelu / "config.json").read_text())
    config["text_config"]["hidden_act"] = "gelu"
    (gelu / "config.json").write_text(json.dumps(config))
    swapped = _swapped_tokenizer(tmp_path / "swapped")
    variants = {"as saved": lambda: load_clip(str(folder)),
                "tokens swapped": lambda: load_clip(str(folder), tokenizer=str(swapped)),
                "exact gelu": lambda: load_clip(str(gelu))}
    clips = {name: make() for name, make in variants.items()}
    assert len({clip.text_fingerprint() for clip in clips.values()}) == 1  # the same weights
    assert len({clip.text_cache_key() for clip in clips.values()}) == 3
    assert load_clip(str(folder)).text_cache_key() == clips["as saved"].text_cache_key()  # and stable

    cache = TextFeatureCache(tmp_path / "cache")
    names = ["cat", "dog"]
    fresh = {name: PromptEncoder(clip, "single", cache=False).encode_names(names) for name, clip in clips.items()}
    assert torch.equal(fresh["tokens swapped"], fresh["as saved"].flip(0))  # the test means something
    assert not torch.allclose(fresh["exact gelu"], fresh["as saved"], atol=1e-4)
    for name, clip in clips.items():  # in turn, through one cache
        assert torch.equal(PromptEncoder(clip, "single", cache=cache).encode_names(names), fresh[name]), name
    for name, make in variants.items():  # and again, from it, in new loads
        assert torch.equal(PromptEncoder(make(), "single", cache=cache).encode_names(names), fresh[name]), name


def test_tokenizer_identity_is_what_the_token_ids_depend_on(tmp_path):
    from transformers import CLIPTokenizerFast

    from zsseg.models.fingerprints import UnknownTokenizer, tokenizer_identity
    from zsseg.models.openai_clip import LazyTokenizer

    folder = tokenizer_identity(TOKENIZER)
    shutil.copytree(TOKENIZER, tmp_path / "copy")
    assert tokenizer_identity(str(TOKENIZER)) == tokenizer_identity(tmp_path / "copy") == folder  # contents, not place
    swapped = _swapped_tokenizer(tmp_path / "swapped")
    assert tokenizer_identity(swapped) != folder
    assert tokenizer_identity("openai/clip-vit-base-patch16") != tokenizer_identity("openai/clip-vit-large-patch14") != folder

    def loaded(where: Path):
        return CLIPTokenizerFast(str(where / "vocab.json"), str(where / "merges.txt"))

    assert tokenizer_identity(loaded(TOKENIZER)) == tokenizer_identity(loaded(tmp_path / "copy")) != tokenizer_identity(loaded(swapped))
    clip_text = load_clip(str(save_tiny_clip(tmp_path / "clip"))).model.config.text_config
    lazy = LazyTokenizer(str(swapped), clip_text, "the tokenizer")
    assert lazy.identity() == tokenizer_identity(swapped) and lazy._tokenizer is None  # not read for it
    with pytest.raises(UnknownTokenizer, match="cannot tell which tokenizer"):
        tokenizer_identity(object())


def test_a_tokenizer_that_cannot_be_identified_turns_the_disk_cache_off(tmp_path, caplog):
    """A custom tokenizer object (from Python) gives the same features with the text cache off
    and one warning: keyed without it, they could be another tokenizer's."""
    from zsseg.models.base import wrap_clip

    clip = load_clip(str(save_tiny_clip(tmp_path / "clip")))
    real = clip.tokenizer.loaded

    class Custom:  # wraps CLIP's tokenizer, with nothing to identify it by
        eos_token_id, pad_token_id = real.eos_token_id, real.pad_token_id

        def __call__(self, *args, **kwargs):
            return real(*args, **kwargs)

    custom = wrap_clip(clip.model, Custom(), "custom")
    cache = TextFeatureCache(tmp_path / "cache")
    expected = PromptEncoder(clip, "single", cache=False).encode_names(["cat", "dog"])
    encoder = PromptEncoder(custom, "single", cache=cache)
    assert torch.equal(encoder.encode_names(["cat", "dog"]), expected)
    assert encoder.disk is None and not cache.path.exists()
    assert [r.getMessage() for r in caplog.records] == [
        "zsseg: not using the text-feature cache: cannot tell which tokenizer a Custom is (no tokenizer files, vocabulary or "
        "identity()) (results are the same without it)"]


def test_cache_is_shared_safely_by_concurrent_processes(tmp_path):
    script = (
        "import sys, torch\n"
        "from zsseg.prompts.text_cache import TextFeatureCache\n"
        "cache = TextFeatureCache(sys.argv[1])\n"
        "for i in range(40):\n"
        "    cache.put('model', 'prompt', {f'{sys.argv[2]}-{i}-{j}': torch.full((8,), float(i)) for j in range(5)})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag], stderr=subprocess.PIPE, text=True) for tag in "abc"]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    names = [f"{tag}-{i}-{j}" for tag in "abc" for i in range(40) for j in range(5)]
    found = TextFeatureCache(tmp_path).get("model", "prompt", names)
    assert len(found) == 600 and all(float(found[n][0]) == float(n.split("-")[1]) for n in names)


def test_a_damaged_cache_is_set_aside_once_with_a_warning(clip, tmp_path, caplog):
    damaged = b"not a database at all" * 100
    (tmp_path / "text-features.sqlite3").write_bytes(damaged)
    encoder = PromptEncoder(clip, "single", cache=TextFeatureCache(tmp_path))
    assert encoder.encode_names(["cat"]).shape == (1, 32)
    assert "was damaged" in caplog.text and "text-features.sqlite3.damaged" in caplog.text
    assert (tmp_path / "text-features.sqlite3.damaged").read_bytes() == damaged
    caplog.clear()
    # The next run uses the new cache, with no warning.
    again = PromptEncoder(clip, "single", cache=TextFeatureCache(tmp_path)).encode_names(["cat"])
    assert torch.equal(again, encoder.encode_names(["cat"])) and caplog.text == ""


def test_no_text_cache_flag_writes_no_cache(clip_dir, tmp_path):
    env = {"ZSSEG_CACHE_DIR": str(tmp_path / "cache")}
    args = ["segment", str(DATA / "coco" / "val2017" / "000000010092.jpg"), "--classes", "cat; car", "--clip", str(clip_dir),
            "--prompt", "single", "--max-proposals", "3", "--max-size", "96"]
    assert run([*args, "--no-text-cache", "--out", str(tmp_path / "a")], env=env).returncode == 0
    assert not (tmp_path / "cache").exists()
    assert run([*args, "--out", str(tmp_path / "b")], env=env).returncode == 0
    assert (tmp_path / "cache" / "text-features.sqlite3").is_file()


def test_learned_prompt_files_are_written_together(clip, tmp_path):
    prompt = LearnedPrompt(torch.randn(3, 64), clip.token_probe(), {"clip": "x"})
    weights, config = save_learned_prompt(tmp_path, prompt)
    assert (weights.name, config.name) == ("prompt.safetensors", "prompt.json")
    assert torch.equal(load_prompt(tmp_path).context, prompt.context)


def test_prompt_commands_refuse_bad_input_in_one_line(clip_dir, learned, tmp_path, capsys):
    train = ["train", "prompts", "--dataset", "coco-stuff", "--data-root", str(DATA), "--clip", str(clip_dir), "--config", "cpu"]
    zero = run_here(capsys, [*train, "--context-length", "0", "--output-dir", str(tmp_path / "a")])
    assert zero.returncode == 2 and "--context-length: must be at least 1" in zero.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "prompt.json").write_text("my notes")
    foreign = run_here(capsys, [*train, "--max-iters", "1", "--output-dir", str(tmp_path / "mine")])
    assert foreign.returncode == 2 and "not written by zsseg" in foreign.stderr
    assert (tmp_path / "mine" / "prompt.json").read_text() == "my notes"
    bare = run_here(capsys, ["prompts"])
    assert bare.returncode == 2 and bare.stderr.count("\n") == 1 and "zsseg prompts select" in bare.stderr
    (tmp_path / "notes.json").write_text("{}")
    select = run_here(capsys, ["prompts", "select", "--dataset", "coco-stuff", "--data-root", str(DATA), "--clip", str(clip_dir),
                               "--limit", "1", "--output", str(tmp_path / "notes.json")])
    assert select.returncode == 2 and "not written by zsseg" in select.stderr and (tmp_path / "notes.json").read_text() == "{}"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "prompt.json").write_bytes((learned / "prompt.json").read_bytes())
    (broken / "prompt.safetensors").write_bytes(b"\x00" * 40)
    image = str(DATA / "coco" / "val2017" / "000000010092.jpg")
    for prompt, message in ((broken, "cannot read the learned prompt"), ("a {} {}", "exactly once"), ("photo of a cat", "neither")):
        proc = run_here(capsys, ["segment", image, "--classes", "cat; car", "--clip", str(clip_dir), "--prompt", str(prompt),
                                 "--out", str(tmp_path / "out")])
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "out").exists()
    proposals = run_here(capsys, ["train", "proposals", "--dataset", "coco-stuff", "--data-root", str(DATA), "--config", "tiny",
                                  "--clip", str(clip_dir), "--prompt", "nope", "--output-dir", str(tmp_path / "p")])
    assert proposals.returncode == 2 and "neither a template set" in proposals.stderr
