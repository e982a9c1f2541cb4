"""The per-pixel methods behind `Segmenter(method=...)`: the retrained FCN (training that learns,
exact resume, saved weights), dense CLIP, their ensemble checked by hand, and the fast mode's
CLIP budget; and the same through `zsseg train fcn`, `segment` and `eval --method`."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import DATA, run, subset, recorded
from zsseg import Segmenter, Vocabulary, ZssegError
from zsseg.classification.dense import dense_logits
from zsseg.networks.fcn import FcnModelConfig, load_fcn
from zsseg.training.recipes import built_in_recipes, load_recipe
from zsseg.training.fcn import train_fcn
from zsseg.data.images import read_image, resize_image
from zsseg.training.proposal_data import Augmentation, TrainingSamples
from zsseg.data.datasets import training_classes
from zsseg.proposals import build_proposal_generator
from zsseg.segmenter import FCN_ENSEMBLE_WEIGHT

IMAGE = DATA / "coco/val2017/000000010363.jpg"
CPU = load_recipe("fcn", "cpu")


def small(**train):
    return replace(CPU, train=replace(CPU.train, **{"crop_size": 128, "batch_size": 2, "log_every": 1, **train}))


@pytest.fixture(scope="module")
def fcn_dir(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("fcn")
    train_fcn(subset("coco-stuff", "train", 3), small(max_iters=3), clip, out, "zero-shot", progress=False)
    return out


# --- the FCN -----------------------------------------------------------------------------------


def test_fcn_training_lowers_the_loss_on_real_images(clip, tmp_path):
    config = small(max_iters=30, train_min_sizes=(128,), color_aug=False, flip=False, lr=5e-3, checkpoint_every=100)
    train_fcn(subset("coco-stuff", "train", 2), config, clip, tmp_path, "zero-shot", progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 31))
    first, last = np.mean([e["loss"] for e in log[:5]]), np.mean([e["loss"] for e in log[-5:]])
    assert last < 0.7 * first, (first, last)
    trained = load_fcn(tmp_path)
    assert len(trained.class_names) == 156 and trained.info["protocol"] == "zero-shot"


def test_fcn_resumes_exactly(clip, tmp_path):
    dataset = subset("coco-stuff", "train", 3)
    config = small(max_iters=4, checkpoint_every=2)
    train_fcn(dataset, config, clip, tmp_path / "whole", "zero-shot", progress=False)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint-0000002.pt").write_bytes((tmp_path / "whole" / "checkpoint-0000002.pt").read_bytes())
    result = train_fcn(dataset, config, clip, tmp_path / "cut", "zero-shot", progress=False)
    assert result.resumed_from == 2
    whole, cut = (load_fcn(tmp_path / name).model.state_dict() for name in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    # Another config on the same folder is refused, not mixed in.
    with pytest.raises(ZssegError, match="different run"):
        train_fcn(dataset, small(max_iters=4, checkpoint_every=2, seed=7), clip, tmp_path / "cut", "zero-shot", progress=False)


def test_fcn_targets_ignore_unseen_and_void_pixels():
    dataset = subset("coco-stuff", "train", 100)
    classes = training_classes(dataset, "zero-shot")
    samples = TrainingSamples(dataset, classes, Augmentation(128), seed=0)
    for position in range(100):
        raw = dataset.load_label(samples.image_index(position))
        if np.isin(raw, dataset.unseen).any():
            break
    image, labels = samples.labelled(position)
    assert image.shape == (3, 128, 128) and labels.shape == (128, 128) and labels.dtype == torch.int64
    assert int(labels.max()) < 156 and (labels == -1).any()
    # the set-loss target is the same labels, one mask per class
    _, target = samples[position]
    assert torch.equal(target.classes, torch.unique(labels[labels >= 0]))


def test_fcn_weights_and_config_errors(fcn_dir, tmp_path):
    with pytest.raises(ZssegError, match="holds no fcn.safetensors"):
        load_fcn(tmp_path)
    (tmp_path / "fcn.safetensors").write_bytes((fcn_dir / "fcn.safetensors").read_bytes())
    (tmp_path / "fcn.json").write_text('{"format": "zsseg-maskformer-proposals/1"}')
    with pytest.raises(ZssegError, match="not a zsseg FCN config"):
        load_fcn(tmp_path)
    with pytest.raises(ZssegError, match="^unknown config 'huge': give a recipe file, or one of the built-in recipes: paper, cpu$"):
        load_recipe("fcn", "huge")
    with pytest.raises(ZssegError, match="unknown FCN backbone"):
        FcnModelConfig(backbone="clip")
    assert set(built_in_recipes("fcn")) == {"paper", "cpu"}


# --- the methods -------------------------------------------------------------------------------


def test_fcn_method_is_the_hand_computed_ensemble_with_dense_clip(fcn_dir, clip):
    vocabulary = Vocabulary.parse("person; grass; cat; car; clouds, sky")  # grass and clouds are COCO-Stuff unseen classes
    segmenter = Segmenter(clip=clip, method="fcn", fcn=fcn_dir, max_size=320)
    result = segmenter.segment(IMAGE, vocabulary)
    fcn = segmenter.fcn
    image = read_image(IMAGE)
    small_image = resize_image(image, fcn.processing_size(*image.shape[:2], 320))
    text = segmenter.classifier.embed_vocabulary(vocabulary)
    network = fcn.class_probs(fcn.predict(small_image), segmenter.network_prompts.encode_vocabulary(vocabulary))
    clip_probs = dense_logits(segmenter.dense.features(small_image), text).softmax(dim=0)
    seen = torch.tensor([True, False, True, True, False])
    assert torch.equal(fcn.seen_classes(vocabulary), seen)
    lam = FCN_ENSEMBLE_WEIGHT
    # By hand, pixel by pixel: seen classes network^0.7 clip^0.3, unseen network^0.3 clip^0.7.
    expected = torch.empty_like(network)
    for c in range(5):
        a, b = (lam, 1 - lam) if seen[c] else (1 - lam, lam)
        expected[c] = network[c] ** a * clip_probs[c] ** b
    assert torch.allclose(result.scores, expected, atol=1e-6)
    assert result.label_map.shape == image.shape[:2] and result.masks.shape[0] == 0
    alone = Segmenter(clip=clip, method="fcn", fcn=fcn_dir, max_size=320, classifier="network").segment(IMAGE, vocabulary)
    assert torch.allclose(alone.scores, network, atol=1e-6)
    dense = Segmenter(clip=clip, method="dense-clip", max_size=320).segment(IMAGE, vocabulary)
    dense_small = resize_image(image, segmenter.dense.processing_size(*image.shape[:2], 320))
    assert torch.allclose(dense.scores, dense_logits(segmenter.dense.features(dense_small), text).softmax(dim=0), atol=1e-6)


def count_tower_calls(clip):
    """Shapes of every image batch that enters CLIP's image tower (its patch embedding), by any path."""
    calls = []
    handle = clip.model.vision_model.embeddings.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple((kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]).shape)),
        with_kwargs=True,
    )
    return calls, handle


@pytest.mark.parametrize("size", [(480, 640), (640, 427), (300, 1200)])
def test_fast_mode_makes_at_most_two_224_clip_forwards(clip, size):
    image = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    proposals = build_proposal_generator("selective-search", max_proposals=30)
    fast = Segmenter(clip=clip, proposals=proposals, method="fast", max_size=256)
    calls, handle = count_tower_calls(clip)
    try:
        result = fast.segment(image, "person; grass; cat")
        windows = sum(shape[0] for shape in calls)
        assert 1 <= windows <= 2 and all(shape[-2:] == (224, 224) for shape in calls), calls
        assert len(result.masks) == len(result.region_probs) > 0
        calls.clear()
        Segmenter(clip=clip, proposals=proposals, max_size=256).segment(image, "person; grass; cat")
        assert sum(shape[0] for shape in calls) > 2  # the faithful path: one crop per proposal
    finally:
        handle.remove()


def test_methods_refuse_what_does_not_apply(fcn_dir, clip):
    with pytest.raises(ZssegError, match="unknown method"):
        Segmenter(clip=clip, method="fcn-ish")
    with pytest.raises(ZssegError, match="needs trained FCN weights"):
        Segmenter(clip=clip, method="fcn")
    with pytest.raises(ZssegError, match="fcn is for method fcn, not method dense-clip"):
        Segmenter(clip=clip, method="dense-clip", fcn=fcn_dir)
    with pytest.raises(ZssegError, match="classifier is for maskformer proposals or method fcn, not method dense-clip"):
        Segmenter(clip=clip, method="dense-clip", classifier="network")
    with pytest.raises(ZssegError, match="overlap is for the methods with sliding windows .*, not method two-stage"):
        Segmenter(clip=clip, method="two-stage", overlap=0.5)
    with pytest.raises(ZssegError, match="unknown dense_mode 'maskclip'"):
        Segmenter(clip=clip, method="dense-clip", dense_mode="maskclip")


# --- the command line --------------------------------------------------------------------------


def test_cli_train_fcn_then_eval_and_segment_with_each_method(clip_dir, tmp_path, capsys):
    from zsseg.cli import main

    common = ["--dataset", "coco-stuff", "--data-root", str(DATA)]
    trained = run(["train", "fcn", *common, "--config", "cpu", "--clip", str(clip_dir), "--max-iters", "2", "--batch-size", "2",
                   "--output-dir", str(tmp_path / "fcn")])
    assert trained.returncode == 0 and "--method fcn" in trained.stderr, trained.stderr
    # The run records its recipe, flags included; `--config` on that JSON trains the same network.
    recipe = json.loads((tmp_path / "fcn" / "fcn.json").read_text())["config"]
    assert (recipe["kind"], recipe["name"], recipe["train"]["max_iters"], recipe["train"]["batch_size"]) == ("fcn", "cpu", 2, 2)
    again = run(["train", "fcn", *common, "--config", str(tmp_path / "fcn" / "fcn.json"), "--clip", str(clip_dir),
                 "--output-dir", str(tmp_path / "fcn2")])
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "fcn2" / "fcn.json").read_text())["config"] == recipe
    assert (tmp_path / "fcn2" / "fcn.safetensors").read_bytes() == (tmp_path / "fcn" / "fcn.safetensors").read_bytes()
    evaluation = ["eval", *common, "--protocol", "zero-shot", "--limit", "2", "--clip", str(clip_dir), "--max-size", "256", "--quiet"]
    scored = run([*evaluation, "--method", "fcn", "--fcn-weights", str(tmp_path / "fcn"), "--output", str(tmp_path / "fcn.json")])
    assert scored.returncode == 0 and "hIoU" in scored.stdout, scored.stderr
    report = json.loads((tmp_path / "fcn.json").read_text())
    settings = recorded(report)
    assert settings["method"] == "fcn" and settings["ensemble_weight"] == 0.7 and settings["proposals"] is None and "hIoU" in report
    dense = run([*evaluation, "--method", "dense-clip", "--dense-mode", "sclip", "--overlap", "0.5", "--output", str(tmp_path / "d.json")])
    assert dense.returncode == 0, dense.stderr
    assert json.loads((tmp_path / "d.json").read_text())["config"]["dense"] == {"mode": "sclip", "overlap": 0.5}
    segmented = run(["segment", str(IMAGE), "--classes", "person; cat; car", "--clip", str(clip_dir), "--method", "fast",
                     "--max-proposals", "20", "--max-size", "256", "--out", str(tmp_path / "out")])
    assert segmented.returncode == 0 and (tmp_path / "out" / f"{IMAGE.stem}.png").is_file(), segmented.stderr
    for extra, message in (
        (["--method", "fcn"], "needs trained FCN weights: --fcn-weights"),
        (["--method", "dense-clip", "--proposals", "selective-search"], "--proposals is for the proposal methods"),
        (["--method", "two-stage", "--fcn-weights", str(tmp_path / "fcn")], "--fcn-weights is for method fcn, not method two-stage"),
        (["--method", "dense-clip", "--ensemble-weight", "0.5"], "--ensemble-weight is for maskformer proposals or method fcn, not method dense-clip"),
        (["--method", "two-stage", "--dense-mode", "sclip"], "--dense-mode is for the methods with dense CLIP features"),
        (["--method", "dense-clip", "--overlap", "1"], "must be in [0, 1)"),
        (["--oracle", "--method", "fast"], "--oracle scores proposals alone"),
    ):  # in this process: these are refused before any model loads
        try:
            status = main([*evaluation, *extra])
        except SystemExit as exit:  # argparse's refusals
            status = exit.code
        err = capsys.readouterr().err
        assert status == 2 and message in err and "Traceback" not in err, (extra, err)
