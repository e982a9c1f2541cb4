"""The reference code's per-benchmark settings (`zsseg.evaluation.reference_settings`) and the authors' checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED, run, run_here, recorded
from zsseg.evaluation.reference_settings import benchmark_settings
from zsseg.data.datasets import DATASETS
from zsseg.errors import ZssegError
from zsseg.data.vocabulary import Vocabulary


def test_every_benchmark_and_protocol_has_settings():
    for name, spec in DATASETS.items():
        protocols = ["cross-dataset"] + (["zero-shot"] if spec.unseen else [])
        for protocol in protocols:
            row = benchmark_settings(name, protocol)
            assert len(row.vocabulary()) == len(Vocabulary.preset(spec.vocabulary)), (name, row.class_names)
            assert row.seen in ("split", "none") and (row.seen == "none" or spec.unseen)
    with pytest.raises(ZssegError, match="ade20k-150 has no zero-shot settings"):
        benchmark_settings("ade20k-150", "zero-shot")


def test_the_reference_settings_of_the_papers_rows():
    ade = benchmark_settings("ade20k-150", "cross-dataset")
    assert (ade.test_size, ade.mask_threshold, ade.ensemble_weight, ade.seen, ade.prompt) == ((512, 2048), 0.4, 0.5, "none", "vild")
    names = ade.vocabulary().names
    assert len(names) == 150 and names[6] == "road, route" and names[8] == "window" and names[37] == "tub" and names[89] == "tv"
    assert ade.vocabulary().classes[6] == ("road, route",), "a reference class string is one prompt, not split into synonyms"
    assert benchmark_settings("ade20k-847", "cross-dataset").mask_threshold == 0.3
    assert benchmark_settings("ade20k-847", "cross-dataset").ensemble_weight == 0.7
    assert benchmark_settings("cityscapes", "cross-dataset").test_size == (1024, 2048)
    assert benchmark_settings("pascal-context-59", "cross-dataset").ensemble_weight == 0.4
    coco = benchmark_settings("coco-stuff", "zero-shot")
    assert (coco.test_size, coco.ensemble_weight, coco.seen) == ((640, 2560), 0.8, "split")
    voc = benchmark_settings("voc-20", "zero-shot").vocabulary().names
    assert voc[10] == "diningtable" and voc[15] == "pottedplant" and voc[19] == "tvmonitor"
    assert "cloth" in benchmark_settings("pascal-context-59", "cross-dataset").vocabulary().names


def test_segmenter_options_and_seen_flags():
    ade = benchmark_settings("ade20k-150", "cross-dataset")
    assert ade.segmenter_options(network=True) == {"test_size": 512, "max_size": 2048, "mask_threshold": 0.4, "ensemble_weight": 0.5,
                                                   "prompt": "vild", "network_prompt": "vild"}
    assert ade.segmenter_options(network=False)["ensemble_weight"] is None
    coco = benchmark_settings("coco-stuff", "zero-shot")
    assert coco.segmenter_options(network=True)["prompt"] is None, "the network's own prompt"
    assert coco.segmenter_options(network=False)["prompt"] == "single"
    unseen = DATASETS["coco-stuff"].unseen_indices
    flags = coco.seen_flags(unseen, 171)
    assert sum(flags) == 156 and not any(flags[i] for i in unseen)
    assert ade.seen_flags((), 150) == [False] * 150
    assert coco.seen_flags(unseen, 171, "names") is None
    with pytest.raises(ZssegError, match="no zero-shot split"):
        ade.seen_flags((), 150, "split")


def test_pascal_context_59_follows_the_label_order_of_the_prepared_maps():
    """pc59 label maps number the classes by ascending Pascal Context category id, which is
    alphabetical (aeroplane, bag, bed, ...); the built-in vocabulary had VOC's classes first."""
    mine = Vocabulary.preset("pascal-context-59").names
    reference = benchmark_settings("pascal-context-59", "cross-dataset").vocabulary().names
    friendly = {"clothes": "cloth", "dining table": "diningtable", "potted plant": "pottedplant", "tv monitor": "tvmonitor"}
    assert [friendly.get(n, n) for n in mine] == reference
    assert mine[:3] == ["aeroplane", "bag", "bed"]


# --- the authors' checkpoints ------------------------------------------------------------------

def _reference_state(keys_file, drop_clip: bool = True) -> dict[str, torch.Tensor]:
    """A state dict with the reference's key names and shapes (zeros; the CLIP left out)."""
    state = {}
    for line in keys_file.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        if drop_clip and name.startswith("clip_adapter.clip_model."):
            continue
        state[name] = torch.zeros(eval(shape), dtype=torch.int64 if dtype == "int64" else torch.float32)
    state["clip_adapter.pixel_mean"] = 255 * torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    state["clip_adapter.pixel_std"] = 255 * torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    state["criterion.empty_weight"] = torch.cat([torch.ones(156), torch.tensor([0.1])])
    return state


@pytest.fixture(scope="module")
def keys_file():
    path = SHARED / "reference-parity" / "keys-coco-stuff-156-single-prompt.txt"
    if not path.is_file():
        pytest.fail(f"reference key list not found: {path}")
    return path


def test_reference_key_table_covers_the_network(keys_file):
    from zsseg.networks.maskformer.model import MaskFormer
    from zsseg.networks.maskformer.reference import model_config, network_state

    state = _reference_state(keys_file)
    config = model_config(state, "ckpt")
    assert (config.backbone, config.num_queries, config.decoder_layers, config.class_head_hidden, config.class_head_layers) == (
        "resnet-101c", 100, 6, 1024, 2)
    mapped = network_state(state, "ckpt")
    with torch.device("meta"):
        expected = MaskFormer(config).state_dict()
    assert set(mapped) == set(expected)
    assert all(tuple(mapped[k].shape) == tuple(expected[k].shape) for k in expected)


@pytest.mark.parametrize("damage, message", [
    ("extra", "key sem_seg_head.predictor.extra_head.weight is not one of the reference model's"),
    ("missing", "no tensor for the network's predictor.layers.3.norms.1.bias"),
    ("shape", "predictor.input_proj.weight is (256, 1024, 1, 1)"),
    ("object", "holds objects other than tensors"),
    ("constant", "clip_adapter.pixel_mean is"),
    ("classes", "trained on 99 classes"),
])
def test_a_damaged_checkpoint_is_one_line_and_loads_nothing(keys_file, tmp_path, damage, message):
    from zsseg.proposals import MaskFormerProposals

    state = _reference_state(keys_file)
    if damage == "extra":
        state["sem_seg_head.predictor.extra_head.weight"] = torch.zeros(3)
    elif damage == "missing":
        del state["sem_seg_head.predictor.transformer.decoder.layers.3.norm2.bias"]
    elif damage == "shape":
        state["sem_seg_head.predictor.input_proj.weight"] = torch.zeros(256, 1024, 1, 1)
    elif damage == "constant":
        state["clip_adapter.pixel_mean"] = torch.zeros(1, 3, 1, 1)
    elif damage == "classes":
        state["criterion.empty_weight"] = torch.cat([torch.ones(99), torch.tensor([0.1])])
    path = tmp_path / "model_final.pth"
    content = {"model": state}
    if damage == "object":
        content["trainer"] = np.random.default_rng(0)  # an arbitrary object: needs unpickling
    torch.save(content, path)
    with pytest.raises(ZssegError, match=re.escape(message)) as caught:
        MaskFormerProposals(path, clip="unused")
    assert "\n" not in str(caught.value)


def test_a_checkpoint_error_on_the_command_line(keys_file, tmp_path, clip_dir, capsys):
    state = _reference_state(keys_file)
    del state["sem_seg_head.pixel_decoder.mask_features.bias"]
    torch.save({"model": state}, tmp_path / "model_final.pth")
    image = SHARED / "data" / "coco" / "val2017" / "000000010363.jpg"
    out = tmp_path / "out"
    result = run_here(capsys, ["segment", str(image), "--classes", "cat; dog", "--proposals", "maskformer", "--proposal-weights",
                               str(tmp_path / "model_final.pth"), "--clip", str(clip_dir), "--out", str(out)])
    assert result.returncode == 2 and "pixel_decoder.mask_features.bias" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1 and not out.exists()
    missing = run_here(capsys, ["segment", str(image), "--classes", "cat", "--proposals", "maskformer", "--proposal-weights",
                                str(tmp_path / "nothing.pth"), "--clip", str(clip_dir), "--out", str(out)])
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr


def test_a_detectron2_pkl_is_read_without_unpickling_objects(tmp_path):
    import pickle

    from zsseg.networks.maskformer.resnet import read_detectron2_pickle

    arrays = {"model": {"backbone.stem.conv1.weight": np.ones((2, 3), dtype=np.float32)}, "__author__": "torchvision"}
    tensors = read_detectron2_pickle(pickle.dumps(arrays), "R-103.pkl")
    assert torch.equal(tensors["stem.conv1.weight"], torch.ones(2, 3))

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    with pytest.raises(ZssegError, match="refusing to unpickle builtins.print"):
        read_detectron2_pickle(pickle.dumps({"model": {"x": Payload()}}), "evil.pkl")


def test_resnet_101c_is_detectrons_deeplab_resnet(keys_file):
    """The backbone's names and shapes are those of the reference's R101c (from its key list)."""
    from zsseg.networks.maskformer.resnet import RESNETS, ResNet

    backbone = ResNet(RESNETS["resnet-101c"])
    reference = {}
    for line in keys_file.read_text().splitlines():
        name, shape, _ = line.split("\t")
        if name.startswith("backbone."):
            reference[name.removeprefix("backbone.")] = tuple(eval(shape))
    assert {k: tuple(v.shape) for k, v in backbone.state_dict().items()} == reference
    dilations = [block.conv2.dilation[0] for block in backbone.res5]
    assert dilations == [1, 2, 4] and backbone.res5[0].conv2.stride == (2, 2)
    features = backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_eval_records_the_benchmark_settings_and_the_reference_miou(clip_dir, tmp_path):
    """`zsseg eval` on ADE20K-150 records the reference's settings, and its mIoU is the reference
    evaluator's formula recomputed from the saved predictions."""
    from PIL import Image

    from conftest import DATA

    out = tmp_path / "scores.json"
    result = run(["eval", "--dataset", "ade20k-150", "--data-root", str(DATA), "--limit", "3", "--clip", str(clip_dir),
                  "--max-proposals", "8", "--max-size", "192", "--output", str(out), "--save-predictions", str(tmp_path / "pred"), "--quiet"])
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    settings = recorded(report)
    assert settings["test_size"] == [512, 192] and settings["mask_threshold"] == 0.4 and settings["miou_rule"] == "gt-or-predicted"
    assert settings["class_names"] == "reference/ade20k-150.txt" and "road, route" in report["per_class_iou"]
    assert settings["prompt"]["name"] == "vild" and "ade20k-150/cross_dataset_test_only.yaml" in settings["benchmark_settings"]
    # The reference evaluator's formula (generalized_sem_seg_evaluation.py), by hand, on the saved PNGs.
    from zsseg.data.datasets import load_dataset

    dataset = load_dataset("ade20k-150", DATA, "val")
    conf = np.zeros((151, 151), dtype=np.int64)  # [prediction, ground truth], 150 = ignored ground truth
    for i in range(3):
        gt = dataset.load_label(i)
        pred = np.array(Image.open(tmp_path / "pred" / f"{dataset.samples[i].name}.png")).astype(np.int64)
        gt = np.where(gt < 0, 150, gt)
        pred = np.where(pred == 255, 150, pred)  # unlabelled: no class (a miss for its ground truth)
        conf += np.bincount(151 * pred.ravel() + gt.ravel(), minlength=151 * 151).reshape(151, 151)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:, :-1].sum(axis=0).astype(float)  # unlabelled pixels count in their ground truth
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(float)
    valid = pos_gt > 0
    iou = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    assert report["mIoU"] == pytest.approx(100 * iou.sum() / ((pos_gt + pos_pred) > 0).sum(), abs=1e-9)
    assert report["classes_in_mean"] == int(((pos_gt + pos_pred) > 0).sum())


def test_eval_with_a_network_records_lambda_and_every_class_unseen(clip_dir, tmp_path):
    from dataclasses import replace

    from conftest import DATA
    from zsseg.training.recipes import load_recipe
    from zsseg.networks.maskformer.model import build_model
    from zsseg.networks.maskformer.weights import save_proposals
    from zsseg.prompts.encoding import PromptEncoder, load_prompt
    from zsseg import load_clip

    clip = load_clip(str(clip_dir))
    config = replace(load_recipe("proposals", "tiny").model, embed_dim=clip.embed_dim)
    vocabulary = Vocabulary.preset("coco-stuff-171")
    prompt = load_prompt("single")
    text = PromptEncoder(clip, prompt).encode_vocabulary(vocabulary)
    (tmp_path / "net").mkdir()
    save_proposals(tmp_path / "net", build_model(config, seed=0), text, vocabulary.names,
                   {"clip": str(clip_dir), "dataset": "coco-stuff", "protocol": "cross-dataset", "train": {"test_size": 128}}, prompt)
    out = tmp_path / "ade.json"
    result = run(["eval", "--dataset", "ade20k-150", "--data-root", str(DATA), "--limit", "1", "--clip", str(clip_dir),
                  "--proposals", "maskformer", "--proposal-weights", str(tmp_path / "net"), "--output", str(out), "--quiet"])
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    settings = recorded(report)
    assert settings["test_size"] == [512, 2048] and settings["mask_threshold"] == 0.4 and settings["ensemble_weight"] == 0.5
    assert settings["seen_classes"] == "none" and settings["prompt"]["name"] == "vild" and settings["network_prompt"]["name"] == "vild"
    overridden = run(["eval", "--dataset", "ade20k-150", "--data-root", str(DATA), "--limit", "1", "--clip", str(clip_dir),
                      "--proposals", "maskformer", "--proposal-weights", str(tmp_path / "net"), "--ensemble-weight", "0.8",
                      "--seen-classes", "names", "--mask-threshold", "0.5", "--test-size", "128", "--output", str(out), "--quiet"])
    assert overridden.returncode == 0, overridden.stderr
    report = json.loads(out.read_text())
    settings = recorded(report)
    assert settings["test_size"] == [128, 2048] and settings["mask_threshold"] == 0.5 and settings["ensemble_weight"] == 0.8
    assert settings["seen_classes"] == "names"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script runs the whole GPU check")
def test_gpu_check_says_in_one_line_that_it_needs_cuda():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "PYTHON": sys.executable})
    assert proc.returncode != 0
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1 and "needs a CUDA GPU" in proc.stderr


def test_every_benchmark_script_answers_help_without_pytest():
    """Each benchmarks/*.py parses its command line and prints its usage, run as a script in a
    Python without pytest's path set-up (one process, so torch is imported once)."""
    import subprocess
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = sorted(p for p in folder.glob("*.py") if p.name != "samples.py")
    code = (
        "import io, runpy, sys, contextlib\n"
        "for script in sys.argv[1:]:\n"
        "    sys.argv = [script, '--help']\n"
        "    out = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(out):\n"
        "            runpy.run_path(script, run_name='__main__')\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), (script, exit.code)\n"
        "    else:\n"
        "        raise AssertionError(f'{script} ran instead of printing its usage')\n"
        "    assert 'usage:' in out.getvalue(), (script, out.getvalue()[:200])\n"
        "    print('ok', script)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, scripts)], capture_output=True, text=True, timeout=300,
                          cwd=folder.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ok ") == len(scripts) >= 10


@pytest.fixture(scope="module")
def tiny_reference(keys_file, tmp_path_factory):
    """A small random checkpoint in the authors' format, with a learned prompt."""
    from zsseg.tiny_clip import save_tiny_reference_checkpoint

    return save_tiny_reference_checkpoint(tmp_path_factory.mktemp("tiny-reference") / "model_final.pth", keys_file, learned_prompt=(4, 0))


def test_ensemble_weight_zero_is_the_clip_only_branch_in_eval(tiny_reference, tmp_path, capsys):
    """The reference's CLIP_ENSEMBLE_WEIGHT at or below 0 is its CLIP-only branch (Eq. 1 alone on
    the queries whose mask is not empty), not the ensemble's formula at 0: `--ensemble-weight 0`
    and `--classifier clip` give the same scores, predictions and settings, and each kept mask's
    class probabilities are Eq. 1's alone (the formula at 0 would give the unseen classes the
    network's)."""
    from conftest import DATA, TOKENIZER
    from zsseg.cli import main

    common = ["eval", "--dataset", "coco-stuff", "--protocol", "zero-shot", "--data-root", str(DATA), "--limit", "2",
              "--proposals", "maskformer", "--proposal-weights", str(tiny_reference), "--tokenizer", str(TOKENIZER),
              "--test-size", "160", "--no-text-cache", "--quiet"]
    reports, predictions = {}, {}
    for name, extra in (("zero", ["--ensemble-weight", "0"]), ("clip", ["--classifier", "clip"])):
        assert main([*common, *extra, "--output", str(tmp_path / f"{name}.json"), "--save-predictions", str(tmp_path / name)]) == 0, \
            capsys.readouterr().err
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
        predictions[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.png"))}
    timing = {"seconds_per_image", "wall_seconds", "config"}  # the configurations differ in how they say it: the models run alike
    zero, clip = ({k: v for k, v in reports[n].items() if k not in timing} for n in ("zero", "clip"))
    assert zero == clip and reports["zero"]["config"]["models"] == reports["clip"]["config"]["models"]
    assert recorded(reports["zero"])["classifier"] == "clip"
    assert predictions["zero"] == predictions["clip"] and len(predictions["zero"]) == 2
    from zsseg import Segmenter
    from zsseg.evaluation.reference_settings import benchmark_settings
    from zsseg.proposals import MaskFormerProposals

    generator = MaskFormerProposals(tiny_reference, tokenizer=str(TOKENIZER))
    vocabulary = benchmark_settings("coco-stuff", "zero-shot").vocabulary()
    result = Segmenter(proposals=generator, ensemble_weight=0.0, test_size=160, text_cache=False).segment(
        DATA / "coco/val2017/000000010092.jpg", vocabulary)
    keep = result.masks.shape[0]
    assert 0 < keep <= generator.model.config.num_queries
    assert torch.allclose(result.region_probs.sum(dim=1), torch.ones(keep), atol=1e-5), "Eq. 1's softmax over the classes alone"


def test_a_separate_region_adapter_is_eq1s_clip_and_prompt(keys_file, tmp_path):
    """A checkpoint of the reference's SEPERATE_ADAPTER configs carries a second adapter for
    Eq. 1: its CLIP and its learned prompt (here with vectors after the name too) label the
    crops, while the network's classifier keeps the first adapter's. A second copy of the same
    CLIP is not loaded twice."""
    from conftest import TOKENIZER
    from zsseg.tiny_clip import save_tiny_reference_checkpoint
    from zsseg import Segmenter
    from zsseg.proposals import MaskFormerProposals

    path = save_tiny_reference_checkpoint(tmp_path / "separate.pth", keys_file, region_adapter=True, region_clip_seed=7,
                                          learned_prompt=(4, 0))
    generator = MaskFormerProposals(path, tokenizer=str(TOKENIZER))
    assert generator.region_clip is not generator.clip
    segmenter = Segmenter(proposals=generator, test_size=96, text_cache=False)
    assert segmenter.clip is generator.region_clip and segmenter.network_prompts.clip is generator.clip
    region, network = segmenter.classifier.prompts.prompt, segmenter.network_prompts.prompt
    assert (region.context.shape[0], region.suffix_length) == (8, 2) and (network.context.shape[0], network.suffix_length) == (4, 0)
    assert "_region_clip_adapter" in region.source and "_region_clip_adapter" not in network.source
    shared = MaskFormerProposals(save_tiny_reference_checkpoint(tmp_path / "copy.pth", keys_file, region_adapter=True),
                                 tokenizer=str(TOKENIZER))
    assert shared.region_clip is shared.clip
    path.unlink()


def test_the_precision_applies_to_the_checkpoints_own_clip_and_the_same_clip_beside_it_is_not_loaded_twice(
        tiny_reference, tmp_path, monkeypatch):
    """`dtype` applies to the CLIP an authors' checkpoint holds (the record says what ran); a CLIP
    given beside it whose text tower is the checkpoint's takes that one's place (one CLIP in
    memory, the same labels), another stays beside it for Eq. 1 alone; with the text cache off
    nothing is written, not even the training classes' embeddings that rank the oracle's
    proposals."""
    from safetensors.torch import save_file

    from conftest import TOKENIZER
    from zsseg import Segmenter
    from zsseg.tiny_clip import openai_clip_state, save_checkpoint_clip

    monkeypatch.setenv("ZSSEG_CACHE_DIR", str(tmp_path / "cache"))
    image = np.random.default_rng(0).integers(0, 255, (72, 96, 3), dtype=np.uint8)
    vocabulary = "person; grass; sky; cat"
    common = dict(proposals="maskformer", proposal_weights=str(tiny_reference), tokenizer=str(TOKENIZER), test_size=96,
                  text_cache=False)
    fp32, int8 = Segmenter(**common, dtype="fp32"), Segmenter(**common, dtype="int8")
    assert (fp32.clip.precision, int8.clip.precision) == ("fp32", "int8")
    assert int8.record(vocabulary)["models"]["clip"]["precision"] == "int8"
    assert any(type(m).__name__ == "Int8Linear" for m in int8.clip.model.vision_model.modules())
    assert int8.network_prompts.clip is int8.clip is int8.proposals.clip
    expected = fp32.segment(image, vocabulary).label_map
    assert int8.segment(image, vocabulary).label_map.shape == expected.shape
    assert fp32.proposals.generate(image).shape[0] == 10
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*")), "the text cache was off"

    same = Segmenter(**common, clip=str(save_checkpoint_clip(tiny_reference, tmp_path / "same.safetensors")), dtype="fp32")
    assert same.clip is same.proposals.clip is same.network_prompts.clip and same.clip.source.endswith("same.safetensors")
    assert np.array_equal(same.segment(image, vocabulary).label_map, expected)
    other = openai_clip_state(width=64, layers=2, patch=32, image=224, text_width=64, embed=32, seed=5)
    save_file(other, str(tmp_path / "other.safetensors"))
    beside = Segmenter(**common, clip=str(tmp_path / "other.safetensors"), dtype="fp32", prompt="photo")  # not its learned one
    assert beside.clip is not beside.proposals.clip and beside.network_prompts.clip is beside.proposals.clip
    assert beside.clip.source.endswith("other.safetensors") and beside.proposals.clip.precision == "fp32"


def test_the_documented_ablation_commands_run_on_the_samples(tiny_reference, clip_dir, tmp_path, capsys):
    """Each command of docs/evaluation.md's "The paper's ablations" runs on the real COCO-Stuff
    samples (one image, small sizes), the authors' checkpoint replaced by a small random one in
    its format; each records the classifier its row names."""
    import shlex

    from conftest import DATA, TOKENIZER
    from zsseg.cli import main

    text = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    block = re.search(r"### The paper's ablations.*?```bash\n(.*?)```", text, re.S).group(1)
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith("zsseg ")]
    assert len(commands) == 6
    expected = {"t7-network.json": "network", "t7-clip.json": "clip", "t7-ensemble.json": "ensemble", "t5-maskformer.json": "clip",
                "t5-selective-search.json": None, "t5-contour-hierarchy.json": None}
    for words in commands:
        args = [str(tiny_reference) if w == "zero_shot.pth" else w for w in words[1:]]
        name = args[args.index("--output") + 1]
        args[args.index("--output") + 1] = str(tmp_path / name)
        small = ["--data-root", str(DATA), "--limit", "1", "--test-size", "96", "--no-text-cache", "--quiet"]
        small += ["--tokenizer", str(TOKENIZER)] if "maskformer" in args else ["--clip", str(clip_dir), "--max-proposals", "8"]
        assert main([*args, *small]) == 0, capsys.readouterr().err
        report = json.loads((tmp_path / name).read_text())
        settings = recorded(report)
        assert settings["classifier"] == expected[name] and report["num_images"] == 1, name
