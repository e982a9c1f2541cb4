"""Self-training: pseudo-labels (seen ground truth kept, unseen classes only elsewhere, the reject
threshold), their files in the dataset's own encoding, resuming, the retrain on them, and the
refusal to score a self-trained network on its own pseudo-labelled images."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, run, run_here, subset
from zsseg import Segmenter, ZssegError
from zsseg.assembly import assemble
from zsseg.data.datasets import IGNORE, load_dataset
from zsseg.evaluation.predictors import ClipPredictor
from zsseg.evaluation.runner import evaluate_predictor
from zsseg.training.recipes import load_recipe
from zsseg.training.proposal_data import TrainingSamples, Augmentation
from zsseg.training.proposals import train_proposals
from zsseg.networks.maskformer.weights import load_proposals
from zsseg.proposals import MaskFormerProposals
from zsseg.data.pseudo_labels import MANIFEST_NAME, load_pseudo_labels
from zsseg.training.self_training import LabelEncoding, pseudo_label, pseudo_label_map

TINY = load_recipe("proposals", "tiny")
CONFIG = replace(TINY, train=replace(TINY.train, crop_size=128, batch_size=2, log_every=1, max_iters=2))


@pytest.fixture(scope="module")
def network(clip, tmp_path_factory):
    """A tiny zero-shot network (seen classes only) trained a few steps on real train images."""
    out = tmp_path_factory.mktemp("zero-shot")
    train_proposals(subset("coco-stuff", "train", 3), CONFIG, clip, out, "zero-shot", progress=False)
    return out


@pytest.fixture(scope="module")
def labelled(network, clip, tmp_path_factory):
    """Pseudo-labels of the first 3 COCO-Stuff train images made by that network with CLIP."""
    out = tmp_path_factory.mktemp("pseudo")
    segmenter = Segmenter(clip=clip, proposals=MaskFormerProposals(network), max_size=256)
    report = pseudo_label(load_dataset("coco-stuff", DATA, "train"), segmenter, out, limit=3, progress=False)
    return out, report


# --- one image ---------------------------------------------------------------------------


def synthetic():
    """5 classes, 2 and 4 unseen; three overlapping masks on a 4x6 image."""
    masks = torch.zeros(3, 4, 6)
    masks[0, :, :3] = 1.0
    masks[1, :, 2:] = 0.8
    masks[2, 2:, :] = 0.5
    probs = torch.tensor([[0.6, 0.1, 0.2, 0.05, 0.05],
                          [0.1, 0.1, 0.1, 0.1, 0.6],
                          [0.2, 0.2, 0.3, 0.2, 0.1]])
    seen = torch.tensor([True, True, False, True, False])
    gt = np.array([[0, 1, 2, 3, 4, -1]] * 4, dtype=np.int32)
    return masks, probs, seen, gt


def test_seen_pixels_keep_the_ground_truth_and_the_others_get_unseen_classes():
    masks, probs, seen, gt = synthetic()
    pseudo = pseudo_label_map(masks, probs, gt, seen)
    on_seen = np.isin(gt, [0, 1, 3])
    assert (pseudo[on_seen] == gt[on_seen]).all()
    assert set(np.unique(pseudo[~on_seen])) <= {2, 4}  # never a seen class, and threshold 0 labels all
    # By hand: the arg-max over the unseen columns of Eq. 2, the seen columns left out.
    expected = np.where(assemble(masks, probs)[[2, 4]].argmax(dim=0).numpy() == 0, 2, 4)
    assert (pseudo[~on_seen] == expected[~on_seen]).all()
    # Pixel (0, 5) is covered by mask 1 only: unseen scores 0.1 (class 2) and 0.6 (class 4).
    assert pseudo[0, 5] == 4


def test_the_reject_threshold_ignores_low_scores():
    masks, probs, seen, gt = synthetic()
    scores = assemble(masks, probs)[[2, 4]].max(dim=0).values.numpy()
    threshold = float(np.median(scores))
    pseudo = pseudo_label_map(masks, probs, gt, seen, reject_threshold=threshold)
    open_pixels = ~np.isin(gt, [0, 1, 3])
    assert (pseudo[open_pixels & (scores < threshold)] == IGNORE).all()
    assert (pseudo[open_pixels & (scores >= threshold)] >= 0).all()
    assert (pseudo[open_pixels & (scores < threshold)] == IGNORE).any()
    # Seen ground truth stays, whatever the threshold; uncovered pixels are ignored.
    assert (pseudo[np.isin(gt, [0, 1, 3])] == gt[np.isin(gt, [0, 1, 3])]).all()
    masks[:, :, 5] = 0.0
    assert (pseudo_label_map(masks, probs, gt, seen)[:, 5] == IGNORE).all()


@pytest.mark.parametrize("name", ["coco-stuff", "voc-20"])
def test_label_files_are_in_the_datasets_own_encoding(name, tmp_path):
    dataset = subset(name, "val", 1)
    encoding = LabelEncoding(dataset)
    label = dataset.load_label(0)
    label[:5] = IGNORE
    encoding.write(tmp_path / "x.png", label)
    with Image.open(tmp_path / "x.png") as written, Image.open(dataset.samples[0].label) as original:
        assert written.mode == original.mode  # L for COCO-Stuff's maps, P with its palette for VOC
        if original.mode == "P":
            assert written.getpalette() == original.getpalette()
        raw = np.array(written)
    assert raw[0, 0] == 255
    back = dataset.spec.lookup(dataset.samples[0])[raw]
    assert np.array_equal(back, label)


# --- a folder of pseudo-labels ---------------------------------------------------------------


def test_pseudo_label_folder_holds_seen_ground_truth_and_unseen_labels(labelled):
    out, report = labelled
    train = load_dataset("coco-stuff", DATA, "train")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] and manifest["num_images"] == 3 and report.labelled == 3
    assert len(manifest["seen_classes"]) == 156 and len(manifest["unseen_classes"]) == 15
    unseen = set(train.unseen)
    total = np.zeros(train.num_classes + 1, dtype=np.int64)
    for index in range(3):
        sample = train.samples[index]
        gt = train.load_label(index)
        pseudo = train.spec.lookup(sample)[np.array(Image.open(out / f"{sample.name}.png"))]
        on_seen = (gt >= 0) & ~np.isin(gt, list(unseen))
        assert (pseudo[on_seen] == gt[on_seen]).all()
        off = pseudo[~on_seen]
        assert set(np.unique(off[off >= 0]).tolist()) <= unseen, "a seen class on a pixel that is not seen ground truth"
        total += np.bincount(pseudo.ravel() + 1, minlength=train.num_classes + 1)
    assert manifest["pixels"]["ignored"] == total[0]
    assert manifest["pixels"]["seen_ground_truth"] == total[1:][[i for i in range(171) if i not in unseen]].sum()
    assert sum(manifest["pixels"]["pseudo_labels"].values()) == total[1:][sorted(unseen)].sum() > 0
    assert "not a result" in manifest["diagnostic"]["note"]
    assert any("diagnostic, not a result" in line for line in report.summary())


def test_a_killed_run_resumes_without_redoing_finished_images(network, clip, labelled, tmp_path, monkeypatch):
    out = tmp_path / "pl"
    train = load_dataset("coco-stuff", DATA, "train")
    segmenter = Segmenter(clip=clip, proposals=MaskFormerProposals(network), max_size=256)
    calls = []
    finish = Segmenter.finish  # CLIP's half of an image (the next image is prepared ahead)

    def killed_on_the_third(self, prepared, vocabulary):
        calls.append(prepared)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return finish(self, prepared, vocabulary)

    monkeypatch.setattr(Segmenter, "finish", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        pseudo_label(train, segmenter, out, limit=3, progress=False)
    assert len(list(out.glob("*.png"))) == 2 and not json.loads((out / MANIFEST_NAME).read_text())["complete"]
    with pytest.raises(ZssegError, match="unfinished"):
        load_pseudo_labels(out, train)
    spied = []
    monkeypatch.setattr(Segmenter, "finish", lambda self, *a, **k: spied.append(1) or finish(self, *a, **k))
    report = pseudo_label(train, segmenter, out, limit=3, progress=False)
    assert len(spied) == 1 and (report.labelled, report.reused) == (1, 2)
    reference = labelled[0]
    for sample in train.samples[:3]:
        assert np.array_equal(np.array(Image.open(out / f"{sample.name}.png")), np.array(Image.open(reference / f"{sample.name}.png")))
    assert json.loads((out / MANIFEST_NAME).read_text())["pixels"] == report.manifest["pixels"] == labelled[1].manifest["pixels"]
    # Other settings on the same folder are refused, not mixed in.
    with pytest.raises(ZssegError, match="other settings .*reject_threshold"):
        pseudo_label(train, segmenter, out, limit=3, reject_threshold=0.5, progress=False)


def test_a_torn_label_of_the_run_is_labelled_again(network, clip, labelled, tmp_path):
    """A label file of the run that something emptied or cut short is not reused (it does not
    decode whole) and not refused as someone else's (the run's manifest vouches for it)."""
    import shutil

    out = tmp_path / "pl"
    shutil.copytree(labelled[0], out)
    train = load_dataset("coco-stuff", DATA, "train")
    names = [f"{sample.name}.png" for sample in train.samples[:3]]
    (out / names[0]).write_bytes(b"")
    (out / names[1]).write_bytes((labelled[0] / names[1]).read_bytes()[:400])
    segmenter = Segmenter(clip=clip, proposals=MaskFormerProposals(network), max_size=256)
    report = pseudo_label(train, segmenter, out, limit=3, progress=False)
    assert (report.labelled, report.reused) == (2, 1)
    assert all((out / name).read_bytes() == (labelled[0] / name).read_bytes() for name in names)


def test_a_folder_with_files_zsseg_did_not_write_is_refused(network, clip, tmp_path):
    train = load_dataset("coco-stuff", DATA, "train")
    segmenter = Segmenter(clip=clip, proposals=MaskFormerProposals(network), max_size=256)
    out = tmp_path / "pl"
    out.mkdir()
    mine = out / f"{train.samples[0].name}.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mine)
    with pytest.raises(ZssegError, match="not a pseudo-label run of zsseg"):
        pseudo_label(train, segmenter, out, limit=2, progress=False)
    assert np.array(Image.open(mine)).shape == (4, 4)
    with pytest.raises(ZssegError, match="inside the coco-stuff dataset"):
        pseudo_label(train, segmenter, DATA / "coco" / "pl", limit=1, progress=False)
    with pytest.raises(ZssegError, match="zero-shot protocol"):
        pseudo_label(train, segmenter, tmp_path / "x", protocol="cross-dataset", limit=1, progress=False)
    # A manifest that is not zsseg's, or not JSON, is refused both ways, and left as it was.
    for text in ('{"format": "zsseg-pseudo-labels/1"}', "not json"):
        (out / MANIFEST_NAME).write_text(text)
        with pytest.raises(ZssegError, match="pseudo-labels.json"):
            pseudo_label(train, segmenter, out, limit=2, progress=False)
        with pytest.raises(ZssegError, match="pseudo-labels.json"):
            load_pseudo_labels(out, train)
        assert (out / MANIFEST_NAME).read_text() == text


# --- the retrain, and what may be scored ------------------------------------------------------


@pytest.fixture(scope="module")
def self_trained(labelled, clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("self-trained")
    labels = load_pseudo_labels(labelled[0], load_dataset("coco-stuff", DATA, "train"))
    train_proposals(labels.dataset, CONFIG, clip, out, "zero-shot", progress=False, pseudo_labels=labels)
    return out


def test_the_retrain_reads_the_pseudo_labels_and_learns_every_class(labelled, clip, tmp_path, monkeypatch):
    import zsseg.data.datasets

    folder = labelled[0]
    labels = load_pseudo_labels(folder, load_dataset("coco-stuff", DATA, "train"))
    read = []
    original = zsseg.data.datasets.read_label_file
    monkeypatch.setattr(zsseg.data.datasets, "read_label_file", lambda path: read.append(path) or original(path))
    train_proposals(labels.dataset, CONFIG, clip, tmp_path, "zero-shot", progress=False, pseudo_labels=labels)
    assert read and all(p.parent == folder for p in read)
    trained = load_proposals(tmp_path)
    assert len(trained.class_names) == 171
    record = trained.self_training
    assert record["pseudo_labels"] == str(folder) and (record["dataset"], record["split"]) == ("coco-stuff", "train")
    assert len(record["seen_classes"]) == 156 and len(record["unseen_classes"]) == 15
    # The targets hold unseen classes now (training index = dataset index: all 171 are learned).
    train = labels.dataset
    samples = TrainingSamples(train, list(range(171)), Augmentation(128), seed=0)
    present = set().union(*(samples[p][1].classes.tolist() for p in range(3)))
    assert present & set(train.unseen)


def test_a_self_trained_network_keeps_the_original_split_and_is_not_scored_on_its_labels(self_trained, clip):
    proposals = MaskFormerProposals(self_trained)
    coco = load_dataset("coco-stuff", DATA, "val").vocabulary
    seen = proposals.seen_classes(coco)
    assert int(seen.sum()) == 156 and not seen[[i for i, n in enumerate(coco.names) if n in ("cow", "grass")]].any()
    segmenter = Segmenter(clip=clip, proposals=proposals, max_size=256)
    train = load_dataset("coco-stuff", DATA, "train")
    with pytest.raises(ZssegError, match="self-trained on pseudo-labels of coco-stuff train.*inflated"):
        evaluate_predictor(train, ClipPredictor(segmenter, train.vocabulary), protocol="zero-shot", limit=1, progress=False)


def test_cli_pseudo_label_retrain_and_evaluate(network, labelled, clip_dir, tmp_path, capsys):
    common = ["--dataset", "coco-stuff", "--data-root", str(DATA)]
    model = ["--clip", str(clip_dir), "--proposal-weights", str(network), "--max-size", "256"]
    made = run(["pseudo-label", *common, *model, "--limit", "2", "--output-dir", str(tmp_path / "pl")])
    assert made.returncode == 0, made.stderr
    assert "diagnostic, not a result" in made.stdout and "--pseudo-labels" in made.stderr
    again = run(["pseudo-label", *common, *model, "--limit", "2", "--output-dir", str(tmp_path / "pl")])
    assert again.returncode == 0 and "0 labelled now, 2 already done" in again.stdout, again.stderr
    train = ["train", "proposals", *common, "--config", "tiny", "--clip", str(clip_dir), "--batch-size", "2",
             "--crop-size", "128", "--max-iters", "1"]
    retrained = run([*train, "--pseudo-labels", str(tmp_path / "pl"), "--output-dir", str(tmp_path / "st")])
    assert retrained.returncode == 0 and "(self-trained)" in retrained.stderr, retrained.stderr
    assert json.loads((tmp_path / "st" / "proposals.json").read_text())["self_training"]["num_images"] == 2
    evaluation = ["eval", *common, "--protocol", "zero-shot", "--limit", "1", "--clip", str(clip_dir), "--proposals", "maskformer",
                  "--proposal-weights", str(tmp_path / "st"), "--quiet"]
    refused = run_here(capsys, [*evaluation, "--split", "train"])
    assert refused.returncode == 2 and "inflated" in refused.stderr and "Traceback" not in refused.stderr
    scored = run([*evaluation, "--output", str(tmp_path / "val.json")])
    assert scored.returncode == 0, scored.stderr
    assert json.loads((tmp_path / "val.json").read_text())["config"]["models"]["proposals"]["self_training"]["split"] == "train"


def test_two_process_torchrun_pseudo_labelling_equals_one_process(network, clip_dir, tmp_path):
    """Sharded under torchrun (image i to process i mod 2): the same files and counts as one
    process (both single-threaded, so that the arithmetic is the same)."""
    args = ["pseudo-label", "--dataset", "coco-stuff", "--data-root", str(DATA), "--clip", str(clip_dir),
            "--proposal-weights", str(network), "--max-size", "256", "--limit", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "zsseg", *args, "--output-dir", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "zsseg",
                          *args, "--output-dir", str(tmp_path / "two")], capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr
    for sample in load_dataset("coco-stuff", DATA, "train").samples[:3]:
        assert np.array_equal(*(np.array(Image.open(tmp_path / run / f"{sample.name}.png")) for run in ("one", "two")))
    one, two = (json.loads((tmp_path / run / MANIFEST_NAME).read_text()) for run in ("one", "two"))
    assert one["pixels"] == two["pixels"] and one["diagnostic"] == two["diagnostic"] and two["complete"]


def test_cli_bad_inputs(network, labelled, clip_dir, tmp_path, capsys):
    common = ["--dataset", "coco-stuff", "--data-root", str(DATA)]
    model = ["--clip", str(clip_dir), "--proposal-weights", str(network)]
    threshold = run_here(capsys, ["pseudo-label", *common, *model, "--reject-threshold", "2", "--output-dir", str(tmp_path / "a")])
    assert threshold.returncode == 2 and "reject-threshold" in threshold.stderr
    cross = run_here(capsys, ["pseudo-label", *common, *model, "--protocol", "cross-dataset", "--output-dir", str(tmp_path / "a")])
    assert cross.returncode == 2 and "invalid choice" in cross.stderr
    dense = run_here(capsys, ["pseudo-label", *common, "--clip", str(clip_dir), "--method", "dense-clip", "--output-dir", str(tmp_path / "a")])
    assert dense.returncode == 2 and "made from proposals" in dense.stderr
    gt = run_here(capsys, ["pseudo-label", *common, *model, "--proposals", "ground-truth", "--output-dir", str(tmp_path / "a")])
    assert gt.returncode == 2 and "cannot use the proposal generator 'ground-truth'" in gt.stderr
    inside = run_here(capsys, ["pseudo-label", *common, *model, "--output-dir", str(DATA / "coco" / "pl")])
    assert inside.returncode == 2 and "inside the coco-stuff dataset" in inside.stderr
    assert not (DATA / "coco" / "pl").exists()
    train = ["train", "proposals", *common, "--config", "tiny", "--clip", str(clip_dir), "--max-iters", "1", "--output-dir", str(tmp_path / "st")]
    for folder, message in ((tmp_path / "none", "is not a folder"), (tmp_path, "holds no pseudo-labels.json")):
        bad = run_here(capsys, [*train, "--pseudo-labels", str(folder)])
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    other = run_here(capsys, [*train, "--split", "val", "--pseudo-labels", str(labelled[0])])
    assert other.returncode == 2 and "not coco-stuff val" in other.stderr
    cross = run_here(capsys, [*train, "--protocol", "cross-dataset", "--pseudo-labels", str(labelled[0])])
    assert cross.returncode == 2 and "zero-shot protocol" in cross.stderr
    assert not (tmp_path / "st").exists()
