"""The learned proposal network: model, matching and losses, seen-only data, training that
learns, exact resumption after a kill, torchrun, saved weights, and the ensemble in the pipeline."""

import itertools
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import DATA, run, run_here, save_tiny_clip, subset
from zsseg import Segmenter, Vocabulary, ZssegError
from zsseg.data.images import bounded_size, read_image, resize_image
from zsseg.networks.maskformer.config import TrainConfig
from zsseg.training.recipes import load_recipe
from zsseg.networks.maskformer.criterion import Target, dice_loss, focal_loss, hungarian_match, set_loss
from zsseg.training.proposal_data import Augmentation, TrainingSamples, semantic_target
from zsseg.networks.maskformer.model import build_model
from zsseg.data.datasets import training_classes
from zsseg.training.proposals import build_optimizer, train_proposals
from zsseg.networks.maskformer.weights import load_proposals
from zsseg.prompts.encoding import VocabularyEmbedding
from zsseg.proposals import MaskFormerProposals

TINY = load_recipe("proposals", "tiny")


def small(config=TINY, **train):
    return replace(config, train=replace(config.train, **{"crop_size": 128, "batch_size": 2, "log_every": 1, **train}))


@pytest.fixture(scope="module")
def trained(clip, tmp_path_factory):
    """A tiny network trained for a few steps on real COCO-Stuff train images (zero-shot)."""
    out = tmp_path_factory.mktemp("trained")
    train_proposals(subset("coco-stuff", "train", 4), small(max_iters=4), clip, out, "zero-shot", progress=False)
    return out


# --- model -------------------------------------------------------------------------------


def test_model_outputs_one_mask_and_class_embedding_per_query():
    model = build_model(replace(TINY.model, num_queries=100, embed_dim=32), seed=0).eval()
    outputs = model(torch.rand(2, 3, 96, 128) * 255, all_layers=True)
    assert len(outputs) == TINY.model.decoder_layers
    for out in outputs:
        assert out.class_embeddings.shape == (2, 100, 32)
        assert out.mask_logits.shape == (2, 100, 24, 32)  # stride 4
    # Any size: the normalised image is padded to multiples of 32 with zeros (the mean colour).
    image = torch.rand(1, 3, 100, 120) * 255
    padded = torch.cat([torch.cat([image, model.pixel_mean.expand(1, 3, 28, 120)], dim=2), model.pixel_mean.expand(1, 3, 128, 8)], dim=3)
    first, second = model(image)[-1], model(padded)[-1]
    assert first.mask_logits.shape == (1, 100, 32, 32)
    assert torch.allclose(first.mask_logits, second.mask_logits, atol=1e-4)
    assert torch.allclose(first.class_embeddings, second.class_embeddings, atol=1e-5)


def test_class_logits_are_scaled_cosines_with_text_and_no_object_last():
    model = build_model(replace(TINY.model, embed_dim=8), seed=0)
    assert torch.allclose(model.class_logits(3 * torch.ones(1, 8), VocabularyEmbedding(torch.ones(1, 8) / 8**0.5, torch.zeros(1, 1).long(), 1))[0, 0],
                          torch.tensor(100.0)), "the query embedding is normalised: a cosine"
    emb = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    plain = model.class_logits(emb, VocabularyEmbedding(text, torch.arange(3)[None], 3))
    void = torch.nn.functional.normalize(model.void_embedding, dim=0)
    assert torch.allclose(plain, 100 * emb @ torch.cat([text, void[None]]).T, atol=1e-4)
    # Synonyms: a class scores its best synonym.
    synonyms = model.class_logits(emb, VocabularyEmbedding(torch.cat([text, -text[:1]]), torch.tensor([[0, 1, 2, 0]]), 3))
    assert torch.allclose(synonyms[:, 0], torch.maximum(100 * emb @ text[0], -100 * emb @ text[0]), atol=1e-4)


def test_clip_image_tower_backbone(clip):
    config = replace(load_recipe("proposals", "clip-backbone").model, hidden_dim=64, decoder_layers=1, heads=4, feedforward_dim=64,
                     conv_dim=32, mask_dim=32, embed_dim=clip.embed_dim, clip_vision=clip.model.config.vision_config.to_dict())
    model = build_model(config, seed=0).eval()
    out = model(torch.rand(1, 3, 128, 192) * 255)[-1]
    assert out.mask_logits.shape == (1, 100, 32, 48) and out.class_embeddings.shape == (1, 100, clip.embed_dim)


def test_optimizer_groups_follow_the_paper():
    model = build_model(replace(TINY.model, embed_dim=16), seed=0)
    config = TrainConfig(max_iters=10)
    optimizer, scheduler = build_optimizer(model, config)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(1e-5) and groups["head"]["lr"] == pytest.approx(1e-4)
    assert groups["head"]["weight_decay"] == 1e-4 and groups["head_no_decay"]["weight_decay"] == 0
    assert any(p is model.void_embedding for p in groups["head_no_decay"]["params"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert groups["head"]["lr"] == pytest.approx(1e-4 * 0.5**0.9)  # poly, power 0.9


# --- matching and losses -----------------------------------------------------------------


def test_hungarian_matching_finds_the_queries_that_predict_each_segment():
    torch.manual_seed(0)
    h = w = 16
    label = torch.zeros(h, w, dtype=torch.long)
    label[:, 8:] = 1
    label[4:8, 2:6] = 2
    target = semantic_target(label.numpy())
    logits = torch.full((5, h, w), -8.0)
    for query, cls in [(3, 0), (0, 1), (4, 2)]:
        logits[query][label == cls] = 8.0
    class_logits = torch.zeros(5, 4)
    rows, cols = hungarian_match(class_logits, logits, target, 1.0, 20.0, 1.0)
    assert dict(zip(rows.tolist(), target.classes[cols].tolist())) == {3: 0, 0: 1, 4: 2}


def test_matching_cost_is_minimal_against_brute_force():
    torch.manual_seed(1)
    label = torch.randint(0, 3, (12, 12))
    target = semantic_target(label.numpy())
    logits, class_logits = torch.randn(4, 12, 12) * 3, torch.randn(4, 4)
    rows, cols = hungarian_match(class_logits, logits, target, 1.0, 20.0, 1.0)

    def cost(q, n):
        masks = target.masks.flatten(1).float()
        p = logits[q].flatten().sigmoid()
        focal = focal_loss(logits[q].flatten()[None], masks[n][None], torch.ones(1, 144))
        dice = dice_loss(logits[q].flatten()[None], masks[n][None], torch.ones(1, 144))
        return float(-class_logits[q].softmax(-1)[target.classes[n]] + 20 * focal + dice) + 0 * float(p.sum())

    chosen = sum(cost(q, n) for q, n in zip(rows, cols))
    best = min(sum(cost(q, n) for q, n in zip(qs, range(3))) for qs in itertools.permutations(range(4), 3))
    assert chosen == pytest.approx(best, abs=1e-4)


def test_ignored_pixels_count_as_negatives_by_default_and_nowhere_when_labelled_only():
    torch.manual_seed(0)
    label = np.random.default_rng(0).integers(-1, 3, (2, 32, 32)).astype(np.int32)
    everything = [semantic_target(lab) for lab in label]
    assert all(t.valid.all() for t in everything), "the reference's: every pixel counts"
    class_logits, masks = torch.randn(2, 6, 4), torch.randn(2, 6, 8, 8)
    full = torch.nn.functional.interpolate(masks, size=(32, 32), mode="bilinear", align_corners=False)
    ignored = torch.from_numpy(label < 0)[:, None]
    before = set_loss(class_logits, full, everything, 3.0, 0.1, 1.0, 20.0, 1.0)
    after = set_loss(class_logits, full + 50 * ignored.float(), everything, 3.0, 0.1, 1.0, 20.0, 1.0)
    assert after["focal"] > before["focal"] and after["dice"] > before["dice"], "masks on ignored pixels are punished"
    targets = [semantic_target(lab, "labelled") for lab in label]
    class_logits, masks = torch.randn(2, 6, 4), torch.randn(2, 6, 8, 8)
    base = set_loss(class_logits, masks, targets, 3.0, 0.1, 1.0, 20.0, 1.0)
    # Perfect masks give (near) zero mask losses; changing predictions where the target is
    # ignored changes nothing.
    full = torch.nn.functional.interpolate(masks, size=(32, 32), mode="bilinear", align_corners=False)
    ignored = torch.from_numpy(label < 0)[:, None]
    changed = set_loss(class_logits, full + 50 * ignored.float(), targets, 3.0, 0.1, 1.0, 20.0, 1.0)
    unchanged = set_loss(class_logits, full, targets, 3.0, 0.1, 1.0, 20.0, 1.0)
    assert torch.allclose(torch.stack(list(changed.values())), torch.stack(list(unchanged.values())), atol=1e-5)
    assert base["ce"] > 0 and base["focal"] > 0 and base["dice"] > 0


def test_no_object_class_weighs_point_one():
    targets = [Target(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool))]
    logits = torch.zeros(1, 3, 3)  # uniform over 2 classes + no object
    losses = set_loss(logits, torch.zeros(1, 3, 1, 1), targets, 1.0, 0.1, 1.0, 20.0, 1.0)
    assert losses["ce"] == pytest.approx(np.log(3), rel=1e-5)  # weighted mean of equal terms
    assert losses["focal"] == 0 and losses["dice"] == 0


# --- data --------------------------------------------------------------------------------


def test_zero_shot_training_ignores_unseen_pixels_and_is_deterministic():
    dataset = subset("coco-stuff", "train", 100)
    classes = training_classes(dataset, "zero-shot")
    assert len(classes) == 156 and not set(classes) & set(dataset.unseen)
    assert len(training_classes(dataset, "cross-dataset")) == 171
    samples = TrainingSamples(dataset, classes, Augmentation(128), seed=3)
    # Find a sample whose image has unseen pixels: they must be ignored, never a target.
    for position in range(100):
        index = samples.image_index(position)
        raw = dataset.load_label(index)
        if np.isin(raw, dataset.unseen).any():
            break
    image, target = samples[position]
    assert image.shape == (3, 128, 128) and target.masks.shape[1:] == (128, 128)
    assert int(target.classes.max()) < 156
    assert not (target.masks & ~target.valid).any()
    again_image, again = samples[position]
    assert torch.equal(image, again_image) and torch.equal(target.masks, again.masks)
    # Epochs are permutations of the whole set.
    assert sorted(samples.image_index(p) for p in range(100, 200)) == list(range(100))


def test_augmentation_pads_with_128_and_ignore():
    aug = Augmentation(64, min_sizes=(16,), max_size=64, color=False, flip=False)
    image, label = aug(np.full((100, 100, 3), 200, np.uint8), np.zeros((100, 100), np.int32), torch.Generator().manual_seed(0))
    assert image.shape == (64, 64, 3) and label.shape == (64, 64)
    assert (label[:16, :16] == 0).all() and (label[16:] == -1).all() and (image[16:] == 128).all() and (image[:16, :16] == 200).all()


# --- training ----------------------------------------------------------------------------


def test_short_training_lowers_the_loss_on_real_images(clip, tmp_path):
    dataset = subset("coco-stuff", "train", 2)
    config = small(max_iters=40, train_min_sizes=(128,), color_aug=False, flip=False, lr=5e-4, checkpoint_every=100)
    train_proposals(dataset, config, clip, tmp_path, "zero-shot", progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 41))
    first, last = np.mean([e["loss"] for e in log[:5]]), np.mean([e["loss"] for e in log[-5:]])
    assert last < 0.7 * first, (first, last)
    assert {"ce", "focal", "dice", "ce_0", "lr", "grad_norm"} <= set(log[-1])


def cli_train(out, clip_dir, *extra):
    return ["train", "proposals", "--dataset", "coco-stuff", "--data-root", str(DATA), "--config", "tiny",
            "--clip", str(clip_dir), "--batch-size", "2", "--crop-size", "128", "--log-every", "1",
            "--output-dir", str(out), *extra]


def test_killed_and_resumed_run_ends_with_the_same_weights(clip_dir, tmp_path):
    args = ["--max-iters", "8", "--checkpoint-every", "2"]
    whole = run(cli_train(tmp_path / "whole", clip_dir, *args))
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "zsseg", *cli_train(out, clip_dir, *args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoint-0000004.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "proposals.safetensors").exists(), "the run finished before it could be killed"
    # What a kill in the middle of writing a checkpoint leaves behind: ignored on resume.
    (out / ".checkpoint-0000006.pt.abc123.tmp").write_bytes(b"torn")
    resumed = run(cli_train(out, clip_dir, *args))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step" in resumed.stderr

    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "whole/proposals.safetensors")), load_file(str(out / "proposals.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda d: [(e["step"], e["loss"]) for e in map(json.loads, (d / "log.jsonl").read_text().splitlines())]  # noqa: E731
    assert losses(out) == losses(tmp_path / "whole")  # one line per step, none twice
    assert sorted(p.name for p in out.glob("checkpoint-*.pt")) == ["checkpoint-0000006.pt", "checkpoint-0000008.pt"]


def test_resuming_restores_the_dropout_rng(clip, tmp_path):
    """A run stopped after its step-2 checkpoint (only that file survives) and resumed equals an
    uninterrupted one, with dropout on, so the restored RNG state matters."""
    dataset = subset("coco-stuff", "train", 3)
    config = small(replace(TINY, model=replace(TINY.model, dropout=0.3)), max_iters=4, checkpoint_every=2)
    train_proposals(dataset, config, clip, tmp_path / "whole", "zero-shot", progress=False)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint-0000002.pt").write_bytes((tmp_path / "whole" / "checkpoint-0000002.pt").read_bytes())
    result = train_proposals(dataset, config, clip, tmp_path / "cut", "zero-shot", progress=False)
    assert result.resumed_from == 2
    whole, cut = (load_proposals(tmp_path / name).model.state_dict() for name in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    # Without the RNG state the same resume would differ: dropout draws other masks.
    state = torch.load(tmp_path / "cut" / "checkpoint-0000002.pt", weights_only=True)
    state["rng"] = [torch.manual_seed(123).get_state()]
    (tmp_path / "other").mkdir()
    torch.save(state, tmp_path / "other" / "checkpoint-0000002.pt")
    train_proposals(dataset, config, clip, tmp_path / "other", "zero-shot", progress=False)
    other = load_proposals(tmp_path / "other").model.state_dict()
    assert not all(torch.equal(whole[k], other[k]) for k in whole)


def test_resume_refuses_a_different_run_and_a_damaged_checkpoint(clip_dir, tmp_path, capsys):
    first = run(cli_train(tmp_path, clip_dir, "--max-iters", "1"))
    assert first.returncode == 0, first.stderr
    other = run_here(capsys, cli_train(tmp_path, clip_dir, "--max-iters", "2", "--seed", "5"))
    assert other.returncode == 2 and "holds checkpoints of a different run" in other.stderr
    again = run(cli_train(tmp_path, clip_dir, "--max-iters", "1"))
    assert again.returncode == 0, again.stderr  # already done: writes the final weights again
    longer = run_here(capsys, cli_train(tmp_path, clip_dir, "--max-iters", "3"))
    assert longer.returncode == 2 and "holds a run of 1 step (finished)" in longer.stderr, longer.stderr
    assert "would change its learning-rate schedule" in longer.stderr
    state = torch.load(tmp_path / "checkpoint-0000001.pt", weights_only=True)
    torch.save({**state, "step": 2}, tmp_path / "checkpoint-0000002.pt")  # as left by a longer run
    past = run_here(capsys, cli_train(tmp_path, clip_dir, "--max-iters", "1"))
    assert past.returncode == 2 and "past --max-iters 1" in past.stderr
    (tmp_path / "checkpoint-0000002.pt").unlink()
    (tmp_path / "checkpoint-0000001.pt").write_bytes(b"not a checkpoint")
    damaged = run_here(capsys, cli_train(tmp_path, clip_dir, "--max-iters", "2"))
    assert damaged.returncode == 2 and "cannot read checkpoint" in damaged.stderr and "Traceback" not in damaged.stderr


def test_voc_zero_shot_and_coco_cross_dataset_training(clip, tmp_path):
    """VOC-20 zero-shot learns its 15 seen classes; cross-dataset COCO-Stuff learns all 171.
    (The VOC samples here are its val images: the split is only a name to the trainer.)"""
    voc = subset("voc-20", "val", 2)
    train_proposals(voc, small(max_iters=1), clip, tmp_path / "voc", "zero-shot", progress=False)
    names = load_proposals(tmp_path / "voc").class_names
    unseen = {voc.vocabulary.names[i] for i in voc.unseen}
    assert len(names) == 15 and len(unseen) == 5 and not unseen & set(names)
    train_proposals(subset("coco-stuff", "train", 2), small(max_iters=1), clip, tmp_path / "coco", "cross-dataset", progress=False)
    assert len(load_proposals(tmp_path / "coco").class_names) == 171


def test_two_process_torchrun_training(clip_dir, tmp_path):
    proc = run(["--standalone", "--nproc_per_node", "2", "-m", "zsseg",
                *cli_train(tmp_path, clip_dir, "--max-iters", "3", "--checkpoint-every", "2")],
               module=("-m", "torch.distributed.run"))
    assert proc.returncode == 0, proc.stderr
    state = torch.load(tmp_path / "checkpoint-0000002.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["step"] == 2
    assert load_proposals(tmp_path).info["steps"] == 3
    odd = run(["--standalone", "--nproc_per_node", "2", "-m", "zsseg",
               *cli_train(tmp_path / "odd", clip_dir, "--max-iters", "1", "--batch-size", "3")],
              module=("-m", "torch.distributed.run"))
    assert odd.returncode != 0 and "must be a multiple of the number of processes" in odd.stderr


def test_train_cli_errors(clip_dir, tmp_path, capsys):
    bad = run_here(capsys, ["train", "proposals", "--dataset", "ade20k-150", "--data-root", str(DATA), "--split", "validation",
                            "--config", "tiny", "--clip", str(clip_dir), "--output-dir", str(tmp_path / "x")])
    assert bad.returncode == 2 and "zsseg: error:" in bad.stderr
    zero_shot = run_here(capsys, ["train", "proposals", "--dataset", "ade20k-150", "--data-root", str(DATA), "--split", "val",
                                  "--config", "tiny", "--clip", str(clip_dir), "--output-dir", str(tmp_path / "y")])
    assert zero_shot.returncode == 2 and "zero-shot protocol" in zero_shot.stderr
    crop = run_here(capsys, cli_train(tmp_path / "z", clip_dir, "--crop-size", "100"))
    assert crop.returncode == 2 and "multiple of 32" in crop.stderr
    # A fresh process: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    offline = run(cli_train(tmp_path / "w", clip_dir, "--backbone-weights", "nobody/no-such-resnet", "--max-iters", "1"),
                  env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 2 and "--backbone-weights" in offline.stderr and "Traceback" not in offline.stderr
    (tmp_path / "file").write_text("x")
    not_dir = run_here(capsys, cli_train(tmp_path / "file", clip_dir))
    assert not_dir.returncode == 2 and "not a folder" in not_dir.stderr


def test_pretrained_resnet_weights_load_through_the_hub_path(clip, tmp_path):
    """A ResNet checkpoint folder in transformers' format (what `microsoft/resnet-50` is) loads
    into the detectron2-named backbone and computes the same features."""
    from transformers import ResNetConfig, ResNetModel

    spec = load_recipe("proposals", "tiny").model
    torch.manual_seed(7)
    resnet = ResNetModel(ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="basic")).eval()
    resnet.save_pretrained(tmp_path / "resnet")
    model = build_model(replace(spec, embed_dim=8), seed=0)
    model.backbone.load_pretrained(str(tmp_path / "resnet"))
    pixels = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = model.backbone.eval()(pixels), resnet(pixels, output_hidden_states=True).hidden_states[1:]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))
    wrong = ResNetModel(ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1], layer_type="basic"))
    wrong.save_pretrained(tmp_path / "wrong")
    with pytest.raises(ZssegError, match="do not match the configured ResNet"):
        model.backbone.load_pretrained(str(tmp_path / "wrong"))


# --- inference ---------------------------------------------------------------------------


def test_saved_weights_reload_and_make_proposals(trained, clip):
    loaded = load_proposals(trained / "proposals.safetensors")
    assert loaded.info["protocol"] == "zero-shot" and len(loaded.class_names) == 156
    generator = MaskFormerProposals(trained, max_proposals=10)
    image = read_image(DATA / "coco/val2017/000000010363.jpg")
    size = generator.proposal_size(*image.shape[:2], 1024)
    assert min(size) == TINY.train.test_size and generator.proposal_size(*image.shape[:2], 200) == bounded_size(*image.shape[:2], 200)
    masks = generator.generate(resize_image(image, size))
    assert masks.shape == (10, *size) and masks.min() >= 0 and masks.max() <= 1 and not masks.requires_grad
    # Best first: the 10 queries of highest objectness, 1 - p(no object).
    raw, embeddings = generator.predict(resize_image(image, size))
    order = generator.class_probs(embeddings, loaded.train_text).sum(dim=1).argsort(descending=True, stable=True)
    assert torch.equal(masks, raw[order[:10]])


def test_weights_errors(trained, tmp_path):
    with pytest.raises(ZssegError, match="not found"):
        MaskFormerProposals(tmp_path / "missing")
    with pytest.raises(ZssegError, match="holds no proposals.safetensors"):
        MaskFormerProposals(tmp_path)
    (tmp_path / "proposals.safetensors").write_bytes((trained / "proposals.safetensors").read_bytes())
    with pytest.raises(ZssegError, match="no proposals.json"):
        MaskFormerProposals(tmp_path)
    (tmp_path / "proposals.json").write_text('{"format": "other"}')
    with pytest.raises(ZssegError, match="not a zsseg proposal-network config"):
        MaskFormerProposals(tmp_path)
    with pytest.raises(ZssegError, match="need trained weights"):
        MaskFormerProposals(None)


def test_segmenter_ensembles_the_network_with_clip(trained, clip):
    vocabulary = Vocabulary.parse("person; grass; cat; clouds, sky")  # grass and clouds are COCO unseen classes
    image = read_image(DATA / "coco/val2017/000000010363.jpg")
    generator = MaskFormerProposals(trained)
    assert generator.seen_classes(vocabulary).tolist() == [True, False, True, False]
    results = {}
    for lam in (0.8, 1.0):
        segmenter = Segmenter(clip=clip, proposals=generator, prompt="single", ensemble_weight=lam)
        results[lam] = segmenter.segment(image, vocabulary)
    assert results[0.8].label_map.shape == image.shape[:2] and results[0.8].masks.shape[0] == TINY.model.num_queries
    # Recompute the ensemble by hand from its two sources.
    working = resize_image(image, generator.proposal_size(*image.shape[:2], 1024))
    masks, embeddings = generator.predict(working)
    net = generator.class_probs(embeddings, segmenter.network_prompts.encode_vocabulary(vocabulary))
    clip_scores = segmenter.classifier.classify(working, masks, vocabulary)
    clip_probs = torch.ones_like(net)
    clip_probs[clip_scores.keep] = clip_scores.probs
    seen = torch.tensor([True, False, True, False])
    assert torch.allclose(results[0.8].region_probs, torch.where(seen, net**0.8 * clip_probs**0.2, net**0.2 * clip_probs**0.8), atol=1e-5)
    # lambda = 1: seen classes from the network alone, unseen ones from CLIP alone.
    assert torch.allclose(results[1.0].region_probs, torch.where(seen, net, clip_probs), atol=1e-5)


def test_segmenter_labels_the_network_masks_with_one_part_alone(trained, clip):
    vocabulary = Vocabulary.parse("person; grass; cat; clouds, sky")
    image = read_image(DATA / "coco/val2017/000000010363.jpg")
    generator = MaskFormerProposals(trained)
    working = resize_image(image, generator.proposal_size(*image.shape[:2], 1024))
    masks, embeddings = generator.predict(working)
    network = Segmenter(clip=clip, proposals=generator, prompt="single", classifier="network").segment(image, vocabulary)
    encoder = Segmenter(clip=clip, proposals=generator, prompt="single").network_prompts
    # Network alone: its probabilities for every class, seen or not, on all its masks.
    assert torch.allclose(network.region_probs, generator.class_probs(embeddings, encoder.encode_vocabulary(vocabulary)), atol=1e-6)
    assert network.masks.shape[0] == TINY.model.num_queries
    # CLIP alone: Eq. 1 for every class on each query's mask non-empty at 0.5, in the network's
    # order (the reference code's lambda <= 0); lambda 0 is the same branch.
    alone = Segmenter(clip=clip, proposals=generator, prompt="single", classifier="clip")
    assert alone.network_prompts is None
    result = alone.segment(image, vocabulary)
    queries, _ = generator.predict(working)
    scores = alone.classifier.classify(working, queries, vocabulary)
    assert torch.allclose(result.region_probs, scores.probs, atol=1e-6)
    assert torch.equal(result.masks, queries[scores.keep])
    zero = Segmenter(clip=clip, proposals=generator, prompt="single", ensemble_weight=0.0)
    assert zero.classifier_mode == "clip" and zero.record()["models"] == alone.record()["models"]
    again = zero.segment(image, vocabulary)
    assert torch.equal(again.region_probs, result.region_probs) and np.array_equal(again.label_map, result.label_map)
    with pytest.raises(ZssegError, match="unknown classifier"):
        Segmenter(clip=clip, proposals=generator, classifier="both")
    with pytest.raises(ZssegError, match="^classifier is for maskformer proposals or method fcn, not method two-stage with selective-search proposals$"):
        Segmenter(clip=clip, proposals="selective-search", classifier="network")

def test_a_different_clip_is_refused(trained, tmp_path):
    from zsseg import load_clip

    other = load_clip(str(save_tiny_clip(tmp_path / "other", seed=1)))
    with pytest.raises(ZssegError, match="does not give the text embeddings"):
        Segmenter(clip=other, proposals=MaskFormerProposals(trained))


def test_segment_and_eval_cli_use_the_trained_proposals(trained, clip_dir, tmp_path, capsys):
    image = DATA / "coco/val2017/000000010363.jpg"
    seg = run(["segment", str(image), "--classes", "person; grass; cat", "--clip", str(clip_dir), "--proposals", "maskformer",
               "--proposal-weights", str(trained), "--out", str(tmp_path / "seg")])
    assert seg.returncode == 0, seg.stderr
    assert (tmp_path / "seg" / f"{image.stem}.png").is_file()
    common = ["eval", "--dataset", "coco-stuff", "--data-root", str(DATA), "--limit", "2", "--clip", str(clip_dir)]
    ev = run([*common, "--protocol", "zero-shot", "--proposals", "maskformer", "--proposal-weights", str(trained / "proposals.safetensors"),
              "--output", str(tmp_path / "scores.json"), "--quiet"])
    assert ev.returncode == 0, ev.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    config = scores["config"]
    assert config["proposals"]["name"] == "maskformer" and config["ensemble"]["weight"] == 0.8 and "hIoU" in scores
    assert config["models"]["ensemble"] == {"weight": 0.8, "classifier": "ensemble"}
    oracle = run([*common, "--oracle", "--proposals", "maskformer", "--proposal-weights", str(trained), "--quiet"])
    assert oracle.returncode == 0 and "mIoU" in oracle.stdout, oracle.stderr
    missing = run_here(capsys, [*common, "--proposals", "maskformer"])
    assert missing.returncode == 2 and "need trained weights: --proposal-weights" in missing.stderr
    stray = run_here(capsys, [*common, "--proposals", "selective-search", "--proposal-weights", str(trained)])
    assert stray.returncode == 2 and "--proposal-weights is for maskformer proposals" in stray.stderr


# --- bf16 autocast and DataLoader workers ------------------------------------------------------


def test_bf16_autocast_changes_a_steps_loss_by_under_two_bf16_roundoffs(clip, tmp_path):
    """The logged loss of step 1 (before any update: the same weights) in fp32 and under bf16
    autocast. bf16 keeps 8 significant bits: each rounding is off by at most u = 2^-8 (0.39%)
    relative. The network's matmuls and convolutions round their inputs to bf16 and accumulate
    in fp32, and the logits, matching and losses are fp32 (`ProposalTask.loss`), so the loss
    carries a few such roundings that partly cancel: measured here 0.04-0.33% on 8 batches;
    the bound is 2u = 0.78%."""
    dataset = subset("coco-stuff", "train", 4)
    config = small(max_iters=1, checkpoint_every=100)
    logs = {}
    for dtype in ("fp32", "bf16"):
        train_proposals(dataset, config, clip, tmp_path / dtype, "zero-shot", progress=False, dtype=dtype)
        logs[dtype] = json.loads((tmp_path / dtype / "log.jsonl").read_text().splitlines()[0])
    fp32, bf16 = logs["fp32"]["loss"], logs["bf16"]["loss"]
    assert fp32 != bf16, "autocast ran: the loss changes"
    assert abs(bf16 - fp32) / fp32 < 2 * 2**-8, (fp32, bf16)
    with pytest.raises(ZssegError, match="trained in bf16"):
        train_proposals(dataset, small(max_iters=2, checkpoint_every=100), clip, tmp_path / "bf16", "zero-shot", progress=False)


def test_dataloader_workers_change_nothing(clip, tmp_path):
    """Two worker processes make the batches ahead: the weights are those of the main process's."""
    dataset = subset("coco-stuff", "train", 4)
    config = small(max_iters=3, checkpoint_every=100)
    for workers in (0, 2):
        train_proposals(dataset, config, clip, tmp_path / str(workers), "zero-shot", progress=False, workers=workers)
    a, b = (load_proposals(tmp_path / str(w)).model.state_dict() for w in (0, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
